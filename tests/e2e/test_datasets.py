import json

import numpy as np
import pytest
import ray.train
import torch
from ray.data import DataContext
from ray.train import RunConfig, ScalingConfig
from ray.train.torch import TorchTrainer

from mqt_llava.data.batches import LlavaCollate
from mqt_llava.data.conversation import build_sample
from mqt_llava.data.datasets import read_llava_json, read_shards, training_dataset
from mqt_llava.data.images import decode_image, preprocess_image
from mqt_llava.data.prepare import PrepareJob, prepare
from mqt_llava.model.image_settings import ImageSettings
from mqt_llava.model.spec import LLMSpec, ModelSpec, TokenizerSpec, VisionTowerSpec
from mqt_llava.model.tokenizer import byte_level_tokenizer
from mqt_llava.toy.corpus import INSTRUCT_JSON, CorpusSpec, write_corpus
from odd_corpus import RULES, write_odd_corpus

pytestmark = pytest.mark.e2e
SETTINGS = ImageSettings.square_of(32)
SPEC = ModelSpec(
    name="data-test",
    vision_tower=VisionTowerSpec(architecture={"image_size": 32}),
    llm=LLMSpec(architecture={"model_type": "llama"}),
    connector={"num_queries": RULES.visual_tokens},
    max_length=RULES.max_length,
)


@pytest.fixture(scope="module")
def odd_shards(tmp_path_factory):
    root = tmp_path_factory.mktemp("odd")
    odd = write_odd_corpus(root / "in")
    job = PrepareJob(str(odd.json_path), str(odd.image_root), str(root / "shards"), TokenizerSpec(), RULES)
    return odd, root / "shards", job


def rows_by_id(ds):
    return {row["id"]: row for row in ds.take_all()}


def test_pipeline_rows_equal_direct_preprocessing(ray_local, odd_shards):
    odd, shards, job = odd_shards
    prepare(job, log=lambda _: None)
    rows = rows_by_id(training_dataset(read_shards(str(shards)), SPEC, "vicuna_v1", SETTINGS, decode_cpus=0.5))
    assert set(rows) == set(odd.accepted)
    tokenizer = byte_level_tokenizer()
    original = {str(r["id"]): r for r in json.loads(odd.json_path.read_text())}
    for rid, path in odd.accepted.items():
        row = original[rid]
        sample = build_sample(row["conversations"], "vicuna_v1", tokenizer, path is not None, RULES.max_length, 8)
        assert list(rows[rid]["input_ids"]) == sample.input_ids
        assert list(rows[rid]["labels"]) == sample.labels
        assert rows[rid]["has_image"] == (path is not None)
        if path is not None:
            expected = preprocess_image(decode_image((odd.image_root / path).read_bytes()), SETTINGS, "pad")
            assert np.array_equal(rows[rid]["pixel_values"], expected)


def test_small_json_path_gives_the_same_rows_as_shards(ray_local, odd_shards):
    odd, shards, job = odd_shards
    prepare(job, log=lambda _: None)
    ds, rejects = read_llava_json(str(odd.json_path), str(odd.image_root), byte_level_tokenizer(), RULES)
    assert {r.id: r.reason for r in rejects} == odd.rejected
    from_json = rows_by_id(training_dataset(ds, SPEC, "vicuna_v1", SETTINGS, decode_cpus=0.5))
    from_shards = rows_by_id(training_dataset(read_shards(str(shards)), SPEC, "vicuna_v1", SETTINGS, decode_cpus=0.5))
    assert from_json.keys() == from_shards.keys()
    for rid in from_json:
        assert list(from_json[rid]["input_ids"]) == list(from_shards[rid]["input_ids"])
        assert np.array_equal(from_json[rid]["pixel_values"], from_shards[rid]["pixel_values"])


