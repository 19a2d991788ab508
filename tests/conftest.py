from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from mqt_llava.model.builder import BuiltModel, build_model
from mqt_llava.model.spec import ModelSpec
from mqt_llava.toy.benchmark_files import write_synthetic_benchmarks
from mqt_llava.toy.corpus import EVAL_SCENES, CorpusSpec, eval_item
from small_model import small_spec

E2E = Path(__file__).parent / "e2e"
FAST_TIER_SECONDS = 30  # a fast-tier test slower than this belongs in tests/e2e/ or needs a smaller setup


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects anything: every collected test is checked
def pytest_collection_modifyitems(items):
    """The tiers are the directories: a test under tests/e2e/ must be marked e2e (or `python -m pytest`
    would run it in the fast tier) and one outside must not be (or `-m e2e` would run it in the other)."""
    wrong = [i.nodeid for i in items if (i.get_closest_marker("e2e") is not None) != i.path.is_relative_to(E2E)]
    if wrong:
        raise pytest.UsageError(
            "the e2e marker must be on every test under tests/e2e/ (pytestmark = pytest.mark.e2e) and on no "
            "other: " + ", ".join(wrong)
        )


@pytest.fixture(autouse=True)
def fast_tier_starts_no_ray(request):
    """A fast-tier test leaves no Ray running: Ray Train, Tune, Data and Serve belong in tests/e2e/."""
    yield
    ray = sys.modules.get("ray")
    if request.node.get_closest_marker("e2e") is None and ray is not None and ray.is_initialized():
        ray.shutdown()
        pytest.fail(f"{request.node.nodeid} started Ray: move it to tests/e2e/ (the Ray-level tier)")


def pytest_terminal_summary(terminalreporter):
    slow = [
        f"  {r.duration:.0f}s {r.nodeid}"
        for r in terminalreporter.stats.get("passed", []) + terminalreporter.stats.get("failed", [])
        if r.when == "call" and r.duration > FAST_TIER_SECONDS and "e2e" not in r.keywords
    ]
    if slow:
        terminalreporter.write_line(
            f"fast-tier tests over {FAST_TIER_SECONDS} s (make them faster or move them to tests/e2e/; "
            "a loaded machine can also cause this):\n" + "\n".join(slow),
            yellow=True,
        )


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
