"""The durable state of signaling behind one small interface.

Two implementations share it (``visavis.store.sql.SqlStore`` on SQLite or PostgreSQL) and
one contract test suite (``tests/store/test_contract.py``) runs against both backends.
Records are frozen dataclasses; every method that decides a race (first answer wins, a
ring times out while someone answers) is a compare-and-set that returns whether it won,
so several signaling nodes on one PostgreSQL agree without locks of their own.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Literal

DeviceKind = Literal["phone", "tablet", "laptop", "desktop", "tv", "browser", "bot"]
MediaKind = Literal["audio", "video"]
CallState = Literal["ringing", "active", "ended"]
Topology = Literal["p2p", "sfu"]
ParticipantRole = Literal["caller", "callee"]
ParticipantState = Literal["ringing", "joined", "declined", "missed", "left", "cancelled"]

# Participant fields update_participant may change.
PARTICIPANT_FIELDS = frozenset({"state", "device_id", "ring_deadline", "joined_at", "left_at"})
# Call fields update_call may change.
CALL_FIELDS = frozenset({"state", "topology", "room_id", "answered_at", "ended_at", "end_reason"})
GuestState = Literal["waiting", "admitted", "refused", "left"]
# Guest fields update_guest may change.
GUEST_FIELDS = frozenset({"state", "call_id"})
# A guest in these states was let into its call (history lists them).
JOINED_GUEST_STATES: tuple[GuestState, ...] = ("admitted", "left")


class StoreError(Exception):
    """Base of the store's errors."""


class HandleTaken(StoreError):
    """A user with this handle already exists."""


@dataclass(frozen=True, slots=True)
class User:
    id: str
    handle: str
    display_name: str
    password_hash: str
    created_at: float


@dataclass(frozen=True, slots=True)
class Device:
    id: str
    user_id: str
    name: str
    kind: DeviceKind
    token_hash: str
    created_at: float
    revoked_at: float | None = None
    push_subscription: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Call:
    id: str
    initiator_user_id: str
    initiator_device_id: str
    media: MediaKind
    state: CallState
    topology: Topology
    created_at: float
    room_id: str | None = None
    answered_at: float | None = None
    ended_at: float | None = None
    end_reason: str | None = None


@dataclass(frozen=True, slots=True)
class Participant:
    call_id: str
    user_id: str
    role: ParticipantRole
    state: ParticipantState
    invited_at: float
    invited_by: str
    device_id: str | None = None
    ring_deadline: float | None = None
    joined_at: float | None = None
    left_at: float | None = None


@dataclass(frozen=True, slots=True)
class CallLink:
    """A link to a call that people without an account open (FaceTime's links): its
    token is secret (only its hash is stored); the call starts when its owner opens it."""

    id: str
    user_id: str
    token_hash: str
    media: MediaKind
    created_at: float
    expires_at: float
    revoked_at: float | None = None
    call_id: str | None = None


@dataclass(frozen=True, slots=True)
class Guest:
    """Someone who opened a call link: waits in the lobby until a participant admits them."""

    id: str
    link_id: str
    token_hash: str
    display_name: str
    state: GuestState
    created_at: float
    call_id: str | None = None


