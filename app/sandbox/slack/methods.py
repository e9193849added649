"""Web API method handlers for the Slack emulator.

Each handler takes a `Ctx` (state, caller, params) and returns the success body, or raises
`ApiError(error)`, which the HTTP layer turns into `{"ok": false, "error": ...}` with HTTP 200.
Handlers run with `state.lock` held.
"""

from __future__ import annotations

import base64
import copy
import time
from collections.abc import Callable
from typing import Any

from app.sandbox.slack.content import (
    MARKDOWN_LIMIT,
    MAX_VIEW_BLOCKS,
    TRIGGER_LIFETIME,
    ApiError,
    Ctx,
    check_blocks,
    check_chunks,
    check_content,
    text_len,
)
from app.sandbox.slack.contract import documented_errors
from app.sandbox.slack.state import Channel, StreamState

# ---- channel and message helpers ------------------------------------------------------


def writable_channel(ctx: Ctx, ref: Any) -> Channel:
    st = ctx.state
    # Slack: channel_not_found / is_archived / not_in_channel are documented by chat.postMessage and
    # the stream methods (slack_methods.json). Where a caller's catalog lacks one (chat.update,
    # chat.delete, assistant.threads.*), api.py's undocumented-error guard fails the test instead.
    ch = st.find_channel(ref if isinstance(ref, str) else None)
    if ch is None or (ch.is_private and ctx.caller not in ch.members):
        raise ApiError("channel_not_found")
    if ch.is_archived:
        raise ApiError("is_archived")
    if ctx.caller not in ch.members:
        raise ApiError("not_in_channel")
    return ch


def readable_channel(ctx: Ctx, ref: Any) -> Channel:
    # Slack: conversations.history documents channel_not_found and not_in_channel; for methods whose
    # catalog lacks not_in_channel the undocumented-error guard (api.py) applies.
    ch = ctx.state.find_channel(ref if isinstance(ref, str) else None)
    if ch is None or ((ch.is_private or ch.is_im) and ctx.caller not in ch.members):
        raise ApiError("channel_not_found")
    if ctx.caller not in ch.members:
        raise ApiError("not_in_channel")
    return ch


def find_message(ctx: Ctx, channel: Channel, ts: Any) -> dict[str, Any]:
    msg = ctx.state.messages.get(channel.id, {}).get(str(ts or ""))
    if msg is None:  # Slack: message_not_found, documented by chat.update/delete/getPermalink/*Stream/reactions.*
        raise ApiError("message_not_found")
    return msg


def public_message(msg: dict[str, Any], include_metadata: bool = True) -> dict[str, Any]:
    out = copy.deepcopy(msg)
    if not include_metadata:
        out.pop("metadata", None)
    return out


def _page(items: list[dict[str, Any]], ctx: Ctx, default_limit: int) -> dict[str, Any]:
    limit = int(ctx.get("limit", default_limit) or default_limit)
    start = 0
    cursor = ctx.get("cursor")
    if cursor:
        try:
            start = int(base64.b64decode(str(cursor)).decode().split(":", 1)[1])
        except (ValueError, IndexError):
            # Slack: conversations.replies/history document invalid_cursor ("not valid or is no longer valid").
            raise ApiError("invalid_cursor") from None
    page = items[start:start + limit]
    more = start + limit < len(items)
    nxt = base64.b64encode(f"next_ts:{start + limit}".encode()).decode() if more else ""
    return {"messages": page, "has_more": more, "response_metadata": {"next_cursor": nxt}}


