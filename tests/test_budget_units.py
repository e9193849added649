"""Budget pieces without the emulators: hook combination and who counts as an approver."""

from __future__ import annotations

from typing import Any

import pytest
import redis.asyncio as aioredis

from app.config.model import AppConfig
from app.sessions.budget_hooks import approver_mentions, combine_hooks
from app.slack.permissions import may_approve
from app.tickets.model import Ticket


class FakeSlack:
    def __init__(self, groups: dict[str, list[str]]) -> None:
        self.groups = groups
        self.calls = 0

    async def usergroups_users_list(self, usergroup: str) -> dict[str, Any]:
        self.calls += 1
        return {"ok": True, "users": self.groups.get(usergroup, [])}


def ticket(environment: str = "internal") -> Ticket:
    return Ticket(id="T1-1", number=1, team_id="T1", channel_id="C1", thread_ts="1.0",
                  requester_id="UREQ", environment=environment)


async def test_combined_hooks_run_in_order_and_all_run_when_one_fails() -> None:
    calls: list[str] = []

    async def cost(t: Ticket, e: Any) -> None:
        calls.append(f"cost:{e}")
        raise RuntimeError("redis down")

    async def budget(t: Ticket, e: Any) -> None:
        calls.append(f"budget:{e}")

    async def usage(t: Ticket, e: Any) -> None:
        calls.append(f"usage:{e}")

    hooks = combine_hooks({"session.status_idle": cost, "session.usage": usage}, {"session.status_idle": budget})
    assert hooks["session.usage"] is usage  # a single hook is left as it is
    with pytest.raises(RuntimeError):
        await hooks["session.status_idle"](ticket(), "idle")
    assert calls == ["cost:idle", "budget:idle"]


async def test_approvers_are_environment_approvers_staff_and_admins(
    redis: aioredis.Redis, app_config: AppConfig
) -> None:
    internal = app_config.environments["internal"].model_copy(
        update={"approvers": app_config.environments["internal"].approvers.model_copy(
            update={"users": ["UAPP"], "usergroups": ["SAPP"]})}
    )
    config = app_config.model_copy(update={
        "environments": {**app_config.environments, "internal": internal},
        "slack": app_config.slack.model_copy(update={
            "admins": ["UADMIN"],
            "staff": app_config.slack.staff.model_copy(update={"users": ["USTAFF"], "usergroups": []}),
        }),
    })
    slack = FakeSlack({"SAPP": ["UGROUP"]})
    t = ticket()
    for user in ("UAPP", "UGROUP", "USTAFF", "UADMIN"):
        assert await may_approve(slack, redis, config, t, user), user  # type: ignore[arg-type]
    for user in ("UREQ", "USOMEONE", ""):
        assert not await may_approve(slack, redis, config, t, user), user  # type: ignore[arg-type]
    # Another environment's approvers are not approvers here.
    assert not await may_approve(slack, redis, config, ticket("customers"), "UAPP")  # type: ignore[arg-type]
    assert approver_mentions(internal) == "<@UAPP> <!subteam^SAPP>"
