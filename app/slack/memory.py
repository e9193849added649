"""Staff see and fix what the agent remembers (issue 19), from Slack.

- `/support memory #42`: the memories ticket #42 read and wrote, each with the ticket that
  taught it and its version id.
- `/support memory forget memver_...` (or *Forget* on App Home): the memory is deleted if this
  version is still its content (`memories.delete` with `expected_content_sha256`), and this
  version and the memory's earlier ones are redacted (`memory_versions.redact`).
- `/support memory correct memver_... <text>` (or *Correct* on App Home, a modal): the memory
  gets the new text with a `content_sha256` precondition on the version staff looked at, so a
  write that came in between is never overwritten (409: they are told to look again).

Staff and admins only (`app/slack/permissions.py`); every failure is said plainly.
"""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import anthropic
from slack_bolt.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_bolt.context.respond.async_respond import AsyncRespond

from app.redact import redact
from app.render.slack_text import escape
from app.runtime import Services
from app.sessions.memory import known_stores
from app.sessions.memory_history import MemoryEntry, entry_summary, teacher, ticket_memory
from app.slack.blocks import section
from app.slack.permissions import is_staff
from app.trace.lookup import TicketNotFound, find_ticket

log = logging.getLogger(__name__)

ACTION_FORGET = "memory_forget"
ACTION_CORRECT = "memory_correct"
CORRECT_VIEW = "memory_correct_view"
CORRECT_BLOCK, CORRECT_INPUT = "memory_content", "content"
HOME_ROWS = 6
NOTICE_SECONDS = 60
STAFF_ONLY = "What the agent remembers is shown to support staff only."
USAGE = (
    "*Memory* (staff)\n"
    "• `/support memory #42`: what ticket #42 read and wrote, and which ticket taught it.\n"
    "• `/support memory forget memver_…`: delete that memory and redact its content.\n"
    "• `/support memory correct memver_… <new text>`: replace a memory's text."
)
_FORGET = re.compile(r"^forget\s+(memver_\S+)\s*$", re.IGNORECASE)
_CORRECT = re.compile(r"^correct\s+(memver_\S+)\s+(.+)$", re.IGNORECASE | re.DOTALL)


class MemoryActionError(Exception):
    """A staff action that could not be done; the message says why."""


# -- the operations ------------------------------------------------------------------------------


async def locate(services: Services, version_id: str, store_id: str | None = None) -> tuple[str, Any]:
    """(store id, version) for a version id: the given store, else every store we made."""
    client = services.anthropic
    stores = [store_id] if store_id else list(await known_stores(services.redis))
    for sid in stores:
        try:
            return sid, await client.beta.memory_stores.memory_versions.retrieve(version_id, memory_store_id=sid)
        except anthropic.NotFoundError:
            continue
    raise MemoryActionError(f"No memory version `{version_id}` in the agent's memory stores.")


async def _label(services: Services, store_id: str) -> str:
    return (await known_stores(services.redis)).get(store_id, {}).get("label", store_id)


async def _current(services: Services, store_id: str, memory_id: str) -> Any | None:
    try:
        return await services.anthropic.beta.memory_stores.memories.retrieve(
            memory_id, memory_store_id=store_id, view="basic"
        )
    except anthropic.NotFoundError:
        return None


async def forget(services: Services, version_id: str, store_id: str | None = None) -> str:
    client = services.anthropic.beta.memory_stores
    store_id, version = await locate(services, version_id, store_id)
    label = await _label(services, store_id)
    if version.redacted_at is not None:
        return f"Version `{version_id}` in {label} is already redacted."
    path = version.path
    memory = await _current(services, store_id, version.memory_id)
    deleted = False
    if memory is not None and memory.memory_version_id == version.id:
        try:
            await client.memories.delete(
                memory.id, memory_store_id=store_id, expected_content_sha256=version.content_sha256 or ""
            )
            deleted = True
        except anthropic.ConflictError as exc:
            raise MemoryActionError(
                f"`{path}` changed while you looked at it; nothing was forgotten. Look again."
            ) from exc
    # This version and the ones before it: what the agent could have read of this fact.
    lineage = [v async for v in client.memory_versions.list(store_id, memory_id=version.memory_id, limit=100)]
    older = [v for v in lineage if v.created_at <= version.created_at and v.redacted_at is None
             and v.operation != "deleted"]
    for v in older:
        await client.memory_versions.redact(v.id, memory_store_id=store_id)
    log.info("memory forgotten", extra={"memory_store": store_id, "version": version_id, "redacted": len(older)})
    gone = "deleted the memory and redacted" if deleted else "redacted"
    return f"Forgot `{path}` in {label}: {gone} {len(older)} version{'s' if len(older) != 1 else ''}."


