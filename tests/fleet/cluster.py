"""A fleet of real ``visavis serve`` processes on PostgreSQL and Redis, for tests."""

from __future__ import annotations

import contextlib
import os
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tests.served import Served, serve, visavis_command

SECRET = "fleet-test-secret"


@dataclass
class Fleet:
    env: dict[str, str]
    signaling: list[Served] = field(default_factory=list)
    sfu: dict[str, Served] = field(default_factory=dict)  # node id -> process

    def node_of(self, url: str) -> str:
        """The SFU node id whose control URL is ``url``."""
        return next(node for node, s in self.sfu.items() if s.sfu_url == url)

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run ``visavis ARGS`` as an operator would, against this deployment."""
        return subprocess.run(
            [*visavis_command(), *args],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


@contextlib.contextmanager
def fleet(
    tmp_path: Path,
    database_url: str,
    prefix: str,
    *,
    signaling: int = 2,
    sfu: int = 3,
    node_env: dict[str, dict[str, str]] | None = None,
) -> Iterator[Fleet]:
    """Start ``sfu`` SFU nodes (``sfu-a``, ``sfu-b``, ...) and ``signaling`` signaling
    nodes (``sig-0``, ...) at once, each with its ``node_env`` extras; stop them after."""
    env = {
        "VISAVIS_BUS_URL": "redis://127.0.0.1:6379/0",
        "VISAVIS_REDIS_PREFIX": prefix,
        "VISAVIS_SHARED_SECRET": SECRET,
        "VISAVIS_DATABASE_URL": database_url,
        "VISAVIS_SFU__ALLOWED_NETWORKS": '["127.0.0.0/8"]',
        # One worker per SFU node: these tests name and count nodes (with several
        # workers each worker is a node of its own: tests/test_sfu_workers.py).
        "VISAVIS_SFU__WORKERS": "1",
    }
    specs = [(f"sfu-{chr(97 + i)}", "sfu") for i in range(sfu)]
    specs += [(f"sig-{i}", "signaling") for i in range(signaling)]

    def context(name: str, role: str) -> contextlib.AbstractContextManager[Served]:
        return serve(
            tmp_path / name,
            "--role",
            role,
            env={**env, "VISAVIS_NODE_ID": name, **(node_env or {}).get(name, {})},
            timeout=120,
        )

    with contextlib.ExitStack() as stack, ThreadPoolExecutor(len(specs)) as pool:

        def enter(cm: contextlib.AbstractContextManager[Served]) -> Served:
            served = cm.__enter__()
            stack.push(cm)  # list.append under the GIL: safe from threads
            return served

        # The SFU nodes and the first signaling node (which migrates the database) start
        # together; the other signaling nodes once it is up.
        first = len(specs) - signaling + 1
        started = list(pool.map(enter, [context(*spec) for spec in specs[:first]]))
        started += list(pool.map(enter, [context(*spec) for spec in specs[first:]]))
        result = Fleet(env)
        for (name, role), served in zip(specs, started, strict=True):
            if role == "sfu":
                result.sfu[name] = served
            else:
                result.signaling.append(served)
        yield result
