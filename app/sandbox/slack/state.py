"""In-memory workspace for the Slack emulator: users, channels, messages, streams, call log.

Everything is guarded by one re-entrant lock (`state.lock`): the emulator's server mutates it on
its own thread while tests read it from theirs. Read helpers return deep copies.
"""

from __future__ import annotations

import copy
import itertools
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from app.sandbox.slack.ratelimit import RateLimitConfig, RateLimiter

DEFAULT_STREAM_LIFETIME = 300.0


@dataclass
class User:
    id: str
    name: str
    real_name: str = ""
    is_bot: bool = False
    bot_id: str | None = None
    email: str | None = None
    deleted: bool = False
    tz: str = "UTC"
    # A Slack Connect member's own organisation: users.info gives their home `team_id`, not ours
    # (Slack's user object; the app's DM check reads it, app/slack/channels.py).
    home_team: str | None = None

    def to_api(self, team_id: str) -> dict[str, Any]:
        team_id = self.home_team or team_id
        real = self.real_name or self.name
        profile: dict[str, Any] = {"display_name": self.name, "real_name": real, "team": team_id}
        if self.email:
            profile["email"] = self.email
        if self.bot_id:
            profile["bot_id"] = self.bot_id
        return {
            "id": self.id,
            "team_id": team_id,
            "name": self.name,
            "real_name": real,
            "deleted": self.deleted,
            "is_bot": self.is_bot,
            "is_app_user": False,
            "is_admin": False,
            "is_owner": False,
            "tz": self.tz,
            "profile": profile,
        }


@dataclass
class Channel:
    id: str
    name: str
    members: set[str] = field(default_factory=set)
    is_archived: bool = False
    is_private: bool = False
    is_im: bool = False
    is_ext_shared: bool = False
    im_user: str | None = None
    created: int = field(default_factory=lambda: int(time.time()))
    creator: str = ""

    @property
    def channel_type(self) -> str:
        if self.is_im:
            return "im"
        return "group" if self.is_private else "channel"

    def to_api(self, bot_user_id: str, team_id: str) -> dict[str, Any]:
        if self.is_im:
            return {
                "id": self.id,
                "created": self.created,
                "is_im": True,
                "is_org_shared": False,
                "user": self.im_user,
                "is_archived": self.is_archived,
                "context_team_id": team_id,
            }
        return {
            "id": self.id,
            "name": self.name,
            "name_normalized": self.name,
            "is_channel": not self.is_private,
            "is_group": self.is_private,
            "is_im": False,
            "is_mpim": False,
            "is_private": self.is_private,
            "is_archived": self.is_archived,
            "is_general": self.name == "general",
            "is_shared": self.is_ext_shared,
            "is_ext_shared": self.is_ext_shared,
            "is_org_shared": False,
            "is_member": bot_user_id in self.members,
            "created": self.created,
            "creator": self.creator,
            "context_team_id": team_id,
            "num_members": len(self.members),
        }


@dataclass
class StreamState:
    channel: str
    ts: str
    thread_ts: str
    started_at: float  # monotonic
    recipient_user_id: str | None = None
    recipient_team_id: str | None = None
    task_display_mode: str = "timeline"
    text: str = ""
    chunks: list[dict[str, Any]] = field(default_factory=list)
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)
    plan_title: str | None = None
    blocks: list[dict[str, Any]] = field(default_factory=list)
    metadata: dict[str, Any] | None = None
    appends: int = 0
    stopped: bool = False

    def status(self, lifetime: float) -> str:
        if self.stopped:
            return "stopped"
        if time.monotonic() - self.started_at > lifetime:
            return "expired"
        return "streaming"

    def snapshot(self, lifetime: float) -> dict[str, Any]:
        data = copy.deepcopy(asdict(self))
        data.pop("started_at")
        data["state"] = self.status(lifetime)
        data["age"] = time.monotonic() - self.started_at
        return data


@dataclass
class CallRecord:
    method: str
    params: dict[str, Any]
    response: dict[str, Any]
    status: int
    time: float
    http_verb: str = "POST"
    retry_after: int | None = None

    @property
    def ok(self) -> bool:
        return bool(self.response.get("ok"))

    @property
    def error(self) -> str | None:
        return self.response.get("error")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Fault:
    """A forced answer for the next `count` calls of a method."""

    error: str
    status: int = 200
    retry_after: int | None = None
    count: int = 1


