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
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from .agents_resources import (
    ApiError,
    Clock,
    apply_metadata_patch,
    apply_overrides,
    build_agent,
    credential_auth,
    credential_identity,
    environment_config,
    need_dict,
    need_list,
    need_str,
    new_id,
    new_metadata,
    normalize_mcp_servers,
    normalize_tools,
    normalize_url,
    not_found,
    opt_str,
    paginate,
    parse_limit,
    parse_time,
    rfc3339,
    session_agent,
    update_agent,
)
from .agents_session import Prices, SessionRuntime
from .scenario import McpCaller, Scenario

T = TypeVar("T")


class QueryLike(Protocol):
    def get(self, key: str, /) -> str | None: ...

    def getlist(self, key: str, /) -> list[str]: ...


class DictQuery:
    """A QueryLike over a plain dict (for in-process callers)."""

    def __init__(self, values: Mapping[str, Any] | None = None) -> None:
        self.values = dict(values or {})

    def get(self, key: str, /) -> str | None:
        value = self.values.get(key)
        if isinstance(value, list):
            value = value[0] if value else None
        return None if value is None else str(value)

    def getlist(self, key: str, /) -> list[str]:
        value = self.values.get(key)
        if value is None:
            return []
        return [str(v) for v in value] if isinstance(value, list) else [str(value)]


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


def _time_filters(query: QueryLike, field_name: str = "created_at") -> list[tuple[str, Any]]:
    filters = []
    for op in ("gt", "gte", "lt", "lte"):
        value = query.get(f"{field_name}[{op}]") or query.get(f"{field_name}_{op}")
        if value:
            filters.append((op, parse_time(value)))
    return filters


def _passes(moment: Any, filters: list[tuple[str, Any]]) -> bool:
    if not filters:
        return True
    if moment is None:
        return False
    value = parse_time(moment)
    for op, bound in filters:
        if (
            (op == "gt" and not value > bound)
            or (op == "gte" and not value >= bound)
            or (op == "lt" and not value < bound)
            or (op == "lte" and not value <= bound)
        ):
            return False
    return True


def _flag(query: QueryLike, key: str) -> bool:
    return str(query.get(key) or "false").lower() in ("true", "1")


def _order(query: QueryLike, default: str) -> str:
    order = query.get("order") or default
    if order not in ("asc", "desc"):
        raise ApiError(400, "order: asc or desc")
    return str(order)