async def correct(
    services: Services, version_id: str, text: str, store_id: str | None = None, expected_sha: str | None = None
) -> str:
    client = services.anthropic.beta.memory_stores
    text = text.strip()
    if not text:
        raise MemoryActionError("Give the corrected text.")
    store_id, version = await locate(services, version_id, store_id)
    label = await _label(services, store_id)
    sha = expected_sha or version.content_sha256
    if not sha:
        raise MemoryActionError(f"Version `{version_id}` is redacted or a deletion: there is no text to correct.")
    try:
        # The precondition is the content staff looked at: a write since then is never overwritten.
        await client.memories.update(
            version.memory_id, memory_store_id=store_id, content=text,
            precondition={"type": "content_sha256", "content_sha256": sha},
        )
    except anthropic.NotFoundError as exc:
        raise MemoryActionError(f"That memory no longer exists in {label}.") from exc
    except anthropic.ConflictError as exc:
        raise MemoryActionError(
            f"`{version.path}` changed since you looked at it; nothing was saved. Look again."
        ) from exc
    except anthropic.BadRequestError as exc:
        raise MemoryActionError(f"The memory store refused the correction ({exc.message}).") from exc
    log.info("memory corrected", extra={"memory_store": store_id, "memory": version.memory_id})
    return f"Corrected `{version.path}` in {label}."


# -- what staff read -----------------------------------------------------------------------------


def entry_line(entry: MemoryEntry) -> str:
    line = f"• {escape(entry_summary(entry))}"
    if entry.content and not entry.redacted:
        line += f"\n    “{escape(' '.join(entry.content.split())[:150])}”"
    if entry.version_id:
        line += f"  `{entry.version_id}`"
    return line


async def ticket_text(services: Services, ref: str, team_id: str | None) -> str:
    ticket = await find_ticket(services.store, ref, team_id)
    tm = await ticket_memory(services.anthropic, services.store, ticket)
    if not tm.attached:
        return f"Ticket {ticket.ref} had no memory stores attached."
    stores = ", ".join(f"{a.label} ({a.access.replace('_', '-')})" for a in tm.attached)
    lines = [f"*Memory of ticket {ticket.ref}* · {stores}"]
    lines.append("*Read*" if tm.reads else "_Read nothing from memory._")
    lines.extend(entry_line(e) for e in tm.reads)
    lines.append("*Wrote*" if tm.writes else "_Wrote nothing to memory._")
    lines.extend(entry_line(e) for e in tm.writes)
    lines.append("_Fix one with `/support memory correct memver_… <text>` or `/support memory forget memver_…`._")
    return "\n".join(lines)


async def recent(services: Services, limit: int = HOME_ROWS) -> list[MemoryEntry]:
    """The newest memory versions across our stores that are still a memory's content."""
    client = services.anthropic
    found: list[MemoryEntry] = []
    for store_id, info in (await known_stores(services.redis)).items():
        try:
            async for v in client.beta.memory_stores.memory_versions.list(store_id, view="full", limit=limit):
                if v.redacted_at is not None or v.operation == "deleted":
                    continue
                memory = await _current(services, store_id, v.memory_id)
                if memory is None or memory.memory_version_id != v.id:
                    continue
                session, ref, ticket_id = await teacher(services.store, v.created_by)
                found.append(MemoryEntry(
                    store_id=store_id, store_label=info.get("label", store_id), memory_id=v.memory_id,
                    version_id=v.id, path=v.path or "", operation=v.operation, at=v.created_at.isoformat(),
                    content=(v.content or "")[:200], current=True, taught_by_session=session,
                    taught_by_ticket=ref, taught_by_ticket_id=ticket_id,
                ))
        except anthropic.NotFoundError:
            continue
    return sorted(found, key=lambda e: e.at, reverse=True)[:limit]


def _notice_key(user_id: str) -> str:
    return f"sa:memory:notice:{user_id}"


async def home_blocks(services: Services, user_id: str) -> list[dict[str, Any]]:
    """App Home's memory part (staff): recent memories, who taught them, Forget and Correct."""
    try:
        entries = await recent(services)
    except anthropic.APIError as exc:
        log.warning("home: memory not read", extra={"error": type(exc).__name__})
        return [section(":warning: The agent's memory could not be read just now.")]
    # Shown on every publish for a minute: the action's own publish and a reopened tab both show it.
    notice = await services.redis.get(_notice_key(user_id))
    if not entries and not notice and not await known_stores(services.redis):
        return []
    blocks: list[dict[str, Any]] = [
        {"type": "divider"},
        {"type": "header", "text": {"type": "plain_text", "text": "What the agent remembers"}},
    ]
    if notice:
        blocks.append(section(str(notice)))
    if not entries:
        blocks.append(section("_Nothing remembered yet._"))
    for e in entries:
        value = json.dumps({"s": e.store_id, "v": e.version_id})
        blocks.append(section(entry_line(e)))
        blocks.append({"type": "actions", "block_id": f"memory_{e.version_id}", "elements": [
            {"type": "button", "action_id": ACTION_CORRECT, "text": {"type": "plain_text", "text": "Correct"},
             "value": value},
            {"type": "button", "action_id": ACTION_FORGET, "style": "danger",
             "text": {"type": "plain_text", "text": "Forget"}, "value": value},
        ]})
    return blocks


