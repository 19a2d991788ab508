"""A small model YAML, a tiny corpus as Parquet shards and both stage configs: what the training
and ablation tests train on (importable by name: tests/e2e is on the path)."""

from pathlib import Path

import yaml

from mqt_llava.data.llava_format import RecordRules
from mqt_llava.data.prepare import PrepareJob, prepare
from mqt_llava.model.spec import max_visual_tokens
from mqt_llava.toy.corpus import INSTRUCT_JSON, PRETRAIN_IMAGES, PRETRAIN_JSON, CorpusSpec, write_corpus
from small_model import small_spec

STAGE_FIELDS = dict(
    num_workers=1,
    global_batch_size=8,
    micro_batch_size=4,
    epochs=1,
    log_every=1,
    checkpoint_every=2,
    keep_checkpoints=2,
    max_failures=2,
    shuffle_buffer=16,
    resources=dict(worker_cpus=0.5, torch_threads=1, decode_actors=1, decode_cpus=0.25, tokenize_cpus=0.25),
)


def write_small_stages(root: Path, records: int = 96, num_eval: int = 4) -> dict[str, Path]:
    """Writes <root>/model.yaml, <root>/corpus, shards <root>/558k and 665k, and stage1/2.yaml."""
    # The official recipe's connector: stage 1 trains the position table, stage 2 keeps it frozen (so a
    # stage-2 export must take it from stage 1's export, not from the checkpoint's trained weights).
    spec = small_spec(position_table="trained_in_stage1")
    model = root / "model.yaml"
    model.write_text(yaml.safe_dump(spec.model_dump()))
    corpus = root / "corpus"
    write_corpus(
        corpus, CorpusSpec(seed=1, num_pretrain=records, num_instruct=records, num_eval=num_eval), log=lambda _: None
    )
    sets = {"558k": (PRETRAIN_JSON, PRETRAIN_IMAGES, "plain"), "665k": (INSTRUCT_JSON, "", "vicuna_v1")}
    for name, (json_name, images, template) in sets.items():
        rules = RecordRules(template, spec.max_length, max_visual_tokens(spec))
        prepare(PrepareJob(str(corpus / json_name), str(corpus / images), str(root / name), spec.tokenizer, rules))
    configs = {}
    for stage, template, data, extra in (
        ("stage1", "plain", "558k", dict(lr=1e-3, zero_stage=2)),
        ("stage2", "vicuna_v1", "665k", dict(lr=5e-4, zero_stage=3, group_by_modality=True)),
    ):
        path = root / f"{stage}.yaml"
        fields = dict(model=str(model), stage=stage, template=template, data=str(root / data), **STAGE_FIELDS, **extra)
        path.write_text(yaml.safe_dump(fields))
        configs[stage] = path
    return configs


def small_ablation(root: Path, records: int, num_eval: int, **fields) -> dict:
    """An AblationSpec's fields over write_small_stages' data and synthetic benchmark files: two-step
    stages, a small sweep; `fields` add to or replace them (eval's by merging)."""
    from mqt_llava.toy.benchmark_files import write_synthetic_benchmarks

    configs = write_small_stages(root, records=records, num_eval=num_eval)
    write_synthetic_benchmarks(root / "corpus", root / "bench")
    quick = ["max_steps=2", "checkpoint_every=1", "resources.worker_cpus=0.4"]
    evaluation = {
        "data_root": str(root / "bench"),
        "budgets": "2,M",
        "batch_size": 8,
        "actor_cpus": 0.25,
        "torch_threads": 1,
    }
    spec = {
        "storage": str(root / "experiments"),
        "model": str(root / "model.yaml"),
        "stage1": {"config": str(configs["stage1"]), "overrides": quick},
        "stage2": {"config": str(configs["stage2"]), "overrides": quick + ["zero_stage=2"]},
    }
    return spec | fields | {"eval": evaluation | fields.get("eval", {})}
