"""In-memory state of the Managed Agents emulator: resources, sessions, faults, request log.

Threading rule: all state lives on the event loop that serves the ASGI app (the ServerThread's
loop). HTTP handlers run there already. The public control methods (`set_scenario`,
`fail_next`, `drop_streams`, the snapshot readers, ...) may be called from any thread: when
called off that loop they are scheduled onto it with `loop.call_soon_threadsafe` and the caller
blocks (briefly) for the result. Before the loop is bound they run directly.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from app.sandbox.agents.memory import MemoryEmulation
from app.sandbox.agents.resources import (
    ApiError,
    Clock,
    apply_metadata_patch,
    apply_overrides,
    need_dict,
    need_list,
    need_str,
    new_id,
    new_metadata,
    normalize_mcp_servers,
    normalize_tools,
    not_found,
    opt_str,
    paginate,
    parse_limit,
    rfc3339,
    session_agent,
)
from app.sandbox.agents.scenario import McpCaller, Scenario
from app.sandbox.agents.session import Prices, SessionRuntime
from app.sandbox.agents.store import QueryLike, ResourceStore, _flag, _order, _passes, _time_filters

T = TypeVar("T")


@dataclass
class Fault:
    """An injected failure for the next `count` requests matching method + path regex."""

    method: str
    path: str
    status: int
    count: int = 1
    retry_after: float | None = None
    delay: float = 0.0
    after: bool = False
    """Process the request normally, then answer with the error (a lost response)."""
    error_type: str | None = None
    message: str | None = None
    error_code: str | None = None

    def matches(self, method: str, path: str) -> bool:
        return (self.method in ("*", method.upper())) and re.search(self.path, path) is not None

    def to_error(self) -> ApiError:
        headers = {}
        if self.retry_after is not None:
            headers["retry-after"] = f"{self.retry_after:g}"
        return ApiError(
            self.status,
            self.message or f"emulated {self.status} error",
            error_type=self.error_type,
            error_code=self.error_code,
            headers=headers,
        )

    def to_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


class EmulatorState(ResourceStore):
    def __init__(
        self,
        api_key: str = "test-key",
        *,
        scenario: Scenario | dict[str, Any] | list[Any] | None = None,
        ping_interval: float = 10.0,
        prices: Prices | None = None,
    ) -> None:
        self.api_key = api_key
        self.scenario = Scenario.parse(scenario)
        self.ping_interval = ping_interval
        self.prices = prices or Prices()
        self.mcp_caller: McpCaller | None = None
        self.clock = Clock()
        self.loop: asyncio.AbstractEventLoop | None = None
        self._reset()

    def _reset(self) -> None:
        self._reset_resources()
        self.memory = MemoryEmulation(self.now)  # memory stores (app/sandbox/agents/memory.py)
        self.sessions: dict[str, SessionRuntime] = {}
        self.deleted_sessions: set[str] = set()
        self.user_events: list[dict[str, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.faults: list[Fault] = []
        self.mcp_calls: list[dict[str, Any]] = []

    def new_id(self, prefix: str) -> str:
        return new_id(prefix)

    def now(self) -> str:
        return rfc3339(self.clock.now())

    # -- threading ---------------------------------------------------------------------------

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop

    def call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn` on the emulator's loop and return its result (thread-safe)."""
        loop = self.loop
        if loop is None or loop.is_closed() or not loop.is_running():
            return fn(*args, **kwargs)
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            return fn(*args, **kwargs)
        future: concurrent.futures.Future[T] = concurrent.futures.Future()

        def run() -> None:
            try:
                future.set_result(fn(*args, **kwargs))
            except BaseException as exc:
                future.set_exception(exc)

        loop.call_soon_threadsafe(run)
        return future.result(timeout=10)

    # -- public control (thread-safe) --------------------------------------------------------

    def set_scenario(
        self, scenario: Scenario | dict[str, Any] | list[Any] | None, session_id: str | None = None
    ) -> None:
        """Set the script for every session, or for one session only."""
        parsed = Scenario.parse(scenario)
        self.call(self._set_scenario, parsed, session_id)

    def fail_next(
        self,
        method: str,
        path_regex: str,
        status: int,
        count: int = 1,
        retry_after: float | None = None,
        *,
        delay: float = 0.0,
        after: bool = False,
        error_type: str | None = None,
        message: str | None = None,
        error_code: str | None = None,
    ) -> None:
        """Answer the next `count` requests matching with an Anthropic error body. `status` 0
        with `delay` only slows the requests down. `after=True` runs the request, then fails it."""
        fault = Fault(
            method.upper(),
            path_regex,
            status,
            count,
            retry_after,
            delay,
            after,
            error_type,
            message,
            error_code,
        )
        self.call(self.faults.append, fault)

    def clear_faults(self) -> None:
        self.call(self.faults.clear)

    def drop_streams(self, session_id: str | None = None, mode: str = "close") -> int:
        """Close open SSE connections (all, or one session's). `mode`: close | abort."""
        return self.call(self._drop_streams, session_id, mode)

    def reset(self) -> None:
        """Forget every resource, session, fault and log entry."""
        self.call(self._reset_all)

    def sessions_snapshot(self) -> list[dict[str, Any]]:
        return self.call(lambda: [self._session_debug(s) for s in self.sessions.values()])

    def events(self, session_id: str) -> list[dict[str, Any]]:
        """Every event of a session (processed, then queued user messages)."""
        return self.call(lambda: copy.deepcopy(self._session(session_id).all_events()))

    def received_user_events(self, session_id: str | None = None) -> list[dict[str, Any]]:
        """User events in the order the API received them."""
        return self.call(
            lambda: [
                copy.deepcopy(e["event"])
                for e in self.user_events
                if session_id is None or e["session_id"] == session_id
            ]
        )

    def processed_messages(self, session_id: str) -> list[str]:
        """Texts of the user messages turned into turns, in processing order."""
        return self.call(lambda: [m["text"] for m in self._session(session_id).processed_messages])

    def request_log(self) -> list[dict[str, Any]]:
        """Every /v1 request: method, path, query, status, request_id, at, body (secrets redacted)."""
        return self.call(lambda: copy.deepcopy(self.requests))

    def mcp_call_log(self) -> list[dict[str, Any]]:
        """MCP calls the emulated agent made: session_id, server, url, tool, input, authenticated."""
        return self.call(lambda: copy.deepcopy(self.mcp_calls))

    def shutdown(self) -> None:
        """Stop agent loops and close streams (before the server stops)."""
        self.call(self._shutdown)

    # -- control implementations (loop thread) -----------------------------------------------

    def _set_scenario(self, scenario: Scenario, session_id: str | None) -> None:
        if session_id is None:
            self.scenario = scenario
        else:
            self._session(session_id).scenario = scenario

    def _drop_streams(self, session_id: str | None, mode: str) -> int:
        count = 0
        for session in self.sessions.values():
            if session_id is None or session.id == session_id:
                count += len(session.subscribers)
                session.drop_streams(mode)
        return count

    def _shutdown(self) -> None:
        for session in self.sessions.values():
            session.stop_tasks()
            session.drop_streams("close")

    def _reset_all(self) -> None:
        self._shutdown()
        self._reset()

    def _session_debug(self, session: SessionRuntime) -> dict[str, Any]:
        return {
            **session.to_json(),
            "processed_messages": [m["text"] for m in session.processed_messages],
            "queued": len(session.queued),
            "flushed": len(session.flushed),
            "pending_action_ids": list(session.pending),
            "budget_paused": session.budget_paused,
            "open_streams": len(session.subscribers),
            "event_count": len(session.events),
        }

    def log_request(self, record: dict[str, Any]) -> None:
        self.requests.append(record)
        if len(self.requests) > 20_000:  # long benchmark runs: keep the newest half
            del self.requests[:10_000]

    def take_fault(self, method: str, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.count > 0 and fault.matches(method, path):
                fault.count -= 1
                if fault.count == 0:
                    self.faults.remove(fault)
                return fault
        return None

    # -- sessions ----------------------------------------------------------------------------

    def _session(self, session_id: str) -> SessionRuntime:
        session = self.sessions.get(session_id)
        if session is None:
            raise not_found("session", session_id)
        return session

    def session_runtime(self, session_id: str) -> SessionRuntime:
        return self._session(session_id)

    @staticmethod
    def _budget(value: Any) -> dict[str, Any]:
        # SDK BetaManagedAgentsBudgetParams: type Literal["limit"]; max_list_cost.amount is an
        # integer string of cents and currency Literal["USD"] (reference digest section 5).
        budget = need_dict(value, "budget")
        if budget.get("type", "limit") != "limit":
            raise ApiError(400, "budget.type must be limit")
        cost = need_dict(budget.get("max_list_cost"), "budget.max_list_cost")
        amount = cost.get("amount")
        if isinstance(amount, int) and not isinstance(amount, bool):
            amount = str(amount)
        # SDK beta_monetary_amount_param.amount: "an integer decimal string with no leading zeros" (no minimum).
        if not isinstance(amount, str) or not amount.isdigit():
            raise ApiError(400, "budget.max_list_cost.amount: an integer string of cents")
        if cost.get("currency", "USD") != "USD":
            raise ApiError(400, "budget.max_list_cost.currency must be USD")
        return {"type": "limit", "max_list_cost": {"amount": str(int(amount)), "currency": "USD"}}

    def _resource(self, value: Any) -> dict[str, Any]:
        """A session resource in the SDK's response shape (`BetaManagedAgentsSessionResource`)
        from its create params (`session_create_params.Resource`): github_repository | file |
        memory_store, each with the SDK's required fields and documented mount defaults."""
        raw = need_dict(value, "resources[]")
        kind = raw.get("type")
        now = self.now()
        if kind == "github_repository":
            url = need_str(raw, "url")
            checkout = raw.get("checkout")
            bad_checkout = not isinstance(checkout, dict) or checkout.get("type") not in ("branch", "commit")
            if checkout is not None and bad_checkout:
                # SDK Checkout = BetaManagedAgentsBranchCheckoutParam | BetaManagedAgentsCommitCheckoutParam.
                raise ApiError(400, "resources[].checkout: {type: branch, name} or {type: commit, sha}")
            name = url.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git")
            # authorization_token is write-only: kept out of the response (reference section 11).
            return {
                "id": self.new_id("sesrsc"), "type": kind, "url": url, "checkout": checkout,
                "mount_path": raw.get("mount_path") or f"/workspace/{name}",  # SDK: default /workspace/<repo-name>
                "created_at": now, "updated_at": now,
            }
        if kind == "file":
            file_id = need_str(raw, "file_id")
            return {
                "id": self.new_id("sesrsc"), "type": kind, "file_id": file_id,
                "mount_path": raw.get("mount_path") or f"/mnt/session/uploads/{file_id}",  # SDK default
                "created_at": now, "updated_at": now,
            }
        if kind == "memory_store":
            store_id = need_str(raw, "memory_store_id")
            access = raw.get("access") or "read_write"  # SDK: "Defaults to read_write"
            if access not in ("read_write", "read_only"):
                raise ApiError(400, "resources[].access: read_write or read_only")  # SDK Literal
            instructions = raw.get("instructions")
            if instructions is not None and (not isinstance(instructions, str) or len(instructions) > 4096):
                raise ApiError(400, "resources[].instructions: at most 4096 characters")  # SDK: "Max 4096 chars"
            # Name, description and mount path snapshotted from the store (SDK
            # BetaManagedAgentsMemoryStoreResource); unknown -> 404, archived -> 400 (memory.py).
            return {
                "type": kind, "memory_store_id": store_id, "access": access, "instructions": instructions,
                **self.memory.attach(store_id),
            }
        # SDK session_create_params.Resource: the three kinds above.
        raise ApiError(400, "resources[].type: github_repository, file or memory_store")

    def create_session(self, body: dict[str, Any]) -> dict[str, Any]:
        env_id = need_str(body, "environment_id")
        ref = body.get("agent")
        overrides: dict[str, Any] = {}
        version = None
        if isinstance(ref, str) and ref:
            agent_id = ref
        elif isinstance(ref, dict) and ref.get("type") in ("agent", "agent_with_overrides"):
            agent_id = need_str(ref, "id")
            version = ref.get("version")
            if version is not None and not isinstance(version, int):  # SDK BetaManagedAgentsAgentParams.version: int
                raise ApiError(400, "agent.version must be an integer")
            if ref["type"] == "agent_with_overrides":
                overrides = {k: v for k, v in ref.items() if k not in ("type", "id", "version")}
        else:  # SDK session_create_params.Agent: str | BetaManagedAgentsAgentParams | ...WithOverridesParams
            raise ApiError(400, "agent: an agent id, {type: agent} or {type: agent_with_overrides}")
        agent = self.agent_version(agent_id, version)
        if agent["archived_at"] is not None:
            # anthropics/skills managed-agents-api-reference.md (ArchiveAgent): "new sessions cannot reference it".
            raise ApiError(400, "agent is archived")
        snapshot = session_agent(agent)
        from app.sandbox.agents.multiagent import session_snapshot

        snapshot = session_snapshot(self, snapshot)  # the roster as full agent definitions
        if overrides:
            snapshot = apply_overrides(snapshot, overrides)
        env = self.environment(env_id)
        if env["archived_at"] is not None:
            # SDK environments.archive: "Archived environments cannot be used to create new sessions".
            raise ApiError(400, "environment is archived", error_code="environment_archived")
        vault_ids = [str(v) for v in need_list(body.get("vault_ids") or [], "vault_ids")]
        for vault_id in vault_ids:
            if self.vault(vault_id)["archived_at"] is not None:  # Docs (vaults): archive to revoke
                raise ApiError(400, f"vault {vault_id!r} is archived")
        resources = [self._resource(r) for r in need_list(body.get("resources") or [], "resources")]
        initial = need_list(body.get("initial_events") or [], "initial_events")
        if len(initial) > 50:
            # Reference digest section 5 (SDK session create docstring): "at most 50".
            raise ApiError(400, "initial_events: at most 50")
        for event in initial:
            # SDK session_create_params.InitialEvent = user.message | user.define_outcome params.
            if not isinstance(event, dict) or event.get("type") not in ("user.message", "user.define_outcome"):
                raise ApiError(400, "initial_events: only user.message and user.define_outcome")
        budget = self._budget(body["budget"]) if body.get("budget") is not None else None
        session = SessionRuntime(
            self,
            self.new_id("sesn"),
            agent=snapshot,
            environment_id=env["id"],
            vault_ids=vault_ids,
            metadata=new_metadata(body.get("metadata")),
            title=opt_str(body, "title"),
            budget=budget,
            resources=resources,
        )
        self.sessions[session.id] = session
        if initial:
            session.accept(initial)
        return session.to_json()

    def update_session(self, session_id: str, body: dict[str, Any]) -> dict[str, Any]:
        session = self._session(session_id)
        if session.status == "terminated" and "budget" in body:
            # SDK session_update_params.budget: "Allowed in any non-terminated status" (the only field
            # documented so; title and metadata updates of a terminated session are not refused).
            raise ApiError(400, "session is terminated")
        if "vault_ids" in body:  # SDK sessions.update vault_ids docstring: "Not yet supported"
            raise ApiError(400, "vault_ids: updating vaults is not yet supported")
        changed: dict[str, Any] = {}
        if "title" in body:
            session.title = opt_str(body, "title")
            changed["title"] = session.title
        if "metadata" in body:
            session.metadata = apply_metadata_patch(session.metadata, body["metadata"])
            changed["metadata"] = dict(session.metadata)
        if "budget" in body:
            if body["budget"] is None:
                session.budget = None
            else:
                budget = self._budget(body["budget"])
                if session.budget is None:  # SDK sessions.update budget docstring: budget_create_only
                    raise ApiError(
                        400,
                        "a budget can only be set when the session is created",
                        error_code="budget_create_only",
                    )
                consumed = session.usage.cost_cents(self.prices)
                if int(budget["max_list_cost"]["amount"]) <= consumed:  # SDK: budget_not_raised
                    raise ApiError(
                        400,
                        f"the budget must exceed the cost already consumed ({consumed} cents)",
                        error_code="budget_not_raised",
                    )
                session.budget = budget
            changed["budget"] = session.budget
        if body.get("agent") is not None:
            agent_update = need_dict(body["agent"], "agent")
            if session.status in ("running", "rescheduling"):
                # Reference digest section 3 (SDK sessions.update agent docstring): "the session
                # must not be running".
                raise ApiError(400, "the session must not be running to update its agent")
            snapshot = dict(session.agent)
            if "tools" in agent_update:
                snapshot["tools"] = normalize_tools(agent_update["tools"])
            if "mcp_servers" in agent_update:
                snapshot["mcp_servers"] = normalize_mcp_servers(agent_update["mcp_servers"])
            session.agent = apply_overrides(snapshot, {})
            changed["agent"] = session.agent
        if changed:
            session.updated_at = self.clock.now()
            session.emit("session.updated", **changed)
        if "budget" in body and not session.budget_reached():
            lag = session.current_scenario().budget_resume_lag
            if lag:
                asyncio.get_running_loop().call_later(lag, session.resume_budget)
            else:
                session.resume_budget()
        return session.to_json()

    def archive_session(self, session_id: str) -> dict[str, Any]:
        session = self._session(session_id)
        # anthropics/skills managed-agents-client-patterns.md section 6: archive or delete
        # "will intermittently 400 with 'cannot delete/archive while running'" until the
        # queryable status reflects the idle event (scenario `status_lag`).
        if session.reported_status in ("running", "rescheduling"):
            raise ApiError(400, "cannot archive a running session")
        if session.archived_at is None:
            session.stop_tasks()
            session.archived_at = self.clock.now()
            session.updated_at = session.archived_at
        return session.to_json()

    def delete_session(self, session_id: str) -> dict[str, Any]:
        session = self._session(session_id)
        if session.reported_status in ("running", "rescheduling"):  # client-patterns section 6
            raise ApiError(400, "cannot delete a running session")
        session.stop_tasks()
        session.emit("session.deleted")
        session.drop_streams("close")
        del self.sessions[session_id]
        self.deleted_sessions.add(session_id)
        return {"id": session_id, "type": "session_deleted"}

    def list_sessions(self, query: QueryLike) -> dict[str, Any]:
        filters = _time_filters(query)
        statuses = query.getlist("statuses[]") or query.getlist("statuses")
        agent_id = query.get("agent_id")
        agent_version = query.get("agent_version")
        items = []
        for session in self.sessions.values():
            data = session.to_json()
            if session.archived_at is not None and not _flag(query, "include_archived"):
                continue
            if agent_id and data["agent"]["id"] != agent_id:
                continue
            if agent_version and str(data["agent"]["version"]) != str(agent_version):
                continue
            # SDK session_list_params.memory_store_id: "resources contain a memory_store with this id".
            store = query.get("memory_store_id")
            if store and not any(r.get("memory_store_id") == store for r in data["resources"]):
                continue
            if statuses and data["status"] not in statuses:
                continue
            if not _passes(data["created_at"], filters):
                continue
            items.append(data)
        if _order(query, "desc") == "desc":
            items.reverse()
        # SDK session_list_params.limit: "Maximum number of results to return" (no documented maximum).
        return paginate(items, query.get("page"), parse_limit(query.get("limit"), 20, None), bidirectional=True)

    # -- events ------------------------------------------------------------------------------

    def send_events(self, session_id: str, body: dict[str, Any]) -> dict[str, Any]:
        if session_id in self.deleted_sessions:
            raise not_found("session", session_id)
        session = self._session(session_id)
        events = need_list(body.get("events"), "events")  # SDK event_send_params: events Required[Iterable]
        for event in events:
            need_dict(event, "events[]")
        return {"data": copy.deepcopy(session.accept(events))}

    def list_events(self, session_id: str, query: QueryLike) -> dict[str, Any]:
        session = self._session(session_id)
        filters = _time_filters(query)
        types = set(query.getlist("types[]") or query.getlist("types"))
        items = [
            copy.deepcopy(e)
            for e in session.all_events()
            if (not types or e["type"] in types) and _passes(e.get("processed_at"), filters)
        ]
        if _order(query, "asc") == "desc":
            items.reverse()
        # anthropics/skills managed-agents-events.md: "limit default 1000"; no documented maximum.
        return paginate(items, query.get("page"), parse_limit(query.get("limit"), 1000, None))
