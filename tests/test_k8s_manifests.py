"""deploy/k8s/, checked offline: every object each kustomization builds is valid for Kubernetes 1.30 (the schemas
kubernetes-validate bundles, strict: unknown fields refused) or, for KEDA's kinds, for the schema cut from KEDA's
CRD (tests/schemas/keda_v1alpha1.json); and the manifests agree with the code they deploy: probe paths and ports,
grace periods, setting names, Secret keys, the queue KEDA watches, the deploy check's command.

The kustomizations are built here (resources, patches, images, namespace, labels: the features deploy/k8s uses; any
other key is refused), so no kubectl or kustomize binary is needed.
"""

from __future__ import annotations

import copy
import inspect
import json
from pathlib import Path
from typing import Any

import httpx
import jsonschema
import kubernetes_validate
import pytest
import yaml
from prometheus_client import CollectorRegistry

from framework.metrics_server import Readiness, metrics_app
from framework.service.sdk import Service
from framework.settings import Settings
from framework.worker import Worker
from gateway.auth import ApiKeys
from gateway.routes import system

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "deploy" / "k8s"
KUBERNETES_VERSION = "1.30.0"
KEDA_SCHEMA = json.loads((Path(__file__).parent / "schemas" / "keda_v1alpha1.json").read_text())
KUSTOMIZATIONS = ["base", "deploy-check", "overlays/example", "overlays/example/deploy-check"]
OVERLAY = K8S / "overlays" / "example"
SECRET_EXAMPLE = OVERLAY / "secret.example.yaml"
SHUTDOWN_MARGIN_S = 10  # closing the broker and the store after the drain
ROLES = {"worker": "stageflow-worker", "services": "stageflow-services", "gateway": "stageflow-gateway"}

Obj = dict[str, Any]


class KustomizeError(Exception):
    pass


# --- building a kustomization --------------------------------------------------------------------------------------

_KNOWN_KEYS = {"apiVersion", "kind", "resources", "patches", "images", "namespace", "labels"}


def build(directory: Path) -> list[Obj]:
    """The objects ``kubectl kustomize directory`` would print, for the features deploy/k8s uses."""
    spec = yaml.safe_load((directory / "kustomization.yaml").read_text())
    if unknown := set(spec) - _KNOWN_KEYS:
        raise KustomizeError(f"{directory}: kustomization keys this test does not build: {sorted(unknown)}")
    objects: list[Obj] = []
    for entry in spec.get("resources", []):
        path = (directory / entry).resolve()
        if path.is_dir():
            objects += build(path)
        else:
            objects += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    for patch in spec.get("patches", []):
        body = yaml.safe_load((directory / patch["path"]).read_text())
        target = [o for o in objects if _id(o) == _id(body)]
        if len(target) != 1:
            raise KustomizeError(f"{directory / patch['path']} patches {_id(body)}, which the resources do not have")
        _merge(target[0], body)
    for image in spec.get("images", []):
        for container in (c for o in objects for c in _containers(o)):
            if container["image"].split(":")[0] == image["name"]:
                container["image"] = f"{image.get('newName', image['name'])}:{image['newTag']}"
    for rule in spec.get("labels", []):
        for obj in objects:
            obj["metadata"].setdefault("labels", {}).update(rule["pairs"])
    if "namespace" in spec:
        for obj in objects:
            obj["metadata"]["namespace"] = spec["namespace"]
    return objects


def _id(obj: Obj) -> tuple[str, str, str]:
    return obj["apiVersion"].split("/")[0], obj["kind"], obj["metadata"]["name"]


def _merge(into: Obj, patch: Obj) -> None:
    """A strategic merge as far as deploy/k8s needs it: maps merge, lists of named items merge by name."""
    for key, value in patch.items():
        old = into.get(key)
        if isinstance(value, dict) and isinstance(old, dict):
            _merge(old, value)
        elif isinstance(value, list) and isinstance(old, list) and all(isinstance(v, dict) and "name" in v
                                                                      for v in (*value, *old)):
            by_name = {item["name"]: item for item in old}
            for item in value:
                if item["name"] in by_name:
                    _merge(by_name[item["name"]], item)
                else:
                    old.append(copy.deepcopy(item))
        else:
            into[key] = copy.deepcopy(value)


def _pod(obj: Obj) -> Obj | None:
    return obj["spec"]["template"]["spec"] if obj["kind"] in ("Deployment", "Job") else None


def _containers(obj: Obj) -> list[Obj]:
    pod = _pod(obj)
    return [*pod.get("initContainers", []), *pod["containers"]] if pod else []


def one(objects: list[Obj], kind: str, name: str) -> Obj:
    found = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} objects"
    return found[0]


@pytest.fixture(scope="module")
def built() -> dict[str, list[Obj]]:
    return {name: build(K8S / name) for name in KUSTOMIZATIONS}


