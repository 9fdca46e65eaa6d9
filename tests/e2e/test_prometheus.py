"""A real Prometheus scrapes the three real servers; every dashboard query, prometheus-adapter rule and alert
expression then returns series (SRE review, issue 12 points 9-13).

The servers run on 127.0.0.1 with the tiny checkpoints, each with its own /metrics, as three pods would.
Prometheus (Debian's ``prometheus`` package; the test skips without the binary) scrapes them every second
with the labels a ServiceMonitor adds (namespace, pod, and the Kubernetes ``service``, which the metrics'
own ``component`` label must not clash with) and loads k8s/monitoring/acestep-rules.yaml. After a good
request, a bad one, a cancelled one and a text-mode call, each query goes through Prometheus's HTTP API.
A query that needs Kubernetes (kube-state-metrics) or a GPU is listed in EXEMPT with the reason.
"""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from acestep_client import AceStepClient, GenerationConfig, GenerationParams
from acestep_client.convert import config_to_proto, params_to_proto
from acestep_client.proto.acestep.v1 import orchestrator_pb2, orchestrator_pb2_grpc

from .conftest import _start_in_thread

yaml = pytest.importorskip("yaml")
PROMETHEUS = shutil.which("prometheus")
pytestmark = pytest.mark.skipif(PROMETHEUS is None, reason="prometheus not on PATH (apt-get install prometheus)")

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "k8s" / "base" / "dashboards" / "acestep-serving.json"
ADAPTER = ROOT / "k8s" / "monitoring" / "prometheus-adapter-values.yaml"
RULES = ROOT / "k8s" / "monitoring" / "acestep-rules.yaml"
NAMESPACE = "acestep"
WINDOW = "10m"  # for $__rate_interval: longer than the test, so every rate sees the series' first (zero) sample
PODS = {"lm": "acestep-lm-0", "dit": "acestep-dit-0", "orchestrator": "acestep-orchestrator-0"}
# Queries that cannot return series here, and why.
EXEMPT = {
    "kube_": "reads kube-state-metrics, which only a Kubernetes cluster has",
    "acestep_accelerator_memory_": "torch.cuda memory: absent on a CPU-only process",
}
# The good request: the LM writes the CoT (only the duration is given) and the codes, the DiT renders them.
GOOD = GenerationParams(caption="lofi beat", duration=10, thinking=True)
# Long enough to still be running when the client cancels it after its first event.
LONG = GenerationParams(caption="x", duration=60, thinking=False, use_cot_metas=False, inference_steps=8)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return json.loads(reply.read())


