"""What a documented Slack error from a renderer call means, and so what the renderer does.

The error names are the catalogs of Slack's method reference for the methods the renderer calls
(app/sandbox/slack/contracts/slack_methods.json, from slack-ruby/slack-api-ref: chat.startStream,
chat.appendStream, chat.stopStream, chat.update, chat.postMessage, assistant.threads.setStatus,
conversations.replies). Every one of them falls in one class here, and a test injects each:

- REFUSED: no streaming here (startStream): the turn posts a message and edits it instead.
- GONE: the stream ended without us (expired, stopped by the user): the same message is
  finished with `chat.update`.
- NOT_EDITABLE: this message can no longer be changed by us: it is left as it is and what
  follows goes in a new message.
- CONFLICT: `chat.update` on a message still streaming: the stream is stopped first.
- CONTENT: Slack refused the payload's form (blocks, chunks, metadata, length): the turn goes
  on in plain messages (text only, no stream).
- FATAL: nothing more can be shown in this thread (channel gone or locked, auth revoked): the
  ticket fails with the cause recorded, and its agent is interrupted.
- TRANSIENT: Slack's own trouble: retried with backoff.
- Anything else (arguments we never send, files, drafts): retried a few times; then the output
  is dropped, and the thread and the ticket's trace say so.
"""

from __future__ import annotations

REFUSED_TEAM = frozenset({
    "not_allowed", "feature_not_enabled", "unknown_method", "not_allowed_token_type",
    "missing_scope", "no_permission", "restricted_action", "method_deprecated", "app_access_restricted",
    "team_access_not_granted", "access_denied",
})
REFUSED_HERE = frozenset({
    "channel_type_not_supported", "method_not_supported_for_channel_type", "user_not_found",
    "missing_recipient_user_id", "missing_recipient_team_id", "invalid_arguments", "not_implemented",
    "user_not_in_channel", "restricted_action_non_threadable_channel", "restricted_action_thread_only_channel",
    "cannot_reply_to_message", "messages_tab_disabled",
})
GONE = frozenset({"message_not_in_streaming_state", "stopped_by_user", "not_subscribed_to_message_stream_stopped"})
NOT_EDITABLE = frozenset({
    "cant_update_message", "message_not_found", "message_not_owned_by_app", "edit_window_closed",
})
CONFLICT = frozenset({"streaming_state_conflict"})
CONTENT = frozenset({
    "invalid_blocks", "invalid_blocks_format", "msg_too_long", "msg_blocks_too_long", "msg_blocks_too_many",
    "invalid_chunks", "markdown_text_conflict", "no_text", "block_mismatch", "invalid_metadata_format",
    "invalid_metadata_schema", "metadata_too_large", "metadata_must_be_sent_from_app", "too_many_attachments",
    "invalid_attachments", "attachment_payload_limit_exceeded", "too_many_contact_cards",
    "no_dual_broadcast_content_update",
})
FATAL = frozenset({
    "channel_not_found", "not_in_channel", "is_archived", "invalid_auth", "not_authed",
    "account_inactive", "token_revoked", "token_expired", "ekm_access_denied", "team_not_found",
    "thread_not_found", "invalid_thread_ts", "is_inactive", "posting_to_channel_denied",
    "restricted_action_read_only_channel", "restricted_action_thread_locked", "message_limit_exceeded",
    "duplicate_channel_not_found",
})
TRANSIENT = frozenset({
    "internal_error", "fatal_error", "service_unavailable", "request_timeout", "messaging_processing_failed",
    "update_failed", "external_channel_migrating", "ratelimited", "rate_limited",
})


def kind(method: str, error: str | None) -> str:
    """refused | gone | not_editable | conflict | content | fatal | transient | other."""
    if error is None:
        return "transient"  # not reaching Slack at all
    if method == "chat.startStream" and (error in REFUSED_TEAM or error in REFUSED_HERE):
        return "refused"
    if error in FATAL or error in REFUSED_TEAM or error in REFUSED_HERE - {"invalid_arguments"}:
        return "fatal"
    for name, errors in (("gone", GONE), ("not_editable", NOT_EDITABLE), ("conflict", CONFLICT),
                         ("content", CONTENT), ("transient", TRANSIENT)):
        if error in errors:
            return name
    return "other"
