"""Outcome rubrics per environment: what the grader checks an answer against before it counts.

In `support-agent.yml`, under an environment:

    outcomes:
      enabled: true
      verified_after_days: 7
      default: {description: ..., rubric: "..."}
      categories:
        refund: {name: refund, description: ..., rubric_file: rubrics/refund.md, max_iterations: 3}

A rubric is either inline text (`rubric`) or a file in the repository (`rubric_file`, relative to
the config file's directory), read when the config is loaded, so a missing file is a config
error with its file and line (`check_rubric_files`). The limits are the SDK's: a text rubric holds
at most 262,144 characters (`BetaManagedAgentsTextRubricParams.content`), `max_iterations`
defaults to 3 and is at most 20 (`BetaManagedAgentsUserDefineOutcomeEventParams`).

A repository file is sent as a text rubric: the SDK's file rubric needs a Files API upload
(`BetaManagedAgentsFileRubricParams.file_id`), and the echo resolves file rubrics to their text
anyway ("File rubrics are currently resolved to their text content"), so the grader sees the same.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from app.config.yaml_lines import Location, line_for

MAX_RUBRIC_CHARS = 262_144  # SDK BetaManagedAgentsTextRubricParams.content: "Maximum 262144 characters"
MAX_ITERATIONS = 20  # SDK BetaManagedAgentsUserDefineOutcomeEventParams.max_iterations: "max 20"
DEFAULT_ITERATIONS = 3  # ... "Default 3"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Rubric(_Strict):
    """One rubric: what a good answer does, and how the grader judges it."""

    name: str | None = Field(default=None, min_length=1, max_length=60,
                             description="Shown in the thread's timeline; default: the category")
    description: str = Field(min_length=1, max_length=2000, description="What the agent should produce")
    rubric: str | None = Field(default=None, min_length=1, max_length=MAX_RUBRIC_CHARS)
    rubric_file: str | None = Field(default=None, min_length=1, description="A file in the repository")
    max_iterations: int = Field(default=DEFAULT_ITERATIONS, ge=1, le=MAX_ITERATIONS)
    _file_text: str | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _one_source(self) -> Rubric:
        if (self.rubric is None) == (self.rubric_file is None):
            raise ValueError("give the rubric as `rubric` (inline text) or `rubric_file`, not both or neither")
        return self

    @property
    def text(self) -> str:
        """The rubric's content (a file's is read at config load)."""
        if self.rubric is not None:
            return self.rubric
        if self._file_text is None:
            raise RuntimeError(f"rubric file {self.rubric_file} was not loaded (use load_config/parse_config)")
        return self._file_text


class Outcomes(_Strict):
    """An environment's rubrics: one per ticket category, and a default for the rest."""

    enabled: bool = True
    default: Rubric | None = None
    categories: dict[str, Rubric] = Field(default_factory=dict)
    verified_after_days: int = Field(
        default=7, ge=0, le=365,
        description="A satisfied resolution counts as verified once this many days pass without a reopen",
    )

    @model_validator(mode="after")
    def _lower_keys(self) -> Outcomes:
        # update_ticket stores categories lowercased, so keys are matched the same way.
        self.categories = {k.lower(): v for k, v in self.categories.items()}
        return self

    def choose(self, category: str | None) -> tuple[str, Rubric] | None:
        """The rubric for a ticket category, else the default; None when nothing applies."""
        if not self.enabled:
            return None
        key = (category or "").lower()
        if key and key in self.categories:
            return key, self.categories[key]
        if self.default is not None:
            return "default", self.default
        return None

    def rubrics(self) -> list[tuple[str, Rubric]]:
        out = [(k, r) for k, r in sorted(self.categories.items())]
        if self.default is not None:
            out.append(("default", self.default))
        return out


def label(key: str, rubric: Rubric) -> str:
    """How the timeline names a rubric ("the refund rubric")."""
    return rubric.name or key


# The repository: where the shipped config and its `rubrics/` live.
REPOSITORY = Path(__file__).resolve().parents[2]


def _resolve(path: Path, base: Path) -> Path:
    """A relative rubric file is looked up beside the config file, then in the repository (a
    generated copy of the config, like the sandbox's, lives elsewhere but names the same files)."""
    if path.is_absolute():
        return path
    beside = base / path
    if beside.exists():
        return beside
    in_repo = REPOSITORY / path
    return in_repo if in_repo.exists() else beside


def check_rubric_files(
    environments: dict[str, Any], base: Path, lines: dict[Location, int], source: str
) -> list[str]:
    """Read each `rubric_file` (relative to `base`); problems worded as `file:line: field: msg`."""
    problems: list[str] = []
    for env_name, env in environments.items():
        outcomes: Outcomes | None = getattr(env, "outcomes", None)
        if outcomes is None:
            continue
        entries: list[tuple[Location, Rubric]] = [
            (("environments", env_name, "outcomes", "categories", k), r) for k, r in outcomes.categories.items()
        ]
        if outcomes.default is not None:
            entries.append((("environments", env_name, "outcomes", "default"), outcomes.default))
        for loc, rubric in entries:
            if rubric.rubric_file is None:
                continue
            field_loc = (*loc, "rubric_file")
            line = line_for(lines, field_loc)
            where = f"{source}:{line}" if line else source
            path = _resolve(Path(rubric.rubric_file), base)
            try:
                text = path.read_text(encoding="utf-8")
            except FileNotFoundError:
                problems.append(f"{where}: {'.'.join(map(str, field_loc))}: rubric file not found: {path}")
                continue
            except (OSError, UnicodeDecodeError) as exc:
                problems.append(f"{where}: {'.'.join(map(str, field_loc))}: cannot read rubric file {path}: {exc}")
                continue
            if not text.strip():
                problems.append(f"{where}: {'.'.join(map(str, field_loc))}: rubric file is empty: {path}")
            elif len(text) > MAX_RUBRIC_CHARS:
                problems.append(
                    f"{where}: {'.'.join(map(str, field_loc))}: rubric file has {len(text)} characters, "
                    f"more than the {MAX_RUBRIC_CHARS} a rubric may hold"
                )
            else:
                rubric._file_text = text
    return problems


def describe(environments: dict[str, Any]) -> list[str]:
    """What `provision` shows: which rubric applies where (rubrics are sent with each ticket's
    work as `user.define_outcome`, so there is nothing to create in Managed Agents)."""
    lines = ["Outcome rubrics (sent when a ticket's work starts and after a reopen; nothing to provision):"]
    for env_name, env in environments.items():
        outcomes: Outcomes | None = getattr(env, "outcomes", None)
        if outcomes is None or not outcomes.rubrics():
            lines.append(f"  {env_name}: none")
            continue
        state = "on" if outcomes.enabled else "off (enabled: false)"
        held = ", drafts held back until satisfied" if getattr(env, "customer_facing", False) else ""
        days = outcomes.verified_after_days
        lines.append(f"  {env_name}: {state}{held}; verified after {days} days without a reopen")
        for key, rubric in outcomes.rubrics():
            source = rubric.rubric_file or f"inline, {len(rubric.text):,} characters"
            which = "any other category" if key == "default" else f"category {key}"
            lines.append(f"    {which} -> the {label(key, rubric)} rubric ({source}; at most "
                         f"{rubric.max_iterations} check{'s' if rubric.max_iterations != 1 else ''})")
    return lines
