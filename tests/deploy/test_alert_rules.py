"""The alerting rules (SRE review, issue 12 point 9): one plain rule file, the same groups as the Prometheus
Operator's PrometheusRule, every alert with a runbook section, checked and unit-tested by promtool.

promtool comes with Debian's ``prometheus`` package (.ci/run installs it); without it the two promtool tests
skip and the rest still run.
"""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess

import pytest

from .conftest import K8S, ROOT, metric_names_in_code

yaml = pytest.importorskip("yaml")

RULES = K8S / "monitoring" / "acestep-rules.yaml"
OPERATOR_RULES = K8S / "components" / "prometheus-operator" / "prometheusrules.yaml"
RUNBOOK = K8S / "RUNBOOK.md"
PROMTOOL_TESTS = sorted((ROOT / "tests" / "deploy" / "promtool").glob("*.yaml"))
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not on PATH (apt-get install prometheus)")
# What the review asked to be alerted on, by the alert that covers it.
REQUIRED = {"AceStepHighErrorRatio": "error ratio", "AceStepSlowGenerations": "p95 latency",
            "AceStepSlowFirstAudio": "time to first audio", "AceStepQueueSaturated": "queue saturation",
            "AceStepReplicasNotReady": "replicas not ready", "AceStepBackendUnreachable": "no LM/DiT reachable",
            "AceStepModelNotLoaded": "model not loaded"}
KUBE_STATE = {"AceStepReplicasNotReady", "AceStepNoReplicaAvailable"}  # read kube-state-metrics, not ours


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def alerts() -> dict[str, dict]:
    return {rule["alert"]: rule for rule in rules() if "alert" in rule}


def anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"^#+ (.+)$", markdown, re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}


def test_every_asked_for_alert_exists_with_a_severity_and_a_runbook_section():
    found = alerts()
    assert set(REQUIRED) <= set(found), set(REQUIRED) - set(found)
    sections = anchors(RUNBOOK.read_text())
    for name, alert in found.items():
        assert alert["labels"]["severity"] in {"warning", "critical"}, name
        annotations = alert["annotations"]
        assert annotations["summary"] and annotations["description"], name
        path, _, anchor = annotations["runbook_url"].partition("#")
        assert (ROOT / path) == RUNBOOK and anchor == name.lower(), (name, annotations["runbook_url"])
        assert anchor in sections, f"{name}: no section '## {name}' in k8s/RUNBOOK.md"


def test_rules_read_only_exported_metrics_by_their_component_label():
    """Every acestep_* series a rule reads is one the code exports; none groups by the operator's `service`."""
    exported = metric_names_in_code()
    for rule in rules():
        names = {re.sub(r"_(bucket|sum|count)$", "", m) for m in re.findall(r"\bacestep_[a-z0-9_]+", rule["expr"])}
        assert names <= exported, f"{rule.get('alert') or rule['record']} reads {names - exported}"
        assert not re.search(r"\bservice\b", rule["expr"]), rule["expr"]
        if rule.get("alert") not in KUBE_STATE:
            assert "kube_" not in rule["expr"], rule


def test_the_prometheus_operator_rules_are_the_plain_file_s_groups():
    """prometheusrules.yaml is written by scripts/gen_prometheus_rules.py; a hand edit of either file fails here."""
    spec = importlib.util.spec_from_file_location("gen_prometheus_rules", ROOT / "scripts" / "gen_prometheus_rules.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert OPERATOR_RULES.read_text() == module.render(), "run: python scripts/gen_prometheus_rules.py"
    operator = yaml.safe_load(OPERATOR_RULES.read_text())
    assert operator["kind"] == "PrometheusRule"
    assert operator["spec"]["groups"] == yaml.safe_load(RULES.read_text())["groups"]
    monitors = list(yaml.safe_load_all((OPERATOR_RULES.parent / "servicemonitor.yaml").read_text()))
    assert {m["metadata"]["labels"]["release"] for m in monitors} == {operator["metadata"]["labels"]["release"]}


@needs_promtool
def test_promtool_checks_both_rule_files(tmp_path):
    operator = yaml.safe_load(OPERATOR_RULES.read_text())
    as_plain = tmp_path / "operator-rules.yaml"
    as_plain.write_text(yaml.safe_dump({"groups": operator["spec"]["groups"]}))
    for path in (RULES, as_plain):
        out = subprocess.run([PROMTOOL, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stdout + out.stderr
        assert f"SUCCESS: {len(rules())} rules found" in out.stdout


@needs_promtool
def test_promtool_unit_tests_fire_each_alert_and_only_then():
    assert PROMTOOL_TESTS, "no promtool test files"
    tested = set()
    for path in PROMTOOL_TESTS:
        tested |= {case["alertname"] for test in yaml.safe_load(path.read_text())["tests"]
                   for case in test.get("alert_rule_test", []) if case["exp_alerts"]}
    assert tested == set(alerts()), f"alerts no promtool test fires: {set(alerts()) - tested}"
    out = subprocess.run([PROMTOOL, "test", "rules", *map(str, PROMTOOL_TESTS)], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr
