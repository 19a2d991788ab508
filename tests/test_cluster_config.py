"""cluster.yaml against the JSON schema Ray ships for cluster launcher configs, plus the project's
own requirements of it."""

import json
from pathlib import Path

import jsonschema
import ray
import yaml

from checkout import REPO_ROOT

CLUSTER = yaml.safe_load((REPO_ROOT / "cluster.yaml").read_text())
SCHEMA = json.loads((Path(ray.__file__).parent / "autoscaler" / "ray-schema.json").read_text())


def test_cluster_yaml_is_valid_for_the_ray_cluster_launcher():
    jsonschema.validate(CLUSTER, SCHEMA)


def test_a_broken_cluster_yaml_is_caught_by_the_same_check():
    broken = {**CLUSTER, "available_node_types": {"head": {"node_config": {}}}}  # no `resources`
    try:
        jsonschema.validate(broken, SCHEMA)
    except jsonschema.ValidationError as exc:
        assert "resources" in exc.message
    else:
        raise AssertionError("an invalid node type passed the schema")


def test_nodes_are_a_cpu_head_and_8_gpu_workers_within_max_workers():
    nodes = CLUSTER["available_node_types"]
    head = nodes[CLUSTER["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0 and head["max_workers"] == 0
    workers = [n for name, n in nodes.items() if name != CLUSTER["head_node_type"]]
    assert workers and all(w["resources"]["GPU"] == 8 for w in workers)
    assert all(1 <= w["min_workers"] <= w["max_workers"] <= CLUSTER["max_workers"] for w in workers)


def test_setup_installs_this_project_with_the_pinned_torch():
    setup = "\n".join(CLUSTER["setup_commands"])
    assert "torch==2.13.0" in setup and "PIP_CONSTRAINT=constraints.txt" in setup and "pip install -e ." in setup
    assert all("RAY_AUTH_MODE=token" in c for c in CLUSTER["head_start_ray_commands"] if "ray start" in c)


def test_every_node_gets_the_cluster_s_token_where_ray_reads_it_and_no_command_holds_one():
    from ray._private.authentication.authentication_token_setup import _get_default_token_path

    token = [remote for remote, local in CLUSTER["file_mounts"].items() if local == "~/.ray/auth_token"]
    assert token and Path(token[0]).expanduser() == _get_default_token_path()  # where Ray 2.60 looks
    commands = CLUSTER["head_start_ray_commands"] + CLUSTER["worker_start_ray_commands"]
    assert not any("RAY_AUTH_TOKEN" in c for c in commands)
    assert all("RAY_AUTH_MODE=token" in c for c in commands if "ray start" in c)
