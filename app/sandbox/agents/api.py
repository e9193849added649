"""A local emulator of the Claude Managed Agents API, served over real HTTP.

The real `anthropic.AsyncAnthropic(api_key=..., base_url=emulator.url)` talks to it over a
socket; responses and SSE frames are in the exact wire shapes the SDK parses.

    emulator = AgentsEmulator(api_key="test-key").start()
    emulator.set_scenario({"rules": [{"match": "refund", "steps": [{"message": "5 days"}]}]})
    client = emulator.client(max_retries=0)          # an AsyncAnthropic pointed at it
    ...
    emulator.stop()

What it serves under /v1: agents (+versions), environments, vaults (+credentials), sessions,
session events (send, list, SSE stream with opt-in deltas and pings). See `scenario.py` for the
script that drives the emulated agent, and `agents_state.py` for the in-process control API
(`fail_next`, `drop_streams`, snapshots; thread-safe).

Behaviour worth knowing (the emulator's reading of the docs):

- A `user.message` sent while the session is idle is processed at once (`processed_at` set, the
  turn starts with `session.status_running` inside the same request). Sent while a turn is in
  progress (running, or idle waiting on `requires_action`) it is queued with `processed_at: null`
  and becomes its own turn later, in order. `events.list` orders by processing; queued messages
  come last and never match `created_at[...]` filters (they compare `processed_at`).
- A queued message is echoed on the stream twice: `processed_at: null` when sent, then with
  its timestamp when its turn starts (anthropics/skills managed-agents-client-patterns.md
  section 2). A message sent while paused at the budget queues the same way (nothing
  documents a refusal).
- `user.interrupt` cancels the turn in progress (including one waiting on a confirmation):
  `span.model_request_end` if a model request was open, then idle `end_turn`. With the
  scenario's `interrupt: "boundary"` the step in progress finishes first (client-patterns
  section 3: the session "keeps running until it reaches a safe boundary"). Queued messages
  are kept and run next. While paused at the budget an interrupt is accepted and ignored.
- `user.define_outcome` is accepted (SDK params: description, rubric, max_iterations <= 20),
  echoed with an `outcome_id`, and starts a turn like a message (sent while a turn runs, it is
  processed on receipt, `pending`, and worked on next); scenario `evaluate` steps emit
  `span.outcome_evaluation_*` with the grader's usage and keep `outcome_evaluations` on the
  session, and grade nothing when no outcome is being worked on. Session
  `resources` (github_repository, file, memory_store) are accepted and returned in the SDK's
  response shapes (tokens never returned).
- Every emitted event is validated with the SDK's stream union first; scenario `event` steps
  produce any type of that union (`agents_events.py`).
- The scenario's `status_lag` keeps `retrieve`/`list` at `running` for that long after each
  idle event, and archive / delete answer 400 meanwhile (client-patterns section 6).
- An `exhausted` or `terminal` session error flushes queued messages (unless the step says
  `flush_queue: false`); `terminal` ends in `session.status_terminated` and later sends get 400.
- Archive and delete answer 400 while the status is running/rescheduling; both cancel a turn
  that waits on the client. Delete emits `session.deleted` and closes the session's streams.
- A stream gets only events emitted after it connected; deltas only for previews it saw start.
- `list_cost` (integer cents, rounded half up) = tokens at `Prices` (Sonnet 4.6-like by default)
  + `active_seconds` * $0.08/h + $0.01 per web_search tool call; `active_seconds` only grows
  through scenario `usage` steps (deterministic), never from wall time.
- `mcp_caller` runs on the emulator's loop: don't close over clients bound to another loop.

Control over HTTP, for tests that run the app under test in another process (JSON, no auth):

    GET    /_emulator/health
    POST   /_emulator/reset
    POST   /_emulator/config        {"ping_interval": 0.5, "api_key": "..."}
    POST   /_emulator/scenario      {"scenario": {...}, "session_id": null}
    GET    /_emulator/faults        POST {"method","path","status","count","retry_after",
                                          "delay","after","error_type","message","error_code"}
    DELETE /_emulator/faults
    POST   /_emulator/drop_streams  {"session_id": null, "mode": "close"|"abort"}
    GET    /_emulator/sessions                      sessions + debug fields
    GET    /_emulator/sessions/{id}/events          every event, queued ones too
    GET    /_emulator/sessions/{id}/processed       {"messages": [texts in turn order]}
    GET    /_emulator/user_events?session_id=       user events in the order received
    GET    /_emulator/requests                      [{method, path, query, status, body, ...}]
    GET    /_emulator/mcp_calls                     MCP calls the agent made
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import secrets
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.sandbox.agents.memory_api import memory_routes
from app.sandbox.agents.multiagent import prepare_agent_body
from app.sandbox.agents.resources import ApiError, redact
from app.sandbox.agents.scenario import Scenario
from app.sandbox.agents.session import Prices, StreamAborted
from app.sandbox.agents.sse import sse_body
from app.sandbox.agents.state import EmulatorState, Fault
from app.sandbox.agents.thread_api import thread_routes
from app.sandbox.server import ServerThread

__all__ = ["AgentsEmulator", "EmulatorState", "Prices", "Scenario", "create_app"]

BETA = "managed-agents-2026-04-01"
MEMORY_BETA = "agent-memory-2026-07-22"
DELTA_TYPES = ("agent.message", "agent.thinking")

Handler = Callable[[Request], Awaitable[Response]]


def _request_id(scope: Scope) -> str:
    return str(scope.get("emulator.request_id") or "req_emulator")


def error_response(error: ApiError, request_id: str) -> JSONResponse:
    return JSONResponse(
        error.body(request_id),
        status_code=error.status,
        headers={"request-id": request_id, **error.headers},
    )


async def json_body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw.strip():
        return {}
    try:
        data = json.loads(raw)
    except ValueError as exc:
        # Every params TypedDict is a JSON object; a bad body is a 400 invalid_request_error
        # (reference digest managed-agents-api.md section 17: error body and SDK BadRequestError).
        raise ApiError(400, "the request body is not valid JSON") from exc
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object")
    return data


class _AbortFilter(logging.Filter):
    """Keep uvicorn from logging the deliberate connection aborts of `drop_stream` abort."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not _is_abort(exc)


