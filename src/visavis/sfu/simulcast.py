"""Simulcast layer selection for one subscriber's view of one video source (sans-I/O).

Theory of operation. The subscriber's wanted layer (``target``) comes from the
bandwidth allocator and the layout/last-N policy; -1 pauses the stream (with
:meth:`LayerSelector.reset`: nothing is forwarded until a layer is wanted again, then it
resumes on a keyframe). Packets of the current layer are
forwarded. A switch, up or down, happens only on a keyframe of the target layer (the
decoder cannot start mid-stream); until then the current layer keeps flowing, and the
shell asks the publisher for a keyframe (rate-limited). If nothing is being forwarded
yet, any keyframe of a layer at or below the target starts the stream.
"""

from __future__ import annotations

import enum


class Decision(enum.Enum):
    DROP = 0
    FORWARD = 1
    SWITCH = 2  # forward, and start a new rewriter segment first


class LayerSelector:
    """Decides per packet whether it is forwarded to this subscriber."""

    def __init__(self, target: int = 0) -> None:
        self.target = target
        self.current: int | None = None

    @property
    def wants_keyframe(self) -> bool:
        """True while waiting for a keyframe to reach the target layer (never while
        paused: target -1, which no layer matches)."""
        return self.target >= 0 and self.current != self.target

    def set_target(self, layer: int) -> None:
        """Change the wanted layer; takes effect on its next keyframe."""
        self.target = layer

    def reset(self) -> None:
        """Forget the current layer (the source changed)."""
        self.current = None

    def decide(self, layer: int, keyframe: bool) -> Decision:
        """Decision for a packet of ``layer`` (keyframe: it starts a keyframe)."""
        current = self.current
        if layer == self.target and current != layer:
            if keyframe:
                self.current = layer
                return Decision.SWITCH
            return Decision.DROP
        if layer == current:
            return Decision.FORWARD
        if current is None and keyframe and layer < self.target:
            self.current = layer
            return Decision.SWITCH
        return Decision.DROP


def choose_layer(bitrates: list[float | None], budget: float, max_layer: int) -> int | None:
    """Highest active layer <= ``max_layer`` whose bitrate fits ``budget``.

    ``bitrates[i]`` is layer i's measured bitrate (None: not being received). Falls back
    to the lowest active layer when none fits; None when no layer is active.
    """
    best: int | None = None
    lowest: int | None = None
    for layer, rate in enumerate(bitrates):
        if rate is None:
            continue
        if lowest is None:
            lowest = layer
        if layer <= max_layer and rate <= budget:
            best = layer
    return best if best is not None else lowest
