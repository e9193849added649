"""Shared pieces of the Managed Agents emulator: ids, timestamps, errors, and the request
validation + response shaping of agents, environments, vaults and vault credentials.

Objects are kept as plain JSON dicts in exactly the wire shape the `anthropic` SDK parses
(`BetaManagedAgentsAgent`, `BetaEnvironment`, `BetaManagedAgentsVault`,
`BetaManagedAgentsCredential`); secrets are kept apart from them.

Where each rejection comes from (issue 15: every rule cites its source, or goes):

- Shape checks (`need_str`, `need_dict`, `need_list`, `opt_str`, the `Literal` value lists):
  the SDK's param TypedDicts under `anthropic/types/beta/` (`Required[...]` fields and their
  `Literal[...]` values), e.g. `agent_create_params.py`, `environment_create_params.py`,
  `vaults/credential_create_params.py`. The error body and status are the SDK's
  (`anthropic/_exceptions.py`; reference digest section 17).
- Limits: the SDK docstrings quoted next to each rule.
- `limit`/`page`: the list params' docstrings ("Default 20, maximum 100"; `page` is an "Opaque
  pagination cursor from a previous response"); a list whose maximum is not documented has none.
"""

from __future__ import annotations

import base64
import re
import secrets
import string
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

_ALPHABET = string.ascii_letters + string.digits


def new_id(prefix: str) -> str:
    return prefix + "_01" + "".join(secrets.choice(_ALPHABET) for _ in range(22))


class Clock:
    """Strictly increasing UTC timestamps (so `created_at[gt]` cursors never tie)."""

    def __init__(self) -> None:
        self._last = datetime.min.replace(tzinfo=UTC)
        self._lock = threading.Lock()

    def now(self) -> datetime:
        with self._lock:
            now = datetime.now(UTC)
            if now <= self._last:
                now = self._last + timedelta(microseconds=1)
            self._last = now
            return now


def rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time(value: str) -> datetime:
    try:
        moment = datetime.fromisoformat(value.replace(" ", "+"))
    except ValueError as exc:  # SDK: list params created_at[gt|gte|lt|lte]: Union[str, datetime] (RFC 3339)
        raise ApiError(400, f"invalid timestamp: {value!r}") from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment


