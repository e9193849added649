"""HTTP routes of the emulator's memory stores: the SDK's paths (`resources/beta/memory_stores/
{memory_stores,memories,memory_versions}.py`) over `app/sandbox/agents/memory.py`."""

from __future__ import annotations

import copy
from typing import Any

from app.sandbox.agents.memory import _view


def memory_routes(state: Any, api: Any, json_body: Any) -> list[Any]:
    """Starlette routes for `/v1/memory_stores` (the SDK's paths)."""
    from starlette.routing import Route

    # `state.memory` is looked up per request: `EmulatorState.reset` replaces it.

    def p(request: Any, name: str) -> str:
        return str(request.path_params[name])

    async def stores(request: Any) -> Any:
        if request.method == "POST":
            return state.memory.create_store(await json_body(request))
        return state.memory.list_stores(request.query_params)

    async def store(request: Any) -> Any:
        store_id = p(request, "store_id")
        if request.method == "POST":
            return state.memory.update_store(store_id, await json_body(request))
        if request.method == "DELETE":
            return state.memory.delete_store(store_id)
        return dict(state.memory.store(store_id))

    async def archive(request: Any) -> Any:
        return state.memory.archive_store(p(request, "store_id"))

    async def memories(request: Any) -> Any:
        store_id = p(request, "store_id")
        if request.method == "POST":
            made = state.memory.create_memory(store_id, await json_body(request))
            return state.memory.shown(made, _view(request.query_params, "basic"))
        return state.memory.list_memories(store_id, request.query_params)

    async def memory(request: Any) -> Any:
        store_id, memory_id = p(request, "store_id"), p(request, "memory_id")
        if request.method == "POST":
            changed = state.memory.update_memory(store_id, memory_id, await json_body(request))
            return state.memory.shown(changed, _view(request.query_params, "basic"))
        if request.method == "DELETE":
            return state.memory.delete_memory(store_id, memory_id, request.query_params)
        return state.memory.shown(state.memory._memory(store_id, memory_id), _view(request.query_params, "full"))

    async def versions(request: Any) -> Any:
        return state.memory.list_versions(p(request, "store_id"), request.query_params)

    async def version(request: Any) -> Any:
        found = state.memory.version(p(request, "store_id"), p(request, "version_id"))
        return state.memory.shown(copy.deepcopy(found), _view(request.query_params, "full"))

    async def redact(request: Any) -> Any:
        return dict(state.memory.redact_version(p(request, "store_id"), p(request, "version_id")))

    base = "/v1/memory_stores"
    return [
        Route(base, api(stores), methods=["GET", "POST"]),
        Route(base + "/{store_id}", api(store), methods=["GET", "POST", "DELETE"]),
        Route(base + "/{store_id}/archive", api(archive), methods=["POST"]),
        Route(base + "/{store_id}/memories", api(memories), methods=["GET", "POST"]),
        Route(base + "/{store_id}/memories/{memory_id}", api(memory), methods=["GET", "POST", "DELETE"]),
        Route(base + "/{store_id}/memory_versions", api(versions), methods=["GET"]),
        Route(base + "/{store_id}/memory_versions/{version_id}", api(version), methods=["GET"]),
        Route(base + "/{store_id}/memory_versions/{version_id}/redact", api(redact), methods=["POST"]),
    ]
