"""Users and devices as signaling reads them on every call: cached, invalidated over the bus.

A user's handle and display name never change, so users are cached for the life of the
process. A user's device list changes on sign-in, sign-out and push subscription: the node
making the change drops its entry and announces the user id on the ``directory`` channel,
and every node drops its own. A node may ring from a list a few milliseconds stale; a
revoked device's connection is closed by the revocation itself, so a stale entry costs at
most one undelivered mailbox message.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection

from visavis.bus.base import Bus, Subscription
from visavis.signaling.errors import SignalingError, not_found
from visavis.signaling.messages import normalize_handle
from visavis.store.base import Device, Store, User

CHANNEL = "directory"


class Directory:
    def __init__(self, store: Store, bus: Bus, *, max_entries: int = 100_000) -> None:
        self.store = store
        self.bus = bus
        self.max_entries = max_entries
        self._users: OrderedDict[str, User] = OrderedDict()
        self._handles: dict[str, str] = {}
        self._devices: OrderedDict[str, list[Device]] = OrderedDict()
        self._subscription: Subscription | None = None

    async def start(self) -> None:
        async def on_change(data: bytes) -> None:
            self._devices.pop(data.decode(), None)

        self._subscription = await self.bus.subscribe(CHANNEL, on_change)

    async def close(self) -> None:
        if self._subscription is not None:
            await self._subscription.unsubscribe()
            self._subscription = None

    def _remember(self, user: User) -> User:
        self._users[user.id] = user
        self._handles[user.handle] = user.id
        while len(self._users) > self.max_entries:
            _, old = self._users.popitem(last=False)
            self._handles.pop(old.handle, None)
        return user

    async def user(self, user_id: str) -> User | None:
        cached = self._users.get(user_id)
        if cached is not None:
            return cached
        user = await self.store.get_user(user_id)
        return None if user is None else self._remember(user)

    async def users(self, user_ids: Collection[str]) -> dict[str, User]:
        found = {uid: self._users[uid] for uid in user_ids if uid in self._users}
        missing = [uid for uid in user_ids if uid not in found]
        if missing:
            for uid, user in (await self.store.get_users(missing)).items():
                found[uid] = self._remember(user)
        return found

    async def by_handle(self, handle: str) -> User | None:
        """The user with this (normalized) handle; unknown handles are not cached."""
        user_id = self._handles.get(handle)
        if user_id is not None and user_id in self._users:
            return self._users[user_id]
        user = await self.store.get_user_by_handle(handle)
        return None if user is None else self._remember(user)

    async def find(self, handle: str) -> User:
        """The user with ``handle`` as a person typed it (normalized here): what looking
        someone up answers, the same for REST and WebSocket. A malformed handle is an
        ``invalid_handle`` error, one nobody has ``unknown_user`` (404)."""
        try:
            normalized = normalize_handle(handle)
        except ValueError as exc:
            raise SignalingError("invalid_handle", f"{handle!r}: {exc}") from exc
        user = await self.by_handle(normalized)
        if user is None:
            raise not_found("unknown_user", f"nobody has the handle {normalized}")
        return user

    async def devices(self, user_id: str) -> list[Device]:
        """The user's devices that are not revoked."""
        cached = self._devices.get(user_id)
        if cached is not None:
            self._devices.move_to_end(user_id)
            return cached
        devices = await self.store.list_devices(user_id)
        self._devices[user_id] = devices
        while len(self._devices) > self.max_entries:
            self._devices.popitem(last=False)
        return devices

    async def devices_changed(self, user_id: str) -> None:
        """Call after changing a user's devices in the store."""
        self._devices.pop(user_id, None)
        await self.bus.publish(CHANNEL, user_id.encode())
