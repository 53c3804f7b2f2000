"""Dominant speaker detection from RFC 6464 audio levels (sans-I/O).

Theory of operation. Each audio packet carries the sender's level in -dBov (0 loud, 127
silence). Per participant we keep an exponentially smoothed loudness in [0, 1]. The
dominant speaker changes only when a challenger is above the speech threshold, louder
than the incumbent by ``margin``, has stayed so for ``hold`` seconds, and at least
``min_interval`` has passed since the last change: hysteresis, so it does not flicker.
A participant silent for ``silence_timeout`` decays to zero. The ordered list of recent
dominant speakers feeds the last-N policy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(slots=True)
class _Level:
    loudness: float = 0.0
    updated: float = 0.0
    ahead_since: float | None = None


class SpeakerDetector:
    """Feed levels with :meth:`observe`; call :meth:`tick` to learn of a new dominant."""

    def __init__(
        self,
        *,
        time_constant: float = 0.4,
        threshold: float = 0.25,
        margin: float = 0.1,
        hold: float = 0.3,
        min_interval: float = 1.0,
        silence_timeout: float = 1.0,
    ) -> None:
        self.time_constant = time_constant
        self.threshold = threshold
        self.margin = margin
        self.hold = hold
        self.min_interval = min_interval
        self.silence_timeout = silence_timeout
        self.dominant: str | None = None
        self.recent: list[str] = []
        self._levels: dict[str, _Level] = {}
        self._changed_at = -math.inf

    def observe(self, participant: str, level_dbov: int, now: float) -> None:
        """Record one packet's audio level (-dBov, 0..127) for ``participant``."""
        state = self._levels.get(participant)
        if state is None:
            state = self._levels[participant] = _Level(updated=now)
        sample = max(0.0, 1.0 - min(level_dbov, 127) / 60.0)  # -60 dBov and below: silence
        dt = max(0.0, now - state.updated)
        alpha = 1.0 - math.exp(-dt / self.time_constant) if dt > 0 else 0.05
        state.loudness += alpha * (sample - state.loudness)
        state.updated = now

    def remove(self, participant: str) -> None:
        """Forget a participant who left."""
        self._levels.pop(participant, None)
        if participant in self.recent:
            self.recent.remove(participant)
        if self.dominant == participant:
            self.dominant = None

    def loudness(self, participant: str, now: float) -> float:
        """Smoothed loudness in [0, 1] (0 once silent for ``silence_timeout``)."""
        state = self._levels.get(participant)
        if state is None or now - state.updated > self.silence_timeout:
            return 0.0
        return state.loudness

    def tick(self, now: float) -> str | None:
        """Re-evaluate; return the new dominant speaker if it changed, else None."""
        incumbent = self.loudness(self.dominant, now) if self.dominant else 0.0
        best: str | None = None
        best_level = 0.0
        for name, state in self._levels.items():
            level = self.loudness(name, now)
            if name == self.dominant:
                state.ahead_since = None
                continue
            if level >= self.threshold and level > incumbent + self.margin:
                if state.ahead_since is None:
                    state.ahead_since = now
                if now - state.ahead_since >= self.hold and level > best_level:
                    best, best_level = name, level
            else:
                state.ahead_since = None
        if best is None or now - self._changed_at < self.min_interval:
            return None
        self.dominant = best
        self._changed_at = now
        if best in self.recent:
            self.recent.remove(best)
        self.recent.insert(0, best)
        return best