def _is_abort(exc: BaseException | None, depth: int = 0) -> bool:
    if exc is None or depth > 5:
        return False
    if isinstance(exc, StreamAborted):
        return True
    if isinstance(exc, BaseExceptionGroup):
        return any(_is_abort(e, depth + 1) for e in exc.exceptions)
    return _is_abort(exc.__cause__ or exc.__context__, depth + 1)


logging.getLogger("uvicorn.error").addFilter(_AbortFilter())


class EmulatorMiddleware:
    """Request ids, the request log, auth, the beta header check and injected faults."""

    def __init__(self, app: ASGIApp, state: EmulatorState) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = self.state
        loop = asyncio.get_running_loop()
        if state.loop is not loop:
            state.bind_loop(loop)
        request_id = "req_" + secrets.token_hex(12)
        scope["emulator.request_id"] = request_id
        method, path = scope["method"], scope["path"]
        receive = await self._buffer_body(scope, receive)
        record: dict[str, Any] = {
            "method": method,
            "path": path,
            "query": scope.get("query_string", b"").decode("latin-1"),
            "status": None,
            "request_id": request_id,
            "at": state.now(),
            "body": scope.get("emulator.body_json"),
        }
        if not path.startswith("/_emulator"):
            state.log_request(record)

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                record["status"] = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"request-id", request_id.encode()))
                message = {**message, "headers": headers}
            await send(message)

        fault: Fault | None = None
        if path.startswith("/v1/"):
            error = self._check_auth(scope)
            if error is None:
                fault = state.take_fault(method, path)
                if fault is not None:
                    if fault.delay:
                        await asyncio.sleep(fault.delay)
                    if fault.status and not fault.after:
                        error = fault.to_error()
            if error is not None:
                await error_response(error, request_id)(scope, receive, send_with_id)
                return
        if fault is not None and fault.status and fault.after:

            async def swallow(message: Message) -> None:
                return None

            await self.app(scope, receive, swallow)
            await error_response(fault.to_error(), request_id)(scope, receive, send_with_id)
            return
        await self.app(scope, receive, send_with_id)

    def _check_auth(self, scope: Scope) -> ApiError | None:
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        key = headers.get("x-api-key")
        bearer = headers.get("authorization", "")
        if bearer.lower().startswith("bearer "):
            key = key or bearer[7:]
        if key != self.state.api_key:  # reference digest section 1 / 17: x-api-key, 401 authentication_error
            return ApiError(401, "invalid x-api-key")
        betas = [b.strip() for b in headers.get("anthropic-beta", "").split(",")]
        # SDK memory_stores/*: "requests must send agent-memory-2026-07-22 or managed-agents-2026-04-01".
        memory = scope["path"].startswith("/v1/memory_stores") and MEMORY_BETA in betas
        if BETA not in betas and not memory:  # reference digest section 1: every call needs anthropic-beta
            return ApiError(400, f"this endpoint requires the anthropic-beta header {BETA!r}")
        return None

    @staticmethod
    async def _buffer_body(scope: Scope, receive: Receive) -> Receive:
        if scope["method"] not in ("POST", "PUT", "PATCH", "DELETE"):
            return receive
        chunks = []
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            if not message.get("more_body"):
                break
        body = b"".join(chunks)
        with contextlib.suppress(ValueError):
            scope["emulator.body_json"] = redact(json.loads(body)) if body else None
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay


