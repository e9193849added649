"""Memory stores in the Managed Agents emulator: stores, memories, memory versions, and the
agent's reads and writes through a session's mount.

Shapes are the SDK's (`anthropic/types/beta/beta_managed_agents_memory_store.py`,
`types/beta/memory_stores/beta_managed_agents_memory.py`, `..._memory_version.py`,
`..._memory_prefix.py`); routes are `resources/beta/memory_stores/{memory_stores,memories,
memory_versions}.py`. Where each rule comes from:

- Store `name` 1-255 characters without control characters, `description` at most 1,024,
  metadata at most 16 pairs (keys 1-64, values at most 512): `memory_store_create_params.py`.
- Memory `path`: starts with `/`, 1-20 segments, none empty, `.` or `..`, no control or format
  characters nor U+2028/U+2029, NFC, at most 1,024 bytes; `content` at most 102,400 bytes:
  `memory_create_params.py`, `memory_update_params.py`.
- A path already taken: 409 `memory_path_conflict_error` (create and rename), a failed
  `content_sha256` precondition or `expected_content_sha256`: 409
  `memory_precondition_failed_error` (SDK docstrings give the 409; the error type names are from
  anthropics/skills `shared/managed-agents-memory.md`).
- An update that changes nothing writes no version (`beta_managed_agents_memory_version_operation.py`);
  a delete writes a `deleted` version with null content, size and hash; a redaction nulls
  content, path, size and hash and sets `redacted_at`/`redacted_by` (`..._memory_version.py`).
- An archived store cannot be attached to new sessions, nor take new or changed memories, nor be
  updated; its memories can still be read and deleted and its versions redacted
  (`beta_managed_agents_memory_store.py`). The status of that refusal is not documented: 400.
- `view`: `basic` (content null) by default on list, create and update, `full` on retrieve;
  with `full` a list page holds at most 20 (`beta_managed_agents_memory_view.py`). Limits 1-100,
  default 20 (`memory_list_params.py`, `memory_version_list_params.py`,
  `memory_store_list_params.py`). Versions list newest first (skills memory page).
- `path_prefix` must end with `/` and matches whole segments; `depth: 1` rolls deeper memories
  up into `memory_prefix` items (`memory_list_params.py`).
- The mount: `/mnt/memory/<slug>` where the slug is the lowercased name with every run of
  characters other than ASCII letters and digits made one hyphen (`memory_store_create_params.py`;
  trimming hyphens at the ends is our assumption). `read_only` fails writes at the filesystem
  level (`beta_managed_agents_memory_store_resource_param.py`). An agent's write through the
  mount is a version `created_by` a `session_actor` (`..._memory_version.py`), `modified` when
  the file existed (`..._memory_version_operation.py`). The agent needs the toolset's `read` /
  `write` tools enabled (Docs managed-agents/memory, via the reference digest section 1.3). The
  texts of the agent's tool results
  (file content, "File does not exist.", a read-only error) are not documented: ours.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from app.sandbox.agents.resources import (
    ApiError,
    apply_metadata_patch,
    decode_cursor,
    encode_cursor,
    need_dict,
    need_str,
    new_id,
    new_metadata,
    not_found,
    paginate,
    parse_limit,
)
from app.sandbox.agents.store import QueryLike, _flag, _passes, _time_filters

if TYPE_CHECKING:
    from app.sandbox.agents.session import SessionRuntime

API_ACTOR = {"type": "api_actor", "api_key_id": "apikey_emulated"}
MAX_CONTENT_BYTES = 102_400
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "store"


def check_path(value: Any, what: str = "path") -> str:
    if not isinstance(value, str) or not value.startswith("/"):
        raise ApiError(400, f"{what}: must start with /")
    segments = value[1:].split("/")
    if not 1 <= len(segments) <= 20 or any(s in ("", ".", "..") for s in segments):
        raise ApiError(400, f"{what}: 1 to 20 segments, none empty, '.' or '..'")
    if any(unicodedata.category(c) in ("Cc", "Cf") or c in "\u2028\u2029" for c in value):
        raise ApiError(400, f"{what}: no control or format characters")
    if unicodedata.normalize("NFC", value) != value or len(value.encode()) > 1024:
        raise ApiError(400, f"{what}: Unicode NFC, at most 1,024 bytes")
    return value


def check_content(value: Any) -> str:
    if value is None:
        return ""
    if not isinstance(value, str) or len(value.encode("utf-8")) > MAX_CONTENT_BYTES:
        raise ApiError(400, "content: UTF-8 text of at most 102,400 bytes")
    return value


def _view(query: QueryLike, default: str) -> str:
    view = query.get("view") or default
    if view not in ("basic", "full"):
        raise ApiError(400, "view: basic or full")
    return view


class MemoryEmulation:
    """Every memory store of the emulated workspace, with its memories and versions."""

    def __init__(self, now: Any) -> None:
        self.now = now  # () -> RFC 3339 string, strictly increasing
        self.stores: dict[str, dict[str, Any]] = {}
        self.memories: dict[str, dict[str, dict[str, Any]]] = {}  # store -> mem id -> memory
        self.versions: dict[str, list[dict[str, Any]]] = {}  # store -> versions, oldest first

    # -- stores ------------------------------------------------------------------------------

    def create_store(self, body: dict[str, Any]) -> dict[str, Any]:
        name = need_str(body, "name", max_len=255)
        if _CONTROL.search(name):
            raise ApiError(400, "name: no control characters")
        description = body.get("description") or ""
        if not isinstance(description, str) or len(description) > 1024:
            raise ApiError(400, "description: at most 1,024 characters")
        now = self.now()
        store = {
            "id": new_id("memstore"), "type": "memory_store", "name": name, "description": description,
            "metadata": new_metadata(body.get("metadata")), "created_at": now, "updated_at": now,
            "archived_at": None,
        }
        self.stores[store["id"]] = store
        self.memories[store["id"]] = {}
        self.versions[store["id"]] = []
        return dict(store)

    def store(self, store_id: str) -> dict[str, Any]:
        store = self.stores.get(store_id)
        if store is None:
            raise not_found("memory_store", store_id)
        return store

    def _writable(self, store_id: str) -> dict[str, Any]:
        store = self.store(store_id)
        if store["archived_at"] is not None:
            raise ApiError(400, "the memory store is archived")
        return store

    def update_store(self, store_id: str, body: dict[str, Any]) -> dict[str, Any]:
        store = self._writable(store_id)
        if body.get("name") is not None:
            store["name"] = need_str(body, "name", max_len=255)
        if body.get("description") is not None:
            if not isinstance(body["description"], str) or len(body["description"]) > 1024:
                raise ApiError(400, "description: at most 1,024 characters")
            store["description"] = body["description"]
        if body.get("metadata") is not None:
            store["metadata"] = apply_metadata_patch(store["metadata"], body["metadata"])
        store["updated_at"] = self.now()
        return dict(store)

    def list_stores(self, query: QueryLike) -> dict[str, Any]:
        filters = _time_filters(query)
        items = [
            dict(s) for s in self.stores.values()
            if (s["archived_at"] is None or _flag(query, "include_archived")) and _passes(s["created_at"], filters)
        ]
        return paginate(items, query.get("page"), parse_limit(query.get("limit"), 20, 100))

    def archive_store(self, store_id: str) -> dict[str, Any]:
        store = self.store(store_id)
        if store["archived_at"] is None:
            store["archived_at"] = store["updated_at"] = self.now()
        return dict(store)

    def delete_store(self, store_id: str) -> dict[str, Any]:
        self.store(store_id)
        for table in (self.stores, self.memories, self.versions):
            table.pop(store_id, None)
        return {"id": store_id, "type": "memory_store_deleted"}

    # -- memories ----------------------------------------------------------------------------

    def _at(self, store_id: str, path: str) -> dict[str, Any] | None:
        return next((m for m in self.memories[store_id].values() if m["path"] == path), None)

    def _memory(self, store_id: str, memory_id: str) -> dict[str, Any]:
        self.store(store_id)
        memory = self.memories[store_id].get(memory_id)
        if memory is None:
            raise not_found("memory", memory_id)
        return memory

    @staticmethod
    def _conflict(existing: dict[str, Any]) -> ApiError:
        return ApiError(409, f"a memory already exists at {existing['path']!r} ({existing['id']})",
                        error_type="memory_path_conflict_error")

    def _version(self, memory: dict[str, Any], operation: str, actor: dict[str, Any]) -> dict[str, Any]:
        deleted = operation == "deleted"
        version = {
            "id": new_id("memver"), "type": "memory_version", "memory_id": memory["id"],
            "memory_store_id": memory["memory_store_id"], "operation": operation,
            "created_at": self.now(), "created_by": dict(actor), "path": memory["path"],
            "content": None if deleted else memory["content"],
            "content_sha256": None if deleted else memory["content_sha256"],
            "content_size_bytes": None if deleted else memory["content_size_bytes"],
            "redacted_at": None, "redacted_by": None,
        }
        self.versions[memory["memory_store_id"]].append(version)
        memory["memory_version_id"] = version["id"]
        return version

    def create_memory(self, store_id: str, body: dict[str, Any], actor: dict[str, Any] = API_ACTOR) -> dict[str, Any]:
        self._writable(store_id)
        path = check_path(body.get("path"))
        content = check_content(body.get("content"))
        existing = self._at(store_id, path)
        if existing is not None:
            raise self._conflict(existing)
        now = self.now()
        memory = {
            "id": new_id("mem"), "type": "memory", "memory_store_id": store_id, "path": path,
            "content": content, "content_sha256": sha256(content),
            "content_size_bytes": len(content.encode()), "created_at": now, "updated_at": now,
        }
        self.memories[store_id][memory["id"]] = memory
        self._version(memory, "created", actor)
        return memory

    def update_memory(
        self, store_id: str, memory_id: str, body: dict[str, Any], actor: dict[str, Any] = API_ACTOR
    ) -> dict[str, Any]:
        self._writable(store_id)
        memory = self._memory(store_id, memory_id)
        precondition = body.get("precondition")
        if precondition is not None:
            cond = need_dict(precondition, "precondition")
            if cond.get("type") != "content_sha256":  # SDK: "the only supported variant"
                raise ApiError(400, "precondition.type: content_sha256")
            if cond.get("content_sha256") != memory["content_sha256"]:
                raise ApiError(409, "the memory's content_sha256 does not match the precondition",
                               error_type="memory_precondition_failed_error")
        path = check_path(body["path"]) if body.get("path") is not None else memory["path"]
        content = check_content(body["content"]) if body.get("content") is not None else memory["content"]
        other = self._at(store_id, path)
        if other is not None and other["id"] != memory_id:
            raise self._conflict(other)
        if path == memory["path"] and content == memory["content"]:
            return memory  # nothing changed: no new version
        memory.update(path=path, content=content, content_sha256=sha256(content),
                      content_size_bytes=len(content.encode()), updated_at=self.now())
        self._version(memory, "modified", actor)
        return memory

    def delete_memory(self, store_id: str, memory_id: str, query: QueryLike) -> dict[str, Any]:
        memory = self._memory(store_id, memory_id)
        expected = query.get("expected_content_sha256")
        if expected is not None and expected != memory["content_sha256"]:
            raise ApiError(409, "the memory's content_sha256 does not match expected_content_sha256",
                           error_type="memory_precondition_failed_error")
        self._version(memory, "deleted", API_ACTOR)
        del self.memories[store_id][memory_id]
        return {"id": memory_id, "type": "memory_deleted"}

    @staticmethod
    def shown(obj: dict[str, Any], view: str) -> dict[str, Any]:
        out = dict(obj)
        if view == "basic":
            out["content"] = None
        return out

    def list_memories(self, store_id: str, query: QueryLike) -> dict[str, Any]:
        self.store(store_id)
        view = _view(query, "basic")
        prefix = query.get("path_prefix") or "/"
        if not prefix.endswith("/"):
            raise ApiError(400, "path_prefix: must end with /")
        depth = int(query.get("depth") or 0)
        items: dict[str, dict[str, Any]] = {}
        for memory in sorted(self.memories[store_id].values(), key=lambda m: m["path"]):
            if not memory["path"].startswith(prefix):
                continue
            rest = memory["path"][len(prefix):].split("/")
            if depth and len(rest) > depth:
                marker = prefix + "/".join(rest[:depth]) + "/"
                items.setdefault(marker, {"type": "memory_prefix", "path": marker})
            else:
                items[memory["path"]] = self.shown(memory, view)
        ordered = sorted(items.values(), key=lambda i: i["path"])
        limit = parse_limit(query.get("limit"), 20, 20 if view == "full" else 100)
        start = 0
        if query.get("page"):
            _, after = decode_cursor(str(query.get("page")))
            start = next((i + 1 for i, item in enumerate(ordered) if item["path"] == after), len(ordered))
        chunk = ordered[start:start + limit]
        more = start + limit < len(ordered)
        return {"data": chunk, "next_page": encode_cursor("after", chunk[-1]["path"]) if chunk and more else None}

    # -- versions ----------------------------------------------------------------------------

    def version(self, store_id: str, version_id: str) -> dict[str, Any]:
        self.store(store_id)
        found = next((v for v in self.versions[store_id] if v["id"] == version_id), None)
        if found is None:
            raise not_found("memory_version", version_id)
        return found

    def list_versions(self, store_id: str, query: QueryLike) -> dict[str, Any]:
        self.store(store_id)
        view = _view(query, "basic")
        filters = _time_filters(query)
        wanted = {k: query.get(k) for k in ("memory_id", "operation")}
        actor = {k: query.get(k) for k in ("session_id", "api_key_id", "service_account_id")}
        items = []
        for version in reversed(self.versions[store_id]):  # newest first
            if any(v is not None and version[k] != v for k, v in wanted.items()):
                continue
            by = version.get("created_by") or {}
            if any(v is not None and by.get(k) != v for k, v in actor.items()):
                continue
            if not _passes(version["created_at"], filters):
                continue
            items.append(self.shown(version, view))
        limit = parse_limit(query.get("limit"), 20, 20 if view == "full" else 100)
        return paginate(items, query.get("page"), limit)

    def redact_version(self, store_id: str, version_id: str) -> dict[str, Any]:
        version = self.version(store_id, version_id)
        if version["redacted_at"] is None:
            version.update(content=None, path=None, content_sha256=None, content_size_bytes=None,
                           redacted_at=self.now(), redacted_by=dict(API_ACTOR))
        return version

    # -- sessions ----------------------------------------------------------------------------

    def attach(self, store_id: str) -> dict[str, Any]:
        """The `name`, `description` and `mount_path` a session resource snapshots."""
        store = self.store(store_id)
        if store["archived_at"] is not None:
            raise ApiError(400, f"memory store {store_id!r} is archived")
        return {"name": store["name"], "description": store["description"],
                "mount_path": f"/mnt/memory/{slug(store['name'])}"}


def _tool_enabled(agent: dict[str, Any], name: str) -> bool:
    """The SDK's toolset rule: a tool's own config, else the toolset's `default_config`."""
    for tool in agent.get("tools") or []:
        if tool.get("type") == "agent_toolset_20260401":
            default = bool((tool.get("default_config") or {}).get("enabled", True))
            found = next((c for c in tool.get("configs") or [] if c.get("name") == name), None)
            return bool(found.get("enabled", default)) if found else default
    return False


