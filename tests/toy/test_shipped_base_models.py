"""The base models the package ships (platform/mqt_llava/pretrained/tiny) are what their job would
build today, their files are the manifest's, they load as the tiny preset names them, and a wheel
carries them. When the first test fails: `python jobs/base_models.py --rebuild` rebuilds them (about 21
minutes on 2 cores) and rewrites the manifest; commit both."""

import hashlib
import importlib
import json
import os
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from transformers import AutoModelForCausalLM, CLIPVisionModel

from checkout import REPO_ROOT
from mqt_llava.config import ConfigError, load_config, model_config_path, preset_path
from mqt_llava.model.builder import build_model
from mqt_llava.model.spec import ModelSpec
from mqt_llava.model.storage import packaged_path, pretrained_location
from mqt_llava.model.tokenizer import load_pretrained_tokenizer
from mqt_llava.toy.shipped import (
    MANIFEST,
    code_closure,
    fingerprint,
    read_manifest,
    resolve_out,
    ship_base_models,
    shipped_location,
    ships_parts,
)
from mqt_llava.toy.spec import BaseModelsSpec

REBUILD = (
    "rebuild them with `python jobs/base_models.py --rebuild` (tiny/base_models.yaml) and commit the parts and manifest"
)


@pytest.fixture(scope="module")
def manifest():
    return read_manifest("tiny")


@pytest.fixture(scope="module")
def shipped() -> Path:
    return packaged_path(shipped_location("tiny"))


def test_the_shipped_parts_are_what_their_job_would_build_today(manifest):
    spec = load_config(BaseModelsSpec, preset_path("tiny", "base_models"))
    assert resolve_out(spec.out) == packaged_path(shipped_location("tiny")), "the job must write where the preset reads"
    today = fingerprint(spec, load_config(ModelSpec, model_config_path(spec.model)))
    shipped = manifest["fingerprint"]
    if today["value"] != shipped["value"]:
        settings = [
            f"{part}: shipped {shipped['settings'][part]}, today {today['settings'][part]}"
            for part in today["settings"]
            if today["settings"][part] != shipped["settings"][part]
        ]
        ours, theirs = today["code"], shipped["code"]  # name -> hash; a definition that moved keeps its hash
        code = sorted(
            [f"{k} (today)" for k, h in ours.items() if h not in theirs.values()]
            + [f"{k} (shipped)" for k, h in theirs.items() if h not in ours.values()]
        )
        pytest.fail(
            "the shipped base models are not what jobs/base_models.py would build today; "
            f"settings that differ: {settings or 'none'}; definitions added, removed or changed since: "
            f"{code or 'none'}; {REBUILD}"
        )


def test_the_shipped_files_are_the_manifests(manifest, shipped):
    listed = manifest["files"]
    on_disk = {
        path.relative_to(shipped).as_posix()
        for part in ("tokenizer", "clip", "llm")
        for path in (shipped / part).rglob("*")
        if path.is_file()
    }
    assert on_disk == set(listed), f"files not in the manifest, or missing: {on_disk ^ set(listed)}; {REBUILD}"
    for name, entry in listed.items():
        path = shipped / name
        assert hashlib.sha256(path.read_bytes()).hexdigest() == entry["sha256"], f"{name} changed since the build"
        if name.endswith(".safetensors"):
            with safe_open(path, framework="pt") as weights:
                shapes = {key: list(weights.get_slice(key).get_shape()) for key in weights.keys()}  # noqa: SIM118
            assert shapes == {key: shape for key, (_, shape) in entry["tensors"].items()}
    assert sum(entry["bytes"] for entry in listed.values()) < 20 * 2**20, "the shipped parts must stay small"


def test_the_manifest_says_what_made_the_parts(manifest):
    built = manifest["built"]
    assert len(built["commit"]) == 40 and built["machine"]["cpus"] >= 1 and built["finished"] >= built["started"]
    for gate in ("clip_probe", "lm_scene_reading"):
        figures = manifest["gates"][gate]
        assert isinstance(figures["passed"], bool) and 0 < figures["gate"] < 1 and figures["held_out_scenes"] > 0
    assert manifest["world"]["seed"] == manifest["fingerprint"]["settings"]["base_models"]["corpus_size"]["seed"]


