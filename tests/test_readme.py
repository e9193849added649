"""The README is true on a fresh clone: every file it names is in the clone, and every command it
names runs there (at least with `--help`). The clone's set-up is skipped by linking this
checkout's `.venv`, so the test needs no network."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")
    target = tmp_path_factory.mktemp("clone") / "support-agent"
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(target)], check=True, timeout=120)
    (target / ".venv").symlink_to(ROOT / ".venv")
    yield target


def readme(clone: Path) -> str:
    return (clone / "README.md").read_text(encoding="utf-8")


def run(clone: Path, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "ANTHROPIC_", "REDIS_URL"))}
    # The clone's own code, not this checkout's (the linked venv installs this one editable).
    env["PYTHONPATH"] = str(clone)
    return subprocess.run(list(args), cwd=clone, env=env, capture_output=True, text=True, timeout=timeout)


def test_the_readme_names_only_what_the_clone_holds(clone: Path) -> None:
    text = readme(clone)
    assert "../" not in text, "the README points outside the repository"
    links = re.findall(r"\]\(([^)#]+)\)", text)
    paths = re.findall(r"`((?:app|docs|scripts|tests|tools|mcp_servers)/[\w./-]*|\.env\.example|manifest\.yml|"
                       r"support-agent\.yml|Procfile)`", text)
    for name in [*links, *paths]:
        if name.startswith("http"):
            continue
        assert (clone / name.rstrip("/")).exists(), f"README names {name}, which a clone does not have"


def readme_commands(text: str) -> list[list[str]]:
    """`support-agent <sub> [<sub2>]` as the README's command table lists them."""
    found: dict[tuple[str, ...], None] = {}
    for match in re.finditer(r"^support-agent ((?:[a-z][a-z-]*)(?: (?:serve|quote|stream|run))?)", text, re.M):
        found[tuple(match.group(1).split())] = None
    return [list(words) for words in found]


def test_every_command_the_readme_names_runs_in_the_clone(clone: Path) -> None:
    commands = readme_commands(readme(clone))
    assert ["sandbox"] in commands and ["check-config"] in commands and len(commands) >= 10
    exe = str(clone / ".venv" / "bin" / "support-agent")
    # Side by side: each is a whole process start (imports included), the slow part here.
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda words: run(clone, exe, *words, "--help"), commands))
    for words, result in zip(commands, results, strict=True):
        assert result.returncode == 0, f"support-agent {' '.join(words)} --help: {result.stderr[-500:]}"
        assert "usage:" in result.stdout
    checked = run(clone, exe, "check-config")
    assert checked.returncode == 0 and "ok" in checked.stdout, checked.stderr


def test_the_quick_start_is_two_scripts_the_clone_holds(clone: Path) -> None:
    quick = readme(clone).split("## Quick start", 1)[1].split("```sh", 1)[1].split("```", 1)[0]
    lines = [line.split("#")[0].strip() for line in quick.strip().splitlines()]
    assert lines == ["scripts/run", "scripts/test"]
    for script in lines:
        assert os.access(clone / script, os.X_OK)
