"""Data pipeline throughput against the physical limit, measured side by side in one run: the same
records through Ray Data, a LLaVA-style DataLoader and a bare loop doing the same work, alternated in
rounds.

    python benchmarks/data_pipeline.py                           # 3000 records, 336 px (llava-7b's input)
    python benchmarks/data_pipeline.py --prefetch 4              # both pipelines prefetch 4 batches
    python benchmarks/data_pipeline.py --block-rows 256 100000   # and Ray Data with each shard one block
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

Every variant counts samples (records) per second over its whole pass, start-up included (the bare
loop's processes are up before its clock starts), and after its first batch. Neither isolates a
pipeline's steady state: Ray Data starts processes for every pass (13-25 s on 2 cores), and what it
decodes meanwhile goes to its credit after the first batch. The CPU every process used over the
pass (cpu_account.py, processes started during it counted whole) is reported per sample, split by
process kind: that is the account of where a pipeline's time goes. Each sample of every timed pass is
fingerprinted (CRC-32 of its token ids, labels and pixels), and the variants must produce the same
fingerprints for the same record ids. The figure per variant is its median round, with the range
over rounds of its ratio to the bare loop of the same round.
"""

from __future__ import annotations

import argparse
import functools
import multiprocessing
import statistics
import tempfile
import time
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np
from cpu_account import CpuSampler
from torch.utils.data import DataLoader, Dataset

from mqt_llava.data.batches import LlavaCollate
from mqt_llava.data.conversation import build_sample
from mqt_llava.data.datasets import read_shards, training_dataset
from mqt_llava.data.images import decode_image, preprocess_image
from mqt_llava.data.llava_format import RecordRules, iter_json_records
from mqt_llava.data.prepare import PrepareJob, prepare
from mqt_llava.data.samples import ragged
from mqt_llava.model.image_settings import ImageSettings
from mqt_llava.model.spec import LLMSpec, ModelSpec, TokenizerSpec, VisionTowerSpec
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
            record["conversations"],
            self.rules.template,
            self.tokenizer,
            has_image,
            self.rules.max_length,
            self.rules.visual_tokens,
        )
        pixels = self.blank
        if has_image:
            data = (self.image_root / record["image"]).read_bytes()
            pixels = preprocess_image(decode_image(data), self.settings, "pad")
        return dict(
            id=str(record["id"]),
            input_ids=np.asarray(sample.input_ids, np.int32),
            labels=np.asarray(sample.labels, np.int32),
            has_image=has_image,
            pixel_values=pixels,
        )


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
            batch = {
                key: ragged([x[key] for x in batch])
                if key in ("input_ids", "labels")
                else np.array([x[key] for x in batch])
                for key in batch[0]
            }
        return dict(self.collate(batch), fingerprints=batch_fingerprints(batch))


class Pass(NamedTuple):
    startup: float  # seconds to the first batch
    seconds: float  # to the last sample
    prints: dict[str, int]  # every sample's fingerprint
    ended: float  # what `at_end` returned: the CPU sampler's snapshot at the last sample

    def rates(self, total: int, first: int) -> tuple[float, float]:
        """(samples/s over the whole pass, samples/s after the first batch of `first` samples)."""
        return total / self.seconds, (total - first) / (self.seconds - self.startup)


def timed(batches, total: int, at_end: Callable[[], float]) -> Pass:
    """One pass over `total` samples (batches of {"fingerprints": {id: fingerprint}}); `at_end` is
    called once the last sample is in, before the iterator is asked for more (a DataLoader's workers,
    for one, exit then, and the CPU account must see them)."""
    start = time.perf_counter()
    prints: dict[str, int] = {}
    startup = None
    iterator = iter(batches)
    while len(prints) < total:
        prints |= next(iterator)["fingerprints"]
        startup = startup or time.perf_counter() - start
    seconds = time.perf_counter() - start
    ended = at_end()
    if next(iterator, None) is not None:
        raise SystemExit(f"a pass gave more than the {total} samples")
    return Pass(startup, seconds, prints, ended)


