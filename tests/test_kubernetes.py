"""The Kubernetes manifests in deploy/kubernetes/: schema-valid, consistent, and in step.

* Every built-in resource validates (strict: unknown fields are errors) against the
  Kubernetes OpenAPI schemas that the PyPI package ``kubernetes-validate`` ships, offline,
  for the oldest supported version (1.28: the StatefulSet's pod-index label) and the newest.
* The Prometheus Operator resources (no schema offline) are checked field by field.
* Each overlay (single, sharded) is consistent: selectors, port names, probes on the
  contract's endpoints, the config mount, the token Secret, the security context.
* The PrometheusRule carries exactly the groups of prometheus/alerts.yml
  (regenerate with ``python scripts/gen-prometheusrule.py``).
* The ConfigMap's config passes the exporter's own ``--config.check``.
"""

from __future__ import annotations

import importlib
import os
import re
import subprocess
import sys
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any

import pytest
import yaml

import exporter

ROOT = Path(__file__).resolve().parents[1]
KUBE = ROOT / "deploy" / "kubernetes"
ALERTS = ROOT / "prometheus" / "alerts.yml"
OVERLAYS = {"single": "Deployment", "sharded": "StatefulSet"}
KUBERNETES_VERSIONS = ("1.28.0", None)  # None: the newest the validator knows
IN_CI = os.environ.get("CI", "").lower() == "true"
NAME = "cloudflare-ai-gateway-exporter"
TOKEN_ENV = "CLOUDFLARE_API_TOKEN"

Resource = dict[str, Any]


def _manifest_files() -> list[Path]:
    return sorted(p for p in KUBE.rglob("*.yaml") if p.name != "kustomization.yaml")


def _load(path: Path) -> list[Resource]:
    docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    assert all(isinstance(d, dict) for d in docs), path
    return docs


def _kustomize(directory: Path) -> list[Resource]:
    """The resources a kustomization lists (files and other kustomizations), no transformers."""
    kfile = directory / "kustomization.yaml"
    kust = yaml.safe_load(kfile.read_text(encoding="utf-8"))
    assert kust["kind"] == "Kustomization", kfile
    unsupported = set(kust) - {"apiVersion", "kind", "resources", "namespace"}
    assert not unsupported, f"{kfile}: this test renders only `resources`, not {sorted(unsupported)}"
    out: list[Resource] = []
    for entry in kust["resources"]:
        target = (directory / entry).resolve()
        assert target.exists(), f"{kfile}: {entry} does not exist"
        out += _kustomize(target) if target.is_dir() else _load(target)
    return out


