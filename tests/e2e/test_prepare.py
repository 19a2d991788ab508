import json
import os
import subprocess
import sys

import pyarrow.parquet as pq
import pytest

from checkout import REPO_ROOT
from mqt_llava.data.datasets import read_shards
from mqt_llava.data.prepare import PrepareJob, prepare
from mqt_llava.model.spec import TokenizerSpec
from odd_corpus import RULES, write_odd_corpus

pytestmark = pytest.mark.e2e


def job_for(odd, output, **kwargs):
    return PrepareJob(
        json_path=str(odd.json_path),
        image_root=str(odd.image_root),
        output=str(output),
        tokenizer=TokenizerSpec(),
        rules=RULES,
        **kwargs,
    )


def read_rows(output):
    table = pq.read_table([str(p) for p in sorted(output.glob("part-*.parquet"))])
    return {row["id"]: row for row in table.to_pylist()}


def test_shards_keep_every_accepted_record_and_report_every_reject(ray_local, tmp_path):
    odd = write_odd_corpus(tmp_path / "in")
    out = tmp_path / "shards"
    report = prepare(job_for(odd, out, max_records_per_shard=5), log=lambda _: None)

    total = len(odd.accepted) + len(odd.rejected)
    assert (report.read, report.written) == (total, len(odd.accepted))
    assert dict(report.rejected) == {r: list(odd.rejected.values()).count(r) for r in set(odd.rejected.values())}
    assert report.shards_converted == -(-total // 5)

    rejects = [json.loads(line) for line in (out / "rejects.jsonl").read_text().splitlines()]
    assert {r["id"]: r["reason"] for r in rejects} == odd.rejected
    assert all(r["message"] for r in rejects)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["read"] == total and summary["written"] == len(odd.accepted)

    rows = read_rows(out)  # the Parquet round trip
    assert set(rows) == set(odd.accepted)
    original = {str(r["id"]): r for r in json.loads(odd.json_path.read_text()) if str(r["id"]) in odd.accepted}
    for rid, row in rows.items():
        assert row["conversations"] == original[rid]["conversations"]
        path = odd.accepted[rid]
        assert row["image_path"] == path
        assert row["image"] == (None if path is None else (odd.image_root / path).read_bytes())
        assert row["num_tokens"] > 0


def test_rerun_skips_completed_shards_and_redoes_only_missing_ones(ray_local, tmp_path):
    odd = write_odd_corpus(tmp_path / "in")
    out = tmp_path / "shards"
    first = prepare(job_for(odd, out, max_records_per_shard=4), log=lambda _: None)
    again = prepare(job_for(odd, out, max_records_per_shard=4), log=lambda _: None)
    assert again.shards_converted == 0 and again.shards_skipped == first.shards_converted
    assert (again.read, again.written, again.rejected) == (first.read, first.written, first.rejected)

    (out / "_progress/part-00001.json").unlink()
    (out / "part-00001.parquet").unlink(missing_ok=True)
    third = prepare(job_for(odd, out, max_records_per_shard=4), log=lambda _: None)
    assert (third.shards_converted, third.shards_skipped) == (1, first.shards_converted - 1)
    assert set(read_rows(out)) == set(odd.accepted)


def test_output_may_be_a_filesystem_uri(ray_local, tmp_path):
    odd = write_odd_corpus(tmp_path / "in")
    report = prepare(job_for(odd, f"file://{tmp_path}/uri-shards"), log=lambda _: None)
    assert report.written == len(odd.accepted)
    assert set(read_rows(tmp_path / "uri-shards")) == set(odd.accepted)
    streamed = read_shards(f"file://{tmp_path}/uri-shards").select_columns(["id"]).take_all()
    assert {row["id"] for row in streamed} == set(odd.accepted)


def run_cli(*args):
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.run(
        [sys.executable, "pipelines/prepare_llava.py", *args],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_cli_exits_zero_with_rejects_and_nonzero_when_the_run_fails(tmp_path):
    odd = write_odd_corpus(tmp_path / "in")
    args = [
        "--set",
        f"json_path={odd.json_path}",
        "--set",
        f"image_root={odd.image_root}",
        "--set",
        "template=vicuna_v1",
        "--set",
        "model.tokenizer.pretrained=null",
    ]
    done = run_cli(*args, "--set", f"output={tmp_path / 'out'}", "--set", "max_pixels=50000")
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"read {len(odd.accepted) + len(odd.rejected)}, written {len(odd.accepted)}" in done.stdout
    assert "rejected image_too_large: 1" in done.stdout and "rejected missing_image_file: 1" in done.stdout

    failed = run_cli(
        "--set",
        f"json_path={tmp_path / 'absent.json'}",
        "--set",
        "template=plain",
        "--set",
        f"output={tmp_path / 'o2'}",
        "--set",
        "model.tokenizer.pretrained=null",
    )
    assert failed.returncode != 0 and "absent.json" in failed.stderr
    # a preset whose tokenizer has not been made yet fails before Ray starts, saying what to run
    missing = run_cli(
        *args[:-2], "--set", f"output={tmp_path / 'o3'}", "--set", f"model.tokenizer.pretrained={tmp_path}/no-tok"
    )
    assert missing.returncode == 2 and "base_models.py" in missing.stderr and not (tmp_path / "o3").exists()
