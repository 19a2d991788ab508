"""The budget sweep end to end on real Ray Data actors: synthetic benchmark files in the official
formats -> engine actors at each budget -> predictions, scores, report, MLflow; resumable."""

import json
import shutil

import pytest
from mlflow.tracking import MlflowClient
from PIL import Image

from mqt_llava.eval.benchmarks import make_benchmark
from mqt_llava.eval.evaluate import main, run_evaluation
from mqt_llava.eval.runner import spread
from mqt_llava.eval.spec import EvalSpec
from mqt_llava.inference import InferenceEngine, Request
from mqt_llava.model.builder import build_model
from mqt_llava.model.export import save_export
from mqt_llava.tracking import TrackingSpec
from small_model import small_spec

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    path = tmp_path_factory.mktemp("export")
    save_export(build_model(small_spec()), path)
    return path


def sweep_config(export, data_root, out, limit=10):
    spec = EvalSpec(
        model=str(export),
        out=str(out),
        data_root=str(data_root),
        benchmarks=["pope", "mmbench", "mmvet"],
        budgets="2,8",
        limit=limit,
        batch_size=4,
        actors=1,
        actor_cpus=0.5,
        torch_threads=1,
        blank_control=True,
    )
    return spec.sweep_config()


def test_sweep_predicts_scores_reports_and_resumes(ray_local, export, synthetic_root, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(synthetic_root / "pope", data / "pope")
    shutil.copytree(synthetic_root / "mmbench", data / "mmbench")
    (data / "mmvet").mkdir()
    (data / "mmvet" / "mm-vet.json").write_text(
        json.dumps({"v1_0": {"imagename": "a.png", "question": "?", "answer": "x"}})
    )
    pope = spread(make_benchmark("pope", data).samples(), 10)
    assert {s.group for s in pope} == {"random", "popular", "adversarial"}
    broken = sorted({s.image for s in pope})[0]
    with open(broken, "r+b") as f:  # a corrupt image: its questions are counted rejections, the sweep goes on
        f.truncate(40)
    out = tmp_path / "out"
    lines = []
    results, paths = run_evaluation(sweep_config(export, data, out), TrackingSpec(), log=lines.append)

    by = {(r.benchmark, r.budget): r for r in results}
    assert {k: r.status for k, r in by.items()} == {
        ("pope", 2): "scored",
        ("mmbench", 2): "scored",
        ("mmvet", 2): "skipped",
        ("pope", 8): "scored",
        ("mmbench", 8): "scored",
        ("mmvet", 8): "skipped",
    }
    rejected = sum(s.image == broken for s in pope)
    assert by[("pope", 8)].rejected == rejected > 0 and by[("mmbench", 8)].rejected == 0
    assert any("ETA" in line for line in lines)

    # The Ray path (actors, batches of 4, mixed benchmarks) answers exactly as the engine one at a time.
    engine = InferenceEngine.from_export(export)
    rows = [json.loads(x) for x in (out / "predictions" / "pope" / "m8.jsonl").read_text().splitlines()]
    predicted = {r["key"]: r["prediction"] for r in rows if not r["error"]}
    for s in [s for s in pope if s.image != broken][:4]:
        alone = engine.generate([Request(s.prompt, Image.open(s.image).convert("RGB"))], 8, max_new_tokens=16)[0]
        assert predicted[s.key] == alone

    # The blank-image control: the same questions at M with every image blanked, compared paired by image.
    blank = [json.loads(x) for x in (out / "predictions" / "pope" / "m8-blank.jsonl").read_text().splitlines()]
    assert [r["key"] for r in blank] == [r["key"] for r in rows] == [s.key for s in pope]  # the samples' order
    controls = paths["controls"].read_text()
    assert "| pope | 8 |" in controls and "| mmbench | 8 |" in controls and "mmvet" not in controls

    assert (out / "results.csv").exists() and (out / "plots" / "all_benchmarks.png").exists()
    table = paths["table"].read_text()
    # Table 1's order; the toy world's MMBench is scored here, under a heading that says so.
    header = (
        "| # tokens | POPE | MMB (local, no GPT matching) | MM-Vet | Avg of the scored columns (not the paper's 11) |"
    )
    assert table.splitlines()[0] == header and "skipped" in table
    assert (out / "submissions" / "mmbench" / "m8" / "mmbench_dev_20230712.xlsx").exists()  # the server's file too
    client = MlflowClient(f"sqlite:///{out / 'mlflow.db'}")
    run = client.search_runs([client.get_experiment_by_name("mqt-llava").experiment_id])[0]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "pope/f1")] == [2, 8]
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {"results.csv", "table.md", "plots"}

    # A rerun predicts nothing again.
    stamp = (out / "predictions" / "mmbench" / "m2.jsonl").stat().st_mtime_ns
    lines.clear()
    again, _ = run_evaluation(sweep_config(export, data, out), TrackingSpec(), log=lines.append)
    assert (out / "predictions" / "mmbench" / "m2.jsonl").stat().st_mtime_ns == stamp
    assert not any("samples from" in line for line in lines)
    assert [r.scores for r in again] == [r.scores for r in results]

    # Other samples (a changed --limit) are predicted again, not scored against stale predictions.
    lines.clear()
    changed, _ = run_evaluation(sweep_config(export, data, out, limit=12), TrackingSpec(), log=lines.append)
    assert any("samples from pope, mmbench" in line for line in lines)
    assert {r.samples for r in changed if r.benchmark == "pope"} == {12}


def test_cli_refuses_bad_budgets_and_missing_files_before_ray(export, synthetic_root, tmp_path, capsys):
    def sets(*items):
        return [a for o in items for a in ("--set", o)]

    common = sets(f"model={export}", f"data_root={synthetic_root}", f"out={tmp_path}", "limit=null")
    assert main([*common, *sets("benchmarks=[pope]", "budgets=2,99")]) == 2
    assert "outside 1..8" in capsys.readouterr().err
    assert main([*common, *sets("benchmarks=[gqa]", f"data_root={tmp_path}", "budgets=null")]) == 2  # 2, 4, M
    assert "testdev_balanced_questions.json not found" in capsys.readouterr().err
    assert main([*common, *sets("benchmarks=[pope]", "options.pope.nope=1")]) == 2
    assert main(sets(f"model={tmp_path}", "benchmarks=[pope]")) == 2
    assert "not an export directory" in capsys.readouterr().err
    assert main([*common, *sets("benchmarks=[imagenet]")]) == 2
    assert "unknown benchmarks ['imagenet']" in capsys.readouterr().err