class EmulatorState:
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
        self.agents: dict[str, list[dict[str, Any]]] = {}
        self.agent_archived: dict[str, str] = {}
        self.environments: dict[str, dict[str, Any]] = {}
        self.vaults: dict[str, dict[str, Any]] = {}
        self.credentials: dict[str, dict[str, Any]] = {}
        self.credential_secrets: dict[str, dict[str, Any]] = {}
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
        return self.call(lambda: copy.deepcopy(self.requests))

    def credential_token_for(self, vault_ids: list[str], mcp_server_url: str) -> str | None:
        """The bearer token the agent would send to `mcp_server_url` (matched by URL)."""
        target = normalize_url(mcp_server_url)
        for vault_id in vault_ids:
            for cred_id, cred in self.credentials.items():
                if cred["vault_id"] != vault_id or cred["archived_at"] is not None:
                    continue
                auth = cred["auth"]
                if auth["type"] in ("static_bearer", "mcp_oauth") and normalize_url(auth["mcp_server_url"]) == target:
                    secret = self.credential_secrets.get(cred_id, {})
                    token = secret.get("token") or secret.get("access_token")
                    return str(token) if token else None
        return None

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

    def take_fault(self, method: str, path: str) -> Fault | None:
        for fault in self.faults:
            if fault.count > 0 and fault.matches(method, path):
                fault.count -= 1
                if fault.count == 0:
                    self.faults.remove(fault)
                return fault
        return None

    # -- agents ------------------------------------------------------------------------------

    def _agent_versions(self, agent_id: str) -> list[dict[str, Any]]:
        versions = self.agents.get(agent_id)
        if not versions:
            raise not_found("agent", agent_id)
        return versions

    def _agent_out(self, agent: dict[str, Any]) -> dict[str, Any]:
        out = copy.deepcopy(agent)
        out["archived_at"] = self.agent_archived.get(agent["id"])
        return out

    def agent_version(self, agent_id: str, version: int | None = None) -> dict[str, Any]:
        versions = self._agent_versions(agent_id)
        if version is None:
            return self._agent_out(versions[-1])
        if version < 1 or version > len(versions):
            raise not_found("agent version", f"{agent_id}@{version}")
        return self._agent_out(versions[version - 1])

    def create_agent(self, body: dict[str, Any]) -> dict[str, Any]:
        agent = build_agent(body, self.new_id("agent"), self.now())
        self.agents[agent["id"]] = [agent]
        return self._agent_out(agent)

    def update_agent(self, agent_id: str, body: dict[str, Any]) -> dict[str, Any]:
        versions = self._agent_versions(agent_id)
        if agent_id in self.agent_archived:
            raise ApiError(400, "agent is archived")
        current = versions[-1]
        if "version" in body and body["version"] is not None and body["version"] != current["version"]:
            raise ApiError(409, f"version mismatch: agent is at version {current['version']}, not {body['version']}")
        updated = update_agent(current, body, self.now())
        if updated is None:
            return self._agent_out(current)
        versions.append(updated)
        return self._agent_out(updated)

    def archive_agent(self, agent_id: str) -> dict[str, Any]:
        versions = self._agent_versions(agent_id)
        self.agent_archived.setdefault(agent_id, self.now())
        return self._agent_out(versions[-1])

    def list_agents(self, query: QueryLike) -> dict[str, Any]:
        filters = _time_filters(query)
        items = [
            self._agent_out(v[-1])
            for agent_id, v in self.agents.items()
            if (_flag(query, "include_archived") or agent_id not in self.agent_archived)
            and _passes(v[0]["created_at"], filters)
        ]
        items.reverse()
        return paginate(items, query.get("page"), parse_limit(query.get("limit"), 20, 100))

    def list_agent_versions(self, agent_id: str, query: QueryLike) -> dict[str, Any]:
        items = [self._agent_out(v) for v in reversed(self._agent_versions(agent_id))]
        return paginate(items, query.get("page"), parse_limit(query.get("limit"), 20, 100))

    # -- environments ------------------------------------------------------------------------

    def environment(self, env_id: str) -> dict[str, Any]:
        env = self.environments.get(env_id)
        if env is None:
            raise not_found("environment", env_id, "environment_not_found")
        return env

    def _check_env_name(self, name: str, env_id: str | None = None) -> None:
        for other in self.environments.values():
            if other["name"] == name and other["id"] != env_id and other["archived_at"] is None:
                raise ApiError(409, f"an environment named {name!r} already exists")

    def create_environment(self, body: dict[str, Any]) -> dict[str, Any]:
        name = need_str(body, "name")
        self._check_env_name(name)
        now = self.now()
        scope = body.get("scope") or "organization"
        if scope not in ("organization", "account"):
            raise ApiError(400, "scope: organization or account")
        env: dict[str, Any] = {
            "id": self.new_id("env"),
            "type": "environment",
            "name": name,
            "description": opt_str(body, "description"),
            "config": environment_config(body.get("config")),
            "metadata": new_metadata(body.get("metadata")),
            "scope": scope,
            "created_at": now,
            "updated_at": now,
            "archived_at": None,
        }
        self.environments[env["id"]] = env
        return copy.deepcopy(env)

    def update_environment(self, env_id: str, body: dict[str, Any]) -> dict[str, Any]:
        env = self.environment(env_id)
        if env["archived_at"] is not None:
            raise ApiError(400, "environment is archived", error_code="environment_archived")
        updated = dict(env)
        if body.get("name") is not None:
            updated["name"] = need_str(body, "name")
            self._check_env_name(updated["name"], env_id)
        if "description" in body:
            updated["description"] = opt_str(body, "description")
        if body.get("config") is not None:
            updated["config"] = environment_config(body["config"], env["config"])
        if "metadata" in body:
            updated["metadata"] = apply_metadata_patch(env["metadata"], body["metadata"])
        if body.get("scope") is not None:
            updated["scope"] = body["scope"]
        updated["updated_at"] = self.now()
        self.environments[env_id] = updated
        return copy.deepcopy(updated)

    def archive_environment(self, env_id: str) -> dict[str, Any]:
        env = self.environment(env_id)
        if env["archived_at"] is None:
            env["archived_at"] = env["updated_at"] = self.now()
        return copy.deepcopy(env)

    def delete_environment(self, env_id: str) -> dict[str, Any]:
        self.environment(env_id)
        del self.environments[env_id]
        return {"id": env_id, "type": "environment_deleted"}

    def list_environments(self, query: QueryLike) -> dict[str, Any]:
        items = [
            copy.deepcopy(e)
            for e in self.environments.values()
            if _flag(query, "include_archived") or e["archived_at"] is None
        ]
        items.reverse()
        return paginate(items, query.get("page"), parse_limit(query.get("limit"), 20, 100))

    # -- vaults and credentials --------------------------------------------------------------

    def vault(self, vault_id: str) -> dict[str, Any]:
        vault = self.vaults.get(vault_id)
        if vault is None:
            raise not_found("vault", vault_id)
        return vault

    def create_vault(self, body: dict[str, Any]) -> dict[str, Any]:
        now = self.now()
        vault: dict[str, Any] = {
            "id": self.new_id("vlt"),
            "type": "vault",
            "display_name": need_str(body, "display_name", max_len=255),
            "metadata": new_metadata(body.get("metadata")),
            "created_at": now,
            "updated_at": now,
            "archived_at": None,
        }
        self.vaults[vault["id"]] = vault
        return copy.deepcopy(vault)

    def update_vault(self, vault_id: str, body: dict[str, Any]) -> dict[str, Any]:
        vault = self.vault(vault_id)
        if body.get("display_name") is not None:
            vault["display_name"] = need_str(body, "display_name", max_len=255)
        if "metadata" in body:
            vault["metadata"] = apply_metadata_patch(vault["metadata"], body["metadata"])
        vault["updated_at"] = self.now()
        return copy.deepcopy(vault)

    def archive_vault(self, vault_id: str) -> dict[str, Any]:
        vault = self.vault(vault_id)
        if vault["archived_at"] is None:
            vault["archived_at"] = vault["updated_at"] = self.now()
            for cred_id, cred in self.credentials.items():
                if cred["vault_id"] == vault_id and cred["archived_at"] is None:
                    cred["archived_at"] = vault["archived_at"]
                    self.credential_secrets.pop(cred_id, None)
        return copy.deepcopy(vault)

    def delete_vault(self, vault_id: str) -> dict[str, Any]:
        self.vault(vault_id)
        del self.vaults[vault_id]
        for cred_id in [c for c, v in self.credentials.items() if v["vault_id"] == vault_id]:
            del self.credentials[cred_id]
            self.credential_secrets.pop(cred_id, None)
        return {"id": vault_id, "type": "vault_deleted"}

    def list_vaults(self, query: QueryLike) -> dict[str, Any]:
        items = [
            copy.deepcopy(v)
            for v in self.vaults.values()
            if _flag(query, "include_archived") or v["archived_at"] is None
        ]
        items.reverse()
        return paginate(items, query.get("page"), parse_limit(query.get("limit"), 20, 100))

    def credential(self, vault_id: str, cred_id: str) -> dict[str, Any]:
        self.vault(vault_id)
        cred = self.credentials.get(cred_id)
        if cred is None or cred["vault_id"] != vault_id:
            raise not_found("credential", cred_id)
        return cred

    def create_credential(self, vault_id: str, body: dict[str, Any]) -> dict[str, Any]:
        vault = self.vault(vault_id)
        if vault["archived_at"] is not None:
            raise ApiError(400, "vault is archived")
        public, secret = credential_auth(body.get("auth"))
        active = [c for c in self.credentials.values() if c["vault_id"] == vault_id and c["archived_at"] is None]
        if len(active) >= 20:
            raise ApiError(400, "a vault holds at most 20 credentials")
        identity = credential_identity(public)
        if any(credential_identity(c["auth"]) == identity for c in active):
            raise ApiError(409, "an active credential for this MCP server URL or secret name exists")
        now = self.now()
        cred: dict[str, Any] = {
            "id": self.new_id("vcrd"),
            "type": "vault_credential",
            "vault_id": vault_id,
            "display_name": opt_str(body, "display_name"),
            "auth": public,
            "metadata": new_metadata(body.get("metadata")),
            "created_at": now,
            "updated_at": now,
            "archived_at": None,
        }
        self.credentials[cred["id"]] = cred
        self.credential_secrets[cred["id"]] = secret
        return copy.deepcopy(cred)

    def update_credential(self, vault_id: str, cred_id: str, body: dict[str, Any]) -> dict[str, Any]:
        cred = self.credential(vault_id, cred_id)
        if cred["archived_at"] is not None:
            raise ApiError(400, "credential is archived")
        if body.get("auth") is not None:
            public, secret = credential_auth(body["auth"], cred["auth"], self.credential_secrets.get(cred_id, {}))
            cred["auth"] = public
            self.credential_secrets[cred_id] = secret
        if "display_name" in body:
            cred["display_name"] = opt_str(body, "display_name")
        if "metadata" in body:
            cred["metadata"] = apply_metadata_patch(cred["metadata"], body["metadata"])
        cred["updated_at"] = self.now()
        return copy.deepcopy(cred)

    def archive_credential(self, vault_id: str, cred_id: str) -> dict[str, Any]:
        cred = self.credential(vault_id, cred_id)
        if cred["archived_at"] is None:
            cred["archived_at"] = cred["updated_at"] = self.now()
            self.credential_secrets.pop(cred_id, None)
        return copy.deepcopy(cred)

    def delete_credential(self, vault_id: str, cred_id: str) -> dict[str, Any]:
        self.credential(vault_id, cred_id)
        del self.credentials[cred_id]
        self.credential_secrets.pop(cred_id, None)
        return {"id": cred_id, "type": "vault_credential_deleted"}

    def list_credentials(self, vault_id: str, query: QueryLike) -> dict[str, Any]:
        self.vault(vault_id)
        items = [
            copy.deepcopy(c)
            for c in self.credentials.values()
            if c["vault_id"] == vault_id and (_flag(query, "include_archived") or c["archived_at"] is None)
        ]
        return paginate(items, query.get("page"), parse_limit(query.get("limit"), 20, 100))

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
        budget = need_dict(value, "budget")
        if budget.get("type", "limit") != "limit":
            raise ApiError(400, "budget.type must be limit")
        cost = need_dict(budget.get("max_list_cost"), "budget.max_list_cost")
        amount = cost.get("amount")
        if isinstance(amount, int) and not isinstance(amount, bool):
            amount = str(amount)
        if not isinstance(amount, str) or not amount.isdigit() or int(amount) < 1:
            raise ApiError(400, "budget.max_list_cost.amount: a positive integer string of cents")
        if cost.get("currency", "USD") != "USD":
            raise ApiError(400, "budget.max_list_cost.currency must be USD")
        return {"type": "limit", "max_list_cost": {"amount": str(int(amount)), "currency": "USD"}}

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
            if version is not None and not isinstance(version, int):
                raise ApiError(400, "agent.version must be an integer")
            if ref["type"] == "agent_with_overrides":
                overrides = {k: v for k, v in ref.items() if k not in ("type", "id", "version")}
        else:
            raise ApiError(400, "agent: an agent id, {type: agent} or {type: agent_with_overrides}")
        agent = self.agent_version(agent_id, version)
        if agent["archived_at"] is not None:
            raise ApiError(400, "agent is archived")
        snapshot = session_agent(agent)
        if overrides:
            snapshot = apply_overrides(snapshot, overrides)
        env = self.environment(env_id)
        if env["archived_at"] is not None:
            raise ApiError(400, "environment is archived", error_code="environment_archived")
        vault_ids = [str(v) for v in need_list(body.get("vault_ids") or [], "vault_ids")]
        for vault_id in vault_ids:
            if self.vault(vault_id)["archived_at"] is not None:
                raise ApiError(400, f"vault {vault_id!r} is archived")
        if body.get("resources"):
            raise ApiError(400, "resources are not supported by the emulator")
        initial = need_list(body.get("initial_events") or [], "initial_events")
        if len(initial) > 50:
            raise ApiError(400, "initial_events: at most 50")
        for event in initial:
            if not isinstance(event, dict) or event.get("type") != "user.message":
                raise ApiError(400, "initial_events: only user.message is supported by the emulator")
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
            resources=[],
        )
        self.sessions[session.id] = session
        if initial:
            session.accept(initial)
        return session.to_json()

    def update_session(self, session_id: str, body: dict[str, Any]) -> dict[str, Any]:
        session = self._session(session_id)
        if session.status == "terminated":
            raise ApiError(400, "session is terminated")
        if "vault_ids" in body:
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
                if session.budget is None:
                    raise ApiError(
                        400,
                        "a budget can only be set when the session is created",
                        error_code="budget_create_only",
                    )
                consumed = session.usage.cost_cents(self.prices)
                if int(budget["max_list_cost"]["amount"]) <= consumed:
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
            session.resume_budget()
        return session.to_json()

    def archive_session(self, session_id: str) -> dict[str, Any]:
        session = self._session(session_id)
        if session.status in ("running", "rescheduling"):
            raise ApiError(400, "cannot archive a running session")
        if session.archived_at is None:
            session.stop_tasks()
            session.archived_at = self.clock.now()
            session.updated_at = session.archived_at
        return session.to_json()

    def delete_session(self, session_id: str) -> dict[str, Any]:
        session = self._session(session_id)
        if session.status in ("running", "rescheduling"):
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
            if statuses and data["status"] not in statuses:
                continue
            if not _passes(data["created_at"], filters):
                continue
            items.append(data)
        if _order(query, "desc") == "desc":
            items.reverse()
        return paginate(items, query.get("page"), parse_limit(query.get("limit"), 20, 100), bidirectional=True)

    # -- events ------------------------------------------------------------------------------

    def send_events(self, session_id: str, body: dict[str, Any]) -> dict[str, Any]:
        if session_id in self.deleted_sessions:
            raise not_found("session", session_id)
        session = self._session(session_id)
        events = need_list(body.get("events"), "events")
        if not events:
            raise ApiError(400, "events: at least one event")
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
        return paginate(items, query.get("page"), parse_limit(query.get("limit"), 1000, 1000))
