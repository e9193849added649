"""Issue 16, finding 6: the docs index reads only regular files inside its folder, and a
public-only search's scores come from public documents alone."""

from __future__ import annotations

import os
from pathlib import Path

from mcp_servers.knowledge_base.index import KnowledgeBase

PUBLIC = "---\nvisibility: public\ntitle: Refunds\n---\nRefunds take five days. Refund policy explained.\n"
INTERNAL = "---\nvisibility: internal\n---\n" + "refund escalation runbook refund refund " * 20


def test_symlinks_out_of_the_folder_are_not_served(tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    (docs / "sub").mkdir(parents=True)
    (docs / "ok.md").write_text(PUBLIC)
    secret = tmp_path / "outside.md"
    secret.write_text("---\nvisibility: public\n---\nsecret-outside-text\n")
    outside_dir = tmp_path / "elsewhere"
    outside_dir.mkdir()
    (outside_dir / "x.md").write_text("---\nvisibility: public\n---\nsecret-dir-text\n")
    os.symlink(secret, docs / "leak.md")
    os.symlink(outside_dir, docs / "linked")
    os.symlink(docs / "ok.md", docs / "sub" / "inside-link.md")  # even a link inside: not a regular file
    kb = KnowledgeBase(docs)
    assert kb.count() == 1
    assert kb.get("leak") is None and kb.get("linked/x") is None
    assert kb.search("secret outside text") == [] and kb.search("secret dir text") == []


def test_public_scores_do_not_depend_on_internal_docs(tmp_path: Path) -> None:
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "refunds.md").write_text(PUBLIC)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    (mixed / "refunds.md").write_text(PUBLIC)
    for i in range(5):
        (mixed / f"internal-{i}.md").write_text(INTERNAL)
    public_alone = KnowledgeBase(alone).search("refund")
    public_mixed = KnowledgeBase(mixed).search("refund")
    assert [h.id for h in public_mixed] == ["refunds"]
    assert [h.score for h in public_mixed] == [h.score for h in public_alone]
    staff = KnowledgeBase(mixed).search("refund", include_internal=True, limit=10)
    assert len(staff) == 6
