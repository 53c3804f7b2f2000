"""The ``visavis`` command."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import importlib
import json
import logging
import signal
from pathlib import Path
from typing import Any

import click
from rich.console import Console

from visavis import __version__
from visavis.config import Settings, load_settings
from visavis.loops import run
from visavis.relay.cli_options import relay_options, relay_overrides

console = Console(stderr=True)

CONFIG_HELP = "TOML configuration file (also VISAVIS_CONFIG). Flags override it."


def _settings(config: Path | None, **overrides: Any) -> Settings:
    try:
        return load_settings(config, **overrides)
    except FileNotFoundError as exc:
        raise click.UsageError(str(exc)) from exc
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise click.UsageError(f"invalid configuration:\n{exc}") from exc


class _LazyGroup(click.Group):
    """A command group whose listed ``lazy`` commands import their module only when run.

    The client commands pull in aiortc and PyAV (ffmpeg: hundreds of shared libraries);
    a server started with ``visavis serve`` must not load them.
    """

    lazy = {
        "call": "visavis.client.cli:call",
        "answer": "visavis.client.cli:answer",
        "sfu": "visavis.fleet.cli:sfu",
    }

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = self.lazy.get(cmd_name)
        if target is not None and cmd_name not in self.commands:
            module, _, attr = target.partition(":")
            command = getattr(importlib.import_module(module), attr)
            self.add_command(command, cmd_name)
        return super().get_command(ctx, cmd_name)


@click.group(
    cls=_LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    epilog="Quick start: 'visavis serve' in one terminal; 'visavis answer' and 'visavis call "
    "HANDLE' in others. Every setting is also an environment variable: "
    "VISAVIS_SIGNALING__PORT=9000, VISAVIS_BUS_URL=redis://...",
)
@click.version_option(__version__, prog_name="visavis")
def main() -> None:
    """visavis: self-hosted, end-to-end encrypted video calls.

    \b
    Run the whole system on this machine (SQLite and an in-process bus):
        visavis serve
    Run one part against PostgreSQL and Redis, several machines behind a load balancer:
        visavis serve --role signaling \\
            --database-url postgresql+asyncpg://visavis@db/visavis --bus-url redis://cache:6379
    See the effective configuration, secrets masked:
        visavis config
    """


@main.command()
@click.option("--config", "config", type=click.Path(path_type=Path), help=CONFIG_HELP)
@click.option(
    "--role",
    type=click.Choice(["all", "signaling", "relay", "sfu"]),
    help="Which parts to run [default: all].",
)
@click.option("--host", help="Interface signaling listens on [default: 127.0.0.1].")
@click.option("--port", type=int, help="Signaling HTTP/WebSocket port [default: 8080].")
@click.option("--data-dir", type=click.Path(path_type=Path), help="Where SQLite and keys live.")
@click.option("--database-url", help="SQLAlchemy URL, e.g. postgresql+asyncpg://u@host/db.")
@click.option("--bus-url", help="memory:// (one process) or redis://host:6379/0.")
@click.option("--log-level", type=click.Choice(["debug", "info", "warning", "error"]))
@click.option("--metrics-port", type=int, help="Also serve Prometheus /metrics on 127.0.0.1:PORT.")
@click.option(
    "--sfu-workers",
    type=click.IntRange(min=0),
    help="SFU worker processes [default: 0, one per core].",
)
@relay_options
def serve(
    config: Path | None,
    host: str | None,
    port: int | None,
    sfu_workers: int | None,
    **flags: Any,
) -> None:
    """Start visavis and print where each part listens.

    With the default role every part runs in this process on embedded defaults, which is
    all a family or a small office needs. Stop with Ctrl-C.

    \b
    The relay takes coturn's option names, so a coturn setup carries over:
        visavis serve --role relay --listening-port 3478 --realm example.org \\
            --external-ip 203.0.113.7 --min-port 49152 --max-port 65535
    """
    relay = relay_overrides(flags)
    signaling: dict[str, Any] = {}
    if host is not None:
        signaling["host"] = host
    if port is not None:
        signaling["port"] = port
    settings = _settings(config, relay=relay or None, **flags)
    if signaling:
        settings.signaling = settings.signaling.model_copy(update=signaling)
    if sfu_workers is not None:
        settings.sfu = settings.sfu.model_copy(update={"workers": sfu_workers})
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    with contextlib.suppress(KeyboardInterrupt):
        run(_serve(settings))


async def _serve(settings: Settings) -> None:
    from visavis.node import Node, PartUnavailable
    from visavis.supervisor import PartFailed

    node = Node(settings)
    try:
        await node.start()
    except (PartUnavailable, PartFailed) as exc:
        raise click.ClickException(f"cannot start: {exc}") from exc
    except OSError as exc:
        raise click.ClickException(f"cannot start: {exc}") from exc
    node.lower_signaling_priority()  # role all: media children first under contention
    # Everything imported and built so far lives as long as the process: keep it out of
    # the collector's full passes, which otherwise stall every call for ~0.3 s.
    gc.collect()
    gc.freeze()
    # Handlers before the ready line, so a signal right after it is never lost.
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGHUP, node.reload)  # e.g. a renewed TLS certificate
    loop.add_signal_handler(signal.SIGUSR1, node.drain)  # SFU fleet: drain this node
    console.print(f"[bold green]visavis {__version__}[/] running (role {settings.role})")
    console.print(f"  data directory: {settings.data_dir}")
    for name, urls in node.endpoints().items():
        for url in urls:
            console.print(f"  {name:<10} {url}")
    console.print("Press Ctrl-C to stop.")
    try:
        await stop.wait()
    finally:
        console.print("stopping…")
        await node.close()


@main.command("config")
@click.option("--config", "config", type=click.Path(path_type=Path), help=CONFIG_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of TOML-like text.")
def show_config(config: Path | None, as_json: bool) -> None:
    """Print the effective configuration (defaults, file, environment), secrets masked."""
    settings = _settings(config)
    data = settings.model_dump(mode="json")
    if as_json:
        click.echo(json.dumps(data, indent=2))
        return
    _print_toml(data)


def _print_toml(data: dict[str, Any], prefix: str = "") -> None:
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    for key, value in data.items():
        if key not in tables:
            click.echo(f"{key} = {json.dumps(value)}")
    for key, value in tables.items():
        click.echo(f"\n[{prefix}{key}]")
        _print_toml(value, prefix=f"{prefix}{key}.")


if __name__ == "__main__":
    main()
