"""``visavis sfu``: the SFU fleet as an operator sees it (needs the Redis bus)."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any, cast

import click

from visavis.config import Settings, load_settings
from visavis.fleet.record import NodeKind
from visavis.fleet.settings import uses_registry

CONFIG_HELP = "TOML configuration file (also VISAVIS_CONFIG). Flags override it."


def _settings(config: Path | None, bus_url: str | None) -> Settings:
    try:
        settings = load_settings(config, bus_url=bus_url)
    except (FileNotFoundError, ValueError) as exc:
        raise click.UsageError(str(exc)) from exc
    if not uses_registry(settings):
        raise click.UsageError("the fleet lives in Redis: give --bus-url redis://HOST:6379/0")
    return settings


def _options(f: Any) -> Any:
    f = click.option("--config", type=click.Path(path_type=Path), help=CONFIG_HELP)(f)
    return click.option("--bus-url", help="redis://host:6379/0 (as the nodes use).")(f)


@click.group()
def sfu() -> None:
    """The media fleet: list its SFU and relay nodes, drain an SFU node before an upgrade.

    \b
        visavis sfu nodes --bus-url redis://cache:6379/0
        visavis sfu drain 3f9a1c2e --wait 600
    """


@sfu.command("nodes")
@_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.option(
    "--kind",
    type=click.Choice(["all", "sfu", "relay"]),
    default="all",
    show_default=True,
    help="SFU nodes, relay (TURN) nodes, or both.",
)
def nodes(config: Path | None, bus_url: str | None, as_json: bool, kind: str) -> None:
    """List live SFU nodes with their load (and dead ones still holding rooms), then live
    relay nodes with theirs."""
    from visavis.fleet.admin import FleetAdmin

    kinds: list[NodeKind] = ["sfu", "relay"] if kind == "all" else [cast(NodeKind, kind)]

    async def run() -> list[dict[str, Any]]:
        admin = FleetAdmin(_settings(config, bus_url))
        try:
            rows: list[dict[str, Any]] = []
            for k in kinds:
                view = await admin.view(k)
                rows += [
                    dict(n.to_json(), placed=view.placed.get(n.node_id, 0), age=time.time() - n.ts)
                    for n in view.nodes
                ]
                # A dead relay holds nothing; a dead SFU node may still hold rooms.
                rows += [
                    {"node_id": i, "kind": k, "state": "gone", "placed": view.placed.get(i, 0)}
                    for i in view.gone
                    if k == "sfu"
                ]
            return rows
        finally:
            await admin.close()

    rows = asyncio.run(run())
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for r in rows:
        click.echo(_row(r))


def _row(r: dict[str, Any]) -> str:
    """One node as a line of ``visavis sfu nodes``."""
    if r.get("state") == "gone":
        return f"{r['node_id']:<12} gone      rooms placed {r['placed']}"
    state = "draining" if r["draining"] else "live"
    if r["kind"] == "relay":
        return (
            f"{r['node_id']:<12} relay     {r['region']:<10} {' '.join(r['urls'])}  "
            f"allocations {r['allocations']}  cpu {r['cpu']:.2f}  "
            f"{r['pps']:.0f}/{r['capacity']} pkt/s"
        )
    return (
        f"{r['node_id']:<12} {state:<9} {r['region']:<10} {r['control_url']}  "
        f"rooms {r['rooms']} (placed {r['placed']})  people {r['participants']}/"
        f"{r['capacity']}  cpu {r['cpu']:.2f}  {r['pps']:.0f} pkt/s"
    )


@sfu.command("drain")
@_options
@click.argument("node_id")
@click.option("--wait", type=float, default=0.0, help="Seconds to wait for it to empty.")
def drain(config: Path | None, bus_url: str | None, node_id: str, wait: float) -> None:
    """Drain NODE_ID: no new rooms; its live rooms move to other nodes without hanging up.

    The node itself can be told with SIGUSR1 instead.
    """
    from visavis.fleet.admin import FleetAdmin

    async def run() -> int:
        admin = FleetAdmin(_settings(config, bus_url))
        try:
            await admin.drain(node_id)
            return await admin.wait_empty(node_id, wait) if wait > 0 else -1
        except LookupError as exc:
            raise click.ClickException(str(exc)) from exc
        finally:
            await admin.close()

    left = asyncio.run(run())
    if left < 0:
        click.echo(f"{node_id}: draining (its rooms move within a few seconds)")
    elif left == 0:
        click.echo(f"{node_id}: drained, no rooms left")
    else:
        raise click.ClickException(f"{node_id}: still {left} room(s) after {wait:.0f} s")
