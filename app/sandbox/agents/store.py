"""Agents, environments, vaults and vault credentials of the Managed Agents emulator.

`ResourceStore` is the base of `EmulatorState`; its methods run on the emulator's loop (HTTP
handlers), except `credential_token_for`, which only reads.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any, Protocol

from app.sandbox.agents.resources import (
    ApiError,
    apply_metadata_patch,
    build_agent,
    credential_auth,
    credential_identity,
    environment_config,
    need_str,
    new_metadata,
    normalize_url,
    not_found,
    opt_str,
    paginate,
    parse_limit,
    parse_time,
    update_agent,
)


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
    if order not in ("asc", "desc"):  # SDK session_list_params / sessions/event_list_params: order Literal
        raise ApiError(400, "order: asc or desc")
    return str(order)


class ResourceStore:
    """In-memory agents (with versions), environments, vaults and credentials (with secrets)."""

    def new_id(self, prefix: str) -> str:
        raise NotImplementedError

    def now(self) -> str:
        raise NotImplementedError

    def _reset_resources(self) -> None:
        self.agents: dict[str, list[dict[str, Any]]] = {}
        self.agent_archived: dict[str, str] = {}
        self.environments: dict[str, dict[str, Any]] = {}
        self.vaults: dict[str, dict[str, Any]] = {}
        self.credentials: dict[str, dict[str, Any]] = {}
        self.credential_secrets: dict[str, dict[str, Any]] = {}

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
            # anthropics/skills managed-agents-api-reference.md: archiving "Makes it read-only".
            raise ApiError(400, "agent is archived")
        current = versions[-1]
        if "version" in body and body["version"] is not None and body["version"] != current["version"]:
            # Reference digest section 2 (SDK agents.update `version` docstring): a mismatch fails (409).
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
        # SDK agent_list_params.limit: "Default 20, maximum 100."
        return paginate(items, query.get("page"), parse_limit(query.get("limit"), 20, 100))

    def list_agent_versions(self, agent_id: str, query: QueryLike) -> dict[str, Any]:
        items = [self._agent_out(v) for v in reversed(self._agent_versions(agent_id))]
        # SDK agents/version_list_params.limit: "Default 20, maximum 100."
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
                # anthropics/skills managed-agents-environments.md: names are unique (409).
                raise ApiError(409, f"an environment named {name!r} already exists")

    def create_environment(self, body: dict[str, Any]) -> dict[str, Any]:
        name = need_str(body, "name")
        self._check_env_name(name)
        now = self.now()
        scope = body.get("scope") or "organization"
        if scope not in ("organization", "account"):  # SDK environment_create_params.scope Literal
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
        if env["archived_at"] is not None:  # SDK environments.update "Raises: BetaEnvironmentArchivedError"
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
        # SDK environment_list_params.limit: no documented maximum.
        return paginate(items, query.get("page"), parse_limit(query.get("limit"), 20, None))

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
        # SDK vault_list_params.limit: "Defaults to 20, maximum 100."
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
            # Reference digest section 11 (Docs: vaults): archiving revokes; nothing is added to it.
            raise ApiError(400, "vault is archived")
        public, secret = credential_auth(body.get("auth"))
        active = [c for c in self.credentials.values() if c["vault_id"] == vault_id and c["archived_at"] is None]
        if len(active) >= 20:  # Reference digest section 11 [Skill]: "at most 20 credentials per vault"
            raise ApiError(400, "a vault holds at most 20 credentials")
        identity = credential_identity(public)
        if any(credential_identity(c["auth"]) == identity for c in active):
            # Reference digest section 11 [Skill]: mcp_server_url / secret_name unique among
            # active credentials in a vault (a duplicate gives 409).
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
            # Reference digest section 11: archiving purges the secret; archive and recreate.
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
        # SDK vaults/credential_list_params.limit: "Defaults to 20, maximum 100."
        return paginate(items, query.get("page"), parse_limit(query.get("limit"), 20, 100))
