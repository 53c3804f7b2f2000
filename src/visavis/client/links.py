"""Call links from the SDK: make one, open its call, let guests in.

    link = await create_link(session)
    print(link.url)                                   # give it to someone without an account
    call_id = await open_link_call(session, link.id)  # call.room follows, as for any group call
    async with session.events() as events:            # call.guest: someone waits in the lobby
        ...
        await admit(session, call_id, event.guest.id)
    await revoke_link(session, link.id)               # nobody new gets in

The other side, joining someone's link as a guest (no account), is
:mod:`visavis.client.guest`.

The call is a group call through the SFU (docs/protocol.md, "Call links"): join its room
with :class:`~visavis.client.sfu_session.SfuSession` and encrypt it with
:class:`~visavis.client.e2ee.GroupE2ee`, which agrees keys with guests too (their
identity is unverified: compare the verification code aloud).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import httpx

from visavis.signaling import messages as m
from visavis.store.base import MediaKind

if TYPE_CHECKING:
    from visavis.client.session import Session


class Link(m.CallLinkOut):
    """A link just made (its token is only in this answer) and where guests open it."""

    url: str


async def create_link(session: Session, media: MediaKind = "video", ttl_hours: int = 24) -> Link:
    """A new call link of this session's user (``POST /api/links``)."""
    async with httpx.AsyncClient(timeout=10) as http:
        r = await http.post(
            f"{session.url}/api/links",
            json={"media": media, "ttl_hours": ttl_hours},
            headers={"Authorization": f"Bearer {session.token}"},
        )
        r.raise_for_status()
        out = m.CallLinkOut.model_validate(r.json())
    return Link(**out.model_dump(), url=f"{session.url}/#join={out.token}")


async def open_link_call(session: Session, link_id: str) -> str:
    """Start the link's call on this device, or rejoin the one going on: its call id."""
    call_id = (await session.request("call.link_join", link_id=link_id)).call_id
    if call_id is None:
        raise ValueError("signaling answered call.link_join without a call id")
    return call_id


async def admit(session: Session, call_id: str, guest_id: str) -> None:
    """Let a guest waiting in the lobby of this call's link in."""
    await session.request("call.admit", call_id=call_id, guest_id=guest_id)


async def revoke_link(session: Session, link_id: str) -> None:
    """Turn a link off (``DELETE /api/links/{id}``): nobody new gets in, guests still
    waiting are refused (``link_revoked``); those already in the call stay."""
    async with httpx.AsyncClient(timeout=10) as http:
        r = await http.delete(
            f"{session.url}/api/links/{link_id}",
            headers={"Authorization": f"Bearer {session.token}"},
        )
        r.raise_for_status()


__all__ = ["Link", "admit", "create_link", "open_link_call", "revoke_link"]
