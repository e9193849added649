"""Who may press a ticket's controls: its requester, staff and admins.

Staff are `slack.staff.users` plus the members of `slack.staff.usergroups` (asked of Slack with
`usergroups.users.list`, cached briefly in Redis so a burst of clicks costs one call per group).
Admins are `slack.admins`.
"""

from __future__ import annotations

import json
import logging

import redis.asyncio as aioredis
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from app.config.model import AppConfig
from app.tickets.model import Ticket

log = logging.getLogger(__name__)

USERGROUP_CACHE_SECONDS = 120


def _cache_key(usergroup: str) -> str:
    return f"sa:usergroup:{usergroup}:members"


async def usergroup_members(slack: AsyncWebClient, redis: aioredis.Redis, usergroup: str) -> set[str]:
    """Members of a user group; an unknown group or a Slack error counts as no members."""
    cached = await redis.get(_cache_key(usergroup))
    if cached:
        return set(json.loads(cached))
    try:
        response = await slack.usergroups_users_list(usergroup=usergroup)
    except SlackApiError as exc:
        log.warning(
            "usergroups.users.list failed",
            extra={"usergroup": usergroup, "error": exc.response.get("error")},
        )
        return set()
    members = [str(u) for u in response.get("users") or []]
    await redis.set(_cache_key(usergroup), json.dumps(members), ex=USERGROUP_CACHE_SECONDS)
    return set(members)


def is_admin(config: AppConfig, user_id: str) -> bool:
    return user_id in config.slack.admins


async def is_staff(slack: AsyncWebClient, redis: aioredis.Redis, config: AppConfig, user_id: str) -> bool:
    """Staff or admin."""
    staff = config.slack.staff
    if is_admin(config, user_id) or user_id in staff.users:
        return True
    for group in staff.usergroups:
        if user_id in await usergroup_members(slack, redis, group):
            return True
    return False


async def may_control(
    slack: AsyncWebClient, redis: aioredis.Redis, config: AppConfig, ticket: Ticket, user_id: str
) -> bool:
    """May this user stop, resolve or reopen this ticket?"""
    if user_id and user_id == ticket.requester_id:
        return True
    return await is_staff(slack, redis, config, user_id)


async def may_approve(
    slack: AsyncWebClient, redis: aioredis.Redis, config: AppConfig, ticket: Ticket, user_id: str
) -> bool:
    """May this user approve the ticket's tool calls or budget? Its environment's approvers
    (users or user groups), staff and admins; being the requester is not enough."""
    if not user_id:
        return False
    env = config.environments.get(ticket.environment)
    if env is not None:
        if user_id in env.approvers.users:
            return True
        for group in env.approvers.usergroups:
            if user_id in await usergroup_members(slack, redis, group):
                return True
    return await is_staff(slack, redis, config, user_id)


def refusal_text(ticket: Ticket, what: str) -> str:
    return (
        f"Only the person who opened ticket {ticket.ref} (<@{ticket.requester_id}>), support staff "
        f"and admins can {what} it. Reply in the thread if you want to add something."
    )
