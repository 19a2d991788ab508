"""The toy world's job specs: how pipelines/make_synthetic.py writes the synthetic corpus, and how
jobs/base_models.py trains the tokenizer, CLIP and LM from it."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from mqt_llava.config import Spec
from mqt_llava.toy.corpus import CorpusSpec


class SyntheticSpec(Spec):
    """pipelines/make_synthetic.py's spec (packaged as tiny/synthetic.yaml): the corpus, the same
    files for the same `corpus` whatever `workers`."""

    out: str = Field("./data/synthetic", description="the directory to write (LLaVA's file layout)")
    workers: int = Field(2, ge=1, description="processes drawing and encoding the images")
    corpus: CorpusSpec = Field(CorpusSpec(), description="seed, sizes and image settings (toy.corpus.CorpusSpec)")


class CorpusSize(Spec):
    seed: int = 0
    num_pretrain: int = Field(20_000, ge=1)
    num_instruct: int = Field(20_000, ge=1)
    num_eval: int = Field(2_000, ge=0)


class ClipTraining(Spec):
    text_architecture: dict[str, Any]  # CLIPTextConfig fields; the vision side is the preset's tower
    steps: int = Field(1500, ge=1)
    batch_size: int = Field(128, ge=2)
    lr: float = Field(1e-3, gt=0)
    max_images: int = Field(20_000, ge=2)
    probe_scenes: int = Field(1000, ge=0, description="held-out scenes the per-cell probe gate is scored on")


class LMTraining(Spec):
    steps: int = Field(1000, ge=1)
    batch_size: int = Field(32, ge=1)
    max_tokens: int = Field(256, ge=8)
    lr: float = Field(1e-3, gt=0)
    reading: int = Field(20_000, ge=0, description="scene-reading conversations (description, then questions)")
    drills: int = Field(0, ge=0, description="reading drills: a description, then bare questions and answers")
    drill_questions: int = Field(10, ge=1, description="questions per reading drill")
    drill_weights: dict[str, float] | None = Field(
        None, description="question kinds' weights in the drills (None: the world's DRILL_WEIGHTS)"
    )
    gate_scenes: int = Field(300, ge=0, description="held-out scenes the scene-reading gate asks about")
    gate_every: int = Field(0, ge=0, description="also score the gate every this many steps (0: only at the end)")
    gate_every_scenes: int = Field(60, ge=1, description="held-out scenes those intermediate scores ask about")


class BaseModelsSpec(Spec):
    """How jobs/base_models.py makes a preset's pretrained parts from the synthetic corpus: the model
    preset whose architectures it trains (`model.<field>=...` overrides reach it) and where it saves
    them (the preset's `pretrained` paths must point there; the job prints the overrides that do)."""

    model: str = Field("tiny", description="the model: a preset name or a YAML path")
    out: str = "./runs/quickstart/base_models"
    corpus: str
    corpus_size: CorpusSize = CorpusSize()
    vocab_size: int = Field(1024, ge=300)
    clip: ClipTraining
    lm: LMTraining = LMTraining()
    seed: int = 0
