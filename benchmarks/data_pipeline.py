"""Data pipeline throughput against the physical limit, measured side by side in one run: the same
records through Ray Data, a LLaVA-style DataLoader and a bare loop doing the same work, alternated in
rounds.

    python benchmarks/data_pipeline.py                           # 3000 records, 336 px (llava-7b's input)
    python benchmarks/data_pipeline.py --prefetch 4              # both pipelines prefetch 4 batches
    python benchmarks/data_pipeline.py --records 1500 --rounds 5 --crop 128

The work per record is the same in every variant: tokenize the conversation with the template,
read and decode the image, pad it to a square and resize it (text-only records: tokenize only), on
--workers processes:
1. ray_data:   shards -> training_dataset (tokenize tasks, decode actor pool) -> iter_batches,
               prefetch --prefetch batches, collated by LlavaCollate (what a training worker consumes)
2. dataloader: LLaVA-style torch DataLoader: map-style dataset over the JSON list, lazy per-item
               image decode from the image folder, --workers workers prefetching --prefetch batches
               in all, the same collate
3. bare:       the physical limit: the same per-record work in a plain process pool over the
               records, chunked, nothing else (no batches, no pipeline)

Every variant counts samples (records) per second, the pipelines after their first batch (start-up
reported apart), the bare loop once its processes are up. Each sample of every timed pass is
fingerprinted (CRC-32 of its token ids, labels and pixels), and the variants must produce the same
fingerprints for the same record ids. The figure per variant is its median round, with the range
over rounds of its ratio to the bare loop of the same round.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
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


def fingerprint(input_ids, labels, pixels) -> int:
    """A sample's CRC-32 over what the model is fed (pixels None for a text-only sample)."""
    crc = zlib.crc32(np.asarray(input_ids, np.int32).tobytes())
    crc = zlib.crc32(np.asarray(labels, np.int32).tobytes(), crc)
    return crc if pixels is None else zlib.crc32(np.ascontiguousarray(pixels).tobytes(), crc)


class RecordWork:
    """The per-record work every variant does: tokenize, and decode + pad + resize the image."""

    def __init__(self, image_root: str, settings: ImageSettings, rules: RecordRules) -> None:
        self.image_root, self.settings, self.rules = Path(image_root), settings, rules
        self.tokenizer = byte_level_tokenizer()
        self.blank = np.zeros((3, settings.crop_height, settings.crop_width), np.uint8)

    def __call__(self, record: dict) -> dict:
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


class LlavaStyleDataset(Dataset):
    """What LLaVA's LazySupervisedDataset does: the record list in memory, the item's work done when
    it is asked for."""

    def __init__(self, records: list[dict], work: RecordWork) -> None:
        self.records, self.work = records, work

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, i: int) -> dict:
        return self.work(self.records[i])


def batch_fingerprints(batch: dict) -> dict[str, int]:
    """{id: fingerprint} of a numpy batch (rows of MODEL_COLUMNS and id)."""
    return {
        str(i): fingerprint(ids, labels, pixels if has_image else None)
        for i, ids, labels, pixels, has_image in zip(
            batch["id"], batch["input_ids"], batch["labels"], batch["pixel_values"], batch["has_image"], strict=True
        )
    }


class FingerprintedCollate:
    """LlavaCollate, with the batch's fingerprints beside the tensors."""

    def __init__(self, pad_token_id: int) -> None:
        self.collate = LlavaCollate(pad_token_id)

    def __call__(self, batch: dict) -> dict:
        if isinstance(batch, list):  # the DataLoader's list of items
            batch = {key: ragged([x[key] for x in batch]) if key in ("input_ids", "labels") else
                     np.array([x[key] for x in batch]) for key in batch[0]}  # fmt: skip
        return dict(self.collate(batch), fingerprints=batch_fingerprints(batch))


def timed(batches) -> tuple[float, float, dict[str, int]]:
    """(seconds to the first batch, samples/s after it, every sample's fingerprint)."""
    start = time.perf_counter()
    iterator = iter(batches)
    first = next(iterator)
    ready = time.perf_counter()
    prints, rest = dict(first["fingerprints"]), 0
    for batch in iterator:
        rest += len(batch["fingerprints"])
        prints |= batch["fingerprints"]
    return ready - start, rest / (time.perf_counter() - ready), prints


WORK: RecordWork | None = None  # a bare-loop pool process's own, made by bare_start


def bare_start(image_root: str, settings: ImageSettings, rules: RecordRules) -> None:
    global WORK
    WORK = RecordWork(image_root, settings, rules)


def bare_chunk(records: list[dict]) -> dict[str, int]:
    """The bare loop's work on a chunk of records, in a pool process: {id: fingerprint}."""
    items = [WORK(record) for record in records]
    return batch_fingerprints({key: [item[key] for item in items] for key in items[0]})