class ApiError(Exception):
    """An error answered with Anthropic's error body."""

    TYPES = {
        400: "invalid_request_error",
        401: "authentication_error",
        402: "billing_error",
        403: "permission_error",
        404: "not_found_error",
        409: "invalid_request_error",
        413: "request_too_large",
        422: "invalid_request_error",
        429: "rate_limit_error",
        500: "api_error",
        503: "api_error",
        529: "overloaded_error",
    }

    def __init__(
        self,
        status: int,
        message: str,
        *,
        error_type: str | None = None,
        error_code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.error_type = error_type or self.TYPES.get(status, "api_error")
        self.error_code = error_code
        self.headers = headers or {}

    def body(self, request_id: str) -> dict[str, Any]:
        error: dict[str, Any] = {"type": self.error_type, "message": self.message}
        if self.error_code:
            error["details"] = {"error_code": self.error_code}
        return {"type": "error", "error": error, "request_id": request_id}


def not_found(kind: str, ident: str, error_code: str | None = None) -> ApiError:
    return ApiError(404, f"{kind} {ident!r} not found", error_code=error_code)


# -- small validators ---------------------------------------------------------------------------


def need_str(body: dict[str, Any], key: str, *, max_len: int | None = None) -> str:
    value = body.get(key)
    # SDK: Required[str] fields; non-empty is documented for names ("Must be non-empty", "1-255
    # characters"), for other fields the empty-string refusal is unsourced (docs/emulator-rules.md).
    if not isinstance(value, str) or not value:
        raise ApiError(400, f"{key}: a non-empty string is required")
    if max_len is not None and len(value) > max_len:
        raise ApiError(400, f"{key}: at most {max_len} characters")
    return value


def opt_str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is not None and not isinstance(value, str):
        raise ApiError(400, f"{key}: must be a string or null")
    return value


def need_dict(value: Any, what: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ApiError(400, f"{what}: an object is required")
    return value


def need_list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise ApiError(400, f"{what}: an array is required")
    return value


def check_metadata(value: Any, *, patch: bool = False) -> dict[str, Any]:
    if value is None:
        return {}
    meta = need_dict(value, "metadata")
    for key, item in meta.items():
        if len(key) > 64:  # SDK agent_create_params: "keys up to 64 chars, values up to 512 chars"
            raise ApiError(400, "metadata: keys are at most 64 characters", error_code="invalid_metadata")
        if item is None and patch:
            continue
        if not isinstance(item, str) or len(item) > 512:
            raise ApiError(400, "metadata: values are strings of at most 512 characters", error_code="invalid_metadata")
    return meta


def apply_metadata_patch(current: dict[str, str], patch: Any) -> dict[str, str]:
    updated = dict(current)
    for key, item in check_metadata(patch, patch=True).items():
        if item is None or item == "":
            updated.pop(key, None)
        else:
            updated[key] = item
    if len(updated) > 16:  # SDK agent_create_params.metadata: "Maximum 16 pairs"
        raise ApiError(400, "metadata: at most 16 pairs", error_code="invalid_metadata")
    return updated


def new_metadata(value: Any) -> dict[str, str]:
    meta = check_metadata(value)
    if len(meta) > 16:  # SDK agent_create_params.metadata: "Maximum 16 pairs"
        raise ApiError(400, "metadata: at most 16 pairs", error_code="invalid_metadata")
    return dict(meta)


# -- pagination ---------------------------------------------------------------------------------


def encode_cursor(direction: str, ident: str) -> str:
    return base64.urlsafe_b64encode(f"{direction}:{ident}".encode()).decode().rstrip("=")


def decode_cursor(token: str) -> tuple[str, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        direction, ident = raw.split(":", 1)
    except Exception as exc:
        raise ApiError(400, "page: invalid cursor") from exc
    if direction not in ("after", "before"):
        raise ApiError(400, "page: invalid cursor")
    return direction, ident


def parse_limit(value: str | None, default: int, maximum: int | None) -> int:
    """`limit` is an int in every list params TypedDict; `maximum` only where documented."""
    if value is None:
        return default
    try:
        limit = int(value)
    except ValueError as exc:
        raise ApiError(400, "limit: an integer is required") from exc
    # SDK: the maximum from the docstrings; the minimum of 1 is unsourced (docs/emulator-rules.md).
    if limit < 1 or (maximum is not None and limit > maximum):
        raise ApiError(400, f"limit: must be between 1 and {maximum}")
    return limit


def paginate(
    items: list[dict[str, Any]], page: str | None, limit: int, *, bidirectional: bool = False
) -> dict[str, Any]:
    """Cursor pages over an already ordered list. Cursors name the id at the page edge."""
    start = 0
    if page:
        direction, ident = decode_cursor(page)
        ids = [item["id"] for item in items]
        if ident not in ids:  # not a cursor "from a previous response" (SDK list params)
            raise ApiError(400, "page: cursor no longer valid")
        index = ids.index(ident)
        start = index + 1 if direction == "after" else max(0, index - limit)
        if direction == "before":
            chunk = items[start:index]
            return _page(items, chunk, start, bidirectional)
    chunk = items[start : start + limit]
    return _page(items, chunk, start, bidirectional)


def _page(items: list[dict[str, Any]], chunk: list[dict[str, Any]], start: int, bidirectional: bool) -> dict[str, Any]:
    end = start + len(chunk)
    body: dict[str, Any] = {
        "data": chunk,
        "next_page": encode_cursor("after", chunk[-1]["id"]) if chunk and end < len(items) else None,
    }
    if bidirectional:
        body["prev_page"] = encode_cursor("before", chunk[0]["id"]) if chunk and start > 0 else None
    return body


# -- agents -------------------------------------------------------------------------------------

TOOLSET_TOOLS = ("bash", "edit", "read", "write", "glob", "grep", "web_fetch", "web_search")
POLICIES = ("always_allow", "always_ask", "auto")
EFFORTS = ("low", "medium", "high", "xhigh", "max")


def _policy(value: Any, default: str) -> dict[str, str]:
    if value is None:
        return {"type": default}
    policy = need_dict(value, "permission_policy")
    # SDK: beta_managed_agents_{always_allow,always_ask,auto}_policy_param.py type Literal
    if policy.get("type") not in POLICIES:
        raise ApiError(400, f"permission_policy.type: one of {', '.join(POLICIES)}")
    return {"type": policy["type"]}


def normalize_model(value: Any) -> dict[str, Any]:
    if isinstance(value, str) and value:
        return {"id": value, "effort": None, "inference_geo": None, "speed": "standard"}
    model = need_dict(value, "model")
    model_id = need_str(model, "id")
    effort = model.get("effort")
    if isinstance(effort, str):
        effort = {"type": effort}
    # SDK: beta_managed_agents_model_config_params.py effort Literal low..max, speed Literal standard|fast
    if effort is not None and (not isinstance(effort, dict) or effort.get("type") not in EFFORTS):
        raise ApiError(400, f"model.effort: one of {', '.join(EFFORTS)}")
    speed = model.get("speed") or "standard"
    if speed not in ("standard", "fast"):
        raise ApiError(400, "model.speed: standard or fast")
    return {
        "id": model_id,
        "effort": effort,
        "inference_geo": opt_str(model, "inference_geo"),
        "speed": speed,
    }


def _normalize_tool(raw: Any) -> dict[str, Any]:
    tool = need_dict(raw, "tools[]")
    kind = tool.get("type")
    if kind == "agent_toolset_20260401":
        default = need_dict(tool.get("default_config") or {}, "default_config")
        default_policy = _policy(default.get("permission_policy"), "always_allow")
        configs = []
        for raw_config in need_list(tool.get("configs") or [], "configs"):
            config = dict(need_dict(raw_config, "configs[]"))
            name = config.get("name")
            if name not in TOOLSET_TOOLS:  # SDK BetaManagedAgentsAgentToolConfigParams.name Literal
                raise ApiError(400, f"configs[].name: one of {', '.join(TOOLSET_TOOLS)}")
            config["type"] = name
            config["enabled"] = bool(config.get("enabled", True))
            config["permission_policy"] = _policy(config.get("permission_policy"), default_policy["type"])
            configs.append(config)
        return {
            "type": kind,
            "default_config": {
                "enabled": bool(default.get("enabled", True)),
                "permission_policy": default_policy,
            },
            "configs": configs,
        }
    if kind == "mcp_toolset":
        server = need_str(tool, "mcp_server_name", max_len=255)
        default = need_dict(tool.get("default_config") or {}, "default_config")
        default_policy = _policy(default.get("permission_policy"), "always_ask")
        configs = []
        for raw_config in need_list(tool.get("configs") or [], "configs"):
            config = need_dict(raw_config, "configs[]")
            configs.append(
                {
                    "name": need_str(config, "name", max_len=128),
                    "enabled": bool(config.get("enabled", True)),
                    "permission_policy": _policy(config.get("permission_policy"), default_policy["type"]),
                }
            )
        return {
            "type": kind,
            "mcp_server_name": server,
            "default_config": {
                "enabled": bool(default.get("enabled", True)),
                "permission_policy": default_policy,
            },
            "configs": configs,
        }
    if kind == "custom":
        name = need_str(tool, "name", max_len=128)
        # SDK BetaManagedAgentsCustomToolParams.name: "1-128 characters; letters, digits,
        # underscores, and hyphens."
        if not re.fullmatch(r"[A-Za-z0-9_-]+", name):
            raise ApiError(400, "custom tool name: letters, digits, _ and - only")
        schema = need_dict(tool.get("input_schema") or {"type": "object"}, "input_schema")
        if schema.get("type", "object") != "object":  # SDK input schema param: type Literal["object"]
            raise ApiError(400, "input_schema.type must be object")
        return {
            "type": "custom",
            "name": name,
            "description": tool.get("description") or "",
            "input_schema": {
                "type": "object",
                "properties": schema.get("properties"),
                "required": schema.get("required"),
            },
        }
    # SDK: agent_create_params.Tool = agent_toolset_20260401 | mcp_toolset | custom params
    raise ApiError(400, f"tools[].type: unknown tool type {kind!r}")


def normalize_tools(value: Any) -> list[dict[str, Any]]:
    tools = [_normalize_tool(raw) for raw in need_list(value or [], "tools")]
    return tools


def normalize_mcp_servers(value: Any) -> list[dict[str, Any]]:
    servers = []
    for raw in need_list(value or [], "mcp_servers"):
        server = need_dict(raw, "mcp_servers[]")
        if server.get("type", "url") != "url":  # SDK: beta_managed_agents_url_mcp_server_params type Literal["url"]
            raise ApiError(400, "mcp_servers[].type must be url")
        servers.append({"type": "url", "name": need_str(server, "name", max_len=255), "url": need_str(server, "url")})
    names = [s["name"] for s in servers]
    # SDK agent_create_params.mcp_servers: "Maximum 20. Names must be unique within the array.
    # Every server must be referenced by an `mcp_toolset` in `tools`; unreferenced servers are
    # rejected." (the wiring check below)
    if len(set(names)) != len(names):
        raise ApiError(400, "mcp_servers: names must be unique")
    if len(servers) > 20:
        raise ApiError(400, "mcp_servers: at most 20")
    return servers


def check_tool_wiring(tools: list[dict[str, Any]], servers: list[dict[str, Any]]) -> None:
    toolsets = {t["mcp_server_name"] for t in tools if t["type"] == "mcp_toolset"}
    names = {s["name"] for s in servers}
    for name in names - toolsets:
        raise ApiError(400, f"mcp_servers: {name!r} is not referenced by an mcp_toolset")
    for name in toolsets - names:  # SDK mcp_toolset.mcp_server_name: must name an mcp_servers entry
        raise ApiError(400, f"tools: mcp_toolset references unknown MCP server {name!r}")


def normalize_skills(value: Any) -> list[dict[str, Any]]:
    skills = []
    for raw in need_list(value or [], "skills"):
        skill = need_dict(raw, "skills[]")
        # SDK: beta_managed_agents_{anthropic,custom}_skill_params.py: type Literal, skill_id Required
        if skill.get("type") not in ("anthropic", "custom"):
            raise ApiError(400, "skills[].type: anthropic or custom")
        skills.append(
            {
                "type": skill["type"],
                "skill_id": need_str(skill, "skill_id"),
                "version": str(skill.get("version") or "latest"),
            }
        )
    return skills


def normalize_identity(value: Any) -> dict[str, Any]:
    if value is None:
        return {"type": "service_account"}
    identity = need_dict(value, "execution_identity")
    if identity.get("type") == "service_account":
        return {"type": "service_account"}
    if identity.get("type") == "aws_role":
        return {"type": "aws_role", "role_arn": need_str(identity, "role_arn")}
    # SDK: BetaManagedAgentsExecutionIdentityParams = service_account | aws_role (role_arn Required)
    raise ApiError(400, "execution_identity.type: service_account or aws_role")


AGENT_CONFIG_KEYS = (
    "name",
    "description",
    "model",
    "system",
    "tools",
    "mcp_servers",
    "skills",
    "multiagent",
    "execution_identity",
)


def build_agent(body: dict[str, Any], agent_id: str, now: str) -> dict[str, Any]:
    tools = normalize_tools(body.get("tools"))
    servers = normalize_mcp_servers(body.get("mcp_servers"))
    check_tool_wiring(tools, servers)
    if "model" not in body:  # SDK agent_create_params: model Required
        raise ApiError(400, "model: required")
    return {
        "id": agent_id,
        "type": "agent",
        "name": need_str(body, "name"),  # Required[str]; no documented length limit
        "description": opt_str(body, "description"),
        "model": normalize_model(body["model"]),
        "system": opt_str(body, "system"),
        "tools": tools,
        "mcp_servers": servers,
        "skills": normalize_skills(body.get("skills")),
        "multiagent": body.get("multiagent"),
        "execution_identity": normalize_identity(body.get("execution_identity")),
        "metadata": new_metadata(body.get("metadata")),
        "version": 1,
        "created_at": now,
        "updated_at": now,
        "archived_at": None,
    }


def update_agent(current: dict[str, Any], body: dict[str, Any], now: str) -> dict[str, Any] | None:
    """The next version of `current` after `body`, or None when nothing would change."""
    updated = dict(current)
    if "name" in body:
        # anthropics/skills managed-agents-core.md (agent configuration fields): name "1-256 chars".
        updated["name"] = need_str(body, "name", max_len=256)
    if "model" in body:
        updated["model"] = normalize_model(body["model"])
    for key in ("description", "system"):
        if key in body:
            updated[key] = opt_str(body, key)
    if "tools" in body:
        updated["tools"] = normalize_tools(body["tools"])
    if "mcp_servers" in body:
        updated["mcp_servers"] = normalize_mcp_servers(body["mcp_servers"])
    if "skills" in body:
        updated["skills"] = normalize_skills(body["skills"])
    if "multiagent" in body:
        updated["multiagent"] = body["multiagent"]
    if "execution_identity" in body:
        updated["execution_identity"] = normalize_identity(body["execution_identity"])
    if "metadata" in body:
        updated["metadata"] = apply_metadata_patch(current["metadata"], body["metadata"])
    check_tool_wiring(updated["tools"], updated["mcp_servers"])
    if all(updated[k] == current[k] for k in (*AGENT_CONFIG_KEYS, "metadata")):
        return None
    updated["version"] = current["version"] + 1
    updated["updated_at"] = now
    return updated


SESSION_AGENT_KEYS = (
    "id",
    "type",
    "name",
    "description",
    "model",
    "system",
    "tools",
    "mcp_servers",
    "skills",
    "multiagent",
    "execution_identity",
    "version",
)


def session_agent(agent: dict[str, Any]) -> dict[str, Any]:
    return {key: agent[key] for key in SESSION_AGENT_KEYS}


def apply_overrides(snapshot: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    result = dict(snapshot)
    if "model" in overrides:
        result["model"] = normalize_model(overrides["model"])
    if "system" in overrides:
        result["system"] = opt_str(overrides, "system")
    if "tools" in overrides:
        result["tools"] = normalize_tools(overrides["tools"])
    if "mcp_servers" in overrides:
        result["mcp_servers"] = normalize_mcp_servers(overrides["mcp_servers"])
    if "skills" in overrides:
        result["skills"] = normalize_skills(overrides["skills"])
    check_tool_wiring(result["tools"], result["mcp_servers"])
    return result


# -- environments -------------------------------------------------------------------------------

PACKAGE_MANAGERS = ("apt", "cargo", "gem", "go", "npm", "pip")


def _networking(value: Any, current: dict[str, Any] | None = None) -> dict[str, Any]:
    if value is None:
        return current or {"type": "unrestricted"}
    net = need_dict(value, "config.networking")
    if net.get("type") == "unrestricted":
        return {"type": "unrestricted"}
    if net.get("type") == "limited":
        base = current if current and current.get("type") == "limited" else {}
        hosts = net.get("allowed_hosts", base.get("allowed_hosts", []))
        return {
            "type": "limited",
            "allowed_hosts": [str(h) for h in need_list(hosts, "allowed_hosts")],
            "allow_mcp_servers": bool(net.get("allow_mcp_servers", base.get("allow_mcp_servers", False))),
            "allow_package_managers": bool(
                net.get("allow_package_managers", base.get("allow_package_managers", False))
            ),
        }
    # SDK: beta_cloud_config_params.Networking = BetaUnrestrictedNetworkParam | BetaLimitedNetworkParams
    raise ApiError(400, "config.networking.type: unrestricted or limited")


def _packages(value: Any, current: dict[str, Any] | None = None) -> dict[str, Any]:
    base = current or {"type": "packages", **{m: [] for m in PACKAGE_MANAGERS}}
    if value is None:
        return base
    packages = need_dict(value, "config.packages")
    result: dict[str, Any] = {"type": "packages"}
    for manager in PACKAGE_MANAGERS:
        result[manager] = [str(p) for p in need_list(packages.get(manager, base[manager]), manager)]
    return result


def environment_config(value: Any, current: dict[str, Any] | None = None) -> dict[str, Any]:
    if value is None:
        return current or {
            "type": "cloud",
            "networking": _networking(None),
            "packages": _packages(None),
        }
    config = need_dict(value, "config")
    kind = config.get("type", current["type"] if current else "cloud")
    if current is not None and kind != current["type"]:
        # SDK environments.update "Raises: BetaInvalidConfigTypeChangeError".
        raise ApiError(400, "config.type cannot change", error_code="invalid_config_type_change")
    if kind == "self_hosted":
        return {"type": "self_hosted"}
    if kind != "cloud":  # SDK: environment_create_params.Config = BetaCloudConfigParams | BetaSelfHostedConfigParams
        raise ApiError(400, "config.type: cloud or self_hosted")
    result: dict[str, Any] = {
        "type": "cloud",
        "networking": _networking(config.get("networking"), current and current.get("networking")),
        "packages": _packages(config.get("packages"), current and current.get("packages")),
    }
    net, packages = result["networking"], result["packages"]
    if net["type"] == "limited" and not net["allow_package_managers"] and any(packages[m] for m in PACKAGE_MANAGERS):
        # Reference digest section 4 (SDK BetaLimitedNetworkParams docstring):
        # allow_package_managers "must be true when packages is set under limited".
        raise ApiError(400, "config.networking: allow_package_managers must be true to install packages")
    return result


# -- vault credentials --------------------------------------------------------------------------

SECRET_FIELDS = ("token", "access_token", "refresh_token", "client_secret", "secret_value")


def redact(value: Any) -> Any:
    """A copy with secret fields replaced, for logs."""
    if isinstance(value, dict):
        return {k: ("***" if k in SECRET_FIELDS else redact(v)) for k, v in value.items()}
    if isinstance(value, list):
        return [redact(v) for v in value]
    return value


def normalize_url(url: str) -> str:
    url = url.strip()
    match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]*)://([^/]+)(.*)$", url)
    if not match:
        return url.rstrip("/")
    scheme, host, rest = match.groups()
    return f"{scheme.lower()}://{host.lower()}{rest.rstrip('/')}"


def _refresh_public(refresh: dict[str, Any]) -> dict[str, Any]:
    auth = need_dict(refresh.get("token_endpoint_auth") or {"type": "none"}, "token_endpoint_auth")
    # SDK: vaults/beta_managed_agents_token_endpoint_auth_{none,basic,post}_param.py type Literal
    if auth.get("type") not in ("none", "client_secret_basic", "client_secret_post"):
        raise ApiError(400, "token_endpoint_auth.type: none, client_secret_basic or client_secret_post")
    return {
        "client_id": need_str(refresh, "client_id"),
        "token_endpoint": need_str(refresh, "token_endpoint"),
        "token_endpoint_auth": {"type": auth["type"]},
        "resource": refresh.get("resource"),
        "scope": refresh.get("scope"),
    }


def credential_auth(
    value: Any, current_public: dict[str, Any] | None = None, current_secret: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split a credential `auth` param into (public response auth, secrets kept internally)."""
    auth = need_dict(value, "auth")
    kind = auth.get("type")
    if current_public is not None and kind != current_public["type"]:
        # SDK credentials.update / reference digest section 11: "the auth.type cannot change".
        raise ApiError(400, "auth.type cannot change")
    secret = dict(current_secret or {})
    if kind == "static_bearer":
        url = auth.get("mcp_server_url", current_public and current_public["mcp_server_url"])
        if current_public is not None and url != current_public["mcp_server_url"]:
            # Reference digest section 11 [Skill]: "identity fields cannot change: archive and recreate".
            raise ApiError(400, "auth.mcp_server_url cannot change")
        if "token" in auth or current_public is None:
            secret["token"] = need_str(auth, "token")
        return {"type": kind, "mcp_server_url": need_str({"u": url}, "u")}, secret
    if kind == "mcp_oauth":
        url = auth.get("mcp_server_url", current_public and current_public["mcp_server_url"])
        if current_public is not None and url != current_public["mcp_server_url"]:
            raise ApiError(400, "auth.mcp_server_url cannot change")
        if "access_token" in auth or current_public is None:
            secret["access_token"] = need_str(auth, "access_token")
        public: dict[str, Any] = {
            "type": kind,
            "mcp_server_url": need_str({"u": url}, "u"),
            "expires_at": auth.get("expires_at", current_public and current_public.get("expires_at")),
            "refresh": current_public and current_public.get("refresh"),
        }
        if auth.get("refresh") is not None:
            refresh = need_dict(auth["refresh"], "refresh")
            public["refresh"] = _refresh_public(refresh)
            for key in ("refresh_token",):
                if key in refresh:
                    secret[key] = refresh[key]
            client_secret = (refresh.get("token_endpoint_auth") or {}).get("client_secret")
            if client_secret:
                secret["client_secret"] = client_secret
        return public, secret
    if kind == "environment_variable":
        name = auth.get("secret_name", current_public and current_public["secret_name"])
        if current_public is not None and name != current_public["secret_name"]:
            # Reference digest section 11: secret_name "(env-var name, cannot change)".
            raise ApiError(400, "auth.secret_name cannot change")
        if "secret_value" in auth or current_public is None:
            secret["secret_value"] = need_str(auth, "secret_value")
        networking = (
            auth.get("networking") or (current_public and current_public["networking"]) or {"type": "unrestricted"}
        )
        net = need_dict(networking, "auth.networking")
        if net.get("type") == "limited":
            net = {"type": "limited", "allowed_hosts": list(need_list(net.get("allowed_hosts"), "allowed_hosts"))}
        elif net.get("type") == "unrestricted":
            net = {"type": "unrestricted"}
        else:  # SDK: vaults/beta_managed_agents_{unrestricted,limited}_credential_networking_params.py
            raise ApiError(400, "auth.networking.type: unrestricted or limited")
        base_location = (current_public and current_public["injection_location"]) or {
            "header": True,
            "body": False,
        }
        location = need_dict(auth.get("injection_location") or {}, "injection_location")
        return {
            "type": kind,
            "secret_name": need_str({"n": name}, "n"),
            "networking": net,
            "injection_location": {
                "header": bool(location.get("header", base_location["header"])),
                "body": bool(location.get("body", base_location["body"])),
            },
        }, secret
    # SDK: vaults/credential_create_params.Auth = mcp_oauth | static_bearer | environment_variable
    raise ApiError(400, "auth.type: static_bearer, mcp_oauth or environment_variable")


def credential_identity(auth: dict[str, Any]) -> str:
    if auth["type"] == "environment_variable":
        return "env:" + auth["secret_name"]
    return "url:" + normalize_url(auth["mcp_server_url"])