class Store(ABC):
    """Accounts, devices, calls and their participants."""

    #: Exceptions meaning "no database connection came free in time" (a pool exhausted
    #: by load): callers refuse the request as overloaded instead of failing it.
    busy_errors: tuple[type[Exception], ...] = ()

    # -- lifecycle ---------------------------------------------------------------
    @abstractmethod
    async def open(self) -> None:
        """Connect and bring the schema to the latest migration."""

    @abstractmethod
    async def close(self) -> None: ...

    @abstractmethod
    async def ping(self) -> bool:
        """True when the database answers (for /readyz)."""

    # -- users -------------------------------------------------------------------
    @abstractmethod
    async def create_user(
        self, *, user_id: str, handle: str, display_name: str, password_hash: str, now: float
    ) -> User:
        """Create a user; raise :class:`HandleTaken` if the handle (case-insensitive) exists."""

    @abstractmethod
    async def get_user(self, user_id: str) -> User | None: ...

    @abstractmethod
    async def get_user_by_handle(self, handle: str) -> User | None:
        """Look a user up by handle, case-insensitively."""

    @abstractmethod
    async def get_users(self, user_ids: Collection[str]) -> dict[str, User]: ...

    # -- devices -----------------------------------------------------------------
    @abstractmethod
    async def create_device(
        self,
        *,
        device_id: str,
        user_id: str,
        name: str,
        kind: DeviceKind,
        token_hash: str,
        now: float,
    ) -> Device: ...

    @abstractmethod
    async def get_device(self, device_id: str) -> Device | None: ...

    @abstractmethod
    async def get_device_by_token_hash(self, token_hash: str) -> Device | None:
        """The device whose token hashes to this value, revoked or not."""

    @abstractmethod
    async def list_devices(self, user_id: str, *, include_revoked: bool = False) -> list[Device]:
        """A user's devices, oldest first."""

    @abstractmethod
    async def revoke_device(self, device_id: str, *, now: float) -> bool:
        """Mark a device revoked; False if it was unknown or already revoked."""

    @abstractmethod
    async def set_push_subscription(
        self, device_id: str, subscription: dict[str, Any] | None
    ) -> None: ...

    @abstractmethod
    async def set_device_key(self, device_id: str, public_key: str, *, now: float) -> str:
        """Store a device's identity public key (end-to-end encryption) if it has none;
        return the key stored for it: a device's first key is its key for good."""

    @abstractmethod
    async def get_device_keys(self, device_ids: Collection[str]) -> dict[str, str]:
        """Identity public keys of these devices (devices without one are left out)."""

    # -- calls -------------------------------------------------------------------
    @abstractmethod
    async def create_call(self, call: Call, participants: Sequence[Participant]) -> None:
        """Insert a call with its first participants, atomically."""

    @abstractmethod
    async def get_call(self, call_id: str) -> Call | None: ...

    @abstractmethod
    async def update_call(
        self, call_id: str, *, only_if_state: Collection[CallState] | None = None, **changes: Any
    ) -> bool:
        """Change fields in :data:`CALL_FIELDS`; with ``only_if_state`` this is a
        compare-and-set: it changes nothing and returns False unless the call's state is
        one of them."""

    @abstractmethod
    async def add_participants(self, participants: Sequence[Participant]) -> None:
        """Insert participants; an existing (call_id, user_id) row is replaced."""

    @abstractmethod
    async def get_participants(self, call_id: str) -> list[Participant]:
        """A call's participants in invitation order."""

    @abstractmethod
    async def update_participant(
        self,
        call_id: str,
        user_id: str,
        *,
        only_if_state: Collection[ParticipantState] | None = None,
        **changes: Any,
    ) -> bool:
        """Change fields in :data:`PARTICIPANT_FIELDS`, compare-and-set like update_call."""

    @abstractmethod
    async def live_calls_for_user(self, user_id: str) -> list[Call]:
        """Calls not ended in which the user is ringing or joined."""

    @abstractmethod
    async def expired_rings(self, now: float, *, limit: int = 500) -> list[Participant]:
        """Ringing participants whose ring_deadline is at or before ``now``."""

    @abstractmethod
    async def call_history(
        self, user_id: str, *, limit: int = 50, before: float | None = None
    ) -> list[tuple[Call, list[Participant]]]:
        """Calls the user took part in, newest first (created_at < before when given)."""

    # -- call links and their guests ---------------------------------------------
    @abstractmethod
    async def create_link(self, link: CallLink) -> None: ...

    @abstractmethod
    async def get_link(self, link_id: str) -> CallLink | None: ...

    @abstractmethod
    async def get_link_by_token_hash(self, token_hash: str) -> CallLink | None: ...

    @abstractmethod
    async def list_links(self, user_id: str) -> list[CallLink]:
        """A user's links, revoked or not, newest first."""

    @abstractmethod
    async def revoke_link(self, link_id: str, *, now: float) -> bool:
        """Mark a link revoked; False if unknown or already revoked."""

    @abstractmethod
    async def set_link_call(self, link_id: str, call_id: str, *, previous: str | None) -> bool:
        """Compare-and-set the link's live call: only if it is still ``previous``."""

    @abstractmethod
    async def create_guest(self, guest: Guest) -> None: ...

    @abstractmethod
    async def get_guest(self, guest_id: str) -> Guest | None: ...

    @abstractmethod
    async def get_guest_by_token_hash(self, token_hash: str) -> Guest | None: ...

    @abstractmethod
    async def list_guests(self, link_id: str) -> list[Guest]:
        """A link's guests, oldest first."""

    @abstractmethod
    async def call_guests(self, call_ids: Collection[str]) -> dict[str, list[Guest]]:
        """The guests admitted into each of these calls (state admitted or left), oldest
        first: what call history shows beside the signed-in participants."""

    @abstractmethod
    async def update_guest(
        self, guest_id: str, *, only_if_state: Collection[GuestState] | None = None, **changes: Any
    ) -> bool:
        """Change fields in :data:`GUEST_FIELDS`, compare-and-set like update_call."""
