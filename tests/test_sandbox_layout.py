"""The emulators stand apart from the service: three subpackages with a small public face each,
and nothing the service runs imports them (only the tools that drive the app from outside do)."""
from __future__ import annotations

import ast
from pathlib import Path

from app.sandbox.app_runner import ROOT

APP = ROOT / "app"
# Tools that run the app against the emulators from outside: a benchmark, the chaos harness, the
# fuzzer, and the emulators themselves. Everything else is the service.
DRIVERS = {"sandbox", "bench", "chaos", "fuzz"}


def _imports(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def test_the_service_never_imports_the_emulators() -> None:
    offenders = [
        f"{path.relative_to(ROOT)} imports {module}"
        for path in APP.rglob("*.py")
        if path.relative_to(APP).parts[0] not in DRIVERS
        for module in _imports(path)
        if module.startswith("app.sandbox")
    ]
    assert offenders == []


def test_each_emulator_is_its_own_subpackage() -> None:
    sandbox = APP / "sandbox"
    loose = sorted(p.name for p in sandbox.glob("*.py") if p.name != "__init__.py")
    # Only the harness that runs the app against the emulators stays at the top.
    assert loose == ["app_runner.py", "server.py", "stack.py"]
    for sub in ("slack", "agents", "page"):
        assert (sandbox / sub / "__init__.py").is_file()


def test_the_public_faces_name_what_callers_use() -> None:
    import app.sandbox.agents as agents
    import app.sandbox.slack as slack

    assert {"SlackEmulator", "EventSender", "RateLimitConfig", "sign", "visible_text"} <= set(slack.__all__)
    assert {"AgentsEmulator", "Scenario", "sdk_event_types"} <= set(agents.__all__)
    for face in (slack, agents):
        for name in face.__all__:
            assert getattr(face, name) is not None


def test_emulator_modules_import_each_other_only_within_their_own_subpackage() -> None:
    # Slack's emulator knows nothing of Managed Agents' and the other way round; the page and the
    # harness may use both.
    for sub, other in (("slack", "agents"), ("agents", "slack")):
        for path in (APP / "sandbox" / sub).rglob("*.py"):
            bad = [m for m in _imports(path) if m.startswith((f"app.sandbox.{other}", "app.sandbox.page"))]
            assert bad == [], f"{path.relative_to(ROOT)} imports {bad}"