def _mounts(session: SessionRuntime) -> list[dict[str, Any]]:
    return [r for r in session.resources if r.get("type") == "memory_store"]


def memory_tool(
    session: SessionRuntime, op: str, store: str | None, path: str, content: str | None
) -> tuple[str, dict[str, Any], Callable[[], tuple[str, bool]]]:
    """An agent's `read` or `write` of a memory: the tool name, its input (SDK
    `BetaManagedAgentsAgentToolset20260401{Read,Write}Input`) and a function doing it.

    `store` names an attached store by name, mount slug or id; None means the first attached
    store that has the path (a read) or the first read_write one (a write)."""
    if not _tool_enabled(session.agent, op):
        # Docs managed-agents/memory: a store is reached through the agent toolset's file tools;
        # an agent without them cannot do what the step scripts.
        raise ValueError(f"memory step: the agent has no enabled `{op}` tool (agent_toolset_20260401)")
    mounts = _mounts(session)
    if store is not None:
        mounts = [
            m for m in mounts
            if store in (m.get("name"), m["memory_store_id"], m["mount_path"].rsplit("/", 1)[-1])
        ]
    emulation = session.state.memory
    if op == "read" and store is None:
        found = [m for m in mounts if emulation.stores.get(m["memory_store_id"])
                 and emulation._at(m["memory_store_id"], path) is not None]
        mounts = found or mounts
    elif op == "write" and store is None:
        mounts = [m for m in mounts if m.get("access") != "read_only"] or mounts
    if not mounts:
        raise ValueError("memory step: the session has no such memory store attached")
    mount = mounts[0]
    file_path = mount["mount_path"] + path
    store_id = mount["memory_store_id"]

    def run() -> tuple[str, bool]:
        if store_id not in emulation.stores:
            return "File does not exist.", True
        existing = emulation._at(store_id, path)
        if op == "read":
            return (existing["content"], False) if existing else ("File does not exist.", True)
        if mount.get("access") == "read_only":
            return f"EROFS: read-only file system, open '{file_path}'", True
        actor = {"type": "session_actor", "session_id": session.id}
        try:
            if existing is None:
                emulation.create_memory(store_id, {"path": path, "content": content or ""}, actor)
            else:
                emulation.update_memory(store_id, existing["id"], {"content": content or ""}, actor)
        except ApiError as exc:
            return exc.message, True
        return f"The file {file_path} has been written.", False

    tool_input: dict[str, Any] = {"file_path": file_path}
    if op == "write":
        tool_input["content"] = content or ""
    return op, tool_input, run