def test_the_tiny_preset_loads_the_shipped_parts_with_from_pretrained(manifest, shipped):
    spec = load_config(ModelSpec, preset_path("tiny", "model"))
    for part in (spec.vision_tower, spec.llm, spec.tokenizer):
        assert part.pretrained.startswith(shipped_location("tiny")), part.pretrained
    tokenizer = load_pretrained_tokenizer(pretrained_location(spec.tokenizer.pretrained))
    assert len(tokenizer) == manifest["report"]["tokenizer"]["vocab_size"]
    tower = CLIPVisionModel.from_pretrained(pretrained_location(spec.vision_tower.pretrained))
    assert tower.config.hidden_size == spec.vision_tower.architecture["hidden_size"]
    lm = AutoModelForCausalLM.from_pretrained(pretrained_location(spec.llm.pretrained))
    assert lm.get_input_embeddings().weight.shape == (len(tokenizer), spec.llm.architecture["hidden_size"])
    shipped_weights = manifest["files"]["llm/model.safetensors"]["tensors"]
    assert {k: v for k, (_, v) in shipped_weights.items()} == {k: list(v.shape) for k, v in lm.state_dict().items()}
    built = build_model(spec, seed=0)  # the whole model, as stage 1 builds it: the shipped LM's weights inside
    assert torch.equal(built.model.get_input_embeddings().weight, lm.get_input_embeddings().weight)


def test_a_wheel_carries_the_shipped_parts(manifest, shipped):
    """pyproject.toml's package-data globs (which setuptools expands with glob, relative to the
    package, into the wheel) carry every shipped file; `pip install -e .` reads the tree itself."""
    globs = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["mqt_llava"]
    package = Path(importlib.import_module("mqt_llava").__file__).parent
    carried = {path for glob in globs for path in package.glob(glob) if path.is_file()}
    for name in [*manifest["files"], MANIFEST]:
        assert shipped / name in carried, f"{name}: no package-data glob carries it"


def test_a_packaged_location_names_a_directory_of_an_installed_package(tmp_path):
    assert pretrained_location("package://mqt_llava/configs/tiny") == str(preset_path("tiny").parent)
    with pytest.raises(FileNotFoundError, match="no installed package 'no_such_package'"):
        pretrained_location("package://no_such_package/x")
    with pytest.raises(FileNotFoundError, match="package://mqt_llava/no/such does not exist"):
        pretrained_location("package://mqt_llava/no/such")


def write_package(root: Path, name: str, files: dict[str, str]) -> str:
    package = root / name
    package.mkdir()
    (package / "__init__.py").write_text("")
    for module, source in files.items():
        (package / f"{module}.py").write_text(textwrap.dedent(source))
    return name


BUILDER = """
    from {pkg}.helpers import scale

    def build(x):
        '''Makes it.'''
        return scale(x) + 1
"""
HELPERS = """
    FACTOR = 3  # a comment

    def scale(x):
        return FACTOR * x

    def unrelated():
        return 0
"""