WORK: RecordWork | None = None  # a bare-loop pool process's own, made by bare_start


def bare_start(image_root: str, settings: ImageSettings, rules: RecordRules) -> None:
    global WORK
    WORK = RecordWork(image_root, settings, rules)


def bare_chunk(records: list[dict]) -> dict[str, int]:
    """The bare loop's work on a chunk of records, in a pool process: {id: fingerprint}."""
    items = [WORK(record) for record in records]
    return batch_fingerprints({key: [item[key] for item in items] for key in items[0]})


def bare(pool, records: list[dict], chunk: int, at_end: Callable[[], float]) -> Pass:
    """One pass of the bare loop over a pool whose processes are up."""
    chunks = [records[i : i + chunk] for i in range(0, len(records), chunk)]
    parts = ({"fingerprints": part} for part in pool.imap_unordered(bare_chunk, chunks))
    return timed(parts, len(records), at_end)


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
    parser.add_argument("--workers", type=int, default=2, help="processes doing the work in every variant")
    parser.add_argument("--prefetch", type=int, default=2, help="batches both pipelines prefetch")
    parser.add_argument(
        "--block-rows",
        type=int,
        nargs="+",
        default=[256],
        help="rows per block into Ray Data's decode stage; each value after the first adds "
        "a ray_data variant (a number over --records: a shard's rows in one block)",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--work-dir", default=None)
    args = parser.parse_args()

    work_dir = Path(args.work_dir or tempfile.mkdtemp(prefix="mqt-bench-"))
    corpus_spec = CorpusSpec(
        seed=0,
        num_pretrain=0,
        num_instruct=args.records,
        num_eval=0,
        long_sides=tuple(args.image_long_side),
        png_fraction=0.0,
    )
    corpus = work_dir / "corpus"
    if not (corpus / INSTRUCT_JSON).exists():
        write_corpus(corpus, corpus_spec, workers=args.workers, log=lambda _: None)
    settings = ImageSettings.square_of(args.crop)
    rules = RecordRules("vicuna_v1", max_length=2048, visual_tokens=64)
    spec = ModelSpec(
        name="bench",
        vision_tower=VisionTowerSpec(architecture={"image_size": args.crop}),
        llm=LLMSpec(architecture={"model_type": "llama"}),
        connector={"num_queries": 64},
        max_length=2048,
    )
    init_ray(num_cpus=args.workers)
    from ray.data import DataContext

    DataContext.get_current().enable_progress_bars = False
    shards = work_dir / "shards"
    prepare(
        PrepareJob(str(corpus / INSTRUCT_JSON), str(corpus), str(shards), TokenizerSpec(), rules, shard_mb=32),
        log=lambda _: None,
    )
    records = list(iter_json_records(str(corpus / INSTRUCT_JSON)))
    images = sum("image" in r for r in records)
    collate = FingerprintedCollate(byte_level_tokenizer().pad_token_id)
    print(
        f"{len(records)} records ({images} with an image, {args.image_long_side} px long side) -> {args.crop} px;"
        f" {args.workers} processes, batches of {args.batch_size}, prefetch {args.prefetch}, {args.rounds} rounds",
        flush=True,
    )

    def ray_data(block_rows: int, at_end):
        dataset = training_dataset(
            read_shards(str(shards)),
            spec,
            "vicuna_v1",
            settings,
            decode_cpus=0.75,
            decode_actors=args.workers,
            batch_size=args.batch_size,
            block_rows=block_rows,
        )
        return timed(
            dataset.iter_torch_batches(batch_size=args.batch_size, collate_fn=collate, prefetch_batches=args.prefetch),
            len(records),
            at_end,
        )

    def dataloader(at_end):
        loader = DataLoader(
            LlavaStyleDataset(records, RecordWork(str(corpus), settings, rules)),
            batch_size=args.batch_size,
            num_workers=args.workers,
            collate_fn=collate,
            prefetch_factor=max(1, -(-args.prefetch // args.workers)),
        )
        return timed(loader, len(records), at_end)

    context = multiprocessing.get_context("spawn")
    with context.Pool(args.workers, initializer=bare_start, initargs=(str(corpus), settings, rules)) as pool:
        pool.map(bare_chunk, [records[:1]] * args.workers)  # the processes up before the clock starts
        variants = {"ray_data": functools.partial(ray_data, args.block_rows[0])}
        variants |= {f"ray_data/{rows}": functools.partial(ray_data, rows) for rows in args.block_rows[1:]}
        variants |= {"dataloader": dataloader, "bare": lambda at_end: bare(pool, records, args.batch_size, at_end)}
        passes: dict[str, list[Pass]] = {name: [] for name in variants}
        cpu: dict[str, list[dict[str, float]]] = {name: [] for name in variants}  # CPU seconds by process kind
        started: dict[str, list[int]] = {name: [] for name in variants}  # processes started during each pass
        reference: dict[str, int] = {}  # every sample's fingerprint, from the first pass
        with CpuSampler(every=1.0) as sampler:
            for r in range(args.rounds):
                for name in variants if r % 2 == 0 else reversed(variants):
                    t0 = sampler.snapshot()
                    result = variants[name](sampler.snapshot)
                    span, cores = sampler.cores(t0, result.ended)
                    started[name].append(sum(sampler.started(t0, result.ended).values()))
                    passes[name].append(result._replace(prints={}))
                    cpu[name].append({k: v * span for k, v in cores.items()})
                    reference = reference or result.prints
                    if result.prints != reference:
                        differ = sum(result.prints.get(k) != v for k, v in reference.items())
                        raise SystemExit(
                            f"{name} produced {differ + len(result.prints.keys() - reference)} samples "
                            "unlike the other variants'"
                        )
                    whole, after = result.rates(len(records), args.batch_size)
                    print(
                        f"round {r + 1}/{args.rounds} {name:15}: {whole:7.1f} samples/s over the pass, "
                        f"{after:7.1f} after its first batch ({result.startup:.1f} s)",
                        flush=True,
                    )

    print(f"samples: every variant produced the same {len(reference)} fingerprints (token ids, labels, pixels)")
    for i, title in enumerate(("whole pass, start-up included", "after the first batch")):
        rates = {n: [p.rates(len(records), args.batch_size)[i] for p in ps] for n, ps in passes.items()}
        print(f"\n{title:32}{'samples/s':>10}{'of bare (median, range)':>26}{'of dataloader':>15}")
        for name, values in rates.items():
            of_bare = [v / b for v, b in zip(values, rates["bare"], strict=True)]
            of_loader = [v / d for v, d in zip(values, rates["dataloader"], strict=True)]
            print(
                f"{name:32}{statistics.median(values):>10.1f}{statistics.median(of_bare):>13.2f} "
                f"[{min(of_bare):.2f}, {max(of_bare):.2f}]{statistics.median(of_loader):>13.2f}x"
            )
    print(
        "\nCPU over the whole pass by process (medians over rounds): ms per sample, in all | each process kind "
        "above 0.05 ms, largest first"
    )
    for name, rows in cpu.items():
        per = {
            k: statistics.median(1000 * row.get(k, 0.0) / len(records) for row in rows)
            for k in {k for row in rows for k in row}
        }
        listed = ", ".join(f"{k} {v:.2f}" for k, v in sorted(per.items(), key=lambda kv: -kv[1]) if v >= 0.05)
        print(
            f"{name:16}{sum(per.values()):6.2f} ms | {listed}; first batch after "
            f"{statistics.median(p.startup for p in passes[name]):.1f} s; processes started during the pass "
            f"{statistics.median(started[name]):g} (range {min(started[name])}-{max(started[name])})"
        )
    print("goal: ray_data >= 0.9 of bare")


if __name__ == "__main__":
    main()
