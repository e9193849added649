"""The sandbox page: a Slack-like channel in the browser, driving the Slack emulator in-process.

    GET  /                 the page (static/index.html, sandbox.js, sandbox.css)
    GET  /api/info         mode (demo | real), notes for the banner, workspace, users, channels
    GET  /api/state        ?channel=&thread=&user=&home=  channel history, the open thread (messages
                           with their live stream: text, tool tasks, state), the thread's status,
                           the user's ephemerals and open modals; with `home=1` also the App Home
                           the app last published for the user (null before it has)
    POST /api/post         {channel, text, user, thread_ts?}  a user's message (`@name` becomes a
                           mention) or a slash command (`/support ...`)
    POST /api/click        {channel, ts, action_id, value?, user}  a button on a message
    POST /api/react        {channel, ts, name, user}  a user's reaction (❌ stops the agent)
    POST /api/view         {view_id, user, values?, cancel?}  submit or close a modal
    POST /api/home         {user}  open the app's Home tab (`app_home_opened`; the app publishes it)
    POST /api/view/action  {view_id, user, action_id, block_id?, selected_option?, selected_conversation?}
                           use an element of a view (App Home or modal): a button, a select menu

Every write goes through the emulator exactly as Slack would deliver it (signed events and
interactivity payloads to the app), so the page exercises the real bot.
"""

from __future__ import annotations

import copy
import json
import re
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

if TYPE_CHECKING:
    from app.sandbox.page.local import SandboxInfo
    from app.sandbox.slack.api import SlackEmulator

STATIC = Path(__file__).with_name("static")
MAX_TEXT = 4000
SLASH = re.compile(r"^(/[a-z][a-z0-9_-]*)(?:\s+(.*))?$", re.S)
AT_NAME = re.compile(r"(?<![<\w])@([a-z0-9][a-z0-9._-]*)", re.I)