class SlackState:
    """One workspace. Mutate only while holding `lock`."""

    def __init__(
        self,
        *,
        team_id: str = "T0001",
        team_name: str = "Emulated Workspace",
        bot_token: str = "xoxb-test",
        bot_user_id: str = "UBOT",
        bot_id: str = "B0001",
        app_id: str = "A0001",
        bot_name: str = "support-agent",
        rate_limits: RateLimitConfig | None = None,
        stream_lifetime: float = DEFAULT_STREAM_LIFETIME,
        seed: bool = True,
    ) -> None:
        self.lock = threading.RLock()
        self.team_id = team_id
        self.team_name = team_name
        self.domain = "emulated"
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.app_id = app_id
        self.bot_name = bot_name
        self.tokens: dict[str, str] = {bot_token: bot_user_id}
        self.limiter = RateLimiter(rate_limits)
        self.stream_lifetime = stream_lifetime
        self.users: dict[str, User] = {}
        self.channels: dict[str, Channel] = {}
        self.usergroups: dict[str, dict[str, Any]] = {}
        self._ids = itertools.count(1)
        self.add_user(bot_user_id, bot_name, is_bot=True, bot_id=bot_id)
        self._clear_activity()
        if seed:
            self.seed_default()

    # ---- setup -------------------------------------------------------------------------

    def seed_default(self) -> None:
        """U0001 alice, U0002 bob; #support (C0001, bot in), #general (C0002, bot not in),
        #old-support (C0003, archived, bot in); usergroup S0001 @support-team = [alice]."""
        self.add_user("U0001", "alice", real_name="Alice Example", email="alice@example.com")
        self.add_user("U0002", "bob", real_name="Bob Example", email="bob@example.com")
        self.add_channel("C0001", "support", members=["U0001", "U0002"], bot_member=True)
        self.add_channel("C0002", "general", members=["U0001", "U0002"], bot_member=False)
        self.add_channel("C0003", "old-support", members=["U0001"], archived=True)
        self.add_usergroup("S0001", "support-team", ["U0001"])

    def add_user(
        self,
        user_id: str,
        name: str,
        *,
        real_name: str = "",
        is_bot: bool = False,
        bot_id: str | None = None,
        email: str | None = None,
        token: str | None = None,
        home_team: str | None = None,
    ) -> User:
        with self.lock:
            user = User(user_id, name, real_name, is_bot, bot_id, email, home_team=home_team)
            self.users[user_id] = user
            if token:
                self.tokens[token] = user_id
            return user

    def add_channel(
        self,
        channel_id: str,
        name: str,
        *,
        members: list[str] | tuple[str, ...] = (),
        bot_member: bool = True,
        archived: bool = False,
        private: bool = False,
        ext_shared: bool = False,
        im_user: str | None = None,
    ) -> Channel:
        with self.lock:
            mem = set(members)
            if bot_member:
                mem.add(self.bot_user_id)
            is_im = im_user is not None
            if is_im:
                mem |= {im_user or "", self.bot_user_id}
            ch = Channel(
                channel_id, name, mem, archived, private, is_im, ext_shared, im_user,
                creator=next(iter(sorted(members)), ""),
            )
            self.channels[channel_id] = ch
            self.messages.setdefault(channel_id, {})
            return ch

    def add_usergroup(self, group_id: str, handle: str, users: list[str]) -> None:
        with self.lock:
            self.usergroups[group_id] = {"id": group_id, "handle": handle, "users": list(users)}

    def archive(self, channel_id: str, archived: bool = True) -> None:
        with self.lock:
            self.channels[channel_id].is_archived = archived

    def set_bot_member(self, channel_id: str, member: bool = True) -> None:
        with self.lock:
            ch = self.channels[channel_id]
            if member:
                ch.members.add(self.bot_user_id)
            else:
                ch.members.discard(self.bot_user_id)

    def _clear_activity(self) -> None:
        self.messages: dict[str, dict[str, dict[str, Any]]] = {c: {} for c in self.channels}
        self.streams: dict[tuple[str, str], StreamState] = {}
        self.statuses: dict[tuple[str, str], dict[str, Any]] = {}
        self.status_log: list[dict[str, Any]] = []
        self.ephemerals: list[dict[str, Any]] = []
        self.views: dict[str, dict[str, Any]] = {}
        self.responses: list[dict[str, Any]] = []
        self.response_urls: dict[str, dict[str, Any]] = {}
        self.triggers: dict[str, dict[str, Any]] = {}
        self.deliveries: list[dict[str, Any]] = []
        self.call_log: list[CallRecord] = []
        self.ratelimited_by_method: Counter[str] = Counter()
        self.faults: dict[str, list[Fault]] = {}
        # (method, error) the emulator answered that the method's published catalog lacks.
        self.undocumented: list[tuple[str, str]] = []
        self._last_ts = 0.0

    def reset(self) -> None:
        """Forget messages, streams, calls, deliveries, faults and rate-limit buckets.
        Users, channels and configuration stay."""
        with self.lock:
            self._clear_activity()
            self.limiter.reset()

    # ---- ids ---------------------------------------------------------------------------

    def new_ts(self) -> str:
        with self.lock:
            now = max(time.time(), self._last_ts + 0.000001)
            self._last_ts = now
            return f"{now:.6f}"

    def new_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):08d}"

    # ---- lookups -----------------------------------------------------------------------

    def find_channel(self, ref: str | None) -> Channel | None:
        if not ref:
            return None
        ch = self.channels.get(ref)
        if ch is not None:
            return ch
        name = ref.lstrip("#")
        return next((c for c in self.channels.values() if c.name == name and not c.is_im), None)

    def bot_message_fields(self) -> dict[str, Any]:
        return {
            "user": self.bot_user_id,
            "bot_id": self.bot_id,
            "app_id": self.app_id,
            "team": self.team_id,
            "bot_profile": {
                "id": self.bot_id,
                "app_id": self.app_id,
                "name": self.bot_name,
                "deleted": False,
                "team_id": self.team_id,
            },
        }

    def store_message(self, channel: str, msg: dict[str, Any]) -> dict[str, Any]:
        """Store a message (needs `ts`), keeping the parent's reply bookkeeping."""
        with self.lock:
            msgs = self.messages.setdefault(channel, {})
            msgs[msg["ts"]] = msg
            thread_ts = msg.get("thread_ts")
            if thread_ts and thread_ts != msg["ts"]:
                parent = msgs.get(thread_ts)
                if parent is not None:
                    msg.setdefault("parent_user_id", parent.get("user"))
                    parent["thread_ts"] = thread_ts
                    parent["reply_count"] = parent.get("reply_count", 0) + 1
                    users = parent.setdefault("reply_users", [])
                    if msg.get("user") and msg["user"] not in users:
                        users.append(msg["user"])
                    parent["reply_users_count"] = len(users)
                    parent["latest_reply"] = msg["ts"]
                # A reply from the bot clears the thread's assistant status, as in Slack.
                if msg.get("user") == self.bot_user_id:
                    self.statuses.pop((channel, thread_ts), None)
            return msg

    def record_call(self, record: CallRecord) -> None:
        with self.lock:
            self.call_log.append(record)
            if record.status == 429:
                self.ratelimited_by_method[record.method] += 1

    def take_fault(self, method: str) -> Fault | None:
        with self.lock:
            queue = self.faults.get(method)
            if not queue:
                return None
            fault = queue[0]
            fault.count -= 1
            if fault.count <= 0:
                queue.pop(0)
            return Fault(fault.error, fault.status, fault.retry_after, 1)

    # ---- public test helpers (copies) --------------------------------------------------

    def fail_next(
        self, method: str, error: str, *, status: int = 200, retry_after: int | None = None,
        count: int = 1,
    ) -> None:
        """Answer the next `count` calls of `method` with `error` (status 429 sets Retry-After)."""
        with self.lock:
            self.faults.setdefault(method, []).append(Fault(error, status, retry_after, count))

    def pending_failures(self, method: str) -> int:
        """How many calls of `method` the queued faults will still refuse."""
        with self.lock:
            return sum(f.count for f in self.faults.get(method, []))

    def inject(self, method: str, error: str, *, count: int = 1) -> None:
        """Answer the next `count` calls of `method` with one of its documented errors.

        Only errors in the method's published catalog (`slack_contract`) are accepted, so an
        injected failure is always one the real Slack can give."""
        # Imported here: slack_contract -> slack_content -> this module.
        from app.sandbox.slack.contract import GENERIC_ERRORS, documented_errors

        if error not in documented_errors(method) | GENERIC_ERRORS:
            raise ValueError(f"{error!r} is not a documented error of {method}")
        self.fail_next(method, error, count=count)

    def calls(self, method: str | None = None) -> list[CallRecord]:
        with self.lock:
            return [copy.deepcopy(c) for c in self.call_log if method is None or c.method == method]

    def ok_calls(self, method: str | None = None) -> list[CallRecord]:
        return [c for c in self.calls(method) if c.ok]

    @property
    def ratelimited_count(self) -> int:
        with self.lock:
            return sum(self.ratelimited_by_method.values())

    def message(self, channel: str, ts: str) -> dict[str, Any] | None:
        with self.lock:
            msg = self.messages.get(channel, {}).get(ts)
            return self._with_stream(channel, msg) if msg else None

    def _with_stream(self, channel: str, msg: dict[str, Any]) -> dict[str, Any]:
        out = copy.deepcopy(msg)
        stream = self.streams.get((channel, msg["ts"]))
        if stream is not None:
            out["stream"] = stream.snapshot(self.stream_lifetime)
        return out

    def thread(self, channel: str, thread_ts: str) -> list[dict[str, Any]]:
        """The root and its replies, oldest first. Streamed messages carry their accumulated
        text in `text` and an emulator-only `stream` snapshot (tasks, chunks, state)."""
        with self.lock:
            msgs = self.messages.get(channel, {})
            picked = [
                m for ts, m in msgs.items() if ts == thread_ts or m.get("thread_ts") == thread_ts
            ]
            picked.sort(key=lambda m: float(m["ts"]))
            return [self._with_stream(channel, m) for m in picked]

    def history(self, channel: str) -> list[dict[str, Any]]:
        """Top-level messages (and broadcasts), oldest first."""
        with self.lock:
            msgs = [
                m for m in self.messages.get(channel, {}).values()
                if m.get("thread_ts") in (None, m["ts"]) or m.get("subtype") == "thread_broadcast"
            ]
            msgs.sort(key=lambda m: float(m["ts"]))
            return [self._with_stream(channel, m) for m in msgs]

    def stream(self, channel: str, ts: str) -> dict[str, Any] | None:
        with self.lock:
            s = self.streams.get((channel, ts))
            return s.snapshot(self.stream_lifetime) if s else None

    def all_streams(self) -> list[dict[str, Any]]:
        with self.lock:
            return [s.snapshot(self.stream_lifetime) for s in self.streams.values()]

    def status(self, channel: str, thread_ts: str) -> dict[str, Any] | None:
        with self.lock:
            st = self.statuses.get((channel, thread_ts))
            return copy.deepcopy(st) if st else None

    def snapshot_list(self, name: str) -> list[dict[str, Any]]:
        """Copy of `ephemerals`, `responses`, `deliveries` or `status_log`."""
        with self.lock:
            return copy.deepcopy(getattr(self, name))

    def summary(self) -> dict[str, Any]:
        with self.lock:
            return {
                "team_id": self.team_id,
                "bot_user_id": self.bot_user_id,
                "bot_id": self.bot_id,
                "app_id": self.app_id,
                "users": [u.to_api(self.team_id) for u in self.users.values()],
                "channels": [
                    c.to_api(self.bot_user_id, self.team_id) | {"members": sorted(c.members)}
                    for c in self.channels.values()
                ],
                "calls": len(self.call_log),
                "ratelimited": dict(self.ratelimited_by_method),
                "stream_lifetime": self.stream_lifetime,
                "rate_limits": self.limiter.config.to_dict(),
            }