def bare(pool, records: list[dict], chunk: int) -> tuple[float, float, dict[str, int]]:
    """(0 s of start-up: the pool is up, samples/s, every sample's fingerprint) of one pass."""
    start = time.perf_counter()
    prints: dict[str, int] = {}
    for part in pool.imap_unordered(bare_chunk, [records[i : i + chunk] for i in range(0, len(records), chunk)]):
        prints |= part
    return 0.0, len(records) / (time.perf_counter() - start), prints


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=3000)
    parser.add_argument("--crop", type=int, default=336, help="model input size (llava-7b: 336)")
    parser.add_argument("--image-long-side", type=int, nargs="+", default=(400, 480, 560, 640),
                        help="source images' long sides (px, each a multiple of 4), drawn evenly")  # fmt: skip
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2, help="processes doing the work in every variant")
    parser.add_argument("--prefetch", type=int, default=2, help="batches both pipelines prefetch")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work-dir", default=None)
    args = parser.parse_args()

    work_dir = Path(args.work_dir or tempfile.mkdtemp(prefix="mqt-bench-"))
    corpus_spec = CorpusSpec(seed=0, num_pretrain=0, num_instruct=args.records, num_eval=0,
                             long_sides=tuple(args.image_long_side), png_fraction=0.0)  # fmt: skip
    corpus = work_dir / "corpus"
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
    shards = work_dir / "shards"
    prepare(PrepareJob(str(corpus / INSTRUCT_JSON), str(corpus), str(shards), TokenizerSpec(), rules,
                       shard_mb=32), log=lambda _: None)  # fmt: skip
    records = list(iter_json_records(str(corpus / INSTRUCT_JSON)))
    images = sum("image" in r for r in records)
    collate = FingerprintedCollate(byte_level_tokenizer().pad_token_id)
    print(f"{len(records)} records ({images} with an image, {args.image_long_side} px long side) -> {args.crop} px;"
          f" {args.workers} processes, batches of {args.batch_size}, prefetch {args.prefetch}, {args.rounds} rounds",
          flush=True)  # fmt: skip

    def ray_data():
        dataset = training_dataset(read_shards(str(shards)), spec, "vicuna_v1", settings, decode_actors=args.workers,
                                   decode_cpus=0.75, batch_size=args.batch_size)  # fmt: skip
        return timed(dataset.iter_torch_batches(batch_size=args.batch_size, collate_fn=collate,
                                                prefetch_batches=args.prefetch))  # fmt: skip

    def dataloader():
        loader = DataLoader(LlavaStyleDataset(records, RecordWork(str(corpus), settings, rules)),
                            batch_size=args.batch_size, num_workers=args.workers, collate_fn=collate,
                            prefetch_factor=max(1, -(-args.prefetch // args.workers)))  # fmt: skip
        return timed(loader)

    context = multiprocessing.get_context("spawn")
    with context.Pool(args.workers, initializer=bare_start, initargs=(str(corpus), settings, rules)) as pool:
        pool.map(bare_chunk, [records[:1]] * args.workers)  # the processes up before the clock starts
        variants = {"ray_data": ray_data, "dataloader": dataloader,
                    "bare": lambda: bare(pool, records, args.batch_size)}  # fmt: skip
        rates: dict[str, list[float]] = {name: [] for name in variants}
        reference: dict[str, int] | None = None
        for r in range(args.rounds):
            for name in variants if r % 2 == 0 else reversed(variants):
                startup, rate, prints = variants[name]()
                rates[name].append(rate)
                reference = reference or prints
                if prints != reference:
                    differ = sum(prints.get(k) != v for k, v in reference.items()) + len(prints.keys() - reference)
                    raise SystemExit(f"{name} produced {differ} samples unlike the other variants'")
                print(f"round {r + 1}/{args.rounds} {name:10}: {rate:7.1f} samples/s"
                      + (f" (first batch after {startup:.1f} s)" if startup else ""), flush=True)  # fmt: skip

    print(f"samples: every variant produced the same {len(reference)} fingerprints (token ids, labels, pixels)")
    print(f"{'':12}{'samples/s':>10}{'of bare (median, range)':>26}{'of dataloader':>15}")
    for name, values in rates.items():
        of_bare = [v / b for v, b in zip(values, rates["bare"], strict=True)]
        of_loader = [v / d for v, d in zip(values, rates["dataloader"], strict=True)]
        print(f"{name:12}{statistics.median(values):>10.1f}{statistics.median(of_bare):>13.2f} "
              f"[{min(of_bare):.2f}, {max(of_bare):.2f}]{statistics.median(of_loader):>13.2f}x")  # fmt: skip
    print("goal: ray_data >= 0.9 of bare")


if __name__ == "__main__":
    main()
