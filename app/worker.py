"""The worker role: takes ticket jobs, holds leases, runs session followers.

Many followers run in one process (one asyncio task each). A follower holds its ticket's lease
and renews it; a ticket whose lease ran out (its worker died) is taken over by whichever live
worker sees it first.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from typing import Any

import sentry_sdk

from app.jobs.lease import Lease, LeaseManager
from app.jobs.queue import JobQueue
from app.render.base import Renderer
from app.runtime import Services
from app.sessions.cursor import StaleLease
from app.sessions.follower import EventHook, SessionFollower, TurnFailed
from app.slack.blocks import CLOSED_STATES
from app.slack.channels import resolve_environment
from app.slack.controls import TicketControls
from app.tickets.inbox_signal import InboxSignals
from app.tickets.model import Ticket, TicketState
from app.trace.record import record_follow

log = logging.getLogger(__name__)

RendererFactory = Callable[[Services], Renderer]


class Worker:
    def __init__(
        self,
        services: Services,
        renderer_factory: RendererFactory,
        hooks: dict[str, EventHook] | None = None,
        poll_interval: float = 1.0,
    ) -> None:
        self.services = services
        self.renderer = renderer_factory(services)
        self.hooks = hooks or {}
        self.queue: JobQueue = services.queue()
        self.leases: LeaseManager = services.leases()
        self.poll_interval = poll_interval
        self.followers: dict[str, asyncio.Task[None]] = {}
        self._live: dict[str, SessionFollower] = {}
        if hasattr(self.renderer, "on_visible"):
            self.renderer.on_visible = self._on_visible
        self._stopping = asyncio.Event()
        self.signals = InboxSignals(services.redis)

    async def run(self) -> None:
        await self.queue.ensure_group()
        log.info("worker started", extra={"worker": self.services.worker_id})
        reaper = asyncio.create_task(self._reap_forever())
        self.signals.start()
        try:
            while not self._stopping.is_set():
                jobs = await self.queue.take(block_ms=int(self.poll_interval * 1000))
                for job in jobs:
                    await self.start_ticket(job.ticket_id, job.reason)
                    await self.queue.ack(job)
        finally:
            await self.signals.aclose()
            reaper.cancel()
            for task in list(self.followers.values()):
                task.cancel()
            await asyncio.gather(reaper, *self.followers.values(), return_exceptions=True)
            aclose = getattr(self.renderer, "aclose", None)
            if aclose is not None:
                await aclose()  # stop open Slack streams rather than leave them to expire

    def stop(self) -> None:
        self._stopping.set()

    async def _reap_forever(self) -> None:
        while not self._stopping.is_set():
            try:
                for ticket_id in await self.leases.orphans():
                    log.info("taking over orphaned ticket", extra={"ticket": ticket_id})
                    await self.start_ticket(ticket_id, "takeover")
                for job in await self.queue.reclaim():
                    await self.start_ticket(job.ticket_id, f"reclaimed:{job.reason}")
                    await self.queue.ack(job)
            except Exception:
                log.exception("reaper pass failed")
            await asyncio.sleep(self.poll_interval)

    async def start_ticket(self, ticket_id: str, reason: str) -> bool:
        """Follow a ticket if no one else does. The current holder sees new inbox messages itself."""
        running = self.followers.get(ticket_id)
        # A finishing follower may hand its ticket straight to a successor: itself is no obstacle.
        if running is not None and not running.done() and running is not asyncio.current_task():
            return False
        lease = await self.leases.acquire(ticket_id)
        if lease is None:
            return False
        task = asyncio.create_task(self._follow(lease, reason), name=f"follow-{ticket_id}")
        self.followers[ticket_id] = task
        task.add_done_callback(functools.partial(self._forget, ticket_id))
        return True

    def _forget(self, ticket_id: str, task: asyncio.Task[None]) -> None:
        if self.followers.get(ticket_id) is task:
            del self.followers[ticket_id]

    async def _follow(self, lease: Lease, reason: str) -> None:
        # Each ticket gets its own Sentry scope: its errors carry its tags and its breadcrumbs.
        with sentry_sdk.isolation_scope() as scope:
            scope.set_tag("ticket", lease.ticket_id)
            await self._follow_in_scope(lease, reason)

    async def _follow_in_scope(self, lease: Lease, reason: str) -> None:
        store = self.services.store
        renew = asyncio.create_task(self._renew_forever(lease))
        done = failed = False
        signal: asyncio.Event | None = None
        try:
            ticket = await store.get(lease.ticket_id)
            if ticket is None:
                done = True
                return
            extra: dict[str, Any] = {"ticket": ticket.id, "session": ticket.session_id, "reason": reason}
            log.info("following ticket", extra=extra)
            await self._record_follow(lease, reason)
            if not ticket.environment:
                if not await self._resolve_environment(ticket):
                    done = True
                    return
            if ticket.state in CLOSED_STATES and await store.pending_messages(ticket.id):
                ticket = await self._reopen_for_message(ticket)
            sentry_sdk.set_tags(
                {"team": ticket.team_id, "environment": ticket.environment,
                 "session": ticket.session_id or "none", "channel": ticket.channel_id}
            )
            signal = self.signals.waiter(ticket.id)
            follower = SessionFollower(
                client=self.services.anthropic,
                store=store,
                config=self.services.config,
                renderer=self.renderer,
                ticket=ticket,
                fence=lease.fence,
                still_leased=lambda: self.leases.still_holds(lease),
                hooks=self.hooks,
                inbox_signal=signal,
            )
            self._live[ticket.id] = follower
            try:
                await follower.run()
                done = True
            except TurnFailed as exc:
                await store.transition(ticket, TicketState.FAILED, str(exc))
                await self.renderer.notice(
                    ticket,
                    f":warning: I could not continue this ticket: {exc}. "
                    "Mention me in this thread to try again.",
                )
                done = failed = True
        except StaleLease:
            log.warning("lease lost; another worker has the ticket", extra={"ticket": lease.ticket_id})
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("follower crashed", extra={"ticket": lease.ticket_id})
        finally:
            self._live.pop(lease.ticket_id, None)
            if signal is not None:
                self.signals.release(lease.ticket_id, signal)
            renew.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renew
            await self.leases.release(lease, done=done)
            # A message that arrived as we were finishing is picked straight back up; after a
            # failure the undelivered ones wait for the person to try again (no retry loop).
            if done and not failed and await store.pending_messages(lease.ticket_id):
                await self.start_ticket(lease.ticket_id, "late-message")

    async def _record_follow(self, lease: Lease, reason: str) -> None:
        """For the ticket's trace: which worker followed it, and whether it took it over."""
        try:
            await record_follow(
                self.services.redis, lease.ticket_id, worker=self.services.worker_id, reason=reason, fence=lease.fence
            )
        except Exception:  # the trace must never stop a ticket from being worked
            log.warning("follow not recorded", extra={"ticket": lease.ticket_id}, exc_info=True)

    async def _resolve_environment(self, ticket: Ticket) -> bool:
        env = await resolve_environment(
            self.services.slack, self.services.redis, self.services.config, ticket.channel_id
        )
        if env is None:
            await self.services.store.transition(ticket, TicketState.FAILED, "channel not served")
            await self.renderer.notice(
                ticket,
                ":no_entry: This channel is not set up for support tickets. "
                "An admin can add it to an environment in support-agent.yml.",
            )
            return False
        ticket.environment = env
        await self.services.store.save(ticket)
        return True

    async def _reopen_for_message(self, ticket: Ticket) -> Ticket:
        """Someone wrote in a closed ticket's thread (a mention after Resolve, a reply after a
        failure): reopen it the way the Reopen button does, on the same session while it is
        usable, else on a new one seeded with the thread, which already holds what they wrote."""
        store = self.services.store
        pending = await store.pending_messages(ticket.id)
        outcome = await TicketControls(self.services).reopen(ticket, pending[-1].user_id)
        reopened = outcome.ticket or ticket
        if outcome.ok and reopened.session_id is None:
            for message in pending:
                await store.mark_sent(ticket.id, message)
        return reopened

    def _on_visible(self, ticket: Ticket, events: list[Any]) -> None:
        follower = self._live.get(ticket.id)
        if follower is not None:
            follower.visible(events)

    async def _renew_forever(self, lease: Lease) -> None:
        interval = max(self.services.settings.lease_seconds / 3, 0.2)
        while True:
            await asyncio.sleep(interval)
            if not await self.leases.renew(lease):
                log.warning("lease renewal failed", extra={"ticket": lease.ticket_id})
                return