def test_one_shard_is_decoded_in_blocks_of_block_rows(ray_local, odd_shards):
    """The decode actors share a shard's work: a shard reaches them in blocks of at most `block_rows`
    rows (one block, so one actor, before), and the rows, in order, are those of whole-shard blocks."""
    odd, shards, job = odd_shards
    prepare(job, log=lambda _: None)
    assert len(list(shards.glob("*.parquet"))) == 1
    options = DataContext.get_current().execution_options
    options.preserve_order, before = True, options.preserve_order  # as the training workers read
    try:
        small = training_dataset(
            read_shards(str(shards)), SPEC, "vicuna_v1", SETTINGS, decode_cpus=0.5, batch_size=2, block_rows=3
        )
        blocks = small.materialize()
        small_rows = blocks.take_all()
        whole_rows = training_dataset(read_shards(str(shards)), SPEC, "vicuna_v1", SETTINGS, decode_cpus=0.5).take_all()
    finally:
        options.preserve_order = before
    assert blocks.num_blocks() >= -(-len(odd.accepted) // 3) > 1
    assert [r["id"] for r in small_rows] == [r["id"] for r in whole_rows]
    assert {r["id"] for r in small_rows} == set(odd.accepted)
    for small_row, whole_row in zip(small_rows, whole_rows, strict=True):
        assert list(small_row["input_ids"]) == list(whole_row["input_ids"])
        assert np.array_equal(small_row["pixel_values"], whole_row["pixel_values"])


def worker_loop(config):
    shard = ray.train.get_dataset_shard("train")
    collate = LlavaCollate(pad_token_id=config["pad"])
    ids, steps = [], 0
    for batch in shard.iter_batches(batch_size=8, batch_format="numpy"):
        model_inputs = collate(batch)
        assert model_inputs["pixel_values"].shape[0] == int(batch["has_image"].sum())
        assert model_inputs["input_ids"].shape[1] == int(batch["length"].max())
        ids += [str(i) for i in batch["id"]]
        steps += 1
    rank = ray.train.get_context().get_world_rank()
    with open(f"{config['out']}/rank{rank}.json", "w") as f:
        json.dump({"ids": ids, "steps": steps}, f)


def test_two_train_workers_stream_equal_disjoint_shards(ray_local, tmp_path):
    corpus = write_corpus(
        tmp_path / "c", CorpusSpec(seed=5, num_pretrain=0, num_instruct=64, num_eval=0), 1, lambda _: None
    )
    job = PrepareJob(
        str(corpus / INSTRUCT_JSON),
        str(corpus),
        str(tmp_path / "shards"),
        TokenizerSpec(),
        RULES.__class__("vicuna_v1", 1024, 8),
        max_records_per_shard=16,
    )
    assert prepare(job, log=lambda _: None).written == 64
    spec = SPEC.model_copy(update={"max_length": 1024})
    ds = training_dataset(
        read_shards(str(tmp_path / "shards")), spec, "vicuna_v1", SETTINGS, decode_actors=1, decode_cpus=0.25
    )
    trainer = TorchTrainer(
        worker_loop,
        train_loop_config={"pad": byte_level_tokenizer().pad_token_id, "out": str(tmp_path)},
        scaling_config=ScalingConfig(num_workers=2, resources_per_worker={"CPU": 0.25}),
        datasets={"train": ds},
        run_config=RunConfig(storage_path=str(tmp_path / "runs"), name="equal-shards"),
    )
    trainer.fit()
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]
    assert len(ranks[0]["ids"]) == len(ranks[1]["ids"]) == 32  # equal splits
    assert not set(ranks[0]["ids"]) & set(ranks[1]["ids"])  # disjoint
    assert torch.tensor([len(r["ids"]) for r in ranks]).sum() == 64


def test_a_pipeline_that_would_starve_its_reads_is_refused(ray_local, odd_shards):
    _, shards, _ = odd_shards
    with pytest.raises(ValueError, match="asks for 2.25 CPUs"):
        training_dataset(read_shards(str(shards)), SPEC, "vicuna_v1", SETTINGS, decode_actors=2, decode_cpus=1.0)