@pytest.fixture(scope="module")
def overlay(built: dict[str, list[Obj]]) -> list[Obj]:
    return built["overlays/example"]


def secret_example() -> Obj:
    secret: Obj = yaml.safe_load(SECRET_EXAMPLE.read_text())
    return secret


def config_data(objects: list[Obj]) -> dict[str, str]:
    data: dict[str, str] = one(objects, "ConfigMap", "stageflow-config")["data"]
    return data


# --- schemas -------------------------------------------------------------------------------------------------------

def validate(obj: Obj) -> None:
    if obj["apiVersion"].startswith("keda.sh/"):
        jsonschema.validate(obj, KEDA_SCHEMA[obj["kind"]])
    else:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("name", KUSTOMIZATIONS)
def test_every_object_a_kustomization_builds_is_valid(built: dict[str, list[Obj]], name: str) -> None:
    objects = built[name]
    assert objects
    for obj in objects:
        validate(obj)


def test_the_secret_example_is_a_valid_secret() -> None:
    validate(secret_example())


def test_the_validation_refuses_what_kubernetes_and_keda_would(overlay: list[Obj]) -> None:
    deployment = copy.deepcopy(one(overlay, "Deployment", "stageflow-worker"))
    deployment["spec"]["template"]["spec"]["containers"][0]["livenessprobe"] = {}  # a typo: strict mode refuses it
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(deployment)
    scaled = copy.deepcopy(one(overlay, "ScaledObject", "stageflow-worker"))
    scaled["spec"]["maxReplicas"] = 3  # not a ScaledObject field (maxReplicaCount is)
    with pytest.raises(jsonschema.ValidationError):
        validate(scaled)


def test_a_patch_of_an_object_that_is_not_there_is_refused(tmp_path: Path) -> None:
    (tmp_path / "kustomization.yaml").write_text(
        f"resources: [{K8S / 'base'}]\npatches: [{{path: typo.yaml}}]\n")
    (tmp_path / "typo.yaml").write_text("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: stageflow-wroker}\n")
    with pytest.raises(KustomizeError, match="stageflow-wroker"):
        build(tmp_path)


def test_the_overlays_patches_reached_their_objects(built: dict[str, list[Obj]], overlay: list[Obj]) -> None:
    assert one(overlay, "Deployment", "stageflow-gateway")["spec"]["replicas"] == 3
    assert one(overlay, "ScaledObject", "stageflow-worker")["spec"]["maxReplicaCount"] == 20
    assert config_data(overlay)["STAGEFLOW_LOG_LEVEL"] == "INFO"
    assert config_data(overlay)["STAGEFLOW_METRICS_PORT"] == config_data(built["base"])["STAGEFLOW_METRICS_PORT"]
    for obj in overlay + built["overlays/example/deploy-check"]:
        assert obj["metadata"]["namespace"] == "stageflow"
        for container in _containers(obj):
            assert container["image"] == "registry.example.com/stageflow:1.4.0", obj["metadata"]["name"]


