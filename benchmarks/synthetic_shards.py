"""What the training benchmarks share: the tiny preset with random weights, and Parquet shards of a
synthetic LLaVA-665K-like instruction set made through the platform's own prepare step.

Imported by the scripts beside it (`python benchmarks/<script>.py` puts this folder on sys.path).
"""

from __future__ import annotations

from pathlib import Path

from mqt_llava.data.llava_format import RecordRules
from mqt_llava.data.prepare import PrepareJob, prepare
from mqt_llava.model.spec import ModelSpec, max_visual_tokens
from mqt_llava.toy.corpus import INSTRUCT_JSON, CorpusSpec, write_corpus

RANDOM_INIT = ["tokenizer.pretrained=null", "vision_tower.pretrained=null", "llm.pretrained=null"]


def synthetic_shards(spec: ModelSpec, root: Path, records: int) -> str:
    """`records` instruction records (seeded) written under root/corpus, prepared into root/shards."""
    corpus = root / "corpus"
    write_corpus(corpus, CorpusSpec(seed=3, num_pretrain=1, num_instruct=records, num_eval=1))
    return prepared_shards(spec, corpus / INSTRUCT_JSON, corpus, root / "shards")


def prepared_shards(spec: ModelSpec, source: Path, images: Path, out: Path) -> str:
    """A LLaVA instruction JSON (images under `images`) prepared into Parquet shards at `out`."""
    rules = RecordRules("vicuna_v1", spec.max_length, max_visual_tokens(spec))
    prepare(PrepareJob(str(source), str(images), str(out), spec.tokenizer, rules))
    return str(out)
