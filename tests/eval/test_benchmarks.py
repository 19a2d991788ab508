"""The adapters read the official file formats and score with the official rules: an oracle that
answers with the gold answer scores full marks, a constant answer scores what it must."""

import dataclasses
import io
import json
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from mqt_llava.eval.benchmarks import BENCHMARKS, Skipped, make_benchmark
from mqt_llava.eval.benchmarks.base import BenchmarkFilesMissing
from mqt_llava.eval.judge import Judge, JudgeError
from mqt_llava.eval.metrics import LETTERS
from mqt_llava.toy.benchmark_files import WRITERS


def oracle(name, sample):
    t = sample.target
    return {
        "vqav2": lambda: Counter(t).most_common(1)[0][0].capitalize() + ".",  # normalisation must undo this
        "gqa": lambda: t.capitalize() + ".",
        "pope": lambda: f"{t.capitalize()}, it is.",
        "mme": lambda: t["answer"].capitalize(),
        "scienceqa": lambda: LETTERS[t["answer"]],
        "mmbench": lambda: t["answer"],
    }[name]()


@pytest.mark.parametrize("name", list(WRITERS))
def test_synthetic_files_read_by_the_real_adapters_score_full_marks_for_gold_answers(synthetic_root, name):
    benchmark = make_benchmark(name, synthetic_root)
    samples = benchmark.samples()
    assert len(samples) >= 12 and len({s.key for s in samples}) == len(samples)
    scores = benchmark.score(samples, {s.key: oracle(name, s) for s in samples})
    full = scores.get(f"{benchmark.metric}_max", 100.0)
    if name == "vqav2":  # dissenting annotators cap some questions below 1
        assert 90 < scores["accuracy"] <= 100
    else:
        assert scores[benchmark.metric] == pytest.approx(full)
    assert benchmark.score(samples, {})[benchmark.metric] < full  # unanswered is wrong


def test_prompts_carry_llava_15s_response_format(synthetic_root):
    short = "Answer the question using a single word or phrase."
    letter = "Answer with the option's letter from the given choices directly."
    for name, suffix in [
        ("vqav2", short),
        ("gqa", short),
        ("pope", short),
        ("mme", short),
        ("scienceqa", letter),
        ("mmbench", letter),
    ]:
        assert all(s.prompt.endswith("\n" + suffix) for s in make_benchmark(name, synthetic_root).samples())
    sqa = make_benchmark("scienceqa", synthetic_root).samples()[0].prompt.splitlines()
    assert sqa[0].startswith("Context: ") and sqa[2] == f"A. {sqa[2][3:]}"


def test_pope_constant_yes_and_the_three_splits(synthetic_root):
    benchmark = make_benchmark("pope", synthetic_root)
    samples = benchmark.samples()
    assert {s.group for s in samples} == {"random", "popular", "adversarial"}
    scores = benchmark.score(samples, {s.key: "Yes" for s in samples})
    assert scores["yes_ratio"] == 100 and scores["recall"] == 100 and scores["accuracy"] == pytest.approx(50)
    assert scores["f1/random"] == pytest.approx(200 / 3)


def test_scienceqa_keeps_only_the_image_subset(synthetic_root):
    problems = json.loads((synthetic_root / "scienceqa" / "problems.json").read_text())
    samples = make_benchmark("scienceqa", synthetic_root).samples()
    assert len(samples) == sum(p["image"] is not None for p in problems.values()) < len(problems)


def test_mme_scores_by_hand(synthetic_root):
    benchmark = make_benchmark("mme", synthetic_root)
    samples = [s for s in benchmark.samples() if s.group == "count"][:4]  # 2 images x (Yes, No)
    answers = {samples[0].key: "Yes", samples[1].key: "No", samples[2].key: "Yes", samples[3].key: "Yes"}
    scores = benchmark.score(samples, answers)
    assert scores["count/acc"] == 75 and scores["count/acc_plus"] == 50 and scores["perception"] == 125
    assert scores["perception_max"] == 200


def test_mme_reads_the_images_and_questions_layout(tmp_path):
    subtask = tmp_path / "mme" / "MME_Benchmark_release_version" / "artwork"
    (subtask / "images").mkdir(parents=True)
    (subtask / "questions_answers_YN").mkdir()
    Image.new("RGB", (8, 8)).save(subtask / "images" / "10002.jpg")
    (subtask / "questions_answers_YN" / "10002.txt").write_text("Is it a painting?\tYes\nIs it a photo?\tNo\n")
    samples = make_benchmark("mme", tmp_path).samples()
    assert [s.target["answer"] for s in samples] == ["yes", "no"] and samples[0].image.endswith("10002.jpg")


