"""What a custom tool is: a name, a typed input schema (a pydantic model) and an async handler.

Custom tools run in our worker, not in the cloud: the agent's `agent.custom_tool_use` waits
for our `user.custom_tool_result`. They are for actions that need Slack context or our own
records (escalating a ticket, updating its fields). A handler gets a `ToolContext` and the
validated input, and returns a `ToolResult`; raise `ToolFailure` for an error the model should
read (`is_error`), with a message that says what to do instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, ValidationError

from app.runtime import Services
from app.tickets.model import Ticket


class ToolInput(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


@dataclass
class ToolContext:
    services: Services
    ticket: Ticket
    tool_use_id: str


@dataclass
class ToolResult:
    text: str
    is_error: bool = False


class ToolFailure(Exception):
    """A failure the model should hear about; the message is shown to it as is."""


class CustomTool:
    name: ClassVar[str]
    description: ClassVar[str]
    Input: ClassVar[type[ToolInput]]

    async def run(self, ctx: ToolContext, args: Any) -> ToolResult:
        raise NotImplementedError

    def definition(self) -> dict[str, Any]:
        """The agent's `custom` tool definition."""
        schema = self.Input.model_json_schema()
        return {
            "type": "custom",
            "name": self.name,
            "description": self.description,
            "input_schema": {
                "type": "object",
                "properties": schema.get("properties") or {},
                "required": schema.get("required") or [],
            },
        }

    async def call(self, ctx: ToolContext, raw_input: Any) -> ToolResult:
        """Validate, run, and turn every failure into an `is_error` result for the model."""
        try:
            args = self.Input.model_validate(raw_input if isinstance(raw_input, dict) else {})
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc']) or 'input'}: {err['msg']}" for err in exc.errors()
            )
            return ToolResult(f"Invalid input for {self.name}: {problems}", is_error=True)
        try:
            return await self.run(ctx, args)
        except ToolFailure as exc:
            return ToolResult(str(exc), is_error=True)
