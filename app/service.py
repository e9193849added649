"""The long-running roles: web, worker, and both in one process."""

from __future__ import annotations

import asyncio
import logging
import signal
import socket
from contextlib import suppress
from typing import Any

import uvicorn

from app.render.stream import StreamRenderer
from app.runtime import Services
from app.sessions.budget_hooks import BudgetNotifier, combine_hooks
from app.sessions.cost_hooks import CostCapture
from app.sessions.custom_tools import CustomToolRunner
from app.sessions.outcomes import OutcomeTracker
from app.slack.approvals import decided_lines
from app.slack.blocks import STOPPABLE_STATES, control_blocks
from app.slack.bolt_app import build_bolt_app
from app.tickets.channel_loss import ChannelLoss
from app.tickets.model import Ticket, TicketState
from app.trace import record
from app.web import build_web_app
from app.worker import Worker

log = logging.getLogger(__name__)


def _install_signal_handlers(stop: asyncio.Event) -> None:
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        # Only the main thread may own signals; an embedded run (tests, sandbox) is stopped by event.
        with suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(sig, stop.set)


async def _until(stop: asyncio.Event, *tasks: asyncio.Task[object]) -> bool:
    """Wait for a requested stop or for a role to end by itself; True for the former."""
    waiter = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
    for task in done:
        if task is waiter:
            continue
        if task.cancelled():
            log.error("role cancelled", extra={"role": task.get_name()})
        elif task.exception():
            log.error("role stopped with an error", extra={"role": task.get_name()}, exc_info=task.exception())
        else:
            log.error("role ended on its own", extra={"role": task.get_name()})
    if waiter not in done:
        waiter.cancel()
    return stop.is_set()


def turn_controls(ticket: Ticket) -> list[dict[str, Any]]:
    """The thread controls under a finished turn's answer. The agent has stopped working, so
    no Stop (a ❌ reaction stops a running turn); Resolve while open, Reopen once closed."""
    if ticket.state in STOPPABLE_STATES:
        ticket = ticket.model_copy(update={"state": TicketState.WAITING_REQUESTER})
    return control_blocks(ticket)


def working_controls(ticket: Ticket) -> list[dict[str, Any]]:
    """The controls beside a turn in progress: Stop (and Resolve, Trace) while the agent works."""
    if ticket.state not in STOPPABLE_STATES:
        return []
    return control_blocks(ticket.model_copy(update={"state": TicketState.WORKING}))


def make_worker(services: Services) -> Worker:
    costs = CostCapture(services.redis, services.anthropic, services.config)

    loss = ChannelLoss(services.store, services.anthropic)

    def renderer(s: Services) -> StreamRenderer:
        async def stream_event(ticket: Ticket, event: str, detail: dict[str, Any]) -> None:
            await record.record_stream(s.redis, ticket.id, event=event, detail=detail)

        return StreamRenderer(
            s.slack,
            s.redis,
            footer=costs.footer,
            controls=turn_controls,
            on_fatal=loss.on_render_failure,
            on_stream_event=stream_event,
            decisions=lambda ticket, ids: decided_lines(s.redis, ticket.id, ids),
            working_controls=working_controls,
            working_after=s.settings.stop_button_after_seconds,
        )

    budget = BudgetNotifier(services.slack, services.redis, services.anthropic, services.config)
    tools = CustomToolRunner(services)
    outcomes = OutcomeTracker(services)  # the grader's verdicts: record, cost, hand-off (issue 18)
    hooks = combine_hooks(costs.hooks(), budget.hooks(), tools.hooks(), outcomes.hooks())
    return Worker(services, renderer_factory=renderer, hooks=hooks)


async def serve(
    services: Services,
    *,
    web: bool,
    worker: bool,
    stop: asyncio.Event | None = None,
    listen_socket: socket.socket | None = None,
) -> int:
    """Run the chosen roles until SIGINT/SIGTERM (or until `stop` is set).

    Returns the process's exit status: 0 only after a requested stop; 1 when a role ended by
    itself. Raises `RedisUnavailable` when Redis cannot be reached within the start-up allowance.
    """
    stop = stop or asyncio.Event()
    _install_signal_handlers(stop)
    try:
        await services.redis_watch.wait_at_start(services.settings.redis_start_timeout)
    except BaseException:
        await services.aclose()
        raise
    tasks: list[asyncio.Task[object]] = []
    bolt = build_bolt_app(services)
    server: uvicorn.Server | None = None
    socket_handler = None
    if web:
        if services.settings.socket_mode:
            from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler

            assert services.settings.slack_app_token is not None
            socket_handler = AsyncSocketModeHandler(bolt, services.settings.slack_app_token.get_secret_value())
            await socket_handler.connect_async()
            log.info("connected to Slack in Socket Mode")
        asgi = build_web_app(services, bolt)
        config = uvicorn.Config(
            asgi, host=services.settings.host, port=services.settings.port, log_config=None, lifespan="on"
        )
        server = uvicorn.Server(config)
        tasks.append(
            asyncio.create_task(server.serve(sockets=[listen_socket] if listen_socket else None), name="web")
        )
        port = listen_socket.getsockname()[1] if listen_socket else services.settings.port
        log.info("web listening", extra={"host": services.settings.host, "port": port})
    the_worker: Worker | None = None
    if worker:
        the_worker = make_worker(services)
        tasks.append(asyncio.create_task(the_worker.run(), name="worker"))
    requested = False
    try:
        requested = await _until(stop, *tasks)
    finally:
        if the_worker is not None:
            the_worker.stop()
        if server is not None:
            server.should_exit = True
        if socket_handler is not None:
            await socket_handler.close_async()
        await asyncio.gather(*tasks, return_exceptions=True)
        await services.aclose()
    return 0 if requested else 1
