"""Write the synthetic world as LLaVA's files: a 558K-like caption set, a 665K-like instruction set
(same JSON schema and folder layout) and held-out evaluation scenes.

    <out>/blip_laion_cc_sbu_558k.json       images under <out>/LLaVA-Pretrain/images/
    <out>/llava_v1_5_mix665k.json           images under <out>/{coco/train2017,gqa/images,...}
    <out>/eval/scenes.jsonl                 held-out scenes (ground truth) + <out>/eval/images/

Each item is a pure function of (seed, split, index), so worker processes may make them in any
order and the same seed still gives byte-identical files.
"""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path

from mqt_llava.output import Progress
from mqt_llava.toy.world import (
    CELLS,
    LONG_SIDES,
    caption_conversation,
    encode_image,
    instruction_conversation,
    random_scene,
    record_rng,
    render_scene,
    text_only_conversation,
)

PRETRAIN_JSON = "blip_laion_cc_sbu_558k.json"
PRETRAIN_IMAGES = "LLaVA-Pretrain/images"
INSTRUCT_JSON = "llava_v1_5_mix665k.json"
INSTRUCT_FOLDERS = (
    "coco/train2017",
    "gqa/images",
    "ocr_vqa/images",
    "textvqa/train_images",
    "vg/VG_100K",
    "vg/VG_100K_2",
)
EVAL_SCENES = "eval/scenes.jsonl"


@dataclass(frozen=True)
class CorpusSpec:
    seed: int = 0
    num_pretrain: int = 20_000
    num_instruct: int = 20_000
    num_eval: int = 3_000  # held-out scenes are free: thousands keep intervals narrow
    cells: int = CELLS  # cells along an image's long side (see toy.world: aligned with the patches)
    text_only_fraction: float = 0.06  # about 40K of LLaVA-665K's records have no image
    png_fraction: float = 0.2
    long_sides: tuple[int, ...] = LONG_SIDES  # pixels; aspect ratios 1:1, 2:1, 1:2


@dataclass(frozen=True)
class Item:
    record: dict
    image_path: str | None  # relative to the output directory
    image_bytes: bytes | None


def scene_image(spec: CorpusSpec, split: str, index: int):
    rng = record_rng(spec.seed, split, index)
    scene = random_scene(rng, spec.cells, tuple(spec.long_sides))
    fmt = "PNG" if rng.random() < spec.png_fraction else "JPEG"
    return rng, scene, encode_image(render_scene(scene), fmt), "png" if fmt == "PNG" else "jpg"


def pretrain_item(spec: CorpusSpec, index: int) -> Item:
    rng, scene, data, ext = scene_image(spec, "pretrain", index)
    relative = f"{index // 1000:05d}/{index:09d}.{ext}"
    record = {"id": f"{index:09d}", "image": relative, "conversations": caption_conversation(scene, rng)}
    return Item(record, f"{PRETRAIN_IMAGES}/{relative}", data)


def instruct_item(spec: CorpusSpec, index: int) -> Item:
    if record_rng(spec.seed, "instruct-modality", index).random() < spec.text_only_fraction:
        rng = record_rng(spec.seed, "instruct", index)
        return Item({"id": f"text-{index:07d}", "conversations": text_only_conversation(rng)}, None, None)
    rng, scene, data, ext = scene_image(spec, "instruct", index)
    relative = f"{INSTRUCT_FOLDERS[index % len(INSTRUCT_FOLDERS)]}/{index:09d}.{ext}"
    _, conversation = instruction_conversation(scene, rng)
    return Item({"id": f"{index:09d}", "image": relative, "conversations": conversation}, relative, data)


def eval_item(spec: CorpusSpec, index: int) -> Item:
    _, scene, data, ext = scene_image(spec, "eval", index)
    relative = f"eval/images/{index:06d}.{ext}"
    return Item({"id": f"eval-{index:06d}", "image": relative, "scene": asdict(scene)}, relative, data)


def write_items(
    out: Path,
    make: Callable[[int], Item],
    count: int,
    pool,
    log: Callable[[str], None],
    label: str,
    every_s: float = 10.0,
) -> Iterable[dict]:
    """Write each item's image and yield its record, in index order, with progress lines."""
    progress = Progress(count, every_s=every_s)
    for done, item in enumerate(pool.imap(make, range(count), chunksize=64), 1):
        if item.image_path is not None:
            path = out / item.image_path
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(item.image_bytes)
        yield item.record
        if progress.update(done):
            log(f"[synthetic] {label}: {done}/{count} at {progress.speed(digits=0)}, {progress.eta}")


def write_corpus(out: str | Path, spec: CorpusSpec, workers: int = 2, log: Callable[[str], None] = print) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        pretrain = list(write_items(out, partial(pretrain_item, spec), spec.num_pretrain, pool, log, "pretrain"))
        (out / PRETRAIN_JSON).write_text(json.dumps(pretrain, indent=1))
        instruct = list(write_items(out, partial(instruct_item, spec), spec.num_instruct, pool, log, "instruct"))
        (out / INSTRUCT_JSON).write_text(json.dumps(instruct, indent=1))
        scenes = write_items(out, partial(eval_item, spec), spec.num_eval, pool, log, "eval")
        (out / EVAL_SCENES).parent.mkdir(parents=True, exist_ok=True)
        (out / EVAL_SCENES).write_text("".join(json.dumps(s) + "\n" for s in scenes))
    (out / "corpus.json").write_text(json.dumps(asdict(spec), indent=2))
    return out