@pytest.mark.parametrize(
    ("change", "same"),
    [
        ({"helpers": HELPERS.replace("# a comment", "# another").replace("return 0", "return 1")}, True),
        ({"builder": BUILDER.replace("Makes it.", "Builds it.")}, True),
        # scale moved to another module, the builder importing it from there
        (
            {
                "builder": BUILDER.replace(".helpers import", ".moved import"),
                "moved": "from {pkg}.helpers import FACTOR\n\ndef scale(x):\n    return FACTOR * x\n",
                "helpers": "FACTOR = 3\n",
            },
            True,
        ),
        ({"helpers": HELPERS.replace("FACTOR = 3", "FACTOR = 4")}, False),
        ({"helpers": HELPERS.replace("FACTOR * x", "FACTOR * x * x")}, False),
        ({"builder": BUILDER.replace("+ 1", "+ 2")}, False),
    ],
    ids=["comment-and-unreached-code", "docstring", "moved", "constant", "reached-function", "entry"],
)
def test_the_code_fingerprint_follows_what_the_build_runs_not_layout_or_place(tmp_path, monkeypatch, change, same):
    monkeypatch.syspath_prepend(str(tmp_path))

    def closure(tag: str, files: dict[str, str]) -> str:
        pkg = f"fp_{tag}"
        write_package(tmp_path, pkg, {k: v.replace("{pkg}", pkg) for k, v in files.items()})
        found = code_closure(f"{pkg}.builder", "build", package=pkg)
        for module in [m for m in sys.modules if m.startswith(pkg)]:
            del sys.modules[module]
        return "\n\n".join(sorted(found.values()))

    before = closure("before", {"builder": BUILDER, "helpers": HELPERS})
    after = closure("after", {"builder": BUILDER, "helpers": HELPERS} | change)
    assert "FACTOR = 3" in before and "def unrelated" not in before and "Makes it" not in before
    assert (before == after) is same


def test_a_finished_build_with_todays_fingerprint_is_kept(tmp_path, manifest):
    """The job on a directory whose manifest has today's fingerprint keeps it (builds nothing)."""
    spec = load_config(BaseModelsSpec, preset_path("tiny", "base_models"))
    model = load_config(ModelSpec, preset_path("tiny", "model"))
    current = manifest | {"fingerprint": fingerprint(spec, model)}
    (tmp_path / MANIFEST).write_text(json.dumps(current))
    logged = []
    assert ship_base_models(spec, model, tmp_path, log=logged.append) == current
    assert "up to date" in logged[0]


def test_parts_of_another_build_are_refused_where_they_may_not_be_replaced(tmp_path, manifest):
    """The package's parts are not replaced by a build of another config without --rebuild: the job
    refuses before it removes or builds anything (and in a directory of the user's own it replaces)."""
    spec = load_config(BaseModelsSpec, preset_path("tiny", "base_models"))
    model = load_config(ModelSpec, preset_path("tiny", "model"))
    (tmp_path / MANIFEST).write_text(json.dumps(manifest | {"fingerprint": {"value": "another build"}}))
    (tmp_path / "clip").mkdir()
    with pytest.raises(ConfigError, match="another config or code than this build's .*--rebuild replaces them"):
        ship_base_models(spec, model, tmp_path, log=print, replace_other=False)
    assert (tmp_path / "clip").is_dir() and "another build" in (tmp_path / MANIFEST).read_text()  # untouched
    # the job refuses in the package's place however it is named, and replaces in any other
    shipped = resolve_out(shipped_location("tiny"))
    assert ships_parts(shipped) and ships_parts(Path(os.path.relpath(shipped)))
    assert not ships_parts(tmp_path) and not ships_parts(shipped.parent.parent / "configs")


@pytest.mark.parametrize(
    ("settings", "reason"),
    [
        ({}, None),
        ({"model": {"connector": {"num_queries": 16}}}, None),  # the connector is trained later, not a base model
        ({"world": {"num_pretrain": 10, "num_instruct": 10, "num_eval": 5}}, None),  # the same world, smaller
        ({"base_models": {"clip": {"steps": 5}}}, "base_models settings given (clip.steps=5)"),
        ({"world": {"cells": 3}}, "this world is not the shipped parts'"),
        ({"model": {"llm": {"architecture": {"num_hidden_layers": 2}}}}, "architectures are not the shipped parts'"),
    ],
)
def test_the_quickstart_loads_the_shipped_parts_unless_the_run_asks_for_others(tmp_path, settings, reason):
    from mqt_llava.recipes.quickstart import Context, QuickstartSpec

    ctx = Context(QuickstartSpec(run_dir=str(tmp_path), **settings))
    if reason is None:
        assert ctx.own_base_models is None
        assert not any(o.endswith(".pretrained=" + str(ctx.base_models / "llm")) for o in ctx.model_overrides)
    else:
        assert reason in ctx.own_base_models
        assert f"llm.pretrained={ctx.base_models / 'llm'}" in ctx.model_overrides