def test_vizwiz_prompt_and_unanswerable(tmp_path):
    root = tmp_path / "vizwiz"
    root.mkdir()
    val = [
        {
            "image": "VizWiz_val_00000001.jpg",
            "question": "What is this?",
            "answer_type": "unanswerable",
            "answers": [{"answer": "unanswerable", "answer_confidence": "yes"}] * 10,
        }
    ]
    (root / "val.json").write_text(json.dumps(val))
    benchmark = make_benchmark("vizwiz", tmp_path)
    sample = benchmark.samples()[0]
    assert "respond with 'Unanswerable'" in sample.prompt and sample.key == "VizWiz_val_00000001.jpg"
    assert benchmark.score([sample], {sample.key: "Unanswerable"})["accuracy"] == 100


def png_struct(colour):
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), colour).save(buffer, format="PNG")
    return {"bytes": buffer.getvalue(), "path": "x.png"}


def test_mmmu_parquet_multiple_choice_and_open(tmp_path):
    folder = tmp_path / "mmmu" / "Art"
    folder.mkdir(parents=True)
    rows = [
        {
            "id": "validation_Art_1",
            "question": "<image 1> Which city?",
            "options": "['London', 'Paris']",
            "answer": "B",
            "question_type": "multiple-choice",
            "subfield": "Art",
            "image_1": png_struct("red"),
            "image_2": None,
        },
        {
            "id": "validation_Art_2",
            "question": "<image 1> <image 2> How many?",
            "options": "[]",
            "answer": "['12']",
            "question_type": "open",
            "subfield": "Art",
            "image_1": png_struct("red"),
            "image_2": png_struct("blue"),
        },
    ]
    pq.write_table(pa.Table.from_pylist(rows), folder / "validation-00000-of-00001.parquet")
    benchmark = make_benchmark("mmmu", tmp_path)
    mc, open_ = benchmark.samples()
    assert mc.prompt.endswith(
        "(A) London\n(B) Paris\n\nAnswer with the option's letter from the given choices directly."
    )
    assert isinstance(mc.image, bytes) and open_.group == "multi-image"
    assert benchmark.score([mc, open_], {mc.key: "(B)", open_.key: "There are 12."})["accuracy"] == 100
    assert benchmark.score([mc, open_], {mc.key: "(A)", open_.key: "13"})["accuracy"] == 0


def test_missing_files_and_unknown_options_are_clear_errors(tmp_path):
    with pytest.raises(
        BenchmarkFilesMissing, match=r"gqa/testdev_balanced_questions.json not found \(option gqa.questions"
    ):
        make_benchmark("gqa", tmp_path).samples()
    with pytest.raises(ValueError, match="unknown option"):
        make_benchmark("pope", tmp_path, {"split": "random"})
    with pytest.raises(ValueError, match="unknown benchmark"):
        make_benchmark("seed", tmp_path)


class FakeJudge(BaseHTTPRequestHandler):
    """An OpenAI-compatible endpoint answering with fixed reviews (no judge model is reachable here)."""

    replies: list[str] = []
    status = 200

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeJudge.seen.append((self.headers.get("Authorization"), body))
        reply = json.dumps({"choices": [{"message": {"content": FakeJudge.replies.pop(0)}}]})
        self.send_response(FakeJudge.status)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(reply.encode())

    def log_message(self, *args):
        pass


@pytest.fixture
def judge_url():
    FakeJudge.seen, FakeJudge.status = [], 200
    server = ThreadingHTTPServer(("127.0.0.1", 0), FakeJudge)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()


def write_judged_files(root):
    bench = root / "llava_bench"
    bench.mkdir(parents=True)
    qs = [
        {"question_id": 0, "image": "001.jpg", "text": "Describe it.", "category": "detail"},
        {"question_id": 1, "image": "001.jpg", "text": "What is odd?", "category": "complex"},
    ]
    (bench / "questions.jsonl").write_text("\n".join(json.dumps(q) for q in qs))
    (bench / "context.jsonl").write_text(json.dumps({"image": "001.jpg", "caption": "A cat on a mat."}))
    (bench / "answers_gpt4.jsonl").write_text("\n".join(json.dumps({"question_id": i, "text": "ref"}) for i in (0, 1)))
    vet = root / "mmvet"
    vet.mkdir()
    (vet / "mm-vet.json").write_text(
        json.dumps(
            {
                "v1_0": {"imagename": "v1_0.png", "question": "What is 2+2?", "answer": "4", "capability": ["math"]},
                "v1_1": {"imagename": "v1_1.png", "question": "Colour?", "answer": "red", "capability": ["rec"]},
            }
        )
    )


