"""Data pipeline throughput, measured side by side in one run on the same images.

    python benchmarks/data_pipeline.py                      # 3000 records, 336 px (llava-7b's input)
    python benchmarks/data_pipeline.py --records 600 --crop 128

1. ray_data:   shards -> training_dataset (tokenize, decode actor pool) -> iter_torch_batches + collate
2. dataloader: LLaVA-style torch DataLoader: map-style dataset over the JSON list, lazy per-item
               image decode from the image folder, 2 workers, the same collate
3. bare:       decode + pad + resize only, a plain loop over 2 processes (the limit for this work)

1 and 2 produce identical tensors (checked on the first batch's sample ids). Throughput is samples/s
over a full epoch after the first batch (start-up reported apart).
"""

from __future__ import annotations

import argparse
import multiprocessing
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from mqt_llava.config import LLMSpec, ModelSpec, TokenizerSpec, VisionTowerSpec
from mqt_llava.data.conversation import build_sample
from mqt_llava.data.datasets import read_shards, training_dataset
from mqt_llava.data.images import ImageSettings, decode_image, preprocess_image
from mqt_llava.data.llava_format import RecordRules, iter_json_records
from mqt_llava.data.prepare import PrepareJob, prepare
from mqt_llava.data.samples import LlavaCollate, ragged
from mqt_llava.model.tokenizer import byte_level_tokenizer
from mqt_llava.ray_runtime import init_ray
from mqt_llava.toy.corpus import INSTRUCT_JSON, CorpusSpec, write_corpus


class LlavaStyleDataset(Dataset):
    """What LLaVA's LazySupervisedDataset does: the record list in memory, the image opened and
    preprocessed when the item is asked for."""

    def __init__(self, json_path: str, image_root: str, settings: ImageSettings, rules: RecordRules) -> None:
        self.records = list(iter_json_records(json_path))
        self.image_root, self.settings, self.rules = Path(image_root), settings, rules
        self.tokenizer = byte_level_tokenizer()
        self.blank = np.zeros((3, settings.crop_height, settings.crop_width), np.uint8)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        record = self.records[i]
        has_image = "image" in record
        sample = build_sample(
            record["conversations"], self.rules.template, self.tokenizer, has_image,
            self.rules.max_length, self.rules.visual_tokens,
        )  # fmt: skip
        pixels = self.blank
        if has_image:
            data = (self.image_root / record["image"]).read_bytes()
            pixels = preprocess_image(decode_image(data), self.settings, "pad")
        return dict(
            id=str(record["id"]), input_ids=np.asarray(sample.input_ids, np.int32),
            labels=np.asarray(sample.labels, np.int32), has_image=has_image, pixel_values=pixels,
        )  # fmt: skip


def collate_items(items: list[dict], collate: LlavaCollate) -> dict:
    batch = {
        "input_ids": ragged([x["input_ids"] for x in items]),
        "labels": ragged([x["labels"] for x in items]),
        "has_image": np.array([x["has_image"] for x in items]),
        "pixel_values": np.stack([x["pixel_values"] for x in items]),
    }
    return dict(collate(batch), ids=[x["id"] for x in items])


class CollateItems:
    def __init__(self, pad_token_id: int) -> None:
        self.collate = LlavaCollate(pad_token_id)

    def __call__(self, items):
        return collate_items(items, self.collate)


def timed(batches) -> tuple[float, float, int, dict]:
    """(seconds to the first batch, samples/s after it, samples, first batch)."""
    start = time.perf_counter()
    iterator = iter(batches)
    first = next(iterator)
    ready = time.perf_counter()
    samples = first["input_ids"].shape[0]
    rest = 0
    for batch in iterator:
        rest += batch["input_ids"].shape[0]
    end = time.perf_counter()
    return ready - start, rest / (end - ready), samples + rest, first


