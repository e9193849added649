"""Issue 19, memory from Slack: staff see what a ticket read and wrote (`/support memory #N`),
correct a memory on App Home (the content-hash precondition turns a write that came in between
into a clear error in the modal), and forget one (deleted and redacted), after which the next
ticket of that customer no longer reads it. Non-staff are refused."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from app.sandbox.stack import Stack
from app.slack.memory import ACTION_CORRECT, ACTION_FORGET, CORRECT_BLOCK, CORRECT_INPUT, CORRECT_VIEW
from tests.support import eventually
from tests.test_memory_e2e import ACME, FACT, answer, ask, memory_config, world

STAFF, GUEST = "U0001", "U0002"


def responses(stack: Stack) -> list[dict[str, Any]]:
    return [r["body"] for r in stack.slack.state.snapshot_list("responses")]


async def command(stack: Stack, user: str, text: str) -> str:
    before = len(responses(stack))
    await stack.slack.send_command("/support", text, user=user, channel=ACME)
    body = (await eventually(lambda: responses(stack)[before:]))[0]
    assert body["response_type"] == "ephemeral"
    return str(body["text"])


def views(stack: Stack) -> list[dict[str, Any]]:
    with stack.slack.state.lock:  # the emulator's thread publishes while we read
        return [dict(v) for v in stack.slack.state.views.values()]


def home_of(stack: Stack, user: str) -> dict[str, Any] | None:
    with stack.slack.state.lock:
        return next((dict(v) for v in stack.slack.state.views.values()
                     if v.get("type") == "home" and v.get("user_id") == user), None)


async def open_home(stack: Stack, user: str, containing: str) -> dict[str, Any]:
    await stack.slack.send_event({"type": "app_home_opened", "user": user, "channel": f"D{user}", "tab": "home",
                                  "event_ts": f"{time.time():.6f}"})
    return await eventually(lambda: (v := home_of(stack, user)) and containing in json.dumps(v["blocks"]) and v)


def memory_rows(view: dict[str, Any]) -> list[str]:
    return [b["block_id"] for b in view["blocks"] if str(b.get("block_id", "")).startswith("memory_memver_")]


async def test_staff_see_correct_and_forget_a_memory_from_slack(fresh_redis_url: str, tmp_path: Path) -> None:
    with Stack(fresh_redis_url, config_path=memory_config(tmp_path), data_dir=tmp_path) as stack:
        world(stack)
        app = stack.start_app()
        await ask(stack, ACME, "UACME", "please remember our setup", "Noted.")
        await ask(stack, ACME, "UACME", "recall our setup", "From memory:")

        assert "support staff only" in await command(stack, GUEST, "memory #2")
        shown = await command(stack, STAFF, "memory #2")
        assert "Memory of ticket #2" in shown and "read /setup.md in Acme Corp · taught by #1" in shown
        assert FACT in shown and "_Wrote nothing to memory._" in shown
        assert "no ticket #9" in await command(stack, STAFF, "memory #9")
        # The trace modal (staff) lists the read with the ticket that taught it.
        await stack.slack.send_command("/support", "trace #2", user=STAFF, channel=ACME)
        line = "memory read /setup.md in Acme Corp · taught by #1"
        await eventually(lambda: any(
            v.get("type") == "modal" and line in json.dumps(v, ensure_ascii=False)
            for v in views(stack)))

        # App Home lists it with the ticket that taught it; Correct opens a modal.
        home = await open_home(stack, STAFF, "What the agent remembers")
        assert "taught by #1" in json.dumps(home["blocks"]) and FACT in json.dumps(home["blocks"])
        [row] = memory_rows(home)
        await stack.slack.act_on_view(home["id"], ACTION_CORRECT, STAFF, block_id=row)
        modal = await eventually(lambda: next((v for v in views(stack)
                                               if v.get("callback_id") == CORRECT_VIEW), None))
        # Another ticket rewrites the memory while the modal is open: saving must not clobber it.
        await ask(stack, ACME, "UACME", "we moved to Azure, note it", "Updated.")
        values = {CORRECT_BLOCK: {CORRECT_INPUT: {"type": "plain_text_input", "value": "Acme uses Okta SSO (EU)"}}}
        refused = await stack.slack.events.send_view_submission(user=STAFF, view=modal, values=values)
        body = json.loads(refused.body)
        assert body["response_action"] == "errors" and "changed since you looked" in body["errors"][CORRECT_BLOCK]
        recalled = await ask(stack, ACME, "UACME", "recall our setup", "From memory:")
        assert answer(stack, ACME, recalled) == "From memory: Acme moved to Azure AD"

        # Correct the current text: the next ticket reads the correction.
        home = await open_home(stack, STAFF, "Acme moved to Azure AD")
        [row] = memory_rows(home)
        await stack.slack.act_on_view(home["id"], ACTION_CORRECT, STAFF, block_id=row)
        modal = await eventually(lambda: next((v for v in views(stack)
                                               if v.get("callback_id") == CORRECT_VIEW
                                               and "Azure" in json.dumps(v["blocks"])), None))
        text = "Acme uses Azure AD (EU tenant)"
        values = {CORRECT_BLOCK: {CORRECT_INPUT: {"type": "plain_text_input", "value": text}}}
        saved = await stack.slack.events.send_view_submission(user=STAFF, view=modal, values=values)
        assert saved.status == 200 and "errors" not in (saved.body or "")
        recalled = await ask(stack, ACME, "UACME", "recall our setup", "From memory:")
        assert answer(stack, ACME, recalled) == "From memory: Acme uses Azure AD (EU tenant)"

        # Forget it from App Home: deleted, every version of it redacted, no longer read.
        home = await open_home(stack, STAFF, "Azure AD (EU tenant)")
        [row] = memory_rows(home)
        await stack.slack.act_on_view(home["id"], ACTION_FORGET, GUEST, block_id=row)  # not staff: nothing
        await stack.slack.act_on_view(home["id"], ACTION_FORGET, STAFF, block_id=row)
        home = await open_home(stack, STAFF, "Forgot `/setup.md` in Acme Corp")
        assert "deleted the memory and redacted 3 versions" in json.dumps(home["blocks"])
        assert memory_rows(home) == []
        recalled = await ask(stack, ACME, "UACME", "recall our setup", "From memory:")
        assert answer(stack, ACME, recalled) == "From memory: File does not exist."
        assert "read /setup.md in Acme Corp · deleted since" in await command(stack, STAFF, "memory #2")
        assert "read /setup.md in Acme Corp · not found" in await command(stack, STAFF, "memory #6")
        mem = stack.agents.state.memory
        versions = stack.agents.state.call(lambda: [dict(v) for vs in mem.versions.values() for v in vs])
        assert versions and all(v["content"] is None for v in versions)
        assert [v["operation"] for v in versions if v["redacted_at"] is None] == ["deleted"]
        assert not any(FACT in json.dumps(v) or "Azure" in json.dumps(v) for v in versions)
        assert app.services  # the app ran throughout


async def test_forget_by_command_and_clear_errors(fresh_redis_url: str, tmp_path: Path) -> None:
    with Stack(fresh_redis_url, config_path=memory_config(tmp_path), data_dir=tmp_path) as stack:
        world(stack)
        stack.start_app()
        await ask(stack, ACME, "UACME", "please remember our setup", "Noted.")
        shown = await command(stack, STAFF, "memory #1")
        version = shown.split("`memver_")[1].split("`")[0]
        assert "wrote (new) /setup.md in Acme Corp · taught by #1" in shown
        assert "No memory version" in await command(stack, STAFF, "memory forget memver_nope")
        assert "support staff only" in await command(stack, GUEST, f"memory forget memver_{version}")
        done = await command(stack, STAFF, f"memory forget memver_{version}")
        assert done == "Forgot `/setup.md` in Acme Corp: deleted the memory and redacted 1 version."
        assert "already redacted" in await command(stack, STAFF, f"memory forget memver_{version}")
        refused = await command(stack, STAFF, f"memory correct memver_{version} new text")
        assert "redacted or a deletion" in refused
        assert "`/support memory #42`" in await command(stack, STAFF, "memory")

        # A secret the agent wrote to memory never reaches Slack from here.
        secret = "xoxb-1234567890-abcdefghijkl"
        stack.agents.set_scenario([{"match": None, "steps": [
            {"memory": "write", "path": "/creds.md", "content": f"their bot token is {secret}"},
            {"message": "Noted."},
        ]}])
        await ask(stack, ACME, "UACME", "keep this", "Noted.")
        shown = await command(stack, STAFF, "memory #2")
        assert "/creds.md" in shown and "[redacted]" in shown and secret not in shown


def test_only_memory_subcommands_are_taken_from_questions() -> None:
    from app.slack.commands import parse

    for text, rest in (
        ("memory", ""), ("memory #2", "#2"), ("memory T0001#3", "T0001#3"),
        ("memory forget memver_x", "forget memver_x"), ("memory correct memver_x a b", "correct memver_x a b"),
    ):
        assert parse(text, 4000).kind == "memory" and parse(text, 4000).text == rest
    for question in ("memory leak after upgrade", "Memory usage is high?", "memory forget my password"):
        assert parse(question, 4000).kind == "question"
