"""Whatever a device sends, the server answers it or refuses it, and keeps serving."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.signaling.harness import cluster
from visavis.signaling.messages import CLIENT_TYPES

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=40)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4)
    ),
    max_leaves=12,
)
FIELDS = [
    "call_id",
    "handles",
    "handle",
    "media",
    "description",
    "candidate",
    "seq",
    "token",
    "end_current",
    "resume_after",
]
messages = st.one_of(
    st.fixed_dictionaries(
        {"type": st.sampled_from(sorted(CLIENT_TYPES))},
        optional={f: values for f in FIELDS} | {"id": st.integers() | st.text(max_size=8)},
    ),
    st.dictionaries(st.text(max_size=12), values, max_size=5),
    values,
)


async def test_random_messages_never_break_the_server(tmp_path: Path) -> None:
    async with cluster(tmp_path, rate_limit_burst=100_000) as c:
        (mallory,) = await c.user("mallory@example.com")
        (alice,) = await c.user("alice@example.com")
        (bob,) = await c.user("bob@example.com")
        call_id = (await alice.ok("call.invite", handles=["bob@example.com"]))["call_id"]
        await bob.expect("call.incoming")
        sent: list[Any] = []

        @settings(
            max_examples=300,
            deadline=None,
            suppress_health_check=[HealthCheck.function_scoped_fixture],
        )
        @given(messages)
        def collect(message: Any) -> None:
            sent.append(message)

        collect()
        for n, message in enumerate(sent):
            await mallory.send_raw(json.dumps(message))
            # A probe after each message: every answer before it must be a proper one.
            await mallory.send_raw(json.dumps({"type": "ping", "id": f"probe-{n}"}))
            while True:
                answer = await mallory.next_event()
                if answer["type"] == "pong" and answer.get("re") == f"probe-{n}":
                    break
                assert answer["type"] in ("error", "result", "pong"), (message, answer)
                if answer["type"] == "error":
                    assert answer["code"] and answer["message"]
        # Mallory's connection and everyone else's call are intact.
        assert (await mallory.request("ping"))["type"] == "pong"
        await bob.ok("call.answer", call_id=call_id)
        assert (await alice.expect("call.participant", state="joined"))["call_id"] == call_id
