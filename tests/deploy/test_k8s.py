"""deploy/k8s rendered per overlay (with tests/deploy/kustomize.py, or the real kustomize when
installed) and checked offline: Kubernetes schemas (kubernetes-validate, strict), KEDA's
ScaledObject schema, hardening of every Deployment, autoscaling bounds against the topic
registry, secret and settings wiring."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from referral_events import TopicRegistry

from .kustomize import build

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
OVERLAYS = ("local", "production")
# Oldest and newest Kubernetes minor the manifests must validate against.
KUBERNETES_VERSIONS = ("1.28.0", kubernetes_validate.utils.latest_version())
KEDA_SCHEMA = json.loads((Path(__file__).parent / "schemas" /
                          "keda-scaledobject.schema.json").read_text())

WORKLOADS = {"tracker": 8001, "attribution": 8004, "rewards-api": 8002,
             "rewards-worker": 8005, "notifier": 8003}
HTTP_AUTOSCALED = {"tracker", "rewards-api"}


def consumed(registry: TopicRegistry) -> dict[str, set[tuple[str, str]]]:
    """What each Kafka worker consumes: {(consumer group, topic)}, as the services' code has
    it (test_consumer_groups_are_the_services_own checks the group names against it)."""
    p = registry.prefix
    return {
        "attribution": {(f"{p}referral-attribution", registry.clicks.name),
                        (f"{p}referral-attribution", registry.conversions.name)},
        "rewards-worker": {(f"{p}rewards-worker", registry.attributions.name),
                           (f"{p}rewards-reversals", registry.reversals.name),
                           (f"{p}rewards-stats", registry.stats.name)},
        "notifier": {(f"{p}notifier", registry.rewards.name)},
    }


# Where each group name is built in the services' code (a rename there must show up here).
GROUP_SOURCES = {
    "referral-attribution": "services/attribution/src/attribution/config.py",
    "rewards-worker": "services/rewards/src/rewards/worker/run.py",
    "rewards-reversals": "services/rewards/src/rewards/worker/run.py",
    "rewards-stats": "services/rewards/src/rewards/worker/run.py",
    "notifier": "services/notifier/src/notifier/app.py",
}


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, build(K8S / "overlays" / request.param)


def of_kind(docs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def config_of(docs: list[dict[str, Any]]) -> dict[str, str]:
    return of_kind(docs, "ConfigMap")["referral-config"]["data"]


def pod_specs(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {f"{d['kind']}/{d['metadata']['name']}": d["spec"]["template"]["spec"]
            for d in docs if d["kind"] in ("Deployment", "Job")}


def test_base_renders_and_overlays_keep_every_resource():
    base = {(d["kind"], d["metadata"]["name"]) for d in build(K8S / "base")}
    for name in OVERLAYS:
        rendered = {(d["kind"], d["metadata"]["name"]) for d in build(K8S / "overlays" / name)}
        assert base <= rendered


def test_valid_against_kubernetes_schemas(overlay):
    name, docs = overlay
    for doc in docs:
        where = f"{name}: {doc['kind']}/{doc['metadata']['name']}"
        if doc["kind"] == "ScaledObject":
            jsonschema.validate(doc, KEDA_SCHEMA)
            behavior = doc["spec"].get("advanced", {}).get(
                "horizontalPodAutoscalerConfig", {}).get("behavior")
            if behavior:  # KEDA hands it to the HPA it creates: check it as the HPA's own
                doc = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                       "metadata": {"name": "keda-hpa"},
                       "spec": {"scaleTargetRef": {"kind": "Deployment", "name": "x"},
                                "maxReplicas": 1, "behavior": behavior}}
            else:
                continue
        for version in KUBERNETES_VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                path = ".".join(str(p) for p in exc.path)
                pytest.fail(f"{where} invalid for Kubernetes {version}: {path}: {exc.message}")


def test_every_workload_has_deployment_service_and_disruption_budget(overlay):
    _, docs = overlay
    deployments, services, pdbs = (of_kind(docs, k) for k in
                                   ("Deployment", "Service", "PodDisruptionBudget"))
    assert set(deployments) == set(WORKLOADS)
    for name, port in WORKLOADS.items():
        deployment = deployments[name]
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector.items() <= pod_labels.items()
        assert services[name]["spec"]["selector"].items() <= pod_labels.items()
        assert pdbs[name]["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
        assert "maxUnavailable" in pdbs[name]["spec"] or "minAvailable" in pdbs[name]["spec"]
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["ports"] == [{"name": "http", "containerPort": port}]
        assert services[name]["spec"]["ports"][0]["targetPort"] == "http"


def test_deployments_have_probes_resources_and_security_context(overlay):
    name, docs = overlay
    for key, pod in pod_specs(docs).items():
        where = f"{name}: {key}"
        assert pod["securityContext"]["runAsNonRoot"] is True, where
        assert pod["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
        assert pod["automountServiceAccountToken"] is False, where
        assert pod["enableServiceLinks"] is False, where  # no FOO_PORT=tcp://... clashes
        tmp = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
        for container in pod.get("initContainers", []) + pod["containers"]:
            c_where = f"{where}/{container['name']}"
            sc = container["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, c_where
            assert sc["allowPrivilegeEscalation"] is False, c_where
            assert sc["runAsNonRoot"] is True, c_where
            assert sc["capabilities"]["drop"] == ["ALL"], c_where
            for kind in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(container["resources"][kind]), c_where
            assert any(m["mountPath"] == "/tmp" and m["name"] in tmp
                       for m in container["volumeMounts"]), c_where
        if key.startswith("Deployment/"):
            (container,) = pod["containers"]
            assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
            assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
            assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
            app = key.split("/", 1)[1]
            spread = pod["topologySpreadConstraints"]
            assert {c["topologyKey"] for c in spread} >= {"topology.kubernetes.io/zone",
                                                          "kubernetes.io/hostname"}
            for constraint in spread:
                assert constraint["labelSelector"]["matchLabels"] == {
                    "app.kubernetes.io/name": app}


def test_http_services_scale_on_cpu(overlay):
    _, docs = overlay
    hpas = of_kind(docs, "HorizontalPodAutoscaler")
    assert set(hpas) == HTTP_AUTOSCALED
    for name, hpa in hpas.items():
        spec = hpa["spec"]
        assert spec["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment",
                                          "name": name}
        assert 1 <= spec["minReplicas"] <= spec["maxReplicas"]
        (metric,) = spec["metrics"]
        assert metric["resource"]["name"] == "cpu"


def test_keda_max_replicas_equal_partition_counts(overlay):
    """A consumer group spreads a topic's partitions over its members: replicas beyond the
    partition count would idle, so each ScaledObject stops there."""
    _, docs = overlay
    config = config_of(docs)
    registry = TopicRegistry(config["TOPIC_PREFIX"], int(config["TOPIC_PARTITIONS"]))
    expected = consumed(registry)
    scaled = of_kind(docs, "ScaledObject")
    assert set(scaled) == set(expected)
    deployments = of_kind(docs, "Deployment")
    for name, obj in scaled.items():
        spec = obj["spec"]
        assert spec["scaleTargetRef"]["name"] == name and name in deployments
        triggers = spec["triggers"]
        assert {t["type"] for t in triggers} == {"kafka"}
        assert {(t["metadata"]["consumerGroup"], t["metadata"]["topic"])
                for t in triggers} == expected[name]
        partitions = {registry.by_name(t["metadata"]["topic"]).partitions for t in triggers}
        assert spec["maxReplicaCount"] == max(partitions) == 4
        assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
        for trigger in triggers:
            meta = trigger["metadata"]
            assert meta["allowIdleConsumers"] == "false"
            # The broker address comes from the workload's own settings (KEDA reads the
            # container's environment), so the ConfigMap is the one place to change it.
            assert meta["bootstrapServersFromEnv"] == "KAFKA_BOOTSTRAP_SERVERS"
        container = deployments[name]["spec"]["template"]["spec"]["containers"][0]
        assert {"configMapRef": {"name": "referral-config"}} in container["envFrom"]
        # KEDA owns the replica count; a Deployment floor below it would only flap.
        assert deployments[name]["spec"]["replicas"] <= spec["minReplicaCount"]


def test_consumer_groups_are_the_services_own():
    from attribution.config import AttributionSettings

    assert AttributionSettings.model_fields["app_id"].default == "referral-attribution"
    for group, source in GROUP_SOURCES.items():
        if group == "referral-attribution":
            continue
        text = (ROOT / source).read_text()
        assert f'{{settings.topic_prefix}}{group}"' in text, f"group {group} not in {source}"


def test_secrets_are_secret_and_wired(overlay):
    name, docs = overlay
    config = config_of(docs)
    secretish = re.compile(r"TOKEN|SECRET|PASSWORD|SALT|DATABASE_URL")
    assert not [k for k in config if secretish.search(k)], "secrets belong in the Secret"
    required: set[str] = set()
    for key, pod in pod_specs(docs).items():
        for container in pod.get("initContainers", []) + pod["containers"]:
            assert {"configMapRef": {"name": "referral-config"}} in container["envFrom"]
            for var in container.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] == "referral-secrets", key
                    if not ref.get("optional"):
                        required.add(ref["key"])
                elif secretish.search(var["name"]):
                    pytest.fail(f"{key}: {var['name']} is given as a plain value")
    secrets = of_kind(docs, "Secret")
    if name == "production":
        assert secrets == {}, "production secrets are created out of band, never from git"
    else:
        assert required <= set(secrets["referral-secrets"]["stringData"])


def test_config_keys_are_documented_settings(overlay):
    _, docs = overlay
    documented = set(re.findall(r"^#?\s*([A-Z][A-Z0-9_]+)=", (ROOT / ".env.example").read_text(),
                                re.M))
    assert set(config_of(docs)) <= documented


def test_setup_job_creates_topics_and_migrates(overlay):
    _, docs = overlay
    job = of_kind(docs, "Job")["referral-setup"]
    pod = job["spec"]["template"]["spec"]
    steps = [c["command"] for c in pod.get("initContainers", []) + pod["containers"]]
    assert steps == [["referral-topics"], ["rewards", "migrate"], ["notifier", "migrate"]]
    assert pod["restartPolicy"] == "Never"
    assert job["spec"]["backoffLimit"] >= 1


def test_images_are_tagged(overlay):
    name, docs = overlay
    for pod in pod_specs(docs).values():
        for container in pod.get("initContainers", []) + pod["containers"]:
            image = container["image"]
            tag = image.rpartition(":")[2]
            assert ":" in image and tag != "latest", image
            if name == "production":
                assert re.fullmatch(r"\d+\.\d+\.\d+", tag), image


@pytest.mark.skipif(not shutil.which("kustomize"), reason="no kustomize binary on PATH; "
                    "tests/deploy/kustomize.py renders the overlays instead")
def test_python_renderer_agrees_with_kustomize(overlay):
    name, docs = overlay
    out = subprocess.run(["kustomize", "build", str(K8S / "overlays" / name)],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    real = [d for d in yaml.safe_load_all(out) if d]

    def key(d: dict[str, Any]) -> tuple[str, str]:
        return d["kind"], d["metadata"]["name"]

    assert sorted(real, key=key) == sorted(docs, key=key)
