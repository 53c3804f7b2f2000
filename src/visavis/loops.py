"""A service on an event loop of its own, in a thread of its own.

``visavis serve`` (role all) runs the relay and the SFU this way, so that their packets
never wait behind signaling's HTTP and WebSocket work on the main loop (see
docs/processes.md for why threads and what it measures). Each thread runs uvloop when it
is installed, like the main loop. Password hashing, the one CPU-heavy part of signaling,
runs on its own niced threads and releases the GIL (:mod:`visavis.signaling.auth`).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry
from prometheus_client.metrics_core import Metric

from visavis.service import Service

T = TypeVar("T")
COLLECT_TIMEOUT = 2.0  # seconds a scrape waits for a part's loop


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's loop when installed (what ``visavis serve`` runs everywhere), else asyncio's."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class LoopThread:
    """A daemon thread running one event loop until :meth:`stop`."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.loop = new_event_loop()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        comm = f"/proc/self/task/{threading.get_native_id()}/comm"
        with contextlib.suppress(OSError), open(comm, "w") as name:  # what top -H shows
            name.write(self.name[:15])
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_forever()
            pending = asyncio.all_tasks(self.loop)
            for task in pending:
                task.cancel()
            if pending:
                gather = asyncio.gather(*pending, return_exceptions=True)
                self.loop.run_until_complete(gather)
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
        finally:
            self.loop.close()

    def start(self) -> None:
        self._thread.start()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive() and not self.loop.is_closed()

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Await ``coro`` on this thread's loop from another loop."""
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def call(self, fn: Callable[[], T], timeout: float) -> T:
        """Run ``fn`` on this thread's loop and wait for its result (from another thread)."""
        if threading.get_ident() == self._thread.ident:
            return fn()
        done: concurrent.futures.Future[T] = concurrent.futures.Future()

        def step() -> None:
            try:
                done.set_result(fn())
            except BaseException as exc:
                done.set_exception(exc)

        self.loop.call_soon_threadsafe(step)
        return done.result(timeout)

    def stop(self, timeout: float = 10.0) -> None:
        if self.alive:
            with contextlib.suppress(RuntimeError):  # closed meanwhile
                self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout)


class LoopCollector:
    """Prometheus collector reading a part's own registry on the part's loop, so that a
    scrape from another thread never walks state the part is changing."""

    def __init__(self, thread: LoopThread, registry: CollectorRegistry) -> None:
        self.thread = thread
        self.registry = registry

    def collect(self) -> Iterator[Metric]:
        if not self.thread.alive:
            return iter(())
        try:
            return iter(self.thread.call(lambda: list(self.registry.collect()), COLLECT_TIMEOUT))
        except (concurrent.futures.TimeoutError, RuntimeError):
            return iter(())  # the part is stopping or stuck: this scrape goes without it


class ThreadedService:
    """A :class:`~visavis.service.Service` built, started and closed on its own loop thread.

    ``inner`` is the part itself once :meth:`start` returned (its attributes, such as the
    SFU's ``control_url``, are read-only after start and safe to read from any thread).
    """

    def __init__(
        self, name: str, build: Callable[[CollectorRegistry], Any], registry: CollectorRegistry
    ) -> None:
        self.name = name
        self._build = build
        self.thread = LoopThread(f"visavis-{name}")
        self.own_registry = CollectorRegistry()
        self.inner: Any = None
        self._collector = LoopCollector(self.thread, self.own_registry)
        self._registry = registry
        self._registered = False

    async def start(self) -> None:
        self.thread.start()
        try:
            self.inner = await self.thread.run(self._start())
        except BaseException:
            self.thread.stop()
            raise
        self._registry.register(self._collector)
        self._registered = True

    async def _start(self) -> Any:
        service: Service = self._build(self.own_registry)
        await service.start()
        return service

    async def close(self) -> None:
        if self._registered:
            self._registry.unregister(self._collector)
            self._registered = False
        try:
            if self.inner is not None and self.thread.alive:
                await self.thread.run(self.inner.close())
        finally:
            self.thread.stop()

    def reload(self) -> None:
        """Pass SIGHUP's reload (e.g. the relay's TLS certificate) to the part, on its loop."""
        reload = getattr(self.inner, "reload", None)
        if reload is not None and self.thread.alive:
            self.thread.loop.call_soon_threadsafe(reload)

    def endpoints(self) -> list[str]:
        return list(self.inner.endpoints()) if self.inner is not None else []
