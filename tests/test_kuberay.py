"""The KubeRay manifests (deploy/kuberay/) against the RayJob and RayService CRDs' schemas, and
against the platform itself: the configs they name load, the Serve app's args are a ServeSpec, the
Ray version is the pinned one, the image is deploy/Dockerfile's. Nothing here reaches a Kubernetes
cluster (none is available): what a cluster would refuse or silently prune is checked offline.

The schema below holds the CRDs' facts these manifests rely on (KubeRay's
ray-operator/config/crd/bases/ray.io_rayjobs.yaml and ray.io_rayservices.yaml, API version ray.io/v1,
read for facts): field names and types, required fields, rayStartParams' string values, resource
quantities. Unknown fields are refused here; the API server's structural schema would drop them
without a word, which is the failure worth catching.
"""

from pathlib import Path

import jsonschema
import pytest
import yaml

from checkout import REPO_ROOT
from mqt_llava.config import load_config
from mqt_llava.serve.settings import ServeSpec
from mqt_llava.train.spec import StageSpec

KUBERAY = REPO_ROOT / "deploy" / "kuberay"
QUANTITY = {"anyOf": [{"type": "integer"}, {"type": "string", "pattern": r"^[0-9]+(\.[0-9]+)?([KMGTPE]i|[mkMGTPE])?$"}]}
CONTAINER = {
    "type": "object",
    "required": ["name"],
    "additionalProperties": False,
    "properties": {
        name: {}
        for name in (
            "args",
            "command",
            "env",
            "envFrom",
            "image",
            "imagePullPolicy",
            "lifecycle",
            "livenessProbe",
            "name",
            "ports",
            "readinessProbe",
            "resizePolicy",
            "resources",
            "restartPolicy",
            "restartPolicyRules",
            "securityContext",
            "startupProbe",
            "stdin",
            "stdinOnce",
            "terminationMessagePath",
            "terminationMessagePolicy",
            "tty",
            "volumeDevices",
            "volumeMounts",
            "workingDir",
        )
    }
    | {
        "name": {"type": "string"},
        "image": {"type": "string"},
        "resources": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                "claims": {"type": "array"},
                "limits": {"type": "object", "additionalProperties": QUANTITY},
                "requests": {"type": "object", "additionalProperties": QUANTITY},
            },
        },
        "env": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "additionalProperties": False,
                "properties": {
                    "name": {"type": "string"},
                    "value": {"type": "string"},
                    "valueFrom": {"type": "object"},
                },
            },
        },
    },
}
POD_SPEC_FIELDS = (
    "activeDeadlineSeconds",
    "affinity",
    "automountServiceAccountToken",
    "containers",
    "dnsConfig",
    "dnsPolicy",
    "enableServiceLinks",
    "ephemeralContainers",
    "hostAliases",
    "hostIPC",
    "hostNetwork",
    "hostPID",
    "hostUsers",
    "hostname",
    "hostnameOverride",
    "imagePullSecrets",
    "initContainers",
    "nodeName",
    "nodeSelector",
    "os",
    "overhead",
    "preemptionPolicy",
    "priority",
    "priorityClassName",
    "readinessGates",
    "resourceClaims",
    "resources",
    "restartPolicy",
    "runtimeClassName",
    "schedulerName",
    "schedulingGates",
    "schedulingGroup",
    "securityContext",
    "serviceAccount",
    "serviceAccountName",
    "setHostnameAsFQDN",
    "shareProcessNamespace",
    "subdomain",
    "terminationGracePeriodSeconds",
    "tolerations",
    "topologySpreadConstraints",
    "volumes",
)
TEMPLATE = {
    "type": "object",
    "required": ["spec"],
    "additionalProperties": False,
    "properties": {
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "required": ["containers"],
            "additionalProperties": False,
            "properties": {name: {} for name in POD_SPEC_FIELDS}
            | {
                "containers": {"type": "array", "minItems": 1, "items": CONTAINER},
                "volumes": {"type": "array", "items": {"type": "object", "required": ["name"]}},
            },
        },
    },
}
START_PARAMS = {"type": "object", "additionalProperties": {"type": "string"}}  # "8", not 8
CLUSTER = {
    "type": "object",
    "required": ["headGroupSpec"],
    "additionalProperties": False,
    "properties": {
        name: {}
        for name in (
            "authOptions",
            "autoscalerOptions",
            "enableInTreeAutoscaling",
            "gcsFaultToleranceOptions",
            "headGroupSpec",
            "headServiceAnnotations",
            "historyServerOptions",
            "managedBy",
            "networkPolicy",
            "rayVersion",
            "suspend",
            "tlsOptions",
            "upgradeStrategy",
            "workerGroupSpecs",
        )
    }
    | {
        "rayVersion": {"type": "string"},
        "enableInTreeAutoscaling": {"type": "boolean"},
        "headGroupSpec": {
            "type": "object",
            "required": ["template"],
            "additionalProperties": False,
            "properties": {
                name: {}
                for name in ("enableIngress", "headService", "ingressOptions", "labels", "resources", "serviceType")
            }
            | {"rayStartParams": START_PARAMS, "template": TEMPLATE},
        },
        "workerGroupSpecs": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["groupName", "maxReplicas", "minReplicas", "template"],
                "additionalProperties": False,
                "properties": {
                    name: {}
                    for name in (
                        "idleTimeoutSeconds",
                        "labels",
                        "numOfHosts",
                        "priority",
                        "resources",
                        "scaleStrategy",
                        "suspend",
                    )
                }
                | {
                    "groupName": {"type": "string"},
                    "replicas": {"type": "integer"},
                    "minReplicas": {"type": "integer"},
                    "maxReplicas": {"type": "integer"},
                    "rayStartParams": START_PARAMS,
                    "template": TEMPLATE,
                },
            },
        },
    },
}
RAYJOB = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "ray.io/v1"},
        "kind": {"const": "RayJob"},
        "spec": {
            "type": "object",
            "additionalProperties": False,
            "properties": {
                name: {}
                for name in (
                    "activeDeadlineSeconds",
                    "clusterSelector",
                    "deletionStrategy",
                    "entrypointNumCpus",
                    "entrypointNumGpus",
                    "entrypointResources",
                    "jobId",
                    "managedBy",
                    "metadata",
                    "preRunningDeadlineSeconds",
                    "submitterConfig",
                    "submitterPodTemplate",
                    "suspend",
                )
            }
            | {
                "entrypoint": {"type": "string"},
                "runtimeEnvYAML": {"type": "string"},
                "shutdownAfterJobFinishes": {"type": "boolean"},
                "ttlSecondsAfterFinished": {"type": "integer"},
                "backoffLimit": {"type": "integer"},
                "rayClusterSpec": CLUSTER,
                "submissionMode": {"enum": ["K8sJobMode", "HTTPMode", "InteractiveMode", "SidecarMode"]},
            },
        },
    },
}
RAYSERVICE = {
    "type": "object",
    "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "ray.io/v1"},
        "kind": {"const": "RayService"},
        "spec": {
            "type": "object",
            "required": ["rayClusterConfig"],
            "additionalProperties": False,
            "properties": {
                name: {}
                for name in (
                    "deploymentUnhealthySecondThreshold",
                    "excludeHeadPodFromServeSvc",
                    "managedBy",
                    "rayClusterDeletionDelaySeconds",
                    "serveService",
                    "serviceUnhealthySecondThreshold",
                    "suspend",
                    "upgradeStrategy",
                )
            }
            | {"serveConfigV2": {"type": "string"}, "rayClusterConfig": CLUSTER},
        },
    },
}


