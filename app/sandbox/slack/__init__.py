"""The Slack emulator: a real HTTP server the real `slack_sdk`/`slack_bolt` clients talk to.

Its rules come from Slack's published method reference (`contracts/slack_methods.json`, see
`contract.py`); `api.SlackEmulator` is the entry point, `events.EventSender` delivers signed
events and interactions to the app, `view` says what a person reading a message sees.
"""
from app.sandbox.slack.api import SlackEmulator
from app.sandbox.slack.contract import documented_errors
from app.sandbox.slack.events import EventSender, sign
from app.sandbox.slack.ratelimit import MethodLimit, RateLimitConfig
from app.sandbox.slack.view import visible_tasks, visible_text

__all__ = [
    "EventSender", "MethodLimit", "RateLimitConfig", "SlackEmulator", "documented_errors", "sign",
    "visible_tasks", "visible_text",
]