class Prometheus:
    def __init__(self, port: int):
        self.base = f"http://127.0.0.1:{port}"

    def query(self, promql: str) -> list[dict]:
        answer = _get(f"{self.base}/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
        assert answer["status"] == "success", (promql, answer)
        return answer["data"]["result"]

    def value(self, promql: str) -> float:
        result = self.query(promql)
        return sum(float(r["value"][1]) for r in result)

    def scraped(self, targets: int) -> bool:
        active = _get(f"{self.base}/api/v1/targets")["data"]["activeTargets"]
        return len(active) == targets and all(t["health"] == "up" for t in active)


@pytest.fixture(scope="module")
def servers(tiny_root):
    """LM, DiT and orchestrator, each with its own /metrics port (three pods' worth)."""
    own_port = ["--metrics-port", "0"]
    yield from _start_in_thread(checkpoints=tiny_root, device="cpu", dtype="float32", lm_flags=own_port,
                                dit_flags=own_port, extra_orchestrator_flags=own_port)


@pytest.fixture(scope="module")
def prometheus(servers, tmp_path_factory) -> Iterator[Prometheus]:
    stack = servers.stack
    ports = {"lm": stack.lm.metrics_port, "dit": stack.dit.metrics_port,
             "orchestrator": stack.orchestrator.metrics_port}
    folder = tmp_path_factory.mktemp("prometheus")
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {"job_name": f"acestep-{component}",
             "static_configs": [{"targets": [f"127.0.0.1:{port}"],
                                 "labels": {"namespace": NAMESPACE, "pod": PODS[component],
                                            "service": f"acestep-{component}"}}]}
            for component, port in ports.items()
        ],
    }
    (folder / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = _free_port()
    process = subprocess.Popen(
        [PROMETHEUS, f"--config.file={folder / 'prometheus.yml'}", f"--storage.tsdb.path={folder / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=(folder / "prometheus.log").open("w"),
    )  # fmt: skip
    try:
        server = Prometheus(port)
        _wait(lambda: _ready(server) and server.scraped(len(ports)), process, folder)
        yield server
    finally:
        process.terminate()
        process.wait(30)


def _ready(server: Prometheus) -> bool:
    try:
        return urllib.request.urlopen(f"{server.base}/-/ready", timeout=2).status == 200
    except OSError:
        return False


def _wait(condition, process: subprocess.Popen, folder: Path, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert process.poll() is None, (folder / "prometheus.log").read_text()[-3000:]
        assert time.monotonic() < deadline, "Prometheus did not scrape the three servers in time"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def traffic(servers, prometheus) -> Prometheus:
    """A good request, a bad one, a cancelled one and a text-mode call; then two more scrapes."""
    time.sleep(2)  # a scrape of every series at its startup zero, before any traffic
    address = servers.address
    with AceStepClient(address) as client:
        assert client.generate(GOOD, GenerationConfig(batch_size=1)).success
        assert client.create_sample("a calm piano piece", seed=3).success
    with grpc.insecure_channel(address) as channel:
        stub = orchestrator_pb2_grpc.MusicGenerationServiceStub(channel)
        bad = orchestrator_pb2.GenerateMusicRequest(params=params_to_proto(GenerationParams(inference_steps=0)))
        with pytest.raises(grpc.RpcError) as refused:
            next(iter(stub.GenerateMusic(bad, timeout=30)))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        long = orchestrator_pb2.GenerateMusicRequest(params=params_to_proto(LONG),
                                                     config=config_to_proto(GenerationConfig(batch_size=1)))
        call = stub.GenerateMusic(long, timeout=120)
        next(call)  # running now
        call.cancel()
    counted = 'sum(acestep_requests_total{component="orchestrator", method="GenerateMusic", code="CANCELLED"})'
    _wait_for(lambda: prometheus.value(counted) >= 1, "the cancelled call was never counted")
    time.sleep(3)  # two more scrapes and rule evaluations
    return prometheus


def _wait_for(condition, failure: str, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, failure
        time.sleep(0.5)


def _exempt(promql: str) -> str | None:
    return next((reason for prefix, reason in EXEMPT.items() if prefix in promql), None)


def _dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [(f"panel {panel['title']!r} {target['refId']}",
             target["expr"].replace("$namespace", NAMESPACE).replace("$__rate_interval", WINDOW))
            for panel in dashboard["panels"] for target in panel["targets"]]


def _adapter_queries() -> list[tuple[str, str]]:
    """Each rule's seriesQuery and its metricsQuery with the adapter's template filled as for one pod."""
    queries = []
    for rule in yaml.safe_load(ADAPTER.read_text())["rules"]["custom"]:
        name = rule["name"]["as"]
        series = re.match(r"[a-z_:]+", rule["seriesQuery"]).group(0)
        metrics_query = (rule["metricsQuery"].replace("<<.Series>>", series)
                         .replace("<<.LabelMatchers>>", f'namespace="{NAMESPACE}",pod=~"{"|".join(PODS.values())}"')
                         .replace("<<.GroupBy>>", "pod"))
        queries += [(f"adapter {name} seriesQuery", rule["seriesQuery"]), (f"adapter {name} metricsQuery",
                                                                           metrics_query)]
    return queries


COMPARISON = re.compile(r"^(?P<query>.+?)\s*(?:>|<|==|!=|>=|<=)\s*(?P<threshold>[-+0-9.e]+)\s*$", re.DOTALL)


def _rule_queries() -> list[tuple[str, str]]:
    """Recording rules' expressions, and each alert's query without its threshold: what it compares must exist
    (a healthy system fires nothing, so the whole expression is rightly empty)."""
    queries = []
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            if "record" in rule:
                queries += [(f"record {rule['record']}", rule["expr"]), (f"recorded {rule['record']}",
                                                                          rule["record"])]
                continue
            if _exempt(rule["expr"]):
                queries.append((f"alert {rule['alert']}", rule["expr"]))
                continue
            match = COMPARISON.match(rule["expr"].strip())
            assert match, f"{rule['alert']}: expected '<query> <op> <number>', got {rule['expr']!r}"
            queries.append((f"alert {rule['alert']}", match.group("query")))
    return queries


def test_every_dashboard_adapter_and_alert_query_returns_series_after_traffic(traffic):
    queries = [*_dashboard_queries(), *_adapter_queries(), *_rule_queries()]
    assert len(queries) > 50
    empty, exempt = [], []
    for where, promql in queries:
        if _exempt(promql):
            exempt.append(where)
            continue
        if not traffic.query(promql):
            empty.append(f"{where}: {promql}")
    assert not empty, "queries without series after traffic:\n" + "\n".join(empty)
    # The exemptions cover only the replica panel, the two kube-state-metrics alerts and the GPU memory panel.
    assert len(exempt) <= 6, exempt


def test_rules_load_and_evaluate_without_error(traffic):
    groups = _get(f"{traffic.base}/api/v1/rules")["data"]["groups"]
    loaded = {rule["name"]: rule for group in groups for rule in group["rules"]}
    expected = [r.get("record") or r["alert"] for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"]]
    assert sorted(loaded) == sorted(expected)
    assert {name: rule["health"] for name, rule in loaded.items() if rule["health"] != "ok"} == {}
    firing = [rule["name"] for rule in loaded.values() if rule.get("state") == "firing"]
    assert firing == [], f"a healthy stack fires {firing}"


def test_what_happened_is_what_is_counted(traffic):
    """The good, bad, cancelled and text-mode calls each under their own code, and no clash with the
    scrape's `service` label (the Prometheus Operator's)."""

    def count(component: str, method: str, code: str) -> float:
        return traffic.value(f'sum(acestep_requests_total{{component="{component}", method="{method}", '
                             f'code="{code}"}})')

    assert count("orchestrator", "GenerateMusic", "OK") == 1
    assert count("orchestrator", "GenerateMusic", "INVALID_ARGUMENT") == 1
    assert count("orchestrator", "GenerateMusic", "CANCELLED") == 1
    # The SDK reads a description to the stream's end: the call succeeded, and is counted so, on both hops.
    assert count("orchestrator", "DescribeMusic", "OK") == 1 and count("lm", "Describe", "OK") == 1
    assert count("orchestrator", "DescribeMusic", "CANCELLED") == 0 and count("lm", "Describe", "CANCELLED") == 0
    assert count("lm", "Plan", "OK") == 1
    assert traffic.value('sum(acestep_lm_generated_tokens_total{phase="cot"})') > 0
    assert traffic.value('sum(acestep_lm_generated_tokens_total{phase="codes"})') == 50  # 10 s at 5 Hz
    assert traffic.value('sum(acestep_backend_requests_total{backend="lm", method="Plan", code="OK"})') == 1
    # every code of every method exists from startup, at 0 where nothing happened
    assert len(traffic.query('acestep_requests_total{component="dit", method="EncodeAudio"}')) == len(grpc.StatusCode)
    assert traffic.query('{exported_service!=""}') == []
    assert {r["metric"]["service"] for r in traffic.query("acestep_model_ready")} == {
        f"acestep-{c}" for c in PODS}  # the scrape's label, untouched
    assert traffic.value('sum(acestep_build_info{component="dit"})') == 1
    assert traffic.query('process_resident_memory_bytes{pod="acestep-dit-0"}')
