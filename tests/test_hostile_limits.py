"""Issue 16, finding 4: bodies are bounded (413) and slow bodies time out (408), on a real
uvicorn socket, for /slack/*, /webhooks/anthropic and /mcp."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from app.http_limits import BodyLimits
from app.sandbox.app_runner import free_socket

PATHS = ("/slack/events", "/slack/interactive", "/slack/commands", "/webhooks/anthropic", "/mcp/knowledge_base")


async def echo(request: Request) -> JSONResponse:
    return JSONResponse({"bytes": len(await request.body())})


@pytest.fixture
async def server() -> AsyncIterator[int]:
    inner = Starlette(routes=[Route(p, echo, methods=["POST"]) for p in PATHS])
    sock = free_socket()
    port = int(sock.getsockname()[1])
    srv = uvicorn.Server(uvicorn.Config(BodyLimits(inner, max_bytes=1_000_000, read_timeout=0.5),
                                        log_config=None, lifespan="off"))
    task = asyncio.create_task(srv.serve(sockets=[sock]))
    while not srv.started:  # noqa: ASYNC110 (uvicorn exposes a flag, not an event)
        await asyncio.sleep(0.01)
    yield port
    srv.should_exit = True
    await asyncio.wait_for(task, 10)


async def raw(port: int, head: str, chunks: list[bytes], pause: float = 0.0, wait: float = 5.0) -> tuple[int, float]:
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(head.encode())
        for chunk in chunks:
            writer.write(chunk)
            with contextlib.suppress(ConnectionError):
                await writer.drain()
            if pause:
                await asyncio.sleep(pause)
        line = await asyncio.wait_for(reader.readline(), wait)
        return int(line.split()[1]), time.monotonic() - started
    finally:
        writer.close()
        with contextlib.suppress(Exception):
            await writer.wait_closed()


@pytest.mark.parametrize("path", PATHS)
async def test_announced_gigabyte_is_refused_at_once(server: int, path: str) -> None:
    status, elapsed = await raw(server, f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 1000000000\r\n\r\n",
                                [b"x" * 100])
    assert status == 413 and elapsed < 2


@pytest.mark.parametrize("path", PATHS)
async def test_chunked_body_over_the_cap_is_refused(server: int, path: str) -> None:
    chunk = b"x" * 65536
    frames = [f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" for _ in range(20)] + [b"0\r\n\r\n"]
    status, _ = await raw(server, f"POST {path} HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\n\r\n", frames)
    assert status == 413


@pytest.mark.parametrize("path", PATHS)
async def test_trickled_body_times_out(server: int, path: str) -> None:
    # Twenty bytes announced, one byte every 0.2 s: the 0.5 s read deadline answers 408.
    status, elapsed = await raw(server, f"POST {path} HTTP/1.1\r\nhost: x\r\ncontent-length: 20\r\n\r\n",
                                [b"x"] * 4, pause=0.2)
    assert status == 408 and elapsed < 3


async def test_small_bodies_pass_whole(server: int) -> None:
    status, _ = await raw(server, "POST /slack/events HTTP/1.1\r\nhost: x\r\ncontent-length: 5\r\n\r\n", [b"hello"])
    assert status == 200


async def test_twenty_parallel_trickling_connections_all_end(server: int) -> None:
    heads = ["POST /slack/events HTTP/1.1\r\nhost: x\r\ncontent-length: 1000000\r\n\r\n"] * 20
    results = await asyncio.gather(*(raw(server, h, [b"x"] * 3, pause=0.3) for h in heads))
    assert all(status == 408 for status, _ in results)
