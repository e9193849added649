"""Outcomes while a ticket is followed: the grader's verdicts recorded, costed and acted on.

Follower hooks (registered in `app/service.py`):

- `user.define_outcome` (the echo): the round's `outcome_id` and the time it was accepted.
- `agent.message`: the latest answer of a round, kept as the draft staff are shown.
- `span.outcome_evaluation_end`: the evaluation is kept (iteration, result, explanation, usage,
  `app/tickets/outcome_record.py`), the grader's usage becomes its own cost line
  (`app/cost/grader.py`), and the round's record follows the verdict. Where drafts are held back
  from the requester (`customer_facing`), staff get the draft and the verdict as an ephemeral
  message in the thread. `max_iterations_reached` and `failed` hand the ticket to a person:
  the escalation path of `escalate_to_human` (ticket escalated, a note in the thread, the hand-off
  in the environment's `triage_channel`) with the grader's explanation as the hand-off summary.
- `session.status_idle`: after a terminal verdict, the first idle ends the round's turn.
"""

from __future__ import annotations

import logging
from typing import Any

from slack_sdk.errors import SlackApiError

from app.cost.grader import GraderLedger
from app.cost.model import UnknownModel
from app.render.base import message_text
from app.render.slack_text import neutralise_mentions
from app.runtime import Services
from app.sessions.follower import EventHook
from app.slack.blocks import section
from app.slack.permissions import usergroup_members
from app.tickets.model import Ticket, TicketState
from app.tickets.outcome_record import (
    UNMET,
    Evaluation,
    OutcomeRound,
    add_evaluation,
    iso,
    load,
    parse_time,
    save,
    usage_fields,
)

log = logging.getLogger(__name__)

DRAFT_KEY = "sa:outcome:{}:draft"
DRAFT_TTL = 7 * 24 * 3600
VERDICTS = {
    "satisfied": "satisfied",
    "needs_revision": "needs revision",
    "max_iterations_reached": "not met after the last allowed revision",
    "failed": "the rubric does not apply to this answer",
    "interrupted": "interrupted",
}


def verdict_text(result: str) -> str:
    return VERDICTS.get(result, result.replace("_", " "))