def manifest(name: str) -> dict:
    return yaml.safe_load((KUBERAY / name).read_text())


def pinned(package: str) -> str:
    lines = (REPO_ROOT / "constraints.txt").read_text().splitlines()
    return next(line.split("==")[1] for line in lines if line.startswith(f"{package}=="))


def image_tag() -> str:
    dockerfile = (REPO_ROOT / "deploy" / "Dockerfile").read_text()
    return next(line.split("-t ")[1].split()[0] for line in dockerfile.splitlines() if "docker build" in line)


def containers(cluster: dict) -> list[dict]:
    groups = [cluster["headGroupSpec"], *cluster.get("workerGroupSpecs", [])]
    return [c for g in groups for c in g["template"]["spec"]["containers"]]


@pytest.mark.parametrize("stage", ["stage1", "stage2"])
def test_the_stage_rayjobs_fit_the_crd_and_run_the_papers_configs(stage):
    job = manifest(f"rayjob-{stage}.yaml")
    jsonschema.validate(job, RAYJOB)
    cluster = job["spec"]["rayClusterSpec"]
    assert cluster["rayVersion"] == pinned("ray")
    assert {c["image"] for c in containers(cluster)} == {image_tag()}
    words = job["spec"]["entrypoint"].split()
    assert words[:2] == ["python", f"/app/jobs/{stage}.py"] and (REPO_ROOT / "jobs" / f"{stage}.py").exists()
    spec = load_config(StageSpec, words[words.index("--config") + 1])
    gpus = sum(
        int(g["replicas"]) * int(g["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"])
        for g in cluster["workerGroupSpecs"]
    )
    assert spec.stage == stage and spec.num_workers == gpus  # one Ray Train worker per GPU the cluster has