class WebUi:
    """The page's API over one emulated workspace."""

    def __init__(self, emu: SlackEmulator, info: SandboxInfo) -> None:
        self.emu = emu
        self.state = emu.state
        self.info = info
        self._closed_views: set[str] = set()
        self._lock = threading.Lock()

    # -- reads ------------------------------------------------------------------------------

    def workspace(self) -> dict[str, Any]:
        st = self.state
        with st.lock:
            users = [
                {"id": u.id, "name": u.name, "real_name": u.real_name or u.name, "is_bot": u.is_bot,
                 "staff": u.id in self.info.staff}
                for u in st.users.values() if not u.deleted
            ]
            channels = [
                {"id": c.id, "name": c.name, "bot_member": st.bot_user_id in c.members, "archived": c.is_archived}
                for c in st.channels.values() if not c.is_im
            ]
            return {
                "team": {"id": st.team_id, "name": st.team_name},
                "bot": {"id": st.bot_user_id, "name": st.bot_name},
                "users": users,
                "channels": channels,
                **self.info.to_dict(),
            }

    def snapshot(self, channel: str, thread_ts: str | None, user: str, home: bool = False) -> dict[str, Any]:
        st = self.state
        messages = st.history(channel)
        thread = None
        if thread_ts:
            thread = {
                "ts": thread_ts,
                "messages": st.thread(channel, thread_ts),
                "status": st.status(channel, thread_ts),
            }
        ephemerals = [
            e for e in st.snapshot_list("ephemerals") if e.get("channel") == channel and e.get("user") == user
        ]
        with st.lock:
            modals = [
                {k: v[k] for k in ("id", "hash", "title", "submit", "close", "blocks") if k in v}
                for v in st.views.values()
                if v.get("type") == "modal" and v.get("user_id") == user
                and v["id"] not in self._closed_views
            ]
        snap: dict[str, Any] = {"channel": channel, "messages": messages, "thread": thread, "ephemerals": ephemerals,
                "modals": modals}
        if home:
            snap["home"] = self.home(user)
        return snap

    def home(self, user: str) -> dict[str, Any] | None:
        """The App Home the app last published for `user` (views.publish), if any."""
        with self.state.lock:
            view = next((v for v in self.state.views.values()
                         if v.get("type") == "home" and v.get("user_id") == user), None)
            if view is None:
                return None
            keys = ("id", "hash", "user_id", "blocks")
            return {k: copy.deepcopy(view[k]) for k in keys if k in view}

    # -- writes -----------------------------------------------------------------------------

    def _mentions(self, text: str) -> str:
        """`@support-agent` / `@alice` typed in the composer become Slack mentions."""
        with self.state.lock:
            by_name = {u.name.lower(): u.id for u in self.state.users.values()}

        def swap(m: re.Match[str]) -> str:
            uid = by_name.get(m.group(1).lower())
            return f"<@{uid}>" if uid else m.group(0)

        return AT_NAME.sub(swap, text)

    async def post(self, channel: str, text: str, user: str, thread_ts: str | None) -> dict[str, Any]:
        text = text.strip()
        if not text:
            raise ValueError("empty message")
        if len(text) > MAX_TEXT:
            raise ValueError(f"message longer than {MAX_TEXT} characters")
        command = SLASH.match(text)
        if command and not thread_ts:
            ch = self.state.find_channel(channel)
            who = self.state.users.get(user)
            delivery = await self.emu.send_command(
                command.group(1), (command.group(2) or "").strip(), user=user,
                user_name=who.name if who else user, channel=channel, channel_name=ch.name if ch else channel,
            )
            shown = self._immediate_response(delivery.body, channel, user) if delivery.status == 200 else None
            return {"command": command.group(1), "status": delivery.status, "response": shown}
        ts = await self.emu.user_posts(channel, self._mentions(text), user=user, thread_ts=thread_ts,
                                       mention_bot=False)
        return {"ts": ts}

    def _immediate_response(self, body: str, channel: str, user: str) -> dict[str, Any] | None:
        """Show a slash command's immediate response (the JSON body of its 200) as Slack does:
        Slack docs, "Responding to slash commands": a message payload in the acknowledgement
        is shown like a `response_url` post, ephemeral unless `response_type` is `in_channel`."""
        try:
            payload = json.loads(body) if body.strip() else None
        except ValueError:
            payload = {"text": body}  # a plain-text body is shown as the message text
        if not isinstance(payload, dict) or not (payload.get("text") or payload.get("blocks")):
            return None
        from app.sandbox.slack.control import _apply_response

        with self.state.lock:
            _apply_response(self.emu, {"channel": channel, "user": user}, payload)
        return {"text": payload.get("text", ""), "response_type": payload.get("response_type", "ephemeral")}

    async def click(self, channel: str, ts: str, action_id: str, user: str, value: str | None) -> dict[str, Any]:
        delivery = await self.emu.click(channel, ts, action_id, user=user, value=value)
        return {"status": delivery.status}

    async def react(self, channel: str, ts: str, name: str, user: str) -> dict[str, Any]:
        st = self.state
        with st.lock:
            msg = st.messages.get(channel, {}).get(ts)
            if msg is None:
                raise KeyError(f"no message {channel}/{ts}")
            reactions = msg.setdefault("reactions", [])
            entry = next((r for r in reactions if r["name"] == name), None)
            if entry is None:
                entry = {"name": name, "users": [], "count": 0}
                reactions.append(entry)
            if user in entry["users"]:
                return {"already": True}
            entry["users"].append(user)
            entry["count"] = len(entry["users"])
            event = {
                "type": "reaction_added", "user": user, "reaction": name, "item_user": msg.get("user"),
                "item": {"type": "message", "channel": channel, "ts": ts}, "event_ts": st.new_ts(),
            }
        delivery = await self.emu.send_event(event)
        return {"status": delivery.status}

    async def open_home(self, user: str) -> dict[str, Any]:
        """The user opens the app's Home tab: Slack sends `app_home_opened`."""
        if user not in self.state.users:
            raise KeyError(f"no user {user}")
        delivery = await self.emu.send_event({
            "type": "app_home_opened", "user": user, "channel": f"D{user}", "tab": "home",
            "event_ts": self.state.new_ts(),
        })
        return {"status": delivery.status}

    async def act_on_view(
        self, view_id: str, user: str, action_id: str, *, block_id: str | None = None,
        selected_option: str | None = None, selected_conversation: str | None = None,
    ) -> dict[str, Any]:
        """A button or select menu used on a view; `block_id` picks one of several elements that
        share an action id (every ticket's Trace button on the Home)."""
        delivery = await self.emu.act_on_view(
            view_id, action_id, user, block_id=block_id, selected_option=selected_option,
            selected_conversation=selected_conversation,
        )
        return {"status": delivery.status}

    async def view(self, view_id: str, user: str, values: dict[str, Any] | None, cancel: bool) -> dict[str, Any]:
        with self.state.lock:
            view = copy.deepcopy(self.state.views.get(view_id))
        if view is None:
            raise KeyError(f"no view {view_id}")
        with self._lock:
            self._closed_views.add(view_id)
        if cancel:
            return {"closed": True}
        who = self.state.users.get(user)
        delivery = await self.emu.events.send_view_submission(
            user=user, view=view, values=values or {}, user_name=who.name if who else ""
        )
        body: dict[str, Any] = {}
        if delivery.body.strip().startswith("{"):
            body = json.loads(delivery.body)
        if body.get("response_action") == "errors":
            with self._lock:
                self._closed_views.discard(view_id)
            return {"errors": body.get("errors") or {}}
        return {"status": delivery.status}


