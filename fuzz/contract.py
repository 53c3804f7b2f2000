"""The contract every harness is held to, shared by the fuzz runner and the CI replay.

A parser given arbitrary input either returns, or raises one of its declared errors
(``Target.expected``); any other exception is a crash. One input may take at most
:data:`TIME_LIMIT` seconds of this thread's CPU time; longer is a hang. CPU time, not wall
time: on a machine shared by many processes a starved input would otherwise look hung
(libFuzzer's own wall-clock ``-timeout`` is only a backstop for true infinite loops).
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

TIME_LIMIT = 1.0  # seconds per input; every parser here answers in microseconds
CORPUS_ROOT = Path(__file__).resolve().parent / "corpus"


@dataclass(frozen=True)
class Target:
    """One harness: ``one_input`` feeds bytes to a parser (and what consumes its output).

    :param name: the corpus directory and the runner's ``--target``.
    :param one_input: takes the raw fuzz input; may raise only ``expected``.
    :param expected: the parser's typed errors, the only exceptions allowed to escape.
    :param max_len: the largest input worth trying (the transport's own limit).
    :param dictionary: tokens libFuzzer splices into inputs (field names, keywords).
    """

    name: str
    one_input: Callable[[bytes], None]
    expected: tuple[type[BaseException], ...]
    max_len: int = 4096
    dictionary: tuple[bytes, ...] = ()

    @property
    def corpus(self) -> Path:
        return CORPUS_ROOT / self.name


class ContractViolation(AssertionError):
    """An input made the parser raise something other than its typed error."""


class Hang(ContractViolation):
    """An input took more than :data:`TIME_LIMIT` seconds of CPU time."""


def check(target: Target, data: bytes) -> bool:
    """Run one input under the contract; True if accepted, False if rejected as expected.

    :raises ContractViolation: (chained to the original) on any other exception.
    :raises Hang: when the input took longer than :data:`TIME_LIMIT` (CPU time).
    """
    start = time.thread_time()
    try:
        target.one_input(data)
    except target.expected:
        _check_time(target, data, start)
        return False
    except Exception as exc:
        where = "".join(traceback.format_exception(exc)[-3:])
        raise ContractViolation(
            f"{target.name}: {type(exc).__name__} escaped for input {data[:64]!r}\n{where}"
        ) from exc
    _check_time(target, data, start)
    return True


def _check_time(target: Target, data: bytes, start: float) -> None:
    spent = time.thread_time() - start
    if spent > TIME_LIMIT:
        raise Hang(f"{target.name}: {spent:.2f} s of CPU for input {data[:64]!r}")


def text_of(data: bytes) -> str:
    """Bytes as the str a JSON or WebSocket layer could hand over (lone surrogates kept)."""
    return data.decode("utf-8", "surrogateescape")
