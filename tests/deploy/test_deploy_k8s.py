"""deploy/k8s/: valid against the Kubernetes schemas and wired together (labels, ports, config, secrets)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from gateway.config.load import load_config_data, parse_yaml_text
from tests.deploy.promql import DEPLOY

K8S = DEPLOY / "k8s"
KUBERNETES_VERSION = "1.30.0"  # kubernetes-validate ships its schemas
CRD_KINDS = {"ServiceMonitor", "Kustomization"}


def _docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def _all() -> dict[str, dict[str, Any]]:
    resources = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in _docs(path):
            resources[doc["kind"]] = doc
    return resources


CORE_FILES = sorted(p.name for p in K8S.glob("*.yaml") if not {d["kind"] for d in _docs(p)} & CRD_KINDS)


def test_the_kit_has_every_resource_the_deployment_needs() -> None:
    assert set(_all()) >= {"Deployment", "Service", "ConfigMap", "Secret", "HorizontalPodAutoscaler",
                           "PodDisruptionBudget", "ServiceMonitor"}


@pytest.mark.parametrize("name", CORE_FILES)
def test_manifest_validates_against_the_kubernetes_schema(name: str) -> None:
    for doc in _docs(K8S / name):
        # strict: unknown fields are errors too
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)


def test_schema_validation_rejects_a_broken_deployment() -> None:
    broken = _all()["Deployment"]
    broken = yaml.safe_load(yaml.safe_dump(broken))
    broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["pathh"] = "/readyz"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_deployment_probes_resources_non_root_and_scrape_annotations() -> None:
    dep = _all()["Deployment"]
    pod = dep["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["requests"]["cpu"] and container["resources"]["limits"]["memory"]
    security = pod["spec"]["securityContext"]
    assert security["runAsNonRoot"] is True and security["runAsUser"] != 0
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    annotations = pod["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == ports["http"]
    assert annotations["prometheus.io/path"] == "/metrics"
    assert container["args"][0] == "serve" and "--config" in container["args"]


def test_selectors_match_the_pods_and_the_hpa_scales_the_deployment() -> None:
    r = _all()
    pod_labels = r["Deployment"]["spec"]["template"]["metadata"]["labels"]
    container_ports = {p["name"] for p in r["Deployment"]["spec"]["template"]["spec"]["containers"][0]["ports"]}

    def selects(selector: dict[str, str]) -> bool:
        return all(pod_labels.get(k) == v for k, v in selector.items())

    assert selects(r["Deployment"]["spec"]["selector"]["matchLabels"])
    assert selects(r["Service"]["spec"]["selector"])
    assert selects(r["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"])
    assert r["PodDisruptionBudget"]["spec"]["minAvailable"] < r["HorizontalPodAutoscaler"]["spec"]["minReplicas"]
    assert {p["targetPort"] for p in r["Service"]["spec"]["ports"]} <= container_ports
    target = r["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", r["Deployment"]["metadata"]["name"])


def test_service_monitor_selects_the_service_and_scrapes_its_metrics_port() -> None:
    r = _all()
    sm = r["ServiceMonitor"]
    assert sm["apiVersion"] == "monitoring.coreos.com/v1"
    assert sm["metadata"]["name"]
    service_labels = r["Service"]["metadata"]["labels"]
    assert all(service_labels.get(k) == v for k, v in sm["spec"]["selector"]["matchLabels"].items())
    service_ports = {p["name"] for p in r["Service"]["spec"]["ports"]}
    assert sm["spec"]["endpoints"]
    for endpoint in sm["spec"]["endpoints"]:
        assert set(endpoint) <= {"port", "path", "interval", "scrapeTimeout", "scheme", "honorLabels"}
        assert endpoint["port"] in service_ports
        assert endpoint["path"] == "/metrics"


def test_config_map_holds_a_valid_gateway_config_whose_variables_the_secret_provides() -> None:
    r = _all()
    text = r["ConfigMap"]["data"]["gateway.yaml"]
    secret_env = {k: (v or "x") for k, v in r["Secret"]["stringData"].items()}
    config = load_config_data(parse_yaml_text(text), "k8s ConfigMap gateway.yaml", env=secret_env)
    assert config.gateway.ledger_url.startswith("postgresql://")
    assert config.gateway.redis_url and config.gateway.redis_url.startswith("redis://")
    dep = r["Deployment"]
    (container,) = dep["spec"]["template"]["spec"]["containers"]
    assert {"secretRef": {"name": r["Secret"]["metadata"]["name"]}} in container["envFrom"]
    volumes = {v["name"]: v for v in dep["spec"]["template"]["spec"]["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert volumes[mounts["/etc/gateway"]]["configMap"]["name"] == r["ConfigMap"]["metadata"]["name"]
    assert container["args"][container["args"].index("--config") + 1] == "/etc/gateway/gateway.yaml"


def test_kustomization_lists_existing_core_manifests() -> None:
    kustomization = _all()["Kustomization"]
    for resource in kustomization["resources"]:
        assert (K8S / resource).is_file(), resource
    assert set(kustomization["resources"]) == set(CORE_FILES) - {"kustomization.yaml"}


def test_the_ledger_spool_is_a_persistent_volume_every_pod_mounts_at_spool_dir() -> None:
    r = _all()
    secret_env = {k: (v or "x") for k, v in r["Secret"]["stringData"].items()}
    config = load_config_data(parse_yaml_text(r["ConfigMap"]["data"]["gateway.yaml"]), "k8s", env=secret_env)
    pod = r["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volume = {v["name"]: v for v in pod["volumes"]}[mounts[config.gateway.spool_dir]]
    claim = r["PersistentVolumeClaim"]
    assert volume["persistentVolumeClaim"]["claimName"] == claim["metadata"]["name"]
    assert "ReadWriteMany" in claim["spec"]["accessModes"]  # any pod can replay a dead pod's journal