def correct_view(entry: dict[str, Any], path: str, content: str) -> dict[str, Any]:
    return {
        "type": "modal", "callback_id": CORRECT_VIEW, "private_metadata": json.dumps(entry),
        "title": {"type": "plain_text", "text": "Correct a memory"},
        "submit": {"type": "plain_text", "text": "Save"}, "close": {"type": "plain_text", "text": "Cancel"},
        "blocks": [
            section(f"`{escape(path)}`"),
            {"type": "input", "block_id": CORRECT_BLOCK, "label": {"type": "plain_text", "text": "Text"},
             "element": {"type": "plain_text_input", "action_id": CORRECT_INPUT, "multiline": True,
                         "initial_value": content[:3000]}},
        ],
    }


# -- Slack wiring --------------------------------------------------------------------------------


async def memory_command(services: Services, command: dict[str, Any], text: str, respond: AsyncRespond) -> None:
    user = str(command.get("user_id") or "")
    if not await is_staff(services.slack, services.redis, services.config, user):
        await respond(text=STAFF_ONLY, response_type="ephemeral")
        return
    text = text.strip()
    try:
        if not text:
            answer = USAGE
        elif match := _FORGET.match(text):
            answer = await forget(services, match.group(1))
        elif match := _CORRECT.match(text):
            answer = await correct(services, match.group(1), match.group(2))
        else:
            answer = await ticket_text(services, text, command.get("team_id") or None)
    except (MemoryActionError, TicketNotFound) as exc:
        answer = f":warning: {exc}"
    # A response_url post does not pass the redacting Slack client: memories may quote a secret.
    await respond(text=redact(answer), response_type="ephemeral")


async def _ack(ack: AsyncAck) -> None:
    await ack()


def register(bolt: AsyncApp, services: Services) -> None:
    from app.slack.home import publish_home

    def _who(body: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        action = (body.get("actions") or [{}])[0]
        try:
            target = json.loads(action.get("value") or "{}")
        except ValueError:
            target = {}
        return str((body.get("user") or {}).get("id") or ""), target

    async def on_forget(body: dict[str, Any]) -> None:
        user, target = _who(body)
        if not await is_staff(services.slack, services.redis, services.config, user):
            return
        try:
            notice = ":white_check_mark: " + await forget(services, str(target.get("v")), target.get("s"))
        except MemoryActionError as exc:
            notice = f":warning: {exc}"
        await services.redis.set(_notice_key(user), notice, ex=NOTICE_SECONDS)
        await publish_home(services, user, (body.get("team") or {}).get("id"))

    async def on_correct(body: dict[str, Any]) -> None:
        user, target = _who(body)
        if not await is_staff(services.slack, services.redis, services.config, user):
            return
        try:
            store_id, version = await locate(services, str(target.get("v")), target.get("s"))
        except MemoryActionError as exc:
            await services.redis.set(_notice_key(user), f":warning: {exc}", ex=NOTICE_SECONDS)
            await publish_home(services, user, (body.get("team") or {}).get("id"))
            return
        meta = {"s": store_id, "v": version.id, "sha": version.content_sha256}
        await services.slack.views_open(
            trigger_id=body.get("trigger_id"), view=correct_view(meta, version.path or "", version.content or "")
        )

    async def on_submit(ack: AsyncAck, body: dict[str, Any], view: dict[str, Any]) -> None:
        # The update runs inside the acknowledgement so a refusal can be shown in the modal.
        user = str((body.get("user") or {}).get("id") or "")
        if not await is_staff(services.slack, services.redis, services.config, user):
            await ack(response_action="errors", errors={CORRECT_BLOCK: STAFF_ONLY})
            return
        meta = json.loads(view.get("private_metadata") or "{}")
        values = (view.get("state") or {}).get("values") or {}
        text = str(((values.get(CORRECT_BLOCK) or {}).get(CORRECT_INPUT) or {}).get("value") or "")
        try:
            notice = ":white_check_mark: " + await correct(
                services, str(meta.get("v")), text, meta.get("s"), meta.get("sha")
            )
        except MemoryActionError as exc:
            await ack(response_action="errors", errors={CORRECT_BLOCK: str(exc)[:150]})
            return
        await ack()
        await services.redis.set(_notice_key(user), notice, ex=NOTICE_SECONDS)
        await publish_home(services, user, (body.get("team") or {}).get("id"))

    bolt.action(ACTION_FORGET)(ack=_ack, lazy=[on_forget])
    bolt.action(ACTION_CORRECT)(ack=_ack, lazy=[on_correct])
    bolt.view(CORRECT_VIEW)(on_submit)
