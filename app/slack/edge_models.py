"""The shapes of Slack's requests that reach our listeners, checked before Bolt sees them.

Only the fields Bolt and our listeners read are typed; everything else passes through
(`extra="allow"`). A signed payload that does not fit is refused with 400 at the edge, so no
listener ever meets `user: null` or `actions: {}`. Shapes from Slack's payload references
(Events API envelope, block_actions, view_submission/view_closed, shortcuts, slash commands).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

Id = str


class Loose(BaseModel):
    model_config = ConfigDict(extra="allow")


class TeamRef(Loose):
    id: Id | None = None
    enterprise_id: str | None = None


class UserRef(Loose):
    id: Id = Field(min_length=1)
    team_id: str | None = None


class ChannelRef(Loose):
    id: Id | None = None


class Container(Loose):
    channel_id: str | None = None
    message_ts: str | None = None
    thread_ts: str | None = None
    view_id: str | None = None


class MessageRef(Loose):
    ts: str | None = None
    thread_ts: str | None = None
    text: str | None = None
    blocks: list[dict[str, Any]] | None = None


class Authorization(Loose):
    team_id: str | None = None
    enterprise_id: str | None = None
    user_id: str | None = None
    is_enterprise_install: bool | None = None


class Envelope(Loose):
    """Fields Bolt's context builder reads from any payload."""

    type: str | None = None
    team: TeamRef | str | None = None
    team_id: str | None = None
    enterprise: TeamRef | str | None = None
    enterprise_id: str | None = None
    api_app_id: str | None = None
    is_enterprise_install: bool | str | None = None
    authorizations: list[Authorization] | None = None
    token: str | None = None


class ReactionItem(Loose):
    type: str | None = None
    channel: str | None = None
    ts: str | None = None


class Event(Loose):
    type: str = Field(min_length=1)
    subtype: str | None = None
    channel: str | None = None
    user: str | None = None
    bot_id: str | None = None
    text: str | None = None
    ts: str | None = None
    thread_ts: str | None = None
    event_ts: str | None = None
    team: str | None = None
    user_team: str | None = None
    item: ReactionItem | None = None
    reaction: str | None = None
    tab: str | None = None
    hidden: bool | None = None


class EventCallback(Envelope):
    event: Event
    event_id: str | None = None
    event_time: int | None = None
    is_ext_shared_channel: bool | None = None


class UrlVerification(Envelope):
    challenge: str


class Action(Loose):
    action_id: str = Field(min_length=1)
    block_id: str | None = None
    value: str | None = None
    type: str | None = None
    selected_option: dict[str, Any] | None = None
    selected_channel: str | None = None
    selected_conversation: str | None = None


class ViewState(Loose):
    values: dict[str, dict[str, dict[str, Any]]] = Field(default_factory=dict)


class View(Loose):
    id: str | None = None
    callback_id: str
    type: str  # Bolt reads view.type of every view_submission
    private_metadata: str | None = None
    hash: str | None = None
    state: ViewState | None = None
    team_id: str | None = None
    app_installed_team_id: str | None = None


class Interactive(Envelope):
    user: UserRef
    trigger_id: str | None = None
    response_url: str | None = None
    channel: ChannelRef | None = None
    container: Container | None = None
    message: MessageRef | None = None


class BlockActions(Interactive):
    actions: list[Action] = Field(min_length=1)
    view: View | None = None


class ViewPayload(Interactive):
    view: View


class Shortcut(Interactive):
    callback_id: str = Field(min_length=1)
    trigger_id: str = Field(min_length=1)


class SlashCommand(Loose):
    command: str = Field(min_length=1)
    text: str = ""
    team_id: str = Field(min_length=1)
    channel_id: str = Field(min_length=1)
    user_id: str = Field(min_length=1)
    trigger_id: str = Field(min_length=1)
    response_url: str = Field(min_length=1)
    enterprise_id: str | None = None


INTERACTIVE_MODELS: dict[str, type[Envelope]] = {
    "block_actions": BlockActions,
    "view_submission": ViewPayload,
    "view_closed": ViewPayload,
    "shortcut": Shortcut,
    "message_action": Shortcut,
}
