from __future__ import annotations

import json

import pytest
import torch

from mqt_llava.config import ModelSpec
from mqt_llava.model.builder import BuiltModel, build_model
from mqt_llava.toy.benchmark_files import write_synthetic_benchmarks
from mqt_llava.toy.corpus import EVAL_SCENES, CorpusSpec, eval_item
from small_model import small_spec


@pytest.fixture
def spec() -> ModelSpec:
    return small_spec()


@pytest.fixture
def built() -> BuiltModel:
    torch.manual_seed(0)
    result = build_model(small_spec())
    result.model.eval()
    return result


def write_heldout_corpus(root, scenes: int):
    """Only the corpus's held-out part: what the synthetic benchmarks are made from."""
    spec = CorpusSpec(num_eval=scenes)
    lines = []
    for i in range(scenes):
        item = eval_item(spec, i)
        path = root / item.image_path
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(item.image_bytes)
        lines.append(json.dumps(item.record))
    (root / EVAL_SCENES).write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="session")
def heldout_corpus(tmp_path_factory):
    """Ten held-out scenes with their images, as the corpus writes them."""
    return write_heldout_corpus(tmp_path_factory.mktemp("heldout"), 10)


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic")
    corpus = write_heldout_corpus(root / "corpus", 12)
    write_synthetic_benchmarks(corpus, root / "benchmarks")
    return root / "benchmarks"
