"""The feedback buttons under each answer (👍 / 👎, action id `feedback`).

A click is acknowledged at once; the lazy listener records the verdict per ticket and person
(`sa:ticket:<id>:feedback`, the latest click wins, with a `ticket.feedback` log line) and thanks
the person with an ephemeral note in the thread. Without a listener Bolt answered 404 and Slack
showed the person an error on every click.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from slack_bolt.async_app import AsyncApp
from slack_bolt.context.ack.async_ack import AsyncAck
from slack_sdk.errors import SlackApiError

from app.render.blocks import FEEDBACK_ACTION_ID, parse_feedback_value
from app.runtime import Services

log = logging.getLogger(__name__)

THANKS = {
    "good": "Thanks for the feedback: glad that helped.",
    "bad": "Thanks for the feedback: noted. Reply in the thread with what was missing and the agent will try again.",
}


def feedback_key(ticket_id: str) -> str:
    return f"sa:ticket:{ticket_id}:feedback"


async def _ack(ack: AsyncAck) -> None:
    await ack()


def register(bolt: AsyncApp, services: Services) -> None:
    async def on_feedback(body: dict[str, Any]) -> None:
        action = (body.get("actions") or [{}])[0]
        parsed = parse_feedback_value(str(action.get("value") or ""))
        user = (body.get("user") or {}).get("id") or ""
        channel = (body.get("channel") or {}).get("id") or (body.get("container") or {}).get("channel_id") or ""
        message = body.get("message") or {}
        if parsed is None or not user:
            return
        verdict, ticket_id = parsed
        ticket = await services.store.get(ticket_id)
        if ticket is None or ticket.channel_id != channel:
            return  # a button copied elsewhere acts on nothing
        await services.redis.hset(feedback_key(ticket.id), user, f"{verdict}:{message.get('ts', '')}:{time.time():.0f}")
        log.info("ticket.feedback", extra={"ticket": ticket.id, "verdict": verdict, "user": user,
                                           "message_ts": message.get("ts")})
        try:
            await services.slack.chat_postEphemeral(
                channel=channel, user=user, thread_ts=ticket.thread_ts, text=THANKS[verdict]
            )
        except SlackApiError as exc:
            log.info("feedback thanks not posted", extra={"ticket": ticket.id, "error": exc.response.get("error")})

    bolt.action(FEEDBACK_ACTION_ID)(ack=_ack, lazy=[on_feedback])