def _one(resources: list[Resource], kind: str) -> Resource:
    found = [r for r in resources if r["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def _validator() -> ModuleType:
    try:
        return importlib.import_module("kubernetes_validate")
    except ImportError:
        if IN_CI:
            pytest.fail("kubernetes-validate is not installed (pip install kubernetes-validate)")
        pytest.skip("kubernetes-validate is not installed (pip install kubernetes-validate)")


def _alerts() -> Any:
    if not ALERTS.exists():
        pytest.skip("prometheus/alerts.yml does not exist yet")
    return yaml.safe_load(ALERTS.read_text(encoding="utf-8"))


def _label_selector_matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and all(labels.get(k) == v for k, v in selector.items())


def _flag(args: list[str], name: str) -> str | None:
    for arg in args:
        if arg.startswith(f"{name}="):
            return arg.split("=", 1)[1].split("#", 1)[0].strip()
    return None


def _env() -> dict[str, str]:
    """The environment of an exporter subprocess: the token set, this checkout importable."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, TOKEN_ENV: "0123456789abcdef0123456789abcdef", "PYTHONPATH": path}


# --- schema ---------------------------------------------------------------------------------


MANIFESTS = [(path, i, doc) for path in _manifest_files() for i, doc in enumerate(_load(path))]


def test_manifests_exist() -> None:
    kinds = {doc["kind"] for _, _, doc in MANIFESTS}
    assert {"Deployment", "StatefulSet", "Service", "ConfigMap", "ServiceMonitor", "PrometheusRule"} <= kinds


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS, ids=lambda v: v or "latest")
@pytest.mark.parametrize(
    ("path", "doc"),
    [(p, d) for p, _, d in MANIFESTS if "monitoring.coreos.com" not in d["apiVersion"]],
    ids=[
        f"{p.relative_to(KUBE)}:{d['kind']}" for p, _, d in MANIFESTS if "monitoring.coreos.com" not in d["apiVersion"]
    ],
)
def test_schema(path: Path, doc: Resource, version: str | None) -> None:
    kv = _validator()
    version = version or kv.utils.latest_version()
    try:
        kv.validate(doc, version, strict=True)
    except kv.ValidationError as exc:
        where = ".".join(str(p) for p in exc.path)
        pytest.fail(f"{path.relative_to(ROOT)}: {doc['kind']} invalid for Kubernetes {version}: {where}: {exc.message}")


def test_service_monitor_fields() -> None:
    sm = _one(_kustomize(KUBE / "base"), "ServiceMonitor")
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(sm["spec"]) <= {"selector", "endpoints", "jobLabel", "namespaceSelector"}
    assert set(sm["spec"]["selector"]) == {"matchLabels"}
    for endpoint in sm["spec"]["endpoints"]:
        assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "scheme", "honorLabels"}
        assert endpoint["path"] == "/metrics"
        # the exporter's `endpoint` label must not be renamed to exported_endpoint by the Operator's own
        assert endpoint.get("honorLabels") is True
        for key in ("interval", "scrapeTimeout"):
            assert re.fullmatch(r"(\d+(ms|s|m|h))+", endpoint[key]), endpoint


def test_prometheus_rule_matches_alerts_yml() -> None:
    rule = _one(_kustomize(KUBE / "base"), "PrometheusRule")
    assert rule["apiVersion"] == "monitoring.coreos.com/v1"
    assert set(rule["spec"]) == {"groups"}
    assert rule["spec"]["groups"] == _alerts()["groups"], (
        "deploy/kubernetes/base/prometheusrule.yaml is out of step with prometheus/alerts.yml: "
        "run `python scripts/gen-prometheusrule.py`"
    )


def test_scrape_job_matches_alert_rules() -> None:
    """The ServiceMonitor's job (the Service's name) is the job the alert rules select."""
    base = _kustomize(KUBE / "base")
    sm, svc = _one(base, "ServiceMonitor"), _one(base, "Service")
    job = svc["metadata"]["labels"][sm["spec"]["jobLabel"]] if "jobLabel" in sm["spec"] else svc["metadata"]["name"]
    jobs = set(re.findall(r'\bjob="([^"]+)"', yaml.safe_dump(_alerts())))
    assert jobs <= {job}, f"alerts.yml selects job(s) {sorted(jobs)}, the ServiceMonitor produces job {job!r}"


# --- each overlay --------------------------------------------------------------------------


@pytest.fixture(params=sorted(OVERLAYS), ids=str)
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[Resource]]:
    name: str = request.param
    return name, _kustomize(KUBE / name)


def _container(workload: Resource) -> Resource:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    container: Resource = containers[0]
    return container


def test_selectors_and_ports(overlay: tuple[str, list[Resource]]) -> None:
    name, resources = overlay
    workload = _one(resources, OVERLAYS[name])
    svc, sm = _one(resources, "Service"), _one(resources, "ServiceMonitor")
    pod_labels = workload["spec"]["template"]["metadata"]["labels"]
    assert _label_selector_matches(workload["spec"]["selector"]["matchLabels"], pod_labels)
    assert _label_selector_matches(svc["spec"]["selector"], pod_labels)
    assert _label_selector_matches(sm["spec"]["selector"]["matchLabels"], svc["metadata"]["labels"])
    container = _container(workload)
    container_ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    service_ports = {p["name"]: p for p in svc["spec"]["ports"]}
    for endpoint in sm["spec"]["endpoints"]:
        assert endpoint["port"] in service_ports
    for port in service_ports.values():
        assert port["targetPort"] in container_ports or port["targetPort"] in container_ports.values()
    listen = _flag(container["args"], "--web.listen-address")
    assert listen is not None and listen.rsplit(":", 1)[1] == str(container_ports["http-metrics"])


def test_probes_on_contract_endpoints(overlay: tuple[str, list[Resource]]) -> None:
    name, resources = overlay
    container = _container(_one(resources, OVERLAYS[name]))
    ports = {p["name"] for p in container["ports"]} | {p["containerPort"] for p in container["ports"]}
    assert container["livenessProbe"]["httpGet"]["path"] == "/-/healthy"
    assert container["readinessProbe"]["httpGet"]["path"] == "/-/ready"
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"]["port"] in ports


def test_security_and_resources(overlay: tuple[str, list[Resource]]) -> None:
    name, resources = overlay
    workload = _one(resources, OVERLAYS[name])
    pod = workload["spec"]["template"]["spec"]
    container = _container(workload)
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc.get("privileged", False) is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert not sc["capabilities"].get("add")
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["automountServiceAccountToken"] is False
    # The pod's UID is the image's USER (runAsNonRoot needs a numeric UID).
    users = re.findall(r"^USER\s+(\d+)", (ROOT / "Dockerfile").read_text(encoding="utf-8"), re.MULTILINE)
    assert users and int(users[-1].split(":")[0]) == pod["securityContext"]["runAsUser"]
    for kind in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(container["resources"][kind]), kind
    assert int(pod["terminationGracePeriodSeconds"]) >= 3


def test_config_and_token_secret(overlay: tuple[str, list[Resource]]) -> None:
    name, resources = overlay
    workload = _one(resources, OVERLAYS[name])
    pod = workload["spec"]["template"]["spec"]
    container = _container(workload)
    config_file = _flag(container["args"], "--config.file")
    assert config_file == "/etc/cloudflare-ai-gateway-exporter/config.yaml"
    config_path = PurePosixPath(config_file)
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    mount = next(m for m in mounts.values() if m["mountPath"] == str(config_path.parent))
    assert mount.get("readOnly") is True
    cm_name = volumes[mount["name"]]["configMap"]["name"]
    cm = next(r for r in resources if r["kind"] == "ConfigMap" and r["metadata"]["name"] == cm_name)
    assert config_path.name in cm["data"]
    assert "${" + TOKEN_ENV + "}" in cm["data"][config_path.name]
    env = {e["name"]: e for e in container["env"]}
    ref = env[TOKEN_ENV]["valueFrom"]["secretKeyRef"]
    assert ref == {"name": NAME, "key": "api-token"}
    # The tag is the package version: bump both together.
    assert container["image"] == f"{NAME}:{exporter.__version__}"


def test_statefulset_ordinal_is_the_shard() -> None:
    resources = _kustomize(KUBE / "sharded")
    sts, svc = _one(resources, "StatefulSet"), _one(resources, "Service")
    assert sts["spec"]["serviceName"] == svc["metadata"]["name"]
    assert svc["spec"]["clusterIP"] == "None"
    container = _container(sts)
    assert _flag(container["args"], "--total-shards") == str(sts["spec"]["replicas"])
    assert _flag(container["args"], "--shard") == "$(POD_INDEX)"
    env = {e["name"]: e for e in container["env"]}
    field = env["POD_INDEX"]["valueFrom"]["fieldRef"]["fieldPath"]
    assert field == "metadata.labels['apps.kubernetes.io/pod-index']"


def test_single_runs_one_replica() -> None:
    deployment = _one(_kustomize(KUBE / "single"), "Deployment")
    assert deployment["spec"]["replicas"] == 1
    assert deployment["spec"]["strategy"]["type"] == "Recreate"


@pytest.mark.e2e
def test_configmap_passes_config_check(tmp_path: Path) -> None:
    """The exporter itself accepts the ConfigMap's config (with the token set, as in the pod)."""
    cm = _one(_kustomize(KUBE / "base"), "ConfigMap")
    cfg = tmp_path / "config.yaml"
    cfg.write_text(cm["data"]["config.yaml"], encoding="utf-8")
    proc = subprocess.run(
        [sys.executable, "-m", "exporter", f"--config.file={cfg}", "--config.check"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"


@pytest.mark.e2e
def test_image_default_config_passes_config_check(tmp_path: Path) -> None:
    """deploy/docker/config.yaml, baked into the image, is valid too."""
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "exporter",
            f"--config.file={ROOT / 'deploy' / 'docker' / 'config.yaml'}",
            "--config.check",
        ],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
