"""jobs/base_models.py end to end at toy size: the parts it saves are what the model builder loads."""

import json
import os
import subprocess
import sys

import pytest
import torch
from transformers import CLIPModel, LlamaForCausalLM

from checkout import REPO_ROOT
from mqt_llava.config import load_config, prefixed, preset_path
from mqt_llava.model.builder import build_model
from mqt_llava.model.spec import ModelSpec
from mqt_llava.toy.base_models import preset_overrides
from mqt_llava.toy.world import cell_names

pytestmark = pytest.mark.e2e
SMALL_MODEL = [
    "vision_tower.architecture={image_size: 32, patch_size: 8, hidden_size: 32, intermediate_size: 64,"
    " num_hidden_layers: 2, num_attention_heads: 2}",
    "llm.architecture={model_type: llama, hidden_size: 48, intermediate_size: 96, num_hidden_layers: 2,"
    " num_attention_heads: 2, num_key_value_heads: 2, max_position_embeddings: 512}",
    "connector.num_queries=8",
    "connector.num_heads=2",
]


def test_base_models_job_makes_parts_the_builder_loads(tmp_path):
    out = tmp_path / "base"
    small = [
        f"corpus={tmp_path / 'corpus'}",
        "corpus_size={seed: 1, num_pretrain: 96, num_instruct: 48, num_eval: 32}",
        "vocab_size=400",
        "clip.steps=40",
        "clip.batch_size=32",
        "clip.probe_scenes=32",
        "lm.steps=60",
        "lm.lr=2e-3",
        "lm.batch_size=16",
        "lm.reading=200",
        "lm.drills=100",
        "lm.gate_scenes=8",
    ]
    command = [sys.executable, "jobs/base_models.py", "--set", f"out={out}"]
    command += [a for o in small + prefixed("model", SMALL_MODEL) for a in ("--set", o)]
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    done = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]

    manifest = json.loads((out / "manifest.json").read_text())
    report = manifest["report"]
    assert report["clip"]["loss_last"] < report["clip"]["loss_first"]
    assert report["lm"]["loss_last"] < 0.7 * report["lm"]["loss_first"]
    assert 0 <= report["clip_retrieval_top1"]["accuracy"] <= 1
    assert report["lm_samples"]["reading_drills"] == 100 and report["lm_samples"]["scene_reading"] == 200
    for gate in ("clip_probe", "lm_scene_reading"):  # computed and reported; passing needs full-size training
        assert isinstance(report[gate]["passed"], bool) and 0 <= report[gate]["shape"] <= 1
    assert "gate clip per-cell probe" in done.stdout and "gate lm scene reading" in done.stdout

    # A rerun of the same config and code keeps the finished build (its manifest's fingerprint matches).
    weights = out / "llm" / "model.safetensors"
    stamp = weights.stat().st_mtime_ns
    again = subprocess.run(command, cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and "up to date" in again.stdout
    assert weights.stat().st_mtime_ns == stamp and json.loads((out / "manifest.json").read_text()) == manifest

    spec = load_config(ModelSpec, preset_path("tiny"), SMALL_MODEL + preset_overrides(out))
    built = build_model(spec)
    clip = CLIPModel.from_pretrained(out / "clip")
    lm = LlamaForCausalLM.from_pretrained(out / "llm")
    for name, tensor in clip.vision_model.state_dict().items():
        assert torch.equal(built.model.vision_tower.state_dict()[name], tensor), name
    for name, tensor in lm.state_dict().items():
        assert torch.equal(built.model.language_model.state_dict()[name], tensor), name
    assert len(built.tokenizer) == report["tokenizer"]["vocab_size"] == 400 + 2 * len(cell_names())  # + " B3", "B3"
    assert built.model.language_model.config.eos_token_id == built.tokenizer.eos_token_id


def test_a_missing_local_base_model_gives_a_clear_error(tmp_path):
    spec = load_config(ModelSpec, preset_path("tiny"), preset_overrides(tmp_path / "absent"))
    with pytest.raises(FileNotFoundError, match="jobs/base_models.py"):
        build_model(spec)
