"""Budget sweeps: every benchmark at every visual-token budget, as Ray Data batch inference.

For each budget, one Ray Data pass streams the samples of every benchmark still missing that budget
through a pool of inference-engine actors (GPU or CPU). Each (benchmark, budget) pair's predictions
are written, atomically, as soon as its last sample is back, and scored; a rerun of the same output
directory skips the pairs already written, so an interrupted sweep loses at most the pairs in flight.

Layout of the output directory:
    predictions/<benchmark>/m<budget>.jsonl   one line per sample: key, prediction, error
    scores/<benchmark>/m<budget>.json         the benchmark's official metrics
    submissions/<benchmark>/m<budget>/...     the files to upload to evaluation servers (VQAv2 test-dev,
                                              VizWiz test, MMBench), as LLaVA-1.5's converters write them
    results.csv, table.md, advisor.md, plots/ the report (see report.py); mlflow.db, mlartifacts/
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from mqt_llava.devices import Placement
from mqt_llava.eval import stats
from mqt_llava.eval.benchmarks import Benchmark, Sample, Skipped, make_benchmark
from mqt_llava.eval.benchmarks.judged import NO_JUDGE
from mqt_llava.eval.judge import JudgeError
from mqt_llava.model.budgets import parse_budgets
from mqt_llava.model.export import visual_token_range
from mqt_llava.output import Progress

if TYPE_CHECKING:
    from mqt_llava.eval.spec import SweepConfig

Log = Callable[[str], None]


@dataclass
class PairResult:
    benchmark: str
    budget: int
    status: str  # "scored", "upload" (only its evaluation server scores it), "skipped", "failed" (the judge failed)
    scores: dict[str, float] = field(default_factory=dict)
    samples: int = 0
    rejected: int = 0  # samples whose image could not be used (answered as unanswered)
    reason: str = ""
    title: str = ""  # the column's heading where it is not the paper's protocol ("VQAv2 (val, local)")
    uploads: list[str] = field(default_factory=list)  # the files to upload to the evaluation server


class EngineActor:
    """A Ray Data actor holding one inference engine (any registered backend); answers a batch at
    one budget."""

    def __init__(
        self,
        export: str,
        num_visual_tokens: int,
        use_gpu: bool,
        torch_threads: int | None,
        engine: str = "hf",
        blank: bool = False,
    ) -> None:
        import torch

        from mqt_llava.inference import load_placed_engine

        if torch_threads:
            torch.set_num_threads(torch_threads)
        self.engine = load_placed_engine(export, Placement(use_gpu), engine)
        self.m = num_visual_tokens
        self.blank = blank  # the blank-image control: each image replaced by its own mean colour

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, list]:
        from mqt_llava.inference import Request, Sampling, complete_grouped

        n = len(batch["key"])
        predictions, errors = [""] * n, [""] * n
        answerable, jobs = [], []
        for i in range(n):
            try:
                image = load_image(batch["image_path"][i], batch["image_bytes"][i])
            except (OSError, ValueError) as exc:  # a missing or corrupt image: this sample's error, not the batch's
                errors[i] = f"image: {exc}"
                continue
            if self.blank and image is not None:
                image = blank_like(image)
            answerable.append(i)
            jobs.append((Request(str(batch["prompt"][i]), image), self.m, Sampling(int(batch["max_new_tokens"][i]))))
        for i, completion in zip(answerable, complete_grouped(self.engine, jobs), strict=True):
            predictions[i] = completion.text
        return {
            "benchmark": list(batch["benchmark"]),
            "key": list(batch["key"]),
            "prediction": predictions,
            "error": errors,
        }


def blank_like(image):
    """An image of the same size and mode holding only its mean colour: the same question without
    what the image shows."""
    from PIL import Image, ImageStat

    mean = tuple(round(v) for v in ImageStat.Stat(image.convert("RGB")).mean)
    return Image.new("RGB", image.size, mean)


def load_image(path, data):

    from mqt_llava.data.images import decode_image

    # Ray Data hands a column of only missing values over as NaN floats, so types are checked.
    if isinstance(data, bytes | bytearray | np.bytes_) and len(data):
        return decode_image(bytes(data))
    if isinstance(path, str) and path:
        return decode_image(Path(path).read_bytes())
    return None


def spread(samples: list[Sample], limit: int | None, seed: int = 0) -> list[Sample]:
    """About `limit` samples drawn at random (seeded, kept in file order), so every split, subtask
    and answer keeps its share in expectation; a stride would not (POPE lists each image's "yes"
    questions before its "no" ones). Samples scored together (a `unit`: MME's image pair, MMBench's
    rotations) are taken or left together."""
    if limit is None or limit >= len(samples):
        return samples
    units: dict[str, list[Sample]] = {}
    for s in samples:
        units.setdefault(s.unit or s.key, []).append(s)
    groups = list(units.values())
    take = max(1, round(limit * len(groups) / len(samples)))
    chosen = sorted(random.Random(seed).sample(range(len(groups)), take))
    return [s for i in chosen for s in groups[i]]


def sample_rows(benchmark: Benchmark, samples: list[Sample]) -> list[dict]:
    return [
        {
            "benchmark": benchmark.name,
            "key": s.key,
            "prompt": s.prompt,
            "image_path": s.image if isinstance(s.image, str) else None,
            "image_bytes": s.image if isinstance(s.image, bytes) else None,
            "max_new_tokens": benchmark.max_new_tokens,
        }
        for s in samples
    ]


def write_atomic(path: Path, text: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    if isinstance(text, bytes):
        tmp.write_bytes(text)
    else:
        tmp.write_text(text)
    os.replace(tmp, path)


class Sweep:
    def __init__(self, config: SweepConfig, log: Log = print) -> None:
        spec = config.spec
        self.config = config
        self.log = log
        self.out = config.out
        self.minimum, self.maximum = visual_token_range(spec.model)
        parse_budgets(config.budgets, self.maximum, minimum=self.minimum)
        self.benchmarks = {
            name: make_benchmark(name, Path(spec.data_root), spec.options.get(name)) for name in spec.benchmark_names
        }
        # Reading every benchmark's files first: a missing file fails now, not after an hour of inference.
        self.samples = {name: spread(b.samples(), spec.limit) for name, b in self.benchmarks.items()}

    def predictions_path(self, name: str, m: int, blank: bool = False) -> Path:
        return self.out / "predictions" / name / (f"m{m}-blank.jsonl" if blank else f"m{m}.jsonl")

    def scores_path(self, name: str, m: int) -> Path:
        return self.out / "scores" / name / f"m{m}.json"

    def runnable(self, name: str) -> bool:
        return not (self.benchmarks[name].needs_judge and self.config.judge is None)

    def is_done(self, name: str, m: int, blank: bool = False) -> bool:
        """Predicted already, for exactly these samples (a changed --limit or option predicts again)."""
        path = self.predictions_path(name, m, blank)
        if not path.exists():
            return False
        keys = {json.loads(line)["key"] for line in path.read_text().splitlines()}
        return keys == {s.key for s in self.samples[name]}

    def run(self) -> list[PairResult]:
        for m in self.config.budgets:
            done = [n for n in self.benchmarks if self.runnable(n) and self.is_done(n, m)]
            pending = [n for n in self.benchmarks if self.runnable(n) and n not in done]
            if done:
                self.log(f"[sweep m={m}] already predicted: {', '.join(done)}")
            if pending:
                self.predict(m, pending)
        return [self.score(name, m) for m in self.config.budgets for name in self.benchmarks]

    def run_blank_control(self) -> int | None:
        """The largest budget again, every image blanked (`predictions/<name>/m<M>-blank.jsonl`); returns
        that budget, or None when the config does not ask for the control."""
        if not self.config.spec.blank_control:
            return None
        m = max(self.config.budgets)
        pending = [n for n in self.benchmarks if self.runnable(n) and not self.is_done(n, m, blank=True)]
        if pending:
            self.predict(m, pending, blank=True)
        return m

    def predict(self, m: int, names: list[str], blank: bool = False) -> None:
        import ray

        rows = [row for n in names for row in sample_rows(self.benchmarks[n], self.samples[n])]
        expected = {n: len(self.samples[n]) for n in names}
        collected: dict[str, list[dict]] = {n: [] for n in names}
        for n in names:
            if not expected[n]:
                self.finish_pair(n, m, [], blank)
        if not rows:
            return
        c = self.config.spec
        dataset = ray.data.from_items(rows, override_num_blocks=max(1, min(len(rows) // c.batch_size, 64)))
        answered = dataset.map_batches(
            EngineActor,
            fn_constructor_kwargs=dict(
                export=c.model,
                num_visual_tokens=m,
                use_gpu=c.use_gpu,
                torch_threads=c.torch_threads,
                engine=c.engine,
                blank=blank,
            ),
            batch_size=c.batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=c.actors),
            num_cpus=c.actor_cpus,
            num_gpus=Placement(c.use_gpu).num_gpus,
        )
        progress = Progress(len(rows), every_s=10)
        label = f"m={m}{' blank image' if blank else ''}"
        self.log(f"[sweep {label}] {len(rows)} samples from {', '.join(names)}")
        for done, row in enumerate(answered.iter_rows(), 1):
            name = row["benchmark"]
            collected[name].append({"key": row["key"], "prediction": row["prediction"], "error": row["error"]})
            if len(collected[name]) == expected[name]:
                self.finish_pair(name, m, collected[name], blank)
            if progress.update(done):
                self.log(f"[sweep {label}] {done}/{len(rows)} samples, {progress.speed()}, {progress.eta}")

    def finish_pair(self, name: str, m: int, rows: list[dict], blank: bool = False) -> None:
        if not blank:
            self.scores_path(name, m).unlink(missing_ok=True)  # scores of earlier predictions
        # Ray Data's actors answer batches in any order; the file keeps the samples' own order, so two
        # runs (and a budget and its blank control) write the same lines in the same places.
        order = {s.key: i for i, s in enumerate(self.samples[name])}
        rows = sorted(rows, key=lambda r: order[r["key"]])
        write_atomic(self.predictions_path(name, m, blank), "".join(json.dumps(r) + "\n" for r in rows))
        rejected = sum(bool(r["error"]) for r in rows)
        label = f"m={m}{' blank image' if blank else ''}"
        self.log(f"[sweep {label}] {name}: {len(rows)} predictions written ({rejected} rejected)")

    def score(self, name: str, m: int) -> PairResult:
        benchmark, samples = self.benchmarks[name], self.samples[name]
        title = "" if benchmark.column_title == benchmark.title else benchmark.column_title
        if not self.runnable(name):
            return PairResult(name, m, "skipped", samples=len(samples), reason=NO_JUDGE, title=title)
        path = self.scores_path(name, m)
        rows = [json.loads(line) for line in self.predictions_path(name, m).read_text().splitlines()]
        predictions = {r["key"]: r["prediction"] for r in rows if not r["error"]}
        rejected = sum(bool(r["error"]) for r in rows)
        uploads = []
        for filename, content in benchmark.submission(samples, predictions).items():
            uploads.append(self.out / "submissions" / name / f"m{m}" / filename)
            write_atomic(uploads[-1], content if isinstance(content, bytes) else json.dumps(content))
        if benchmark.server_scored:  # the paper's number is the server's: no local one stands in for it
            return PairResult(
                name,
                m,
                "upload",
                {},
                len(samples),
                rejected,
                reason="to upload: " + ", ".join(map(str, uploads)),
                title=title,
                uploads=list(map(str, uploads)),
            )
        if path.exists():  # judged scores cost calls to the judge: kept, like the predictions
            scores = json.loads(path.read_text())
        else:
            try:
                scores = benchmark.score(samples, predictions, judge=self.config.judge)
            except Skipped as skipped:
                return PairResult(name, m, "skipped", samples=len(samples), reason=str(skipped))
            except JudgeError as failed:  # the predictions are kept: a rerun scores them again
                self.log(f"[sweep m={m}] {name}: not scored: {failed}")
                return PairResult(name, m, "failed", samples=len(samples), rejected=rejected, reason=str(failed))
            write_atomic(path, json.dumps(scores, indent=1))
        if not benchmark.needs_judge and f"{benchmark.metric}_low" not in scores:
            scores |= headline_interval(benchmark, samples, predictions, seed=m)
            write_atomic(path, json.dumps(scores, indent=1))
        return PairResult(
            name, m, "scored", scores, len(samples), rejected, title=title, uploads=list(map(str, uploads))
        )


def image_groups(samples: list[Sample]) -> list[list[Sample]]:
    """Samples grouped by image (a sample's `unit`, else its image): what a bootstrap resamples."""
    by_unit: dict[str, list[Sample]] = {}
    for s in samples:
        by_unit.setdefault(s.unit or str(s.image) or s.key, []).append(s)
    return list(by_unit.values())


def resampled_headline(benchmark: Benchmark, drawn: list[tuple[int, Sample]], predictions: dict[str, str]):
    """The benchmark's own headline on a resample: a sample drawn twice is two samples (key and unit
    suffixed with the copy), so scores that group questions by image still see whole images."""
    copies = [dataclasses.replace(s, key=f"{s.key}#{i}", unit=f"{s.unit or s.key}#{i}") for i, s in drawn]
    answers = {c.key: predictions[s.key] for c, (_, s) in zip(copies, drawn, strict=True) if s.key in predictions}
    try:
        return benchmark.score(copies, answers).get(benchmark.metric)
    except (ZeroDivisionError, ValueError):
        return None


def headline_interval(
    benchmark: Benchmark, samples: list[Sample], predictions: dict[str, str], seed: int = 0, resamples: int = 1000
) -> dict[str, float]:
    """`<metric>_low` / `<metric>_high`: a 95 % bootstrap interval of the benchmark's own headline,
    resampling images with their questions (a judged benchmark is not resampled: each score costs
    judge calls)."""
    interval = stats.bootstrap_statistic(
        image_groups(samples),
        lambda drawn: resampled_headline(benchmark, drawn, predictions),
        resamples=resamples,
        seed=seed,
    )
    if interval is None:
        return {}
    return {f"{benchmark.metric}_low": interval[0], f"{benchmark.metric}_high": interval[1]}
