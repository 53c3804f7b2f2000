"""The lifecycle every server part shares, so one process can host any set of them."""

from __future__ import annotations

from typing import Protocol


class Service(Protocol):
    """A server part: built from settings and its dependencies, then started and closed.

    ``start()`` binds sockets (port 0 allowed) and returns once the service is ready;
    ``endpoints()`` then names where it listens, for ``visavis serve`` to print.
    """

    name: str

    async def start(self) -> None: ...

    async def close(self) -> None: ...

    def endpoints(self) -> list[str]: ...
