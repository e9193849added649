"""The session threads endpoints of the emulator (SDK `resources/beta/sessions/threads/`).

    GET  /v1/sessions/{sid}/threads                 list (limit default 1000, page, statuses[])
    GET  /v1/sessions/{sid}/threads/{tid}           retrieve
    POST /v1/sessions/{sid}/threads/{tid}/archive   archive
    GET  /v1/sessions/{sid}/threads/{tid}/events    list the thread's own events (limit, page)
    GET  /v1/sessions/{sid}/threads/{tid}/stream    SSE of the thread's own events (no previews)

Paths, parameters and defaults are the SDK's (`threads.py` docstrings: "Defaults to 1000";
statuses "Repeat the parameter to give more than one status"). The thread stream has no
`/events/` segment (SDK `threads/events.py`).
"""

from __future__ import annotations

import copy
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from app.sandbox.agents.resources import ApiError, paginate, parse_limit
from app.sandbox.agents.sse import sse_body

if TYPE_CHECKING:
    from app.sandbox.agents.state import EmulatorState

Handler = Callable[[Request], Awaitable[Response]]
STATUSES = ("running", "idle", "rescheduling", "terminated")  # SDK session_thread_status.py


def thread_routes(state: EmulatorState, api: Callable[[Callable[[Request], Awaitable[Any]]], Handler]) -> list[Route]:
    from app.sandbox.agents.session import Subscriber

    def threads_of(request: Request) -> Any:
        return state.session_runtime(str(request.path_params["session_id"])).threads

    async def listing(request: Request) -> Any:
        threads = threads_of(request)
        query = request.query_params
        wanted = set(query.getlist("statuses[]") + query.getlist("statuses"))
        if wanted - set(STATUSES):
            raise ApiError(400, f"statuses: one of {', '.join(STATUSES)}")
        items = [threads.to_json(t) for t in threads.all()]
        items = [t for t in items if not wanted or t["status"] in wanted]
        return paginate(items, query.get("page"), parse_limit(query.get("limit"), 1000, None))

    async def one(request: Request) -> Any:
        threads = threads_of(request)
        return threads.to_json(threads.get(str(request.path_params["thread_id"])))

    async def archive(request: Request) -> Any:
        return threads_of(request).archive(str(request.path_params["thread_id"]))

    async def events(request: Request) -> Any:
        threads = threads_of(request)
        thread = threads.get(str(request.path_params["thread_id"]))
        items = [copy.deepcopy(e) for e in threads.events_of(thread)]
        query = request.query_params
        return paginate(items, query.get("page"), parse_limit(query.get("limit"), 1000, None))

    async def stream(request: Request) -> Any:
        threads = threads_of(request)
        thread = threads.get(str(request.path_params["thread_id"]))
        if thread is threads.primary:
            sub = threads.session.subscribe(frozenset())  # the primary thread is the session stream
            owner: set[Any] = threads.session.subscribers
        else:
            sub = Subscriber(deltas=frozenset())
            owner = thread.subscribers
            owner.add(sub)


        frames = sse_body(sub, state.ping_interval, lambda: owner.discard(sub))
        return StreamingResponse(frames, media_type="text/event-stream", headers={"cache-control": "no-cache"})

    base = "/v1/sessions/{session_id}/threads"
    return [
        Route(base, api(listing), methods=["GET"]),
        Route(base + "/{thread_id}", api(one), methods=["GET"]),
        Route(base + "/{thread_id}/archive", api(archive), methods=["POST"]),
        Route(base + "/{thread_id}/events", api(events), methods=["GET"]),
        Route(base + "/{thread_id}/stream", api(stream), methods=["GET"]),
    ]
