"""Many SFU (and relay) nodes as one media plane.

Nodes register in Redis with a signed, timestamped record refreshed by heartbeat
(:mod:`visavis.fleet.agent`); signaling reads the registry, places each group call's room
on a node (:mod:`visavis.fleet.placement`, pure), keeps the placement in Redis so every
signaling node agrees, and moves the rooms of a node that died or is draining
(:mod:`visavis.fleet.service`). With the in-process bus the one local SFU is the fleet.
See ``docs/fleet.md`` and ``docs/scale.md``.
"""