def build_web_ui(emu: SlackEmulator, info: SandboxInfo) -> Starlette:
    ui = WebUi(emu, info)

    def info_channel() -> str:
        return ui.info.channel

    def bad(message: str, status: int = 400) -> JSONResponse:
        return JSONResponse({"ok": False, "error": message}, status_code=status)

    async def body_of(request: Request) -> dict[str, Any]:
        try:
            data = json.loads(await request.body() or b"{}")
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    async def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    async def workspace(request: Request) -> Response:
        return JSONResponse({"ok": True, **ui.workspace()})

    async def state(request: Request) -> Response:
        q = request.query_params
        channel = q.get("channel") or info_channel()
        snap = ui.snapshot(channel, q.get("thread") or None, q.get("user") or "U0001", home=q.get("home") == "1")
        return JSONResponse({"ok": True, **snap})

    async def post(request: Request) -> Response:
        d = await body_of(request)
        try:
            result = await ui.post(str(d.get("channel") or info_channel()), str(d.get("text") or ""),
                                   str(d.get("user") or "U0001"), d.get("thread_ts") or None)
        except ValueError as exc:
            return bad(str(exc))
        except KeyError as exc:
            return bad(str(exc), 404)
        return JSONResponse({"ok": True, **result})

    async def click(request: Request) -> Response:
        d = await body_of(request)
        if not d.get("ts") or not d.get("action_id"):
            return bad("ts and action_id are required")
        try:
            result = await ui.click(str(d.get("channel") or info_channel()), str(d["ts"]), str(d["action_id"]),
                                    str(d.get("user") or "U0001"), d.get("value"))
        except KeyError as exc:
            return bad(str(exc), 404)
        return JSONResponse({"ok": True, **result})

    async def react(request: Request) -> Response:
        d = await body_of(request)
        if not d.get("ts") or not d.get("name"):
            return bad("ts and name are required")
        try:
            result = await ui.react(str(d.get("channel") or info_channel()), str(d["ts"]), str(d["name"]),
                                    str(d.get("user") or "U0001"))
        except KeyError as exc:
            return bad(str(exc), 404)
        return JSONResponse({"ok": True, **result})

    async def view(request: Request) -> Response:
        d = await body_of(request)
        try:
            result = await ui.view(str(d.get("view_id") or ""), str(d.get("user") or "U0001"),
                                   d.get("values"), bool(d.get("cancel")))
        except KeyError as exc:
            return bad(str(exc), 404)
        return JSONResponse({"ok": True, **result})

    async def home(request: Request) -> Response:
        d = await body_of(request)
        try:
            result = await ui.open_home(str(d.get("user") or "U0001"))
        except KeyError as exc:
            return bad(str(exc), 404)
        return JSONResponse({"ok": True, **result})

    async def view_action(request: Request) -> Response:
        d = await body_of(request)
        if not d.get("view_id") or not d.get("action_id"):
            return bad("view_id and action_id are required")

        def opt(key: str) -> str | None:
            return str(d[key]) if d.get(key) else None

        try:
            result = await ui.act_on_view(
                str(d["view_id"]), str(d.get("user") or "U0001"), str(d["action_id"]), block_id=opt("block_id"),
                selected_option=opt("selected_option"), selected_conversation=opt("selected_conversation"),
            )
        except KeyError as exc:
            return bad(str(exc), 404)
        return JSONResponse({"ok": True, **result})

    routes = [
        Route("/", index),
        Route("/api/info", workspace),
        Route("/api/state", state),
        Route("/api/post", post, methods=["POST"]),
        Route("/api/click", click, methods=["POST"]),
        Route("/api/react", react, methods=["POST"]),
        Route("/api/view", view, methods=["POST"]),
        Route("/api/home", home, methods=["POST"]),
        Route("/api/view/action", view_action, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    return Starlette(routes=routes)
