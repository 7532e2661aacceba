"""The findings registry is the one source: README table, JSON schema, HTML explanations agree with it."""

from __future__ import annotations

import json
import re
from html import escape
from pathlib import Path

import pytest

import auditor
from auditor.findings import RULES, parse_claim
from auditor.report.html import render_html

ROOT = Path(__file__).resolve().parent.parent


def html_escape(text: str) -> str:
    """As jinja2's autoescape writes it (markupsafe: ' as &#39;, " as &#34;)."""
    return escape(text, quote=True).replace("&#x27;", "&#39;").replace("&quot;", "&#34;")


def test_codes_and_slugs_are_unique_and_well_formed() -> None:
    assert len({r.code for r in RULES}) == len(RULES) and len({r.slug for r in RULES}) == len(RULES)
    for rule in RULES:
        assert re.fullmatch(r"AUD\d{3}", rule.code) and re.fullmatch(r"[a-z]+(-[a-z0-9]+)*", rule.slug)
        assert rule.severity in ("info", "warning", "error") and rule.explanation and rule.action and rule.when


def test_readme_table_matches_the_registry() -> None:
    readme = (ROOT / "README.md").read_text()
    rows = re.findall(r"^\| (AUD\d{3}) \| ([a-z0-9-]+) \| (\w+) \| (.+) \|$", readme, flags=re.M)
    assert rows == [(r.code, r.slug, r.severity, r.when) for r in RULES]


def test_schema_lists_exactly_the_registry_codes() -> None:
    schema = json.loads((ROOT / "auditor/report/report.schema.json").read_text())
    props = schema["properties"]["findings"]["items"]["properties"]
    assert props["code"]["enum"] == [r.code for r in RULES]
    assert props["slug"]["enum"] == [r.slug for r in RULES]


def test_html_explains_every_model_rule_with_its_action(rep_clean_model: object) -> None:
    report = auditor.audit(rep_clean_model.path)  # type: ignore[attr-defined]
    html = render_html(report)
    for rule in RULES:
        if rule.scope == "model":
            assert f'id="explain-{rule.slug}"' in html
            assert html_escape(rule.action) in html


@pytest.mark.parametrize(
    "text, value, low, high",
    [("12M", 12e6, 11.5e6, 12.5e6), ("1.3B", 1.3e9, 1.25e9, 1.35e9), ("110000000", 1.1e8, 1.1e8 * 0.995, 1.1e8 * 1.005),
     ("85.6m", 85.6e6, 85.6e6 * 0.995, 85.6e6 * 1.005)],  # never tighter than 0.5%
)  # fmt: skip
def test_claims_parse_with_the_precision_they_were_given(text: str, value: float, low: float, high: float) -> None:
    claim = parse_claim(text)
    assert claim.value == pytest.approx(value)
    assert claim.value * (1 - claim.tolerance) == pytest.approx(low) and claim.value * (1 + claim.tolerance) == pytest.approx(high)


@pytest.mark.parametrize("text", ["", "M", "12X", "1.2.3M", "-5M", "0"])
def test_bad_claims_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_claim(text)