def test_judged_benchmarks_are_skipped_without_a_judge(tmp_path):
    write_judged_files(tmp_path)
    for name in ("llava_bench", "mmvet"):
        benchmark = make_benchmark(name, tmp_path)
        with pytest.raises(Skipped, match="needs a judge model"):
            benchmark.score(benchmark.samples(), {})


def test_judged_benchmarks_through_an_openai_compatible_endpoint(tmp_path, judge_url, monkeypatch):
    write_judged_files(tmp_path)
    monkeypatch.setenv("JUDGE_KEY", "sk-test")
    judge = Judge.from_options(judge_url, "judge-1", "JUDGE_KEY")
    bench = make_benchmark("llava_bench", tmp_path)
    FakeJudge.replies = ["8 6\nThe second answer misses details.", "10 10\nBoth fine."]
    scores = bench.score(bench.samples(), {"0": "a cat", "1": "nothing"}, judge=judge)
    assert scores["relative_score"] == pytest.approx(100 * 16 / 18) and scores["relative_score/detail"] == 75
    authorization, body = FakeJudge.seen[0]
    assert authorization == "Bearer sk-test" and body["model"] == "judge-1" and body["temperature"] == 0
    assert "[Assistant 2]\na cat\n" in body["messages"][1]["content"]
    vet = make_benchmark("mmvet", tmp_path)
    FakeJudge.replies = ["1.0", "I cannot grade this"]
    scores = vet.score(vet.samples(), {"v1_0": "4", "v1_1": "blue"}, judge=judge)
    assert scores["score"] == 50 and scores["score/math"] == 100 and scores["judge_unparsed"] == 1


def test_a_failing_judge_is_an_error_not_a_score(judge_url):
    FakeJudge.status, FakeJudge.replies = 401, ["nope"]
    with pytest.raises(JudgeError, match="HTTP 401"):
        Judge(judge_url, "judge-1", retries=3).complete("grade", "this")
    assert len(FakeJudge.seen) == 1  # an auth error is not retried


def test_every_benchmark_has_a_table_title_and_metric():
    for cls in BENCHMARKS.values():
        assert cls.title and cls.metric and cls.scale > 0


def test_a_failing_judge_leaves_the_pair_unscored_and_the_predictions_kept(tmp_path, judge_url):
    from mqt_llava.eval.runner import Sweep
    from mqt_llava.eval.spec import EvalSpec

    write_judged_files(tmp_path / "data")
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "config.json").write_text(json.dumps({"max_visual_tokens": 8}))
    judge = Judge(judge_url, "judge-1", retries=1)
    spec = EvalSpec(
        model=str(tmp_path / "export"),
        out=str(tmp_path / "out"),
        data_root=str(tmp_path / "data"),
        benchmarks=["llava_bench"],
        budgets="4",
    )
    config = dataclasses.replace(spec.sweep_config(), judge=judge)  # a judge with one try, not the spec's
    sweep = Sweep(config, log=lambda _: None)
    sweep.finish_pair("llava_bench", 4, [{"key": k, "prediction": "a cat", "error": ""} for k in ("0", "1")])
    FakeJudge.status, FakeJudge.replies = 503, ["overloaded"]
    failed = sweep.score("llava_bench", 4)
    assert failed.status == "failed" and "HTTP 503" in failed.reason
    assert sweep.predictions_path("llava_bench", 4).exists() and not sweep.scores_path("llava_bench", 4).exists()
    FakeJudge.status, FakeJudge.replies = 200, ["8 4", "8 4"]
    assert sweep.score("llava_bench", 4).scores["relative_score"] == 50  # the rerun scores the kept predictions


def test_a_malformed_line_names_its_file_and_line(tmp_path):
    (tmp_path / "pope" / "coco").mkdir(parents=True)
    good = json.dumps({"question_id": 1, "image": "a.jpg", "text": "Is there a cat?", "label": "yes"})
    (tmp_path / "pope" / "coco" / "coco_pope_random.json").write_text(good + "\n{oops\n")
    with pytest.raises(ValueError, match=r"coco_pope_random.json:2 is not valid JSON"):
        make_benchmark("pope", tmp_path, {"splits": ["random"]}).samples()
