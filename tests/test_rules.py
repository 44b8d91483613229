"""The recording and alerting rules shipped in deploy/prometheus/rules/: valid for Prometheus's
own checker, and every alert's promtool unit tests (it fires when it should, with its labels,
and stays quiet when it should not). Evaluated live against the demo's real Prometheus in
test_stack.py."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.support.servers import ROOT

pytestmark = [pytest.mark.prometheus]

RULES = ROOT / "deploy" / "prometheus" / "rules"
PROMTOOL = ROOT / ".venv" / "bin" / "promtool"


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    if not PROMTOOL.exists():
        pytest.fail(f"{PROMTOOL} is missing: `make test` unpacks Debian's prometheus package (promtool) there")
    return subprocess.run([str(PROMTOOL), *args], capture_output=True, text=True, timeout=120, cwd=RULES)


def rule_files() -> list[Path]:
    return sorted(RULES.glob("*.yml"))


def rules() -> list[dict[str, object]]:
    return [
        rule for path in rule_files() for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]
    ]


def test_the_rules_pass_promtool_check() -> None:
    result = promtool("check", "rules", *[p.name for p in rule_files()])
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(rules()) >= 35


def test_every_alert_has_promtool_tests_that_pass() -> None:
    tests = sorted((RULES / "tests").glob("*.yml"))
    result = promtool("test", "rules", *[str(t.relative_to(RULES)) for t in tests])
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(tests), result.stdout
    tested = {
        alert["alertname"]
        for t in tests
        for case in yaml.safe_load(t.read_text())["tests"]
        for alert in case.get("alert_rule_test", [])
    }
    fired = {
        alert["alertname"]
        for t in tests
        for case in yaml.safe_load(t.read_text())["tests"]
        for alert in case.get("alert_rule_test", [])
        if alert["exp_alerts"]
    }
    alerts = {str(rule["alert"]) for rule in rules() if "alert" in rule}
    assert alerts == tested == fired, f"untested: {alerts - tested}; never seen firing: {alerts - fired}"


def test_every_alert_says_how_bad_it_is_and_what_to_look_at_first() -> None:
    for rule in rules():
        if "alert" not in rule:
            continue
        labels, annotations = rule["labels"], rule["annotations"]
        assert labels["severity"] in ("page", "warning", "ticket"), rule  # type: ignore[index]
        assert annotations["summary"] and "First:" in str(annotations["runbook"]), rule  # type: ignore[index]


def test_each_objective_is_one_number_in_one_place() -> None:
    objectives = [rule for rule in rules() if str(rule.get("record", "")).startswith("beacon:slo_objective:")]
    assert {str(r["record"]) for r in objectives} == {
        "beacon:slo_objective:availability",
        "beacon:slo_objective:caddy_availability",
        "beacon:slo_objective:latency",
    }
    for objective in objectives:
        assert re.fullmatch(r"vector\(0\.\d+\)", str(objective["expr"])), objective
    # Everything else refers to the objective rules: no objective is written into an expression.
    for rule in rules():
        if rule not in objectives:
            assert not re.search(r"(?<![\d.])0\.9\d*", str(rule["expr"])), rule
