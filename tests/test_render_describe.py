"""Task outputs in plain words: JSON tool results are summarised, not cut at their first line."""

from __future__ import annotations

import json
from types import SimpleNamespace
from typing import Any

from app.render.describe import result_output


def result(*texts: str, is_error: bool = False) -> Any:
    return SimpleNamespace(content=[SimpleNamespace(type="text", text=t) for t in texts], is_error=is_error)


def test_one_json_object_per_block_counts_the_results_and_names_them() -> None:
    hits = [{"id": "faq/refunds", "title": "Refunds and cancellations", "score": 2.1},
            {"id": "faq/invoices", "title": "Invoices, receipts and payment methods", "score": 1.0}]
    expected = "2 results: Refunds and cancellations; Invoices, receipts and payment methods"
    assert result_output(result(*(json.dumps(h, indent=2) for h in hits))) == expected
    assert result_output(result("\n".join(json.dumps(h, indent=2) for h in hits))) == expected


def test_a_json_list_an_empty_result_and_a_single_object() -> None:
    assert result_output(result('[{"name": "a"}, {"name": "b"}, {"x": 1}]')) == "3 results: a; b"
    assert result_output(result("[]")) == "no results"
    assert result_output(result('{\n  "status": "ok",\n  "rows": 3\n}')) == '{"status": "ok", "rows": 3}'


def test_plain_text_keeps_its_first_line() -> None:
    assert result_output(result("\nRefunds take 5 days.\nMore text")) == "Refunds take 5 days."
    assert result_output(result("{not json")) == "{not json"
    assert result_output(result('{"a": 1} and then words')) == '{"a": 1} and then words'
    assert result_output(result(is_error=True)) == "failed"