class OutcomeTracker:
    def __init__(self, services: Services) -> None:
        self.services = services
        self.redis = services.redis
        self.grader = GraderLedger(services.redis, services.config.pricing)

    def hooks(self) -> dict[str, EventHook]:
        return {
            "user.define_outcome": self.on_defined,
            "agent.message": self.on_message,
            "span.outcome_evaluation_end": self.on_evaluated,
            "session.status_idle": self.on_idle,
        }

    async def on_defined(self, ticket: Ticket, event: Any) -> None:
        record = await load(self.redis, ticket.id)
        if record is None or record.outcome_id is not None:
            return  # an echo of an earlier round (a replay), or outcomes are not in use
        record.outcome_id = str(getattr(event, "outcome_id", "") or "") or None
        record.defined_at = iso(getattr(event, "processed_at", None))
        await save(self.redis, ticket.id, record)

    async def on_message(self, ticket: Ticket, event: Any) -> None:
        record = await load(self.redis, ticket.id)
        if record is None or record.idle_at is not None:
            return
        text = message_text(event)
        if text:
            await self.redis.set(DRAFT_KEY.format(ticket.id), text, ex=DRAFT_TTL)

    async def on_idle(self, ticket: Ticket, event: Any) -> None:
        reason = getattr(getattr(event, "stop_reason", None), "type", None)
        if reason in ("requires_action", "budget_reached"):
            return  # the turn goes on after a decision
        record = await load(self.redis, ticket.id)
        if record is None or record.idle_at is not None or (record.outcome_id is None and not record.terminal):
            return
        # The round's turn is over, with a verdict or without one (then its drafts stay drafts).
        record.idle_at = iso(getattr(event, "processed_at", None))
        await save(self.redis, ticket.id, record)
        if record.customer_facing and not record.terminal:
            # Stopped (or ended) before any verdict: the requester saw no answer; staff should know.
            verdict = Evaluation(event_id=str(getattr(event, "id", "")), round=record.round,
                                 outcome_id=record.outcome_id or "", iteration=record.iterations,
                                 result="no verdict", explanation="the turn ended before the grader gave a verdict")
            await self._tell_staff(ticket, record, verdict)

    async def on_evaluated(self, ticket: Ticket, event: Any) -> None:
        record = await load(self.redis, ticket.id)
        outcome_id = str(getattr(event, "outcome_id", ""))
        if record is None:
            return
        if record.outcome_id not in (None, outcome_id):
            return  # a verdict on an earlier round's outcome (a replay)
        tokens = usage_fields(getattr(event, "usage", None))
        result = str(getattr(event, "result", ""))
        explanation = str(getattr(event, "explanation", "") or "")
        at = parse_time(getattr(event, "processed_at", None))
        evaluation = Evaluation(
            event_id=str(event.id), round=record.round, outcome_id=outcome_id,
            iteration=int(getattr(event, "iteration", 0) or 0), result=result, explanation=explanation,
            at=iso(at), **tokens,
        )
        if not await add_evaluation(self.redis, ticket.id, evaluation):
            return
        await self._cost(ticket, event.id, tokens, at)
        record.outcome_id = record.outcome_id or outcome_id
        record.result = result
        record.explanation = explanation
        record.iterations = evaluation.iteration + 1
        if record.terminal:
            record.verdict_at = iso(at)
        await save(self.redis, ticket.id, record)
        log.info(
            "outcome evaluated",
            extra={"ticket": ticket.id, "result": result, "iteration": evaluation.iteration, "rubric": record.key},
        )
        if record.customer_facing and result != "satisfied":
            await self._tell_staff(ticket, record, evaluation)
        if result in UNMET and not record.handed_off:
            record.handed_off = True
            await save(self.redis, ticket.id, record)
            await self.hand_off(ticket, record, evaluation)

    async def _cost(self, ticket: Ticket, event_id: str, tokens: dict[str, int], at: Any) -> None:
        config = self.services.config
        known = ticket.environment in config.environments
        model = config.model_for(ticket.environment) if known else config.agent.model
        try:
            await self.grader.record(ticket, model=model, tokens=tokens, event_id=str(event_id), at=at)
        except UnknownModel as exc:
            log.warning("no price for the grader's model; not recorded", extra={"ticket": ticket.id, "error": str(exc)})

    # -- staff and the hand-off -----------------------------------------------------------

    async def _staff(self) -> list[str]:
        staff = self.services.config.slack.staff
        people = list(dict.fromkeys(staff.users))
        for group in staff.usergroups:
            people += sorted(await usergroup_members(self.services.slack, self.redis, group))
        return list(dict.fromkeys(people))

    async def _tell_staff(self, ticket: Ticket, record: OutcomeRound, evaluation: Evaluation) -> None:
        """The requester does not see a draft the grader has not accepted: staff do, ephemerally."""
        draft = await self.redis.get(DRAFT_KEY.format(ticket.id))
        draft_text = draft.decode() if isinstance(draft, bytes) else (draft or "")
        quoted = "\n".join(f"> {line}" for line in neutralise_mentions(draft_text[:2500]).splitlines()) or "> (no text)"
        text = (
            f":lock: *Draft held back from the requester* (ticket {ticket.ref}, {record.name} rubric, "
            f"check {evaluation.iteration + 1}: {verdict_text(evaluation.result)})\n"
            f"*Grader:* {neutralise_mentions(evaluation.explanation)}\n{quoted}"
        )
        for user in await self._staff():
            try:
                await self.services.slack.chat_postEphemeral(
                    channel=ticket.channel_id, user=user, thread_ts=ticket.thread_ts, text=text[:3900],
                    blocks=[section(text)],
                )
            except SlackApiError as exc:  # not in the channel, say: the trace still shows it
                log.info("draft not shown to staff", extra={"ticket": ticket.id, "error": exc.response.get("error")})

    async def hand_off(self, ticket: Ticket, record: OutcomeRound, evaluation: Evaluation) -> None:
        """The escalation path (as `tools/escalate.py`), with the grader's explanation."""
        store = self.services.store
        fresh = await store.get(ticket.id) or ticket
        if fresh.state in (TicketState.RESOLVED, TicketState.ESCALATED):
            return
        fresh = await store.transition(
            fresh, TicketState.ESCALATED, f"outcome {evaluation.result}: handed to a person", actor="grader"
        )
        ticket.state = fresh.state
        explanation = neutralise_mentions(evaluation.explanation)
        env = self.services.config.environments.get(ticket.environment)
        triage = env.triage_channel if env is not None else None
        note = (
            f":raising_hand: The answer to ticket {ticket.ref} did not pass the check against the {record.name} "
            f"rubric ({verdict_text(evaluation.result)}), so it was not posted as final. I have handed the "
            "ticket to the support team; a person will follow up in this thread."
        )
        if not record.customer_facing and not triage:
            note += f"\n*Hand-off:* {explanation}"
        await self._post(ticket.channel_id, ticket.thread_ts, note, ticket)
        if not triage:
            return
        link = f"<#{ticket.channel_id}>"
        try:
            permalink = await self.services.slack.chat_getPermalink(
                channel=ticket.channel_id, message_ts=ticket.thread_ts
            )
            if permalink.get("permalink"):
                link = f"<{permalink['permalink']}|the thread> in <#{ticket.channel_id}>"
        except SlackApiError:
            pass
        who = f"<!subteam^{env.triage_usergroup}> " if env is not None and env.triage_usergroup else ""
        title = neutralise_mentions(ticket.title[:150]).replace("\n", " ")
        quoted = "\n".join(f"> {line}" for line in explanation.splitlines())
        text = (
            f"{who}:rotating_light: Ticket {ticket.ref} ({title}) needs a person: the grader did not accept the "
            f"agent's answer against the {record.name} rubric after {record.iterations} "
            f"check{'s' if record.iterations != 1 else ''} ({verdict_text(evaluation.result)}): {link}. "
            f"Requester: <@{ticket.requester_id}>.\n*Hand-off (the grader's explanation):*\n{quoted}"
        )
        await self._post(triage, None, text, ticket)

    async def _post(self, channel: str, thread_ts: str | None, text: str, ticket: Ticket) -> None:
        try:
            await self.services.slack.chat_postMessage(
                channel=channel, thread_ts=thread_ts, text=text[:3900], blocks=[section(text)]
            )
        except SlackApiError as exc:
            log.warning("outcome hand-off not posted", extra={"ticket": ticket.id, "error": exc.response.get("error")})
