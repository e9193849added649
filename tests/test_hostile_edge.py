"""Issue 16, findings 1 and 3: signatures on the raw body in every mode, malformed input a 4xx
with one log line, no traceback, no body in the logs, nothing written."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from urllib.parse import urlencode

import httpx2
import pytest
import redis.asyncio as aioredis
from pydantic import SecretStr

from app.config.model import AppConfig
from app.config.settings import Settings, SettingsError, load_settings
from app.runtime import Services, build_services
from app.sandbox.slack import sign
from app.slack.bolt_app import build_bolt_app
from app.web import build_web_app

SECRET = "edge-test-signing-secret"
CANARY = "edge-canary-9d1"


def settings(redis_url: str, **values: object) -> Settings:
    base: dict[str, object] = {
        "slack_bot_token": SecretStr("xoxb-edge-test"),
        "slack_api_url": "http://127.0.0.1:9/api/",  # never reached: refused requests call nobody
        "anthropic_api_key": SecretStr("sk-ant-edge"),
        "redis_url": SecretStr(redis_url),
        **values,
    }
    return Settings(_env_file=None, **base)  # type: ignore[call-arg]


@pytest.fixture
async def web(fresh_redis_url: str, app_config: AppConfig) -> AsyncIterator[tuple[httpx2.AsyncClient, Services]]:
    services = build_services(settings(fresh_redis_url, slack_signing_secret=SecretStr(SECRET)), app_config)
    app = build_web_app(services, build_bolt_app(services))
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
        yield client, services
    await services.aclose()


def signed(body: bytes, ts: str | None = None) -> dict[str, str]:
    ts = ts or str(int(time.time()))
    return {"x-slack-request-timestamp": ts, "x-slack-signature": sign(SECRET, body, ts)}


def mention(text: str = "help me") -> bytes:
    return json.dumps({
        "type": "event_callback", "team_id": "T0001", "event_id": "Ev1", "api_app_id": "A1",
        "event": {"type": "app_mention", "channel": "C0001", "user": "U0001", "text": f"<@UBOT> {text}",
                  "ts": "1700000000.000100"},
    }).encode()


async def test_socket_mode_without_a_signing_secret_serves_no_slack_route(
    fresh_redis_url: str, app_config: AppConfig, redis: aioredis.Redis
) -> None:
    services = build_services(settings(fresh_redis_url, slack_app_token=SecretStr("xapp-1-edge")), app_config)
    app = build_web_app(services, build_bolt_app(services))
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://127.0.0.1") as client:
        for path in ("/slack/events", "/slack/interactive", "/slack/commands"):
            response = await client.post(path, content=mention(), headers={"content-type": "application/json"})
            assert response.status_code == 404, path  # unsigned mention: not even a listener
        resolve = urlencode({"payload": json.dumps({
            "type": "block_actions", "user": {"id": "U0STAFF"}, "team": {"id": "T0001"},
            "actions": [{"action_id": "ticket_resolve", "value": "T0001-1"}]})}).encode()
        assert (await client.post("/slack/events", content=resolve)).status_code == 404
    assert await redis.dbsize() == 0
    await services.aclose()


def test_settings_refuse_a_blank_signing_secret() -> None:
    with pytest.raises(SettingsError, match="SLACK_SIGNING_SECRET is set but empty"):
        load_settings(_env_file=None, slack_signing_secret=" ")
    with pytest.raises(SettingsError, match="ANTHROPIC_WEBHOOK_SIGNING_KEY"):
        load_settings(_env_file=None, anthropic_webhook_signing_key="")


async def test_unsigned_and_badly_signed_requests_get_401(
    web: tuple[httpx2.AsyncClient, Services], redis: aioredis.Redis, caplog: pytest.LogCaptureFixture
) -> None:
    client, _ = web
    body = mention(CANARY)
    now = str(int(time.time()))
    cases = [
        {},
        {"x-slack-request-timestamp": now, "x-slack-signature": "v0=" + "0" * 64},
        {"x-slack-request-timestamp": "12abc", "x-slack-signature": sign(SECRET, body, now)},
        {"x-slack-request-timestamp": "1_700_000_000", "x-slack-signature": sign(SECRET, body, now)},
        signed(body, str(int(time.time()) - 600)),  # outside the five-minute window
    ]
    caplog.set_level(logging.DEBUG)
    for headers in cases:
        response = await client.post("/slack/events", content=body, headers={"content-type": "application/json",
                                                                             **headers})
        assert response.status_code == 401, headers
    assert await redis.dbsize() == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    assert CANARY not in caplog.text  # Bolt used to log the whole body of a badly signed request
    assert len([r for r in caplog.records if r.getMessage() == "slack request refused"]) == len(cases)


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"type": ', "application/json"),
        (b"[1,2]", "application/json"),
        (b"payload=null", "application/x-www-form-urlencoded"),
        (b"payload=%7B", "application/x-www-form-urlencoded"),
        (b'{"type":"event_callback","event":' + b'{"a":' * 5000 + b"1" + b"}" * 5000 + b"}", "application/json"),
        (b'{"type":"event_callback","event":' + b'{"a":' * 100 + b"1" + b"}" * 100 + b"}", "application/json"),
        (b"\xff\xfe not utf-8", "text/plain"),
        (urlencode({"payload": json.dumps({"type": "block_actions", "user": None, "actions": {}})}).encode(),
         "application/x-www-form-urlencoded"),
        (urlencode({"payload": json.dumps({"type": "block_actions", "user": {"id": "U1"}, "actions": {}})}).encode(),
         "application/x-www-form-urlencoded"),
        (urlencode({"payload": json.dumps({"type": "view_submission", "user": {"id": "U1"},
                                           "view": {"callback_id": "x"}})}).encode(),
         "application/x-www-form-urlencoded"),
        (json.dumps({"type": "event_callback", "event": {"type": 5}}).encode(), "application/json"),
        (json.dumps({"type": "event_callback", "team": 7, "event": {"type": "message"}}).encode(), "application/json"),
        (b"command=%2Fsupport&text=hi", "application/x-www-form-urlencoded"),  # no user, channel, trigger
        (json.dumps({"type": "no_such_type"}).encode(), "application/json"),
    ],
)
async def test_signed_but_malformed_requests_get_400_and_one_log_line(
    web: tuple[httpx2.AsyncClient, Services], redis: aioredis.Redis, caplog: pytest.LogCaptureFixture,
    body: bytes, content_type: str,
) -> None:
    client, _ = web
    caplog.set_level(logging.DEBUG)
    response = await client.post("/slack/events", content=body, headers={"content-type": content_type,
                                                                         **signed(body)})
    assert response.status_code == 400
    assert await redis.dbsize() == 0
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info]
    refused = [r for r in caplog.records if r.getMessage() == "slack request refused"]
    assert len(refused) == 1 and body[:40].decode("latin-1") not in caplog.text


async def test_signed_requests_still_work_and_unhandled_events_get_200(
    web: tuple[httpx2.AsyncClient, Services],
) -> None:
    client, _ = web
    challenge = json.dumps({"type": "url_verification", "challenge": "abc", "token": "t"}).encode()
    response = await client.post("/slack/events", content=challenge,
                                 headers={"content-type": "application/json", **signed(challenge)})
    assert response.status_code == 200 and response.json()["challenge"] == "abc"
    other = json.dumps({"type": "event_callback", "team_id": "T0001", "event": {"type": "user_change"}}).encode()
    response = await client.post("/slack/events", content=other,
                                 headers={"content-type": "application/json", **signed(other)})
    assert response.status_code == 200


async def test_bolt_never_logs_bodies_of_refused_requests(fresh_redis_url: str, app_config: AppConfig) -> None:
    services = build_services(settings(fresh_redis_url, slack_signing_secret=SecretStr(SECRET)), app_config)
    build_bolt_app(services)
    assert logging.getLogger("slack_bolt.AsyncRequestVerification").getEffectiveLevel() >= logging.ERROR
    await services.aclose()