def create_app(state: EmulatorState) -> Starlette:
    """The emulator's ASGI app over `state`."""

    def api(fn: Callable[[Request], Awaitable[Any]]) -> Handler:
        async def handler(request: Request) -> Response:
            try:
                result = await fn(request)
            except ApiError as error:
                return error_response(error, _request_id(request.scope))
            if isinstance(result, Response):
                return result
            return JSONResponse(result)

        return handler

    def p(request: Request, name: str) -> str:
        return str(request.path_params[name])

    # -- agents --
    async def agents(request: Request) -> Any:
        if request.method == "POST":
            body = await json_body(request)
            prepare_agent_body(state, body)  # `multiagent` resolved (app/sandbox/agents/threads.py)
            return state.create_agent(body)
        return state.list_agents(request.query_params)

    async def agent(request: Request) -> Any:
        if request.method == "POST":
            body = await json_body(request)
            prepare_agent_body(state, body, p(request, "agent_id"))
            return state.update_agent(p(request, "agent_id"), body)
        version = request.query_params.get("version")
        if version is not None and not version.isdigit():  # SDK agent_retrieve_params.version: int, "at least 1"
            raise ApiError(400, "version must be an integer")
        return state.agent_version(p(request, "agent_id"), int(version) if version else None)

    async def agent_archive(request: Request) -> Any:
        return state.archive_agent(p(request, "agent_id"))

    async def agent_versions(request: Request) -> Any:
        return state.list_agent_versions(p(request, "agent_id"), request.query_params)

    # -- environments --
    async def environments(request: Request) -> Any:
        if request.method == "POST":
            return state.create_environment(await json_body(request))
        return state.list_environments(request.query_params)

    async def environment(request: Request) -> Any:
        env_id = p(request, "environment_id")
        if request.method == "POST":
            return state.update_environment(env_id, await json_body(request))
        if request.method == "DELETE":
            return state.delete_environment(env_id)
        return dict(state.environment(env_id))

    async def environment_archive(request: Request) -> Any:
        return state.archive_environment(p(request, "environment_id"))

    # -- vaults --
    async def vaults(request: Request) -> Any:
        if request.method == "POST":
            return state.create_vault(await json_body(request))
        return state.list_vaults(request.query_params)

    async def vault(request: Request) -> Any:
        vault_id = p(request, "vault_id")
        if request.method == "POST":
            return state.update_vault(vault_id, await json_body(request))
        if request.method == "DELETE":
            return state.delete_vault(vault_id)
        return dict(state.vault(vault_id))

    async def vault_archive(request: Request) -> Any:
        return state.archive_vault(p(request, "vault_id"))

    async def credentials(request: Request) -> Any:
        vault_id = p(request, "vault_id")
        if request.method == "POST":
            return state.create_credential(vault_id, await json_body(request))
        return state.list_credentials(vault_id, request.query_params)

    async def credential(request: Request) -> Any:
        vault_id, cred_id = p(request, "vault_id"), p(request, "credential_id")
        if request.method == "POST":
            return state.update_credential(vault_id, cred_id, await json_body(request))
        if request.method == "DELETE":
            return state.delete_credential(vault_id, cred_id)
        return dict(state.credential(vault_id, cred_id))

    async def credential_archive(request: Request) -> Any:
        return state.archive_credential(p(request, "vault_id"), p(request, "credential_id"))

    # -- sessions --
    async def sessions(request: Request) -> Any:
        if request.method == "POST":
            return state.create_session(await json_body(request))
        return state.list_sessions(request.query_params)

    async def session(request: Request) -> Any:
        session_id = p(request, "session_id")
        if request.method == "POST":
            return state.update_session(session_id, await json_body(request))
        if request.method == "DELETE":
            return state.delete_session(session_id)
        return state.session_runtime(session_id).to_json()

    async def session_archive(request: Request) -> Any:
        return state.archive_session(p(request, "session_id"))

    async def events(request: Request) -> Any:
        session_id = p(request, "session_id")
        if request.method == "POST":
            return state.send_events(session_id, await json_body(request))
        return state.list_events(session_id, request.query_params)

    async def stream(request: Request) -> Any:
        runtime = state.session_runtime(p(request, "session_id"))
        query = request.query_params
        deltas = frozenset(query.getlist("event_deltas[]") + query.getlist("event_deltas"))
        unknown = deltas - set(DELTA_TYPES)
        if unknown:
            # anthropics/skills managed-agents-events.md "Live previews": "Accepted values:
            # agent.message, agent.thinking (any other value -> 400)".
            raise ApiError(400, f"event_deltas: unsupported {sorted(unknown)}; use {DELTA_TYPES}")
        sub = runtime.subscribe(deltas)


        return StreamingResponse(
            sse_body(sub, state.ping_interval, lambda: runtime.unsubscribe(sub)),
            media_type="text/event-stream",
            headers={"cache-control": "no-cache", "x-accel-buffering": "no"},
        )

    # -- control --
    async def control_reset(request: Request) -> Any:
        state._reset_all()
        return {"ok": True}

    async def control_config(request: Request) -> Any:
        body = await json_body(request)
        if "ping_interval" in body:
            state.ping_interval = float(body["ping_interval"])
        if "api_key" in body:
            state.api_key = str(body["api_key"])
        if isinstance(body.get("prices"), dict):
            state.prices = Prices(**body["prices"])
        return {"ping_interval": state.ping_interval, "prices": state.prices.__dict__}

    async def control_scenario(request: Request) -> Any:
        body = await json_body(request)
        try:
            scenario = Scenario.parse(body.get("scenario"))
        except ValueError as exc:
            raise ApiError(400, f"invalid scenario: {exc}") from exc
        state._set_scenario(scenario, body.get("session_id"))
        return {"ok": True, "scenario": scenario.to_json()}

    async def control_faults(request: Request) -> Any:
        if request.method == "DELETE":
            state.faults.clear()
        elif request.method == "POST":
            body = await json_body(request)
            try:
                fault = Fault(
                    method=str(body.get("method", "*")).upper(),
                    path=str(body["path"]),
                    status=int(body.get("status", 0)),
                    count=int(body.get("count", 1)),
                    retry_after=body.get("retry_after"),
                    delay=float(body.get("delay", 0.0)),
                    after=bool(body.get("after", False)),
                    error_type=body.get("error_type"),
                    message=body.get("message"),
                    error_code=body.get("error_code"),
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise ApiError(400, f"invalid fault: {exc!r}") from exc
            state.faults.append(fault)
        return {"faults": [f.to_json() for f in state.faults]}

    async def control_drop(request: Request) -> Any:
        body = await json_body(request)
        dropped = state._drop_streams(body.get("session_id"), str(body.get("mode", "close")))
        return {"dropped": dropped}

    async def control_sessions(request: Request) -> Any:
        return {"data": [state._session_debug(s) for s in state.sessions.values()]}

    async def control_session_events(request: Request) -> Any:
        return {"data": state.session_runtime(p(request, "session_id")).all_events()}

    async def control_processed(request: Request) -> Any:
        runtime = state.session_runtime(p(request, "session_id"))
        return {"messages": [m["text"] for m in runtime.processed_messages]}

    async def control_user_events(request: Request) -> Any:
        session_id = request.query_params.get("session_id")
        return {"data": [e["event"] for e in state.user_events if session_id is None or e["session_id"] == session_id]}

    async def control_requests(request: Request) -> Any:
        return {"data": state.requests}

    async def control_mcp_calls(request: Request) -> Any:
        return {"data": state.mcp_calls}

    async def control_health(request: Request) -> Any:
        return {"ok": True}

    get, post, delete = ["GET"], ["POST"], ["DELETE"]
    routes = [
        Route("/v1/agents", api(agents), methods=[*get, *post]),
        Route("/v1/agents/{agent_id}", api(agent), methods=[*get, *post]),
        Route("/v1/agents/{agent_id}/archive", api(agent_archive), methods=post),
        Route("/v1/agents/{agent_id}/versions", api(agent_versions), methods=get),
        Route("/v1/environments", api(environments), methods=[*get, *post]),
        Route("/v1/environments/{environment_id}", api(environment), methods=[*get, *post, *delete]),
        Route("/v1/environments/{environment_id}/archive", api(environment_archive), methods=post),
        Route("/v1/vaults", api(vaults), methods=[*get, *post]),
        Route("/v1/vaults/{vault_id}", api(vault), methods=[*get, *post, *delete]),
        Route("/v1/vaults/{vault_id}/archive", api(vault_archive), methods=post),
        Route("/v1/vaults/{vault_id}/credentials", api(credentials), methods=[*get, *post]),
        Route(
            "/v1/vaults/{vault_id}/credentials/{credential_id}",
            api(credential),
            methods=[*get, *post, *delete],
        ),
        Route(
            "/v1/vaults/{vault_id}/credentials/{credential_id}/archive",
            api(credential_archive),
            methods=post,
        ),
        Route("/v1/sessions", api(sessions), methods=[*get, *post]),
        Route("/v1/sessions/{session_id}", api(session), methods=[*get, *post, *delete]),
        Route("/v1/sessions/{session_id}/archive", api(session_archive), methods=post),
        Route("/v1/sessions/{session_id}/events", api(events), methods=[*get, *post]),
        Route("/v1/sessions/{session_id}/events/stream", api(stream), methods=get),
        *memory_routes(state, api, json_body),
        *thread_routes(state, api),
        Route("/_emulator/health", api(control_health), methods=get),
        Route("/_emulator/reset", api(control_reset), methods=post),
        Route("/_emulator/config", api(control_config), methods=post),
        Route("/_emulator/scenario", api(control_scenario), methods=post),
        Route("/_emulator/faults", api(control_faults), methods=[*get, *post, *delete]),
        Route("/_emulator/drop_streams", api(control_drop), methods=post),
        Route("/_emulator/sessions", api(control_sessions), methods=get),
        Route("/_emulator/sessions/{session_id}/events", api(control_session_events), methods=get),
        Route("/_emulator/sessions/{session_id}/processed", api(control_processed), methods=get),
        Route("/_emulator/user_events", api(control_user_events), methods=get),
        Route("/_emulator/requests", api(control_requests), methods=get),
        Route("/_emulator/mcp_calls", api(control_mcp_calls), methods=get),
    ]

    async def http_error(request: Request, exc: Exception) -> Response:
        # An unknown path or method: 404 not_found_error / 405, in Anthropic's error body (SDK _exceptions.py).
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        message = {404: "not found", 405: "method not allowed"}.get(status, f"emulator error: {exc!r}")
        return error_response(ApiError(status, message), _request_id(request.scope))

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        state.bind_loop(asyncio.get_running_loop())
        try:
            yield
        finally:
            state._shutdown()

    app = Starlette(
        routes=routes, exception_handlers={HTTPException: http_error, Exception: http_error}, lifespan=lifespan
    )
    app.add_middleware(EmulatorMiddleware, state=state)
    return app


class AgentsEmulator:
    """The Managed Agents emulator: `.app` (ASGI), `.state`, and a server from `start()`."""

    def __init__(
        self,
        api_key: str = "test-key",
        scenario: Scenario | dict[str, Any] | list[Any] | None = None,
        *,
        ping_interval: float = 10.0,
        prices: Prices | None = None,
    ) -> None:
        self.state = EmulatorState(api_key, scenario=scenario, ping_interval=ping_interval, prices=prices)
        self.app = create_app(self.state)
        self.server: ServerThread | None = None

    @property
    def api_key(self) -> str:
        return self.state.api_key

    @property
    def url(self) -> str:
        if self.server is None:
            raise RuntimeError("the emulator is not started")
        return self.server.url

    def start(self) -> AgentsEmulator:
        server = ServerThread(self.app)
        # ServerThread's socket has proto 0, so asyncio skips TCP_NODELAY on accepted connections
        # and every keep-alive request stalls ~40 ms (Nagle + delayed ACK). Accepted sockets
        # inherit the option from the listener.
        with contextlib.suppress(AttributeError, OSError):
            server._sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.server = server.start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.state.shutdown()
            self.server.stop()
            self.server = None

    def __enter__(self) -> AgentsEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def client(self, **kwargs: Any) -> Any:
        """An `anthropic.AsyncAnthropic` for this emulator (kwargs pass through)."""
        import anthropic

        return anthropic.AsyncAnthropic(api_key=self.state.api_key, base_url=self.url, **kwargs)

    # Convenience pass-throughs to the (thread-safe) state control API.
    def set_scenario(
        self, scenario: Scenario | dict[str, Any] | list[Any] | None, session_id: str | None = None
    ) -> None:
        self.state.set_scenario(scenario, session_id)

    def fail_next(
        self,
        method: str,
        path_regex: str,
        status: int,
        count: int = 1,
        retry_after: float | None = None,
        **kwargs: Any,
    ) -> None:
        self.state.fail_next(method, path_regex, status, count, retry_after, **kwargs)

    def drop_streams(self, session_id: str | None = None, mode: str = "close") -> int:
        return self.state.drop_streams(session_id, mode)
