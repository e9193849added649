"""`support-agent provision [--dry-run]`: make Managed Agents match `support-agent.yml`.

Per environment of the config:

- an **agent** `<agent.name>-<environment>`: model, system prompt, the environment's MCP servers
  (our own ones at `{public_base_url}/mcp/<name>`) and one `mcp_toolset` per server with the
  default and per-tool permission policies written out explicitly. An existing agent is updated
  (a new version) only when something we manage differs;
- the **Managed Agents environment** (cloud, `limited` networking, allowed hosts,
  `allow_mcp_servers`), found by name or by the configured id;
- one **vault** with a `static_bearer` credential per MCP server, bound to the server's URL,
  holding the token from the server's `token_env` variable. Tokens cannot be read back, so
  each credential carries a SHA-256 fingerprint of its token in its metadata: a rotated token
  is detected and the credential's token replaced. Credentials we made for URLs the config no
  longer names are archived.

Ids go to Redis (`sa:provisioned`, the keys `app.sessions.resources` reads), so the running
bot uses what provision made. Bridged servers (the cloud cannot reach them) are left out:
the worker offers their tools itself.

The builders here (`agent_spec`, `ensure_agent`, `ensure_vault`) are also what the bot uses
to create an agent on first use when provision has not run.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import logging
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from app.config.memory import memory_toolset, toolset_signature
from app.config.model import AppConfig, McpServer
from app.config.outcomes import describe as describe_outcomes

# The SDK, Redis and the session helpers are imported where they are used, so listing the
# command (`support-agent --help`, `provision --help`) does not pay for them.
if TYPE_CHECKING:
    import redis.asyncio as aioredis
    from anthropic import AsyncAnthropic

log = logging.getLogger(__name__)

MANAGED_BY = "support-agent"
FINGERPRINT_KEY = "token_sha256"


class ProvisionError(Exception):
    """The config cannot be provisioned as written; the message is for the operator."""


# -- what the config asks for ----------------------------------------------------------------


def agent_name(config: AppConfig, env_name: str) -> str:
    return f"{config.agent.name}-{env_name}"


def vault_name(config: AppConfig, env_name: str) -> str:
    return f"{config.agent.name}-{env_name}"


def server_url(config: AppConfig, name: str, server: McpServer) -> str:
    """Where the cloud reaches an MCP server: its `url`, or ours under `public_base_url`."""
    if server.url:
        return server.url
    if not server.builtin:
        raise ProvisionError(f"MCP server {name!r}: give it a `url`, or `builtin: true` for one of ours")
    if not config.public_base_url:
        raise ProvisionError(
            f"MCP server {name!r} is one of ours: set `public_base_url` in the config (the https URL "
            f"where the cloud reaches this app; it serves the server at <public_base_url>/mcp/{name})"
        )
    return f"{config.public_base_url.rstrip('/')}/mcp/{name}"


def cloud_servers(config: AppConfig, env_name: str, *, strict: bool = True) -> dict[str, str]:
    """`{server name: URL}` of the MCP servers the cloud calls for an environment.

    Bridged servers are left out. With `strict=False` a server whose URL cannot be worked out
    is skipped with a warning instead of failing (the bot's first-use fallback)."""
    out: dict[str, str] = {}
    for name, server in config.environments[env_name].mcp_servers.items():
        if server.bridged:
            continue
        try:
            out[name] = server_url(config, name, server)
        except ProvisionError as exc:
            if strict:
                raise
            log.warning("MCP server left off the agent", extra={"environment": env_name, "reason": str(exc)})
    return out


def toolset(name: str, server: McpServer) -> dict[str, Any]:
    """An `mcp_toolset` with every policy set explicitly (the API's default is `always_ask`)."""
    return {
        "type": "mcp_toolset",
        "mcp_server_name": name,
        "default_config": {"enabled": True, "permission_policy": {"type": server.default_policy}},
        "configs": [
            {"name": tool, "enabled": True, "permission_policy": {"type": policy}}
            for tool, policy in sorted(server.tools.items())
        ],
    }


def custom_tool_definitions() -> list[dict[str, Any]]:
    """Our custom tools (`tools/`): the worker answers them with Slack context."""
    from tools import custom_tools

    return [tool.definition() for tool in custom_tools().values()]


def agent_spec(config: AppConfig, env_name: str, *, strict: bool = True) -> dict[str, Any]:
    """The `agents.create` parameters for an environment's agent."""
    servers = config.environments[env_name].mcp_servers
    urls = cloud_servers(config, env_name, strict=strict)
    spec: dict[str, Any] = {
        "name": agent_name(config, env_name),
        "model": config.model_for(env_name),
        "system": config.agent.system,
        "mcp_servers": [{"type": "url", "name": name, "url": url} for name, url in urls.items()],
        "tools": [toolset(name, servers[name]) for name in urls] + custom_tool_definitions()
        # Memory stores are read and written with the agent toolset's file tools (issue 19).
        + memory_toolset(config.environments[env_name].memory),
        "metadata": {"managed_by": MANAGED_BY, "environment": env_name},
    }
    if config.agent.description:
        spec["description"] = config.agent.description
    return spec


def _dump(obj: Any) -> Any:
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    return obj


def _policy(value: Any) -> str | None:
    return value.get("type") if isinstance(value, dict) else value


def _toolsets(tools: list[Any]) -> dict[str, Any]:
    """The parts of `mcp_toolset`s we manage, comparable between a spec and an agent."""
    out: dict[str, Any] = {}
    for tool in tools:
        tool = _dump(tool)
        if tool.get("type") != "mcp_toolset":
            continue
        default = tool.get("default_config") or {}
        out[tool["mcp_server_name"]] = {
            "enabled": default.get("enabled", True),
            "policy": _policy(default.get("permission_policy")) or "always_ask",
            "tools": {
                c["name"]: (c.get("enabled", True), _policy(c.get("permission_policy")))
                for c in tool.get("configs") or []
            },
        }
    return out


def _custom(tools: list[Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for tool in (_dump(x) for x in tools):
        if tool.get("type") == "custom":
            schema = tool.get("input_schema") or {}
            out[tool["name"]] = (
                tool.get("description") or "",
                schema.get("properties") or {},
                sorted(schema.get("required") or []),
            )
    return out


def _other_tools(tools: list[Any]) -> list[Any]:
    managed = ("mcp_toolset", "custom", "agent_toolset_20260401")
    return [t for t in (_dump(x) for x in tools) if t.get("type") not in managed]


def agent_differences(current: Any, spec: dict[str, Any]) -> list[str]:
    """What differs between an existing agent and the spec (empty: nothing to do)."""
    agent = _dump(current)
    diffs: list[str] = []
    model = agent.get("model")
    model_id = model.get("id") if isinstance(model, dict) else model
    if model_id != spec["model"]:
        diffs.append("model")
    if (agent.get("system") or "") != spec["system"]:
        diffs.append("system")
    if (agent.get("description") or None) != spec.get("description"):
        diffs.append("description")
    have = {s["name"]: s["url"] for s in agent.get("mcp_servers") or []}
    want = {s["name"]: s["url"] for s in spec["mcp_servers"]}
    if have != want:
        diffs.append("mcp_servers")
    tools = agent.get("tools") or []
    if (
        _toolsets(tools) != _toolsets(spec["tools"])
        or _custom(tools) != _custom(spec["tools"])
        or _other_tools(tools)
        or toolset_signature([_dump(t) for t in tools]) != toolset_signature(spec["tools"])
    ):
        diffs.append("tools")
    metadata = agent.get("metadata") or {}
    if any(metadata.get(k) != v for k, v in spec["metadata"].items()):
        diffs.append("metadata")
    from app.provision_specialists import multiagent_differences

    diffs += multiagent_differences(agent, spec)  # the specialists roster (issue 19)
    return diffs


def environment_differences(current: Any, config: AppConfig, env_name: str) -> list[str]:
    from app.sessions.resources import environment_config

    env = _dump(current)
    want = environment_config(config, env_name)
    have = env.get("config") or {}
    if have.get("type") != want["type"]:
        return ["type"]
    net_have, net_want = have.get("networking") or {}, want["networking"]
    diffs = []
    if net_have.get("type") != net_want["type"]:
        diffs.append("networking")
    elif net_want["type"] == "limited":
        if sorted(net_have.get("allowed_hosts") or []) != sorted(net_want["allowed_hosts"]):
            diffs.append("allowed_hosts")
        for key in ("allow_mcp_servers", "allow_package_managers"):
            if bool(net_have.get(key)) != bool(net_want[key]):
                diffs.append(key)
    return diffs


def fingerprint(token: str) -> str:
    """What a credential's metadata records about its token: enough to see a rotation."""
    return "sha256:" + hashlib.sha256(token.encode()).hexdigest()


def normalize_url(url: str) -> str:
    scheme, sep, rest = url.strip().partition("://")
    if not sep:
        return url.strip().rstrip("/")
    host, slash, path = rest.partition("/")
    return f"{scheme.lower()}://{host.lower()}{slash}{path}".rstrip("/")


# -- the run ---------------------------------------------------------------------------------


@dataclass
class Change:
    kind: str  # agent | environment | vault | credential
    name: str
    action: str  # create | update | rotate | archive | ok | error
    detail: str = ""

    @property
    def changed(self) -> bool:
        return self.action not in ("ok", "error")

    def line(self, dry_run: bool) -> str:
        mark = {"create": "+", "update": "~", "rotate": "~", "archive": "-", "ok": "=", "error": "!"}
        verb = self.action
        if dry_run and self.changed:
            verb = f"would {verb}"
        elif self.action == "ok":
            verb = "no changes"
        text = f"  {mark.get(self.action, '?')} {self.kind} {self.name}: {verb}"
        return text + (f" ({self.detail})" if self.detail else "")


# What a dry run shows for our servers' URLs while `public_base_url` is not set.
UNSET_BASE_URL = "<public_base_url>"


@dataclass
class Provisioner:
    """Brings Managed Agents in line with the config; `dry_run` only reports.

    With no `client` (a dry run without an API key or network) nothing can be compared: the
    plan is what a first run would make. With no `redis`, resources are found by name only."""

    client: AsyncAnthropic | None
    redis: aioredis.Redis | None
    config: AppConfig
    environ: Mapping[str, str] = field(default_factory=lambda: os.environ)
    dry_run: bool = False
    strict: bool = True
    changes: list[Change] = field(default_factory=list)

    @property
    def offline(self) -> bool:
        return self.client is None

    def _api(self) -> AsyncAnthropic:
        assert self.client is not None, "only a dry run goes without the API"
        return self.client

    def _note(self, kind: str, name: str, action: str, detail: str = "") -> None:
        self.changes.append(Change(kind, name, action, detail))
        if action not in ("ok",):
            log.info(
                "provision",
                extra={"kind": kind, "resource": name, "action": action, "detail": detail, "dry_run": self.dry_run},
            )

    async def _record(self, kind: str, name: str, resource_id: str) -> None:
        if not self.dry_run and self.redis is not None:
            from app.sessions.resources import record_id

            await record_id(self.redis, kind, name, resource_id)

    async def _recorded(self, kind: str, name: str) -> str | None:
        if self.redis is None:
            return None
        from app.sessions.resources import recorded_id

        return await recorded_id(self.redis, kind, name)

    def _check_public_base_url(self) -> None:
        """A dry run names a missing `public_base_url` once and plans with a placeholder."""
        if self.config.public_base_url or not self.dry_run:
            return
        ours = sorted({
            name for env in self.config.environments.values()
            for name, server in env.mcp_servers.items() if server.builtin and not server.url and not server.bridged
        })
        if not ours:
            return
        self._note("config", "public_base_url", "error",
                   "not set: add `public_base_url: https://<your host>` to the config, the URL where the "
                   f"cloud reaches this app (it serves {', '.join(ours)} at <public_base_url>/mcp/<name>)")
        self.config = self.config.model_copy(update={"public_base_url": UNSET_BASE_URL})

    async def run(self) -> list[Change]:
        self._check_public_base_url()
        for env_name in self.config.environments:
            await self.ensure_environment(env_name)
            await self.ensure_agent(env_name)
            await self.ensure_vault(env_name)
        return self.changes

    # -- environment --------------------------------------------------------------------

    async def _find_environment(self, env_name: str) -> Any | None:
        import anthropic

        managed = self.config.environments[env_name].managed_environment
        if self.offline:
            return None
        environments = self._api().beta.environments
        if managed.id:
            return await environments.retrieve(managed.id)
        assert managed.name is not None
        known = await self._recorded("environment", managed.name)
        if known:
            try:
                found = await environments.retrieve(known)
                if not found.archived_at and found.name == managed.name:
                    return found
            except anthropic.NotFoundError:
                pass
        async for env in environments.list(limit=100):
            if env.name == managed.name and not env.archived_at:
                return env
        return None

    async def ensure_environment(self, env_name: str) -> str | None:
        managed = self.config.environments[env_name].managed_environment
        label = managed.name or managed.id or env_name
        from app.sessions.resources import environment_config

        current = await self._find_environment(env_name)
        wanted = environment_config(self.config, env_name)
        if current is None and managed.id and self.offline:
            self._note("environment", label, "ok", "the configured id; not checked offline")
            return None
        if current is None:
            if managed.id:
                raise ProvisionError(f"environment {env_name}: Managed Agents environment {managed.id} not found")
            self._note("environment", label, "create", f"{wanted['networking']['type']} networking")
            if self.dry_run:
                return None
            created = await self._api().beta.environments.create(
                name=label, config=wanted,  # type: ignore[arg-type]
                metadata={"managed_by": MANAGED_BY},
            )
            await self._record("environment", label, created.id)
            return created.id
        diffs = environment_differences(current, self.config, env_name)
        if diffs:
            self._note("environment", label, "update", ", ".join(diffs))
            if not self.dry_run:
                await self._api().beta.environments.update(current.id, config=wanted)  # type: ignore[arg-type]
        else:
            self._note("environment", label, "ok")
        if managed.name:
            await self._record("environment", managed.name, current.id)
        return str(current.id)

    # -- agent --------------------------------------------------------------------------

    async def _find_agent(self, name: str) -> Any | None:
        import anthropic

        if self.offline:
            return None
        agents = self._api().beta.agents
        known = await self._recorded("agent", name)
        if known:
            try:
                found = await agents.retrieve(known)
                if not found.archived_at and found.name == name:
                    return found
            except anthropic.NotFoundError:
                pass
        async for agent in agents.list(limit=100):
            if agent.name == name and not agent.archived_at:
                return agent
        return None

    async def ensure_agent(self, env_name: str) -> str | None:
        from app.sessions import bridge

        spec = agent_spec(self.config, env_name, strict=self.strict)
        name = spec["name"]
        current = await self._find_agent(name)
        from app.provision_specialists import coordinate

        await coordinate(self, env_name, spec, current)  # specialists first: the roster needs their ids
        servers = ", ".join(s["name"] for s in spec["mcp_servers"]) or "no MCP servers"
        bridged_ok = True
        if bridge.bridged_servers(self.config, env_name):
            try:
                spec["tools"] += await bridge.definitions(self.config, env_name, self.environ)
            except bridge.BridgeError as exc:
                bridged_ok = False
                left = "the agent is left as it is" if current is not None else "created without its tools"
                self._note("agent", name, "error", f"{exc}; {left}")
        if current is None:
            self._note("agent", name, "create", f"{spec['model']}; {servers}")
            if self.dry_run:
                return None
            created = await self._api().beta.agents.create(**spec)
            await self._record("agent", name, created.id)
            return created.id
        if not bridged_ok:
            await self._record("agent", name, current.id)
            return str(current.id)
        diffs = agent_differences(current, spec)
        if diffs:
            if self.dry_run:
                self._note("agent", name, "update", ", ".join(diffs))
            else:
                body = {k: v for k, v in spec.items() if k != "name"}
                updated = await self._api().beta.agents.update(current.id, version=current.version, **body)
                self._note("agent", name, "update", f"{', '.join(diffs)}; version {updated.version}")
        else:
            self._note("agent", name, "ok", f"version {current.version}")
        await self._record("agent", name, current.id)
        return str(current.id)

    # -- vault and credentials ------------------------------------------------------------

    async def _find_vault(self, env_name: str) -> Any | None:
        import anthropic

        if self.offline:
            return None
        vaults = self._api().beta.vaults
        known = await self._recorded("vault", env_name)
        if known:
            try:
                found = await vaults.retrieve(known)
                if not found.archived_at:
                    return found
            except anthropic.NotFoundError:
                pass
        display = vault_name(self.config, env_name)
        async for vault in vaults.list(limit=100):
            meta = vault.metadata or {}
            if (
                not vault.archived_at
                and meta.get("managed_by") == MANAGED_BY
                and meta.get("environment") == env_name
                and vault.display_name == display
            ):
                return vault
        return None

    def _wanted_credentials(self, env_name: str) -> dict[str, tuple[str, str | None, str | None]]:
        """`{normalized URL: (server name, token or None, token_env)}` for the vault."""
        servers = self.config.environments[env_name].mcp_servers
        out: dict[str, tuple[str, str | None, str | None]] = {}
        for name, url in cloud_servers(self.config, env_name, strict=self.strict).items():
            token_env = servers[name].token_env
            if not token_env:
                continue  # a server without auth (or a public one): nothing to store
            token = (self.environ.get(token_env) or "").strip() or None
            out[normalize_url(url)] = (name, token, token_env)
        return out

    async def ensure_vault(self, env_name: str) -> str | None:
        label = vault_name(self.config, env_name)
        wanted = self._wanted_credentials(env_name)
        vault = await self._find_vault(env_name)
        vault_id: str | None = None
        if vault is None:
            if not any(token for _, token, _ in wanted.values()):
                # Nothing to hold (no servers with tokens, or no token set): no empty vault.
                for url, (server, token, token_env) in wanted.items():
                    await self._ensure_credential(env_name, None, url, server, token, token_env, None)
                return None
            self._note("vault", label, "create", f"environment {env_name}")
            if not self.dry_run:
                created = await self._api().beta.vaults.create(
                    display_name=label,
                    metadata={"managed_by": MANAGED_BY, "environment": env_name},
                )
                vault_id = created.id
        else:
            vault_id = vault.id
            self._note("vault", label, "ok")
        existing: dict[str, Any] = {}
        if vault is not None:
            async for cred in self._api().beta.vaults.credentials.list(vault_id=vault.id, limit=100):
                auth = _dump(cred.auth)
                if cred.archived_at or auth.get("type") not in ("static_bearer", "mcp_oauth"):
                    continue
                existing[normalize_url(auth["mcp_server_url"])] = cred
        for url, (server, token, token_env) in wanted.items():
            await self._ensure_credential(env_name, vault_id, url, server, token, token_env, existing.get(url))
        for url, cred in existing.items():
            if url in wanted or (cred.metadata or {}).get("managed_by") != MANAGED_BY:
                continue
            server = (cred.metadata or {}).get("mcp_server", url)
            self._note("credential", f"{env_name}/{server}", "archive", f"{url} is no longer in the config")
            if not self.dry_run and vault_id:
                await self._api().beta.vaults.credentials.archive(cred.id, vault_id=vault_id)
        if vault_id:
            await self._record("vault", env_name, vault_id)
        return vault_id

    async def _ensure_credential(
        self,
        env_name: str,
        vault_id: str | None,
        url: str,
        server: str,
        token: str | None,
        token_env: str | None,
        current: Any | None,
    ) -> None:
        label = f"{env_name}/{server}"
        if token is None:
            what = "left as it is" if current is not None else "not created"
            self._note("credential", label, "error", f"{token_env} is not set; credential {what}")
            return
        fp = fingerprint(token)
        if current is None:
            self._note("credential", label, "create", f"static_bearer for {url} from {token_env}")
            if not self.dry_run and vault_id:
                await self._api().beta.vaults.credentials.create(
                    vault_id,
                    auth={"type": "static_bearer", "mcp_server_url": url, "token": token},
                    display_name=f"{server} ({env_name})",
                    metadata={"managed_by": MANAGED_BY, "mcp_server": server, FINGERPRINT_KEY: fp},
                )
            return
        if _dump(current.auth).get("type") != "static_bearer":
            self._note("credential", label, "error", f"{url} holds a {current.auth.type} credential; not touched")
            return
        if (current.metadata or {}).get(FINGERPRINT_KEY) == fp:
            self._note("credential", label, "ok")
            return
        self._note("credential", label, "rotate", f"{token_env} changed")
        if not self.dry_run and vault_id:
            await self._api().beta.vaults.credentials.update(
                current.id,
                vault_id=vault_id,
                auth={"type": "static_bearer", "token": token},
                metadata={"managed_by": MANAGED_BY, "mcp_server": server, FINGERPRINT_KEY: fp},
            )


def report(changes: list[Change], dry_run: bool, offline_reason: str | None = None) -> str:
    if offline_reason:
        head = (f"Plan (dry run, nothing is changed; offline: {offline_reason}, so nothing was compared "
                "with Managed Agents: this is what a first run would make):")
    else:
        head = "Plan (dry run, nothing is changed):" if dry_run else "Provisioned:"
    lines = [head]
    lines += [c.line(dry_run) for c in changes]
    changed = sum(1 for c in changes if c.changed)
    errors = sum(1 for c in changes if c.action == "error")
    if changed == 0:
        lines.append("no changes")
    elif dry_run:
        lines.append(f"{changed} change{'s' if changed != 1 else ''} to make")
    else:
        lines.append(f"{changed} change{'s' if changed != 1 else ''} made")
    if errors:
        what = "to fix before a real run (the lines marked !)" if dry_run else "see the lines marked !"
        lines.append(f"{errors} problem{'s' if errors != 1 else ''}{' ' if dry_run else ': '}{what}")
    return "\n".join(lines)


# -- CLI -------------------------------------------------------------------------------------


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    text = "make Managed Agents match the config: agents, environments, vaults and credentials"
    p = subparsers.add_parser("provision", help=text, description=text)
    p.add_argument("--dry-run", action="store_true", help="print the plan, change nothing")
    p.set_defaults(func=cmd_provision)


def cmd_provision(args: argparse.Namespace) -> int:
    """A real run needs the API key and Redis (it records the ids). A dry run needs neither:
    without a key, or when the API cannot be reached, it plans offline."""
    import anthropic

    from app.cli import _boot

    settings, config = _boot(need_slack=False, need_anthropic=not args.dry_run, log_level="WARNING")
    offline_reason = None if settings.anthropic_api_key else "ANTHROPIC_API_KEY is not set"

    async def plan(client: AsyncAnthropic | None) -> list[Change]:
        # A dry run finds resources by name; it neither reads nor writes Redis.
        return await Provisioner(client, None, config, dry_run=True).run()

    async def dry_run() -> list[Change]:
        nonlocal offline_reason
        if offline_reason:
            return await plan(None)
        from app.runtime import make_anthropic_client

        # One quick try: an unreachable API makes an offline plan, not a minute of retries.
        client = make_anthropic_client(settings).with_options(max_retries=1, timeout=15)
        try:
            return await plan(client)
        except anthropic.APIConnectionError:
            offline_reason = "the Managed Agents API could not be reached"
            return await plan(None)
        finally:
            await client.close()

    async def real_run() -> list[Change]:
        from app.redis_conn import connect, redis_url_or_embedded
        from app.runtime import make_anthropic_client

        redis_url = settings.redis_url.get_secret_value() if settings.redis_url else None
        url, embedded = redis_url_or_embedded(redis_url, settings.redis_data_dir)
        redis = connect(url)
        client = make_anthropic_client(settings)
        try:
            return await Provisioner(client, redis, config).run()
        finally:
            await redis.aclose()
            await client.close()
            if embedded is not None:
                embedded.close()

    try:
        changes = asyncio.run(dry_run() if args.dry_run else real_run())
    except ProvisionError as exc:
        print(f"support-agent provision: {exc}", file=sys.stderr)
        return 1
    except anthropic.APIStatusError as exc:
        print(f"support-agent provision: the Managed Agents API refused a request ({exc.status_code}): "
              f"{_api_message(exc)}", file=sys.stderr)
        return 1
    except anthropic.APIConnectionError:
        print("support-agent provision: could not reach the Managed Agents API", file=sys.stderr)
        return 1
    print("\n".join(describe_outcomes(config.environments)))  # which rubrics apply (issue 18)
    print(report(changes, args.dry_run, offline_reason if args.dry_run else None))
    return 1 if any(c.action == "error" for c in changes) else 0


def _api_message(exc: Any) -> str:
    """The API's own message of an `anthropic.APIStatusError`."""
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
    return exc.message