def bare_worker(args) -> int:
    path, settings = args
    preprocess_image(decode_image(Path(path).read_bytes()), settings, "pad")
    return 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=3000)
    parser.add_argument("--crop", type=int, default=336, help="model input size (llava-7b: 336)")
    parser.add_argument(
        "--image-long-side",
        type=int,
        nargs="+",
        default=(400, 480, 560, 640),
        help="source images' long sides (px, each a multiple of 4), drawn evenly",
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--work-dir", default=None)
    args = parser.parse_args()

    work = Path(args.work_dir or tempfile.mkdtemp(prefix="mqt-bench-"))
    corpus_spec = CorpusSpec(seed=0, num_pretrain=0, num_instruct=args.records, num_eval=0,
                             long_sides=tuple(args.image_long_side), png_fraction=0.0)  # fmt: skip
    corpus = work / "corpus"
    if not (corpus / INSTRUCT_JSON).exists():
        write_corpus(corpus, corpus_spec, workers=args.workers, log=lambda _: None)
    settings = ImageSettings.square_of(args.crop)
    rules = RecordRules("vicuna_v1", max_length=2048, visual_tokens=64)
    spec = ModelSpec(
        name="bench", vision_tower=VisionTowerSpec(architecture={"image_size": args.crop}),
        llm=LLMSpec(architecture={"model_type": "llama"}), connector={"num_queries": 64}, max_length=2048,
    )  # fmt: skip
    init_ray(num_cpus=args.workers)
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    shards = work / "shards"
    prepare(PrepareJob(str(corpus / INSTRUCT_JSON), str(corpus), str(shards), TokenizerSpec(), rules,
                       shard_mb=32), log=lambda _: None)  # fmt: skip
    pad = byte_level_tokenizer().pad_token_id
    image_files = [str(corpus / r["image"]) for r in iter_json_records(str(corpus / INSTRUCT_JSON)) if "image" in r]
    print(f"{args.records} records ({len(image_files)} images, {args.image_long_side} px long side) -> {args.crop} px")

    results = {}
    # 3. the bare limit
    with multiprocessing.get_context("spawn").Pool(args.workers) as pool:
        pool.map(bare_worker, [(image_files[0], settings)] * args.workers)  # start the processes
        start = time.perf_counter()
        pool.map(bare_worker, [(p, settings) for p in image_files], chunksize=16)
        results["bare"] = len(image_files) / (time.perf_counter() - start)

    # 1. Ray Data
    ds = training_dataset(read_shards(str(shards)), spec, "vicuna_v1", settings,
                          decode_actors=args.workers, decode_cpus=0.75, batch_size=args.batch_size)  # fmt: skip
    batches = ds.iter_torch_batches(batch_size=args.batch_size, collate_fn=LlavaCollate(pad), prefetch_batches=4)
    startup, rate, n, _ = timed(batches)
    results["ray_data"] = rate
    print(f"ray_data:   {rate:7.1f} samples/s  ({n} samples, first batch after {startup:.1f}s)")

    # 2. LLaVA-style DataLoader
    dataset = LlavaStyleDataset(str(corpus / INSTRUCT_JSON), str(corpus), settings, rules)
    loader = DataLoader(dataset, batch_size=args.batch_size, shuffle=False, num_workers=args.workers,
                        collate_fn=CollateItems(pad), persistent_workers=False)  # fmt: skip
    startup, rate, n, first = timed(loader)
    results["dataloader"] = rate
    print(f"dataloader: {rate:7.1f} samples/s  ({n} samples, first batch after {startup:.1f}s)")
    print(f"bare:       {results['bare']:7.1f} images/s  (decode + pad + resize, {args.workers} processes)")

    # Same tensors: the DataLoader's first batch, rebuilt from the Ray pipeline's rows.
    rows = {r["id"]: r for r in ds.filter(lambda r, ids=set(first["ids"]): r["id"] in ids).take_all()}
    batch = {
        "input_ids": ragged([rows[i]["input_ids"] for i in first["ids"]]),
        "labels": ragged([rows[i]["labels"] for i in first["ids"]]),
        "has_image": np.array([rows[i]["has_image"] for i in first["ids"]]),
        "pixel_values": np.stack([rows[i]["pixel_values"] for i in first["ids"]]),
    }
    same = all(torch.equal(v, first[k]) for k, v in LlavaCollate(pad)(batch).items())
    print(f"identical tensors on the first batch: {same}")
    print(f"ratio ray_data / dataloader: {results['ray_data'] / results['dataloader']:.2f}x (goal >= 1.5)")
    print(f"ratio ray_data / bare:       {results['ray_data'] / results['bare']:.2f} (goal >= 0.8)")


if __name__ == "__main__":
    main()