def test_the_rayservice_fits_the_crd_and_its_app_args_are_a_serve_spec():
    service = manifest("rayservice.yaml")
    jsonschema.validate(service, RAYSERVICE)
    cluster = service["spec"]["rayClusterConfig"]
    assert cluster["rayVersion"] == pinned("ray") and {c["image"] for c in containers(cluster)} == {image_tag()}
    serve = yaml.safe_load(service["spec"]["serveConfigV2"])
    (app,) = serve["applications"]
    assert app["import_path"] == "mqt_llava.serve.app:build"
    spec = ServeSpec(**app["args"])
    assert spec.use_gpu is True
    (workers,) = cluster["workerGroupSpecs"]
    assert sum(t.max_replicas for t in spec.tiers) <= workers["maxReplicas"]  # one GPU per tier replica


def head(job):
    return job["spec"]["rayClusterSpec"]["headGroupSpec"]


def workers(job):
    return job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]


@pytest.mark.parametrize(
    ("edit", "error"),
    [
        (lambda j: head(j)["rayStartParams"].update({"num-cpus": 0}), "is not of type 'string'"),
        (lambda j: j["spec"].update({"entryPoint": "python x.py"}), "Additional properties"),
        (lambda j: workers(j).pop("maxReplicas"), "'maxReplicas' is a required"),
        (lambda j: j["spec"].update({"submissionMode": "K8sMode"}), "is not one of"),
    ],
)
def test_the_schema_refuses_what_a_cluster_would_refuse_or_silently_drop(edit, error):
    job = manifest("rayjob-stage1.yaml")
    edit(job)
    with pytest.raises(jsonschema.ValidationError, match=error):
        jsonschema.validate(job, RAYJOB)


def test_the_image_installs_as_the_readme_does():
    dockerfile = (REPO_ROOT / "deploy" / "Dockerfile").read_text()
    readme = (REPO_ROOT / "README.md").read_text()
    assert f"torch=={pinned('torch')}" in dockerfile and f"pip install torch=={pinned('torch')}" in readme
    assert "PIP_CONSTRAINT=constraints.txt pip install" in dockerfile and "PIP_CONSTRAINT=constraints.txt pip" in readme
    copied = {line.split()[1] for line in dockerfile.splitlines() if line.startswith("COPY ")}
    assert {"platform", "jobs"} <= copied and all(Path(REPO_ROOT / p).exists() for p in copied)
