"""The worker role: takes ticket jobs, holds leases, runs session followers.

Many followers run in one process (one asyncio task each). A follower holds its ticket's lease
and renews it; a ticket whose lease ran out (its worker died) is taken over by whichever live
worker sees it first.

Redis going away stops nothing: every loop waits for it (`RedisWatch`) and carries on, and a
follower cut off mid-ticket resumes once its lease is confirmed. While a lease cannot be renewed
the renderer writes nothing for that ticket past the moment the lease may have lapsed
(`may_write`), so a worker that lost a ticket while cut off never writes over its new holder.
On SIGTERM the worker stops its followers, lets the renderer finish what it holds, and hands
each ticket off so another worker picks it up on its next reaper pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import sentry_sdk

from app.jobs.lease import Lease, LeaseManager
from app.jobs.queue import JobQueue
from app.jobs.wake import woken
from app.redis_health import is_outage
from app.render.base import Renderer
from app.runtime import Services, freeze_heap
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
T = TypeVar("T")
# How long a stopping worker lets the renderer finish the turns it holds before handing off.
SHUTDOWN_FLUSH_SECONDS = 10.0


class Worker:
    def __init__(
        self,
        services: Services,
        renderer_factory: RendererFactory,
        hooks: dict[str, EventHook] | None = None,
        poll_interval: float = 0.5,
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
        self.watch = services.redis_watch
        self.ttl = services.settings.lease_seconds
        # Per ticket we hold: until when (monotonic) our lease surely holds. 0: we lost it.
        self._deadlines: dict[str, float] = {}
        self._handoff: list[Lease] = []
        if hasattr(self.renderer, "may_write"):
            self.renderer.may_write = self.may_write
            self.renderer.lease_lost = self.lease_lost  # type: ignore[attr-defined]

    def lease_lost(self, ticket_id: str) -> bool:
        """Whether another worker surely has the ticket now (not merely a renewal running late)."""
        return self._deadlines.get(ticket_id) == 0.0

    def may_write(self, ticket_id: str) -> bool:
        """Whether Slack output for this ticket may go out: not once our lease may have lapsed."""
        deadline = self._deadlines.get(ticket_id)
        return deadline is None or time.monotonic() < deadline

    async def run(self) -> None:
        await self._through_outages(self.queue.ensure_group)
        freeze_heap()  # what starting allocated is never garbage: full collections skip it
        log.info("worker started", extra={"worker": self.services.worker_id})
        reaper = asyncio.create_task(self._reap_forever(), name="reaper")
        self.signals.start()
        try:
            while not self._stopping.is_set():
                try:
                    jobs = await self.queue.take(block_ms=int(self.poll_interval * 1000))
                    for job in jobs:
                        await self.start_ticket(job.ticket_id, job.reason)
                        await self.queue.ack(job)
                except Exception as exc:
                    await self._recover(exc, "taking jobs")
        finally:
            await self._shut_down(reaper)

    async def _shut_down(self, reaper: asyncio.Task[None]) -> None:
        self._stopping.set()
        await self.signals.aclose()
        reaper.cancel()
        # Followers stop first and keep their leases, so nobody else renders these tickets
        # while the renderer finishes what it holds; then each ticket is handed off.
        for task in list(self.followers.values()):
            task.cancel()
        await asyncio.gather(reaper, *self.followers.values(), return_exceptions=True)
        aclose = getattr(self.renderer, "aclose", None)
        if aclose is not None:
            try:  # stop open Slack streams rather than leave them to expire
                await asyncio.wait_for(aclose(), SHUTDOWN_FLUSH_SECONDS)
            except Exception:
                log.warning("renderer did not finish before shutdown", exc_info=True)
        handed = 0
        for lease in self._handoff:
            try:
                handed += await self.leases.release(lease, done=False, handoff=True)
            except Exception as exc:  # its lease lapses by itself; the reaper takes it then
                log.warning("lease not handed off", extra={"ticket": lease.ticket_id, "error": repr(exc)})
        if self._handoff:
            log.info("tickets handed off", extra={"tickets": handed, "worker": self.services.worker_id})
        self._handoff.clear()

    def stop(self) -> None:
        self._stopping.set()

    async def _recover(self, exc: Exception, doing: str) -> None:
        """After a failed pass of a loop: wait out a Redis outage (and re-create the consumer
        group if Redis came back empty), or log a real error and pause before the next pass."""
        if is_outage(exc):
            await self._or_stop(self.watch.wait_until_up(exc))
            if not self._stopping.is_set():
                await self._through_outages(self.queue.ensure_group)
            return
        if "NOGROUP" in str(exc):
            log.warning("job stream or consumer group missing; re-creating it")
            await self._through_outages(self.queue.ensure_group)
            return
        log.exception("worker loop failed", extra={"doing": doing})
        await self._or_stop(asyncio.sleep(self.poll_interval))

    async def _through_outages(self, call: Callable[[], Awaitable[T]]) -> T | None:
        """`call()`, retried after each Redis outage; None if the worker is stopping."""
        while not self._stopping.is_set():
            try:
                return await call()
            except Exception as exc:
                if not is_outage(exc):
                    raise
                await self._or_stop(self.watch.wait_until_up(exc))
        return None

    async def _or_stop(self, waiting: Awaitable[Any]) -> None:
        """Wait for something, unless the worker is asked to stop first."""
        task = asyncio.ensure_future(waiting)
        stopper = asyncio.create_task(self._stopping.wait())
        try:
            await asyncio.wait([task, stopper], return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()
            if not task.done():
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task

    async def _reap_forever(self) -> None:
        while not self._stopping.is_set():
            try:
                for ticket_id in await self.leases.orphans():
                    log.info("taking over orphaned ticket", extra={"ticket": ticket_id})
                    await self.start_ticket(ticket_id, "takeover")
                for job in await self.queue.reclaim():
                    await self.start_ticket(job.ticket_id, f"reclaimed:{job.reason}")
                    await self.queue.ack(job)
            except Exception as exc:
                await self._recover(exc, "reaping")
            await self._or_stop(asyncio.sleep(self.poll_interval))

    async def start_ticket(self, ticket_id: str, reason: str) -> bool:
        """Follow a ticket if no one else does. The current holder sees new inbox messages itself."""
        running = self.followers.get(ticket_id)
        # A finishing follower may hand its ticket straight to a successor: itself is no obstacle.
        if running is not None and not running.done() and running is not asyncio.current_task():
            return False
        if self._stopping.is_set():
            return False
        asked = time.monotonic()
        lease = await self.leases.acquire(ticket_id)
        if lease is None:
            return False
        self._deadlines[ticket_id] = asked + self.ttl
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
        ticket_id = lease.ticket_id
        follow_task = asyncio.current_task()
        lost = asyncio.Event()
        renew = asyncio.create_task(self._renew_forever(lease, follow_task, lost), name=f"renew-{ticket_id}")
        done = failed = False
        try:
            while True:
                try:
                    done, failed = await self._follow_lease(lease, reason)
                    break
                except Exception as exc:
                    if not is_outage(exc):
                        raise
                    log.warning("redis unreachable mid-ticket; it waits", extra={"ticket": ticket_id})
                    await self._or_stop(self.watch.wait_until_up(exc))
                    if self._stopping.is_set():
                        return
                    if not await self._through_outages(lambda: self.leases.renew(lease)):
                        raise StaleLease(ticket_id) from exc
                    self._deadlines[ticket_id] = max(self._deadlines.get(ticket_id, 0.0), time.monotonic())
                    reason = "redis-recovered"
        except StaleLease:
            lost.set()
            log.warning("lease lost; another worker has the ticket", extra={"ticket": ticket_id})
        except asyncio.CancelledError:
            if not lost.is_set():
                raise
            log.warning("lease lost while following; stopped", extra={"ticket": ticket_id})
        except Exception:
            log.exception("follower crashed", extra={"ticket": ticket_id})
        finally:
            renew.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renew
            await self._let_go(lease, done=done, lost=lost.is_set())
            # After a failure the undelivered messages wait for the person to try again.
            if done and not failed and not self._stopping.is_set():
                await self._follow_again_if_woken(ticket_id)

    async def _follow_again_if_woken(self, ticket_id: str) -> None:
        """A message or a wake-up (an approval, a budget raise: `app.jobs.wake`) that landed while
        we were letting go: its job may have been dropped because we still held the lease, so
        the ticket is picked straight back up. From here on this task is no obstacle to a job
        of this process taking the ticket (`start_ticket`), since the lease is released."""
        if self.followers.get(ticket_id) is asyncio.current_task():
            del self.followers[ticket_id]
        with contextlib.suppress(Exception):
            if await woken(self.services.redis, ticket_id):
                await self.start_ticket(ticket_id, "woken")
            elif await self.services.store.pending_messages(ticket_id):
                await self.start_ticket(ticket_id, "late-message")

    async def _let_go(self, lease: Lease, *, done: bool, lost: bool) -> None:
        ticket_id = lease.ticket_id
        if lost:
            self._deadlines[ticket_id] = 0.0  # our renderer must not write for it any more
            return
        if self._stopping.is_set() and not done:
            self._handoff.append(lease)  # released once the renderer has finished (`_shut_down`)
            return
        self._deadlines.pop(ticket_id, None)
        try:
            await self.leases.release(lease, done=done)
        except Exception as exc:  # it lapses by itself and the ticket stays active: reaped then
            log.warning("lease not released", extra={"ticket": ticket_id, "error": repr(exc)})

    async def _follow_lease(self, lease: Lease, reason: str) -> tuple[bool, bool]:
        """Follow the ticket until its turn is over: (done, failed)."""
        store = self.services.store
        signal: asyncio.Event | None = None
        ticket = await store.get(lease.ticket_id)
        if ticket is None:
            return True, False
        try:
            extra: dict[str, Any] = {"ticket": ticket.id, "session": ticket.session_id, "reason": reason}
            log.info("following ticket", extra=extra)
            await self._record_follow(lease, reason)
            if not ticket.environment:
                if not await self._resolve_environment(ticket):
                    # Failed, not done: its message stays queued for a retry after an admin
                    # serves the channel, and must not be picked straight back up (one notice).
                    return True, True
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
                still_leased=lambda: self.leases.renew(lease),
                hooks=self.hooks,
                inbox_signal=signal,
                slack=self.services.slack,
            )
            self._live[ticket.id] = follower
            try:
                await follower.run()
                return True, False
            except TurnFailed as exc:
                await store.transition(ticket, TicketState.FAILED, str(exc))
                await self.renderer.notice(
                    ticket,
                    f":warning: I could not continue this ticket: {exc}. "
                    "Mention me in this thread to try again.",
                )
                return True, True
        finally:
            self._live.pop(lease.ticket_id, None)
            if signal is not None:
                self.signals.release(lease.ticket_id, signal)

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

    async def _renew_forever(
        self, lease: Lease, follow_task: asyncio.Task[Any] | None, lost: asyncio.Event
    ) -> None:
        """Keep the lease; through a Redis outage keep trying (the deadline stops our Slack
        output meanwhile); once another worker has the ticket, stop its follower here."""
        interval = max(self.ttl / 3, 0.2)
        while True:
            await asyncio.sleep(interval)
            asked = time.monotonic()
            try:
                held = await self.leases.renew(lease)
            except Exception as exc:
                if not is_outage(exc):
                    log.warning("lease renewal failed", extra={"ticket": lease.ticket_id, "error": repr(exc)})
                continue
            if held:
                self._deadlines[lease.ticket_id] = asked + self.ttl
                continue
            log.warning("lease renewal refused: another worker holds the ticket", extra={"ticket": lease.ticket_id})
            lost.set()
            self._deadlines[lease.ticket_id] = 0.0
            if follow_task is not None:
                follow_task.cancel()
            return
