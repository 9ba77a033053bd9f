"""The Kubernetes manifests (deploy/kubernetes) and the Dockerfiles, checked
without a cluster: every object against the Kubernetes schema
(kubernetes-validate), the whole of deploy/ and the Dockerfiles through
checkov (every waived check carries its reason inline), and the drain
settings, probes, ports and metric names consistent with pyserver itself.

The tools live in a venv of their own (``make deploy-tools``); the Makefile
passes its bin folder as PYSERVER_DEPLOY_TOOLS."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from pyserver import metrics
from pyserver.cli import UNLOAD_TIMEOUT_SECS, build_parser

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = ROOT / "deploy" / "kubernetes"
DOCKERFILES = [ROOT / "Dockerfile", ROOT / "Dockerfile.cuda"]
KUBERNETES_VERSION = "1.30"
TOOL_TIMEOUT_S = 300
# Kinds that the Kubernetes schema does not define (custom resources).
CUSTOM_KINDS = {"ServiceMonitor"}
# What SIGKILL must not cut short besides the hold and the exit timeout.
GRACE_MARGIN_S = 5


def _tool(name: str) -> str:
    tools = os.environ.get("PYSERVER_DEPLOY_TOOLS")
    if not tools:
        pytest.skip("PYSERVER_DEPLOY_TOOLS is not set (make test and make deploy-check set it)")
    path = Path(tools) / name
    assert path.exists(), f"{name} is not installed in {tools} (make deploy-tools)"
    return str(path)


def _files() -> list[Path]:
    return sorted(MANIFESTS.rglob("*.yaml"))


def _objects() -> list[tuple[Path, dict]]:
    found = []
    for path in _files():
        for doc in yaml.safe_load_all(path.read_text()):
            if doc:
                found.append((path, doc))
    return found


def _one(kind: str, name: str = "pyserver") -> dict:
    matches = [doc for _, doc in _objects()
               if doc["kind"] == kind and doc["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def _container() -> dict:
    (container,) = _one("Deployment")["spec"]["template"]["spec"]["containers"]
    return container


def _args() -> "argparse.Namespace":
    return build_parser().parse_args(_container()["args"])


# -- schema and policy ------------------------------------------------------------

@pytest.mark.parametrize("path", _files(), ids=lambda p: str(p.relative_to(MANIFESTS)))
def test_manifest_matches_the_kubernetes_schema(path):
    kinds = {doc["kind"] for doc in yaml.safe_load_all(path.read_text()) if doc}
    if kinds <= CUSTOM_KINDS:
        pytest.skip(f"{', '.join(kinds)}: a custom resource, not in the Kubernetes schema")
    done = subprocess.run([_tool("kubernetes-validate"), "--strict", "-k", KUBERNETES_VERSION,
                           str(path)], capture_output=True, text=True, timeout=TOOL_TIMEOUT_S)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "INFO" in done.stdout and "ERROR" not in done.stdout, done.stdout


def _checkov(*args: str) -> dict:
    done = subprocess.run([_tool("checkov"), "--compact", "-o", "json",
                           "--skip-download", *args],
                          capture_output=True, text=True, timeout=TOOL_TIMEOUT_S,
                          env=dict(os.environ, BC_SKIP_MAPPING="TRUE"))
    assert done.returncode in (0, 1), done.stderr
    reports = json.loads(done.stdout)
    return {r["check_type"]: r for r in (reports if isinstance(reports, list) else [reports])}


@pytest.fixture(scope="module")
def checkov_reports() -> dict:
    reports = _checkov("-d", str(MANIFESTS), "--framework", "kubernetes")
    for dockerfile in DOCKERFILES:
        reports[dockerfile.name] = _checkov("-f", str(dockerfile), "--framework", "dockerfile")[
            "dockerfile"]
    return reports


def _failed(report: dict) -> list[str]:
    return [f"{c['check_id']} {c['check_name']} ({c['file_path']} {c.get('resource')})"
            for c in report["results"]["failed_checks"]]


def test_checkov_passes_the_kubernetes_manifests(checkov_reports):
    report = checkov_reports["kubernetes"]
    assert report["summary"]["passed"] > 20
    assert not _failed(report), _failed(report)


@pytest.mark.parametrize("dockerfile", [p.name for p in DOCKERFILES])
def test_checkov_passes_the_dockerfile(checkov_reports, dockerfile):
    report = checkov_reports[dockerfile]
    assert report["summary"]["passed"] > 0
    assert not _failed(report), _failed(report)


def test_every_waived_check_is_justified(checkov_reports):
    for report in checkov_reports.values():
        for check in report["results"]["skipped_checks"]:
            reason = (check["check_result"].get("suppress_comment") or "").strip()
            assert len(reason) > 20, f"{check['check_id']} waived without a reason"


# -- consistency with pyserver ---------------------------------------------------------

def test_container_args_are_pyserver_flags():
    args = _args()
    assert args.model_store == "/models"
    assert args.http_address == args.grpc_address == args.metrics_address == "0.0.0.0"


def test_grace_period_covers_hold_exit_timeout_and_unload():
    spec = _one("Deployment")["spec"]["template"]["spec"]
    args = _args()
    assert args.drain_hold_secs > 0, "no drain hold: endpoints may outlive the listeners"
    needed = args.drain_hold_secs + args.exit_timeout_secs + UNLOAD_TIMEOUT_SECS + GRACE_MARGIN_S
    assert spec["terminationGracePeriodSeconds"] >= needed


def test_readiness_turns_false_within_the_drain_hold():
    probe = _container()["readinessProbe"]
    assert probe["httpGet"]["path"] == "/v2/health/ready"
    noticed_after = probe["periodSeconds"] * probe.get("failureThreshold", 3)
    assert noticed_after <= _args().drain_hold_secs


def test_liveness_and_startup_probe_the_process_not_the_models():
    container = _container()
    for probe in ("livenessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["path"] == "/v2/health/live", probe


def test_probes_and_service_use_the_container_ports():
    container = _container()
    args = _args()
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"http": args.http_port, "grpc": args.grpc_port,
                     "metrics": args.metrics_port}
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["port"] in ports
    service = _one("Service")["spec"]
    assert {p["targetPort"] for p in service["ports"]} == set(ports)
    labels = _one("Deployment")["spec"]["template"]["metadata"]["labels"]
    assert service["selector"].items() <= labels.items()


def test_service_monitor_scrapes_the_metrics_port():
    monitor = _one("ServiceMonitor")["spec"]
    (endpoint,) = monitor["endpoints"]
    assert endpoint["port"] == "metrics" and endpoint["path"] == "/metrics"
    assert monitor["selector"]["matchLabels"].items() <= \
        _one("Service")["metadata"]["labels"].items()


def test_autoscaler_reads_the_metric_the_adapter_computes():
    hpa = _one("HorizontalPodAutoscaler")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["name"] == "pyserver"
    (metric,) = hpa["spec"]["metrics"]
    rules = yaml.safe_load(_one("ConfigMap", "prometheus-adapter-pyserver")["data"]
                           ["config.yaml"])["rules"]
    names = {rule["name"]["as"]: rule for rule in rules}
    assert metric["type"] == "Pods"
    rule = names[metric["pods"]["metric"]["name"]]
    served = {name for name, *_ in metrics._MODEL_COUNTERS}
    used = set(re.findall(r"\bnv_[a-z_]+", rule["seriesQuery"] + rule["metricsQuery"]))
    assert used == {"nv_inference_queue_duration_us", "nv_inference_request_success"}
    assert used <= served, used - served