def _ts_filter(ctx: Ctx, msgs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    oldest, latest = ctx.get("oldest"), ctx.get("latest")
    inclusive = ctx.flag("inclusive")
    out = []
    for m in msgs:
        t = float(m["ts"])
        if oldest and (t < float(oldest) or (t == float(oldest) and not inclusive)):
            continue
        if latest and (t > float(latest) or (t == float(latest) and not inclusive)):
            continue
        out.append(m)
    return out


# ---- auth / chat ----------------------------------------------------------------------


def auth_test(ctx: Ctx) -> dict[str, Any]:
    st = ctx.state
    user = st.users.get(ctx.caller)
    body = {
        "url": f"https://{st.domain}.slack.com/",
        "team": st.team_name,
        "user": user.name if user else ctx.caller,
        "team_id": st.team_id,
        "user_id": ctx.caller,
        "is_enterprise_install": False,
    }
    if ctx.caller == st.bot_user_id:
        body["bot_id"] = st.bot_id
    return body


def chat_post_message(ctx: Ctx) -> dict[str, Any]:
    st = ctx.state
    ch = writable_channel(ctx, ctx.params.get("channel"))
    check_content(ctx)
    ts = st.new_ts()
    msg: dict[str, Any] = {"type": "message", "ts": ts, "text": ctx.get("text", "")}
    msg.update(st.bot_message_fields() if ctx.caller == st.bot_user_id else {"user": ctx.caller,
                                                                            "team": st.team_id})
    if ctx.params.get("markdown_text") is not None:
        msg["text"] = ctx.params["markdown_text"]
    for key in ("blocks", "attachments", "metadata", "username", "icon_emoji", "icon_url"):
        if ctx.params.get(key) is not None:
            msg[key] = ctx.params[key]
    thread_ts = ctx.get("thread_ts")
    if thread_ts:
        msg["thread_ts"] = str(thread_ts)
        if ctx.flag("reply_broadcast"):
            msg["subtype"] = "thread_broadcast"
    st.store_message(ch.id, msg)
    ctx.posted.append((ch.id, msg))
    return {"channel": ch.id, "ts": ts, "message": public_message(msg)}


def chat_update(ctx: Ctx) -> dict[str, Any]:
    ch = writable_channel(ctx, ctx.params.get("channel"))
    msg = find_message(ctx, ch, ctx.params.get("ts"))
    if msg.get("user") != ctx.caller:
        # Slack: chat.update documents cant_update_message ("does not have permission to update this message").
        raise ApiError("cant_update_message")
    stream = ctx.state.streams.get((ch.id, msg["ts"]))
    if stream is not None and stream.status(ctx.state.stream_lifetime) == "streaming":
        # chat.update's documented `streaming_state_conflict`: "The message is currently
        # streaming text and cannot be edited" (contracts/slack_methods.json). A stopped or
        # expired stream may be edited: that is how an expired stream is finished.
        raise ApiError("streaming_state_conflict")
    check_content(ctx)
    if ctx.params.get("markdown_text") is not None:
        msg["text"] = ctx.params["markdown_text"]
        msg.pop("blocks", None)
    if ctx.params.get("text") is not None:
        msg["text"] = ctx.params["text"]
    for key in ("blocks", "attachments", "metadata"):
        if ctx.params.get(key) is not None:
            msg[key] = ctx.params[key]
    msg["edited"] = {"user": ctx.caller, "ts": ctx.state.new_ts()}
    return {"channel": ch.id, "ts": msg["ts"], "text": msg.get("text", ""),
            "message": public_message(msg)}


def chat_delete(ctx: Ctx) -> dict[str, Any]:
    ch = writable_channel(ctx, ctx.params.get("channel"))
    msg = find_message(ctx, ch, ctx.params.get("ts"))
    if msg.get("user") != ctx.caller:
        # Slack: chat.delete documents cant_delete_message ("does not have permission to delete this message").
        raise ApiError("cant_delete_message")
    msgs = ctx.state.messages[ch.id]
    del msgs[msg["ts"]]
    parent = msgs.get(msg.get("thread_ts") or "")
    if parent is not None and parent is not msg and parent.get("reply_count"):
        parent["reply_count"] -= 1
    ctx.state.streams.pop((ch.id, msg["ts"]), None)
    return {"channel": ch.id, "ts": msg["ts"]}


def chat_post_ephemeral(ctx: Ctx) -> dict[str, Any]:
    st = ctx.state
    ch = writable_channel(ctx, ctx.params.get("channel"))
    user = ctx.require("user")
    # Slack: chat.postEphemeral documents user_not_in_channel ("Intended recipient is not in the
    # specified channel") and no user_not_found, so an unknown user is simply not in the channel.
    if user not in ch.members:
        raise ApiError("user_not_in_channel")
    check_content(ctx)
    ts = st.new_ts()
    st.ephemerals.append({
        "channel": ch.id, "user": user, "message_ts": ts, "thread_ts": ctx.get("thread_ts"),
        "text": ctx.get("text") or ctx.get("markdown_text", ""), "blocks": ctx.get("blocks"),
    })
    return {"message_ts": ts}


def chat_get_permalink(ctx: Ctx) -> dict[str, Any]:
    ch = readable_channel(ctx, ctx.params.get("channel"))
    msg = find_message(ctx, ch, ctx.params.get("message_ts"))
    link = f"https://{ctx.state.domain}.slack.com/archives/{ch.id}/p{msg['ts'].replace('.', '')}"
    if msg.get("thread_ts") and msg["thread_ts"] != msg["ts"]:
        link += f"?thread_ts={msg['thread_ts']}&cid={ch.id}"
    return {"channel": ch.id, "permalink": link}


# ---- streaming ------------------------------------------------------------------------


def _stream_payload(ctx: Ctx, method: str) -> tuple[str | None, list[dict[str, Any]]]:
    md = ctx.params.get("markdown_text")
    chunks = check_chunks(ctx.params["chunks"]) if ctx.params.get("chunks") is not None else []
    total = len(md or "") + sum(
        len(c.get("text", "")) for c in chunks if c["type"] == "markdown_text")
    if total > MARKDOWN_LIMIT:
        # The 12,000 limit is documented on markdown_text (contracts/slack_methods.json); the
        # stream methods document no error of their own for it, so Slack's generic one.
        raise ApiError("msg_too_long" if "msg_too_long" in documented_errors(method) else "invalid_arguments")
    return md, chunks


def _apply_stream(ctx: Ctx, stream: StreamState, md: str | None,
                  chunks: list[dict[str, Any]]) -> None:
    if md:
        stream.text += md
    for chunk in chunks:
        stream.chunks.append(copy.deepcopy(chunk))
        kind = chunk["type"]
        if kind == "markdown_text":
            stream.text += chunk["text"]
        elif kind == "task_update":
            task = stream.tasks.setdefault(chunk["id"], {"id": chunk["id"], "history": []})
            task["title"] = chunk["title"]
            task["status"] = chunk["status"]
            task["history"].append(chunk["status"])
            if chunk.get("details"):
                task["details"] = task.get("details", "") + str(chunk["details"])
            if chunk.get("output") is not None:
                task["output"] = chunk["output"]
            if chunk.get("sources") is not None:
                task["sources"] = chunk["sources"]
        elif kind == "plan_update":
            stream.plan_title = chunk["title"]
    msg = ctx.state.messages.get(stream.channel, {}).get(stream.ts)
    if msg is not None:
        msg["text"] = stream.text


def _live_stream(ctx: Ctx) -> tuple[Channel, StreamState]:
    ch = writable_channel(ctx, ctx.params.get("channel"))
    ts = str(ctx.require("ts"))
    stream = ctx.state.streams.get((ch.id, ts))
    # Slack: chat.appendStream/stopStream document message_not_in_streaming_state; a stream ends when
    # stopped or after its ~5 min lifetime (docs/reference contracts.md: node-slack-sdk#2702, vercel/chat#637).
    if stream is None:
        find_message(ctx, ch, ts)
        raise ApiError("message_not_in_streaming_state")
    if stream.status(ctx.state.stream_lifetime) != "streaming":
        raise ApiError("message_not_in_streaming_state")
    return ch, stream


def chat_start_stream(ctx: Ctx) -> dict[str, Any]:
    st = ctx.state
    ch = writable_channel(ctx, ctx.params.get("channel"))
    # SDK: slack_sdk web/async_client.py chat_startStream takes `thread_ts: str` (required there, not in
    # the API's required list); Slack: "Streamed messages should always be replies to a user request".
    thread_ts = str(ctx.require("thread_ts"))
    recipient_user, recipient_team = ctx.get("recipient_user_id"), ctx.get("recipient_team_id")
    # Slack: chat.startStream recipient_* "Required when streaming to channels"; documents
    # missing_recipient_user_id / missing_recipient_team_id / user_not_found.
    if not ch.is_im:
        if not recipient_user:
            raise ApiError("missing_recipient_user_id")
        if not recipient_team:
            raise ApiError("missing_recipient_team_id")
    if recipient_user and recipient_user not in st.users:
        raise ApiError("user_not_found")
    mode = ctx.get("task_display_mode", "timeline")
    if mode not in ("timeline", "plan"):  # Slack: chat.startStream task_display_mode enum [timeline, plan]
        raise ApiError("invalid_arguments")
    md, chunks = _stream_payload(ctx, "chat.startStream")
    ts = st.new_ts()
    # `streaming_state` marks a streamed message wherever Slack returns it: 'in_progress' |
    # 'completed' | 'errored' (slackapi/node-slack-sdk packages/types/src/events/message.ts,
    # BotMessageEvent). What an expired stream reports is not documented: it stays in_progress.
    msg = {"type": "message", "ts": ts, "text": "", "thread_ts": thread_ts,
           "streaming_state": "in_progress", **st.bot_message_fields()}
    st.store_message(ch.id, msg)
    stream = StreamState(
        ch.id, ts, thread_ts, time.monotonic(), recipient_user, recipient_team, mode)
    st.streams[(ch.id, ts)] = stream
    _apply_stream(ctx, stream, md, chunks)
    return {"channel": ch.id, "ts": ts}


def chat_append_stream(ctx: Ctx) -> dict[str, Any]:
    ch, stream = _live_stream(ctx)
    md, chunks = _stream_payload(ctx, "chat.appendStream")
    if not md and not chunks:  # Slack: chat.appendStream documents no_text ("No message text provided")
        raise ApiError("no_text")
    _apply_stream(ctx, stream, md, chunks)
    stream.appends += 1
    return {"channel": ch.id, "ts": stream.ts}


def chat_stop_stream(ctx: Ctx) -> dict[str, Any]:
    ch, stream = _live_stream(ctx)
    md, chunks = _stream_payload(ctx, "chat.stopStream")
    blocks = check_blocks(ctx.params["blocks"]) if ctx.params.get("blocks") is not None else []
    _apply_stream(ctx, stream, md, chunks)
    stream.blocks = copy.deepcopy(blocks)
    stream.metadata = ctx.params.get("metadata")
    stream.stopped = True
    msg = ctx.state.messages[ch.id][stream.ts]
    msg["streaming_state"] = "completed"
    if blocks:
        msg["blocks"] = copy.deepcopy(blocks)
    if stream.metadata is not None:
        msg["metadata"] = stream.metadata
    return {"channel": ch.id, "ts": stream.ts, "message": public_message(msg)}


# ---- assistant / reactions ------------------------------------------------------------


def set_status(ctx: Ctx) -> dict[str, Any]:
    st = ctx.state
    ch = writable_channel(ctx, ctx.params.get("channel_id"))
    thread_ts = str(ctx.require("thread_ts"))
    status = ctx.params.get("status")
    if status is None:  # Slack: setStatus lists `status` as required (generic invalid_arguments)
        raise ApiError("invalid_arguments")
    loading = ctx.params.get("loading_messages")
    # Slack: setStatus loading_messages is an array, "Maximum of 10 messages".
    if loading is not None and (not isinstance(loading, list) or len(loading) > 10):
        raise ApiError("invalid_arguments")
    entry = {"channel": ch.id, "thread_ts": thread_ts, "status": status,
             "loading_messages": loading, "time": time.time()}
    st.status_log.append(entry)
    if status:
        st.statuses[(ch.id, thread_ts)] = entry
    else:
        st.statuses.pop((ch.id, thread_ts), None)
    return {}


def assistant_ok(ctx: Ctx) -> dict[str, Any]:
    writable_channel(ctx, ctx.params.get("channel_id"))
    return {}


def _reaction_target(ctx: Ctx) -> tuple[dict[str, Any], str]:
    if not ctx.params.get("channel") or not ctx.params.get("timestamp"):
        # Slack: reactions.add/remove document no_item_specified and invalid_name.
        raise ApiError("no_item_specified")
    ch = readable_channel(ctx, ctx.params["channel"])
    msg = find_message(ctx, ch, ctx.params["timestamp"])
    name = str(ctx.get("name", "")).strip(":")
    if not name:
        raise ApiError("invalid_name")
    return msg, name


def reactions_add(ctx: Ctx) -> dict[str, Any]:
    msg, name = _reaction_target(ctx)
    reactions = msg.setdefault("reactions", [])
    r = next((r for r in reactions if r["name"] == name), None)
    if r is None:
        r = {"name": name, "users": [], "count": 0}
        reactions.append(r)
    if ctx.caller in r["users"]:  # Slack: reactions.add documents already_reacted
        raise ApiError("already_reacted")
    r["users"].append(ctx.caller)
    r["count"] = len(r["users"])
    return {}


def reactions_remove(ctx: Ctx) -> dict[str, Any]:
    msg, name = _reaction_target(ctx)
    reactions = msg.get("reactions", [])
    r = next((r for r in reactions if r["name"] == name), None)
    if r is None or ctx.caller not in r["users"]:  # Slack: reactions.remove documents no_reaction
        raise ApiError("no_reaction")
    r["users"].remove(ctx.caller)
    r["count"] = len(r["users"])
    if not r["users"]:
        reactions.remove(r)
    return {}


# ---- conversations / users ------------------------------------------------------------


def conversations_replies(ctx: Ctx) -> dict[str, Any]:
    ch = readable_channel(ctx, ctx.params.get("channel"))
    ts = str(ctx.require("ts", "thread_not_found"))
    msgs = ctx.state.messages.get(ch.id, {})
    if ts not in msgs:  # Slack: conversations.replies documents thread_not_found ("Value for `ts` ... invalid")
        raise ApiError("thread_not_found")
    root = msgs[ts]
    thread_ts = root.get("thread_ts") or ts
    picked = [m for t, m in msgs.items() if t == thread_ts or m.get("thread_ts") == thread_ts]
    picked.sort(key=lambda m: float(m["ts"]))
    meta = ctx.flag("include_all_metadata")
    picked = [public_message(m, meta) for m in _ts_filter(ctx, picked)]
    return _page(picked, ctx, 1000)


def conversations_history(ctx: Ctx) -> dict[str, Any]:
    ch = readable_channel(ctx, ctx.params.get("channel"))
    msgs = [
        m for m in ctx.state.messages.get(ch.id, {}).values()
        if m.get("thread_ts") in (None, m["ts"]) or m.get("subtype") == "thread_broadcast"
    ]
    msgs.sort(key=lambda m: float(m["ts"]), reverse=True)
    meta = ctx.flag("include_all_metadata")
    return _page([public_message(m, meta) for m in _ts_filter(ctx, msgs)], ctx, 100)


def conversations_info(ctx: Ctx) -> dict[str, Any]:
    st = ctx.state
    ch = st.find_channel(ctx.get("channel"))
    if ch is None or ((ch.is_private or ch.is_im) and ctx.caller not in ch.members):
        raise ApiError("channel_not_found")  # Slack: conversations.info documents channel_not_found
    return {"channel": ch.to_api(ctx.caller, st.team_id)}


def conversations_join(ctx: Ctx) -> dict[str, Any]:
    st = ctx.state
    ch = st.find_channel(ctx.get("channel"))
    if ch is None or (ch.is_private and ctx.caller not in ch.members):
        raise ApiError("channel_not_found")
    # Slack: conversations.join documents channel_not_found, method_not_supported_for_channel_type
    # ("This type of conversation cannot be used with this method") and is_archived.
    if ch.is_im or ch.is_private:
        raise ApiError("method_not_supported_for_channel_type")
    if ch.is_archived:
        raise ApiError("is_archived")
    body: dict[str, Any] = {}
    if ctx.caller in ch.members:
        body["warning"] = "already_in_channel"
        body["response_metadata"] = {"warnings": ["already_in_channel"]}
    ch.members.add(ctx.caller)
    body["channel"] = ch.to_api(ctx.caller, st.team_id)
    return body


def users_info(ctx: Ctx) -> dict[str, Any]:
    user = ctx.state.users.get(str(ctx.get("user", "")))
    if user is None:  # Slack: users.info documents user_not_found
        raise ApiError("user_not_found")
    return {"user": user.to_api(ctx.state.team_id)}


def usergroups_users_list(ctx: Ctx) -> dict[str, Any]:
    group = ctx.state.usergroups.get(str(ctx.get("usergroup", "")))
    if group is None:  # Slack: usergroups.users.list documents no_such_subteam
        raise ApiError("no_such_subteam")
    return {"users": list(group["users"])}


# ---- views ----------------------------------------------------------------------------


def _check_view(ctx: Ctx) -> dict[str, Any]:
    # SDK: slack_sdk models/views/__init__.py View: type required, title/submit/close <= 24,
    # blocks <= 100, private_metadata <= 3000; views.* catalogs name none of these, so invalid_arguments.
    view = ctx.params.get("view")
    if not isinstance(view, dict) or not view.get("type"):
        raise ApiError("invalid_arguments")
    blocks = view.get("blocks", [])
    check_blocks(blocks, max_blocks=MAX_VIEW_BLOCKS)
    for key in ("title", "submit", "close"):
        if text_len(view.get(key)) > 24:
            raise ApiError("invalid_arguments",
                           response_metadata={"messages": [f"[ERROR] {key} too long"]})
    if len(str(view.get("private_metadata", ""))) > 3000:
        raise ApiError("invalid_arguments")
    return view


def _store_view(ctx: Ctx, view: dict[str, Any], view_id: str | None = None,
                **extra: Any) -> dict[str, Any]:
    st = ctx.state
    vid = view_id or st.new_id("V")
    stored = copy.deepcopy(view)
    stored.update({
        "id": vid, "team_id": st.team_id, "app_id": st.app_id, "bot_id": st.bot_id,
        "hash": f"{int(time.time())}.{st.new_id('h')}", "state": {"values": {}},
        "private_metadata": view.get("private_metadata", ""),
        "callback_id": view.get("callback_id", ""), "root_view_id": vid,
        "external_id": view.get("external_id", ""), **extra,
    })
    st.views[vid] = stored
    return {"view": copy.deepcopy(stored)}


def views_open(ctx: Ctx) -> dict[str, Any]:
    trigger_id = str(ctx.require("trigger_id", "invalid_trigger_id"))
    trig = ctx.state.triggers.get(trigger_id)
    if trig is not None:
        # Slack: views.open documents exchanged_trigger_id / expired_trigger_id; a trigger_id lasts 3 s
        # and is single-use (docs/reference slack-platform.md "Modals").
        if trig.get("used"):
            raise ApiError("exchanged_trigger_id")
        if time.monotonic() - trig["issued"] > TRIGGER_LIFETIME:
            raise ApiError("expired_trigger_id")
        trig["used"] = True
    view = _check_view(ctx)
    return _store_view(ctx, view, user_id=trig.get("user") if trig else None)


def views_update(ctx: Ctx) -> dict[str, Any]:
    st = ctx.state
    view_id = ctx.get("view_id")
    if not view_id and ctx.get("external_id"):
        view_id = next((v["id"] for v in st.views.values()
                        if v.get("external_id") == ctx.get("external_id")), None)
    if not view_id or view_id not in st.views:  # Slack: views.update documents not_found and hash_conflict
        raise ApiError("not_found")
    if ctx.get("hash") and ctx.get("hash") != st.views[view_id]["hash"]:
        raise ApiError("hash_conflict")
    view = _check_view(ctx)
    # An update keeps whose view it is (a modal stays its opener's, a home its user's).
    return _store_view(ctx, view, view_id, previous_view_id=None, user_id=st.views[view_id].get("user_id"))


def views_publish(ctx: Ctx) -> dict[str, Any]:
    # Slack: views.publish lists user_id as required (a missing one is the generic invalid_arguments);
    # it documents no error for an unknown user, so none is made up here.
    user_id = str(ctx.require("user_id"))
    view = _check_view(ctx)
    if view.get("type") != "home":  # Slack: views.publish takes a `publishable-view` (a Home tab)
        raise ApiError("invalid_arguments")
    existing = next((v["id"] for v in ctx.state.views.values()
                     if v.get("type") == "home" and v.get("user_id") == user_id), None)
    return _store_view(ctx, view, existing, user_id=user_id)


METHODS: dict[str, Callable[[Ctx], dict[str, Any]]] = {
    "auth.test": auth_test,
    "chat.postMessage": chat_post_message,
    "chat.update": chat_update,
    "chat.delete": chat_delete,
    "chat.postEphemeral": chat_post_ephemeral,
    "chat.getPermalink": chat_get_permalink,
    "chat.startStream": chat_start_stream,
    "chat.appendStream": chat_append_stream,
    "chat.stopStream": chat_stop_stream,
    "assistant.threads.setStatus": set_status,
    "assistant.threads.setTitle": assistant_ok,
    "assistant.threads.setSuggestedPrompts": assistant_ok,
    "reactions.add": reactions_add,
    "reactions.remove": reactions_remove,
    "conversations.replies": conversations_replies,
    "conversations.history": conversations_history,
    "conversations.info": conversations_info,
    "conversations.join": conversations_join,
    "users.info": users_info,
    "usergroups.users.list": usergroups_users_list,
    "views.open": views_open,
    "views.update": views_update,
    "views.publish": views_publish,
}