# --- the roles -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("role", ROLES)
def test_each_role_rolls_one_pod_at_a_time_as_a_locked_down_user(overlay: list[Obj], role: str) -> None:
    deployment = one(overlay, "Deployment", ROLES[role])
    assert deployment["spec"]["strategy"] == {"type": "RollingUpdate",
                                              "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    pod = deployment["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    for container in pod["containers"]:
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        assert "memory" in container["resources"]["limits"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    budgets = [o for o in overlay if o["kind"] == "PodDisruptionBudget"
               and o["spec"]["selector"]["matchLabels"].items() <= labels.items()]
    assert len(budgets) == 1, f"{role}: {len(budgets)} disruption budgets select its pods"
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()


def _port(container: Obj, probe: Obj) -> int:
    port = probe["httpGet"]["port"]
    numbers = {p["name"]: p["containerPort"] for p in container["ports"]}
    return int(numbers.get(port, port))


async def test_worker_and_services_probes_ask_what_their_metrics_server_serves(overlay: list[Obj]) -> None:
    metrics_port = int(config_data(overlay)["STAGEFLOW_METRICS_PORT"])
    for role in ("worker", "services"):
        container = one(overlay, "Deployment", ROLES[role])["spec"]["template"]["spec"]["containers"][0]
        probes = {kind: container[kind] for kind in ("startupProbe", "livenessProbe", "readinessProbe")}
        assert {kind: p["httpGet"]["path"] for kind, p in probes.items()} == {
            "startupProbe": "/healthz", "livenessProbe": "/healthz", "readinessProbe": "/readyz"}, role
        assert {_port(container, p) for p in probes.values()} == {metrics_port}, role
    readiness = Readiness()
    transport = httpx.ASGITransport(app=metrics_app(CollectorRegistry(), readiness))
    async with httpx.AsyncClient(transport=transport, base_url="http://pod") as http:
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get("/readyz")).status_code == 503  # not consuming yet
        readiness.consuming()
        assert (await http.get("/readyz")).status_code == 200
        readiness.stopping()
        assert (await http.get("/readyz")).status_code == 503  # draining


def test_the_gateway_probes_ask_its_own_health_routes_on_its_port(overlay: list[Obj]) -> None:
    deployment = one(overlay, "Deployment", ROLES["gateway"])
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    command = container["command"]
    listening = int(command[command.index("--port") + 1])
    served = {route.path for route in system.router(ApiKeys(read=[], operate=[], insecure=True)).routes}
    for kind, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        assert container[kind]["httpGet"]["path"] == path and path in served
        assert _port(container, container[kind]) == listening
    service = one(overlay, "Service", "stageflow-gateway")
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    assert [p["targetPort"] for p in service["spec"]["ports"]] == ["http"]
    assert {p["name"]: p["containerPort"] for p in container["ports"]}["http"] == listening


def _stop_timeout(method: Any) -> float:
    return float(inspect.signature(method).parameters["timeout_s"].default)


def test_grace_periods_cover_the_drain(overlay: list[Obj]) -> None:
    def grace(role: str) -> int:
        return int(one(overlay, "Deployment", ROLES[role])["spec"]["template"]["spec"]
                   ["terminationGracePeriodSeconds"])

    # framework/hosting.py: the hosted HTTP adapter's requests finish (Service.stop), then the worker's transitions
    assert grace("worker") >= _stop_timeout(Service.stop) + _stop_timeout(Worker.stop) + SHUTDOWN_MARGIN_S
    # framework/cli.py `services`: every API's Service.stop side by side
    assert grace("services") >= _stop_timeout(Service.stop) + SHUTDOWN_MARGIN_S
    command = one(overlay, "Deployment", ROLES["worker"])["spec"]["template"]["spec"]["containers"][0]["command"]
    assert command == ["stageflow", "worker"]


# --- settings, secrets, KEDA, the deploy check ---------------------------------------------------------------------

SETTINGS = {f"STAGEFLOW_{name.upper()}" for name in Settings.model_fields}


def _env_names(objects: list[Obj]) -> set[str]:
    names = {e["name"] for o in objects for c in _containers(o) for e in c.get("env", [])}
    return names | {key for o in objects if o["kind"] == "ConfigMap" for key in o["data"]}


def test_every_stageflow_variable_is_a_real_setting(built: dict[str, list[Obj]]) -> None:
    used = {n for objects in built.values() for n in _env_names(objects) if n.startswith("STAGEFLOW_")}
    assert used and used <= SETTINGS, sorted(used - SETTINGS)
    # which cases run is the release's code: its image's, never the environment's (see base/configmap.yaml)
    assert not used & {"STAGEFLOW_CASES", "STAGEFLOW_BLUEPRINTS"}


def test_every_secret_reference_names_a_key_the_example_documents(built: dict[str, list[Obj]]) -> None:
    secret = secret_example()
    documented = {(secret["metadata"]["name"], key) for key in secret["stringData"]}
    referenced = {(e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
                  for objects in built.values() for o in objects for c in _containers(o)
                  for e in c.get("env", []) if "secretKeyRef" in e.get("valueFrom", {})}
    referenced |= {(ref["name"], ref["key"]) for objects in built.values() for o in objects
                   if o["kind"] == "TriggerAuthentication" for ref in o["spec"]["secretTargetRef"]}
    assert referenced and referenced <= documented, sorted(referenced - documented)
    assert referenced == documented, f"documented but unused: {sorted(documented - referenced)}"


def test_keda_scales_the_workers_on_the_inner_queue(overlay: list[Obj]) -> None:
    scaled = one(overlay, "ScaledObject", "stageflow-worker")
    assert scaled["spec"]["scaleTargetRef"]["name"] == ROLES["worker"]
    [trigger] = scaled["spec"]["triggers"]
    assert trigger["type"] == "rabbitmq" and trigger["metadata"]["mode"] == "QueueLength"
    assert trigger["metadata"]["queueName"] == f"{config_data(overlay)['STAGEFLOW_QUEUE_PREFIX']}.inner"
    auth = one(overlay, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    assert [ref["parameter"] for ref in auth["spec"]["secretTargetRef"]] == ["host"]
    assert "replicas" not in one(overlay, "Deployment", ROLES["worker"])["spec"]  # KEDA owns the count


def test_the_deploy_check_runs_the_releases_image_once(built: dict[str, list[Obj]], overlay: list[Obj]) -> None:
    [job] = built["overlays/example/deploy-check"]
    assert job["kind"] == "Job" and job["spec"]["backoffLimit"] == 0
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["stageflow", "deploy", "check"]
    rollout_image = one(overlay, "Deployment", ROLES["worker"])["spec"]["template"]["spec"]["containers"][0]["image"]
    assert container["image"] == rollout_image
    assert not [o for o in overlay if o["kind"] == "Job"], "the check is applied on its own, before the rollout"
