"""Regenerate app/sandbox/slack/contracts/slack_methods.json from Slack's published method reference.

The reference is kept as JSON by slack-ruby/slack-api-ref (docs.slack.dev/methods/<method>.json).
Run with the path of a clone (or bare git dir) of that repository:

    python scripts/slack_contract.py /path/to/slack-api-ref.git

Only the methods the emulator serves (the ones the app calls) are kept. Nothing is invented:
a limit is recorded only where the argument's documented description states one.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "app" / "sandbox" / "slack" / "contracts" / "slack_methods.json"
METHODS = [
    "auth.test", "chat.postMessage", "chat.update", "chat.delete", "chat.postEphemeral",
    "chat.getPermalink", "chat.startStream", "chat.appendStream", "chat.stopStream",
    "assistant.threads.setStatus", "assistant.threads.setTitle", "assistant.threads.setSuggestedPrompts",
    "reactions.add", "reactions.remove", "conversations.replies", "conversations.history",
    "conversations.info", "conversations.join", "users.info", "usergroups.users.list",
    "views.open", "views.update", "views.publish",
]
# "Limit this field to 12,000 characters", "up to 50 blocks", "maximum of 1000", ...
_LIMIT = re.compile(
    r"(?:limit(?:ed)?(?: this field)? to|up to|maximum(?: of)?|max(?:imum)? length(?: of)?)"
    r"\s+([\d,]+)\s*(characters|chars|blocks|items|elements|messages)?",
    re.I,
)


def _git(repo: str, *args: str) -> str:
    git_dir = repo if repo.endswith(".git") or Path(repo, "HEAD").exists() else str(Path(repo, ".git"))
    return subprocess.run(["git", f"--git-dir={git_dir}", *args], check=True, capture_output=True, text=True).stdout


def build(repo: str) -> dict[str, object]:
    commit = _git(repo, "rev-parse", "HEAD").strip()
    date = _git(repo, "log", "-1", "--format=%cI").strip()
    methods: dict[str, object] = {}
    for name in METHODS:
        doc = json.loads(_git(repo, "show", f"HEAD:docs.slack.dev/methods/{name}.json"))
        args = doc.get("args", {})
        props = args.get("properties", {})
        arguments: dict[str, object] = {}
        for arg, spec in props.items():
            if arg == "token":
                continue
            entry: dict[str, object] = {"type": spec.get("type") or spec.get("schema")}
            desc = str(spec.get("desc") or "")
            if desc:
                entry["desc"] = desc
            if "enum" in spec:
                entry["enum"] = spec["enum"]
            match = _LIMIT.search(desc)
            if match:
                entry["max"] = int(match.group(1).replace(",", ""))
                kind = spec.get("type")
                unit = match.group(2) or ("characters" if kind == "string" else "items" if kind == "array" else "value")
                entry["max_of"] = unit.lower()
            arguments[arg] = entry
        methods[name] = {
            "rate_limits": doc.get("rate_limits"),
            "required": [a for a in args.get("required", []) if a != "token"],
            "arguments": arguments,
            "errors": {k: str(v.get("desc", "")) for k, v in (doc.get("errors") or {}).items()},
        }
    return {
        "source": {
            "what": "Slack's published Web API method reference (docs.slack.dev/methods), as JSON",
            "repository": "https://github.com/slack-ruby/slack-api-ref",
            "commit": commit,
            "commit_date": date,
            "path": "docs.slack.dev/methods/<method>.json",
            "generated_by": "scripts/slack_contract.py",
        },
        "methods": methods,
    }


if __name__ == "__main__":
    OUT.write_text(json.dumps(build(sys.argv[1]), indent=1, sort_keys=False) + "\n")
    print(f"wrote {OUT}")
