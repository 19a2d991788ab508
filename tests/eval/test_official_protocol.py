"""Table 1 scored as the paper scored it: the llava-7b preset's splits and servers, LLaVA-1.5's
prompts, extraction and upload files (facts from haotian-liu/LLaVA's scripts/v1_5/eval/*.sh,
llava/eval/*.py and scripts/convert_*_for_submission.py, which gordonhu608/MQT-LLaVA keeps), and a
report that never prints a local number where the paper's comes from a server."""

import base64
import csv
import io
import json

import pytest
from PIL import Image

from mqt_llava.config import load_config
from mqt_llava.eval.benchmarks import make_benchmark
from mqt_llava.eval.report import table
from mqt_llava.eval.runner import PairResult, Sweep
from mqt_llava.eval.spec import EvalSpec

SHORT = "Answer the question using a single word or phrase."
LETTER = "Answer with the option's letter from the given choices directly."


def write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_the_llava_7b_preset_scores_vqav2_vizwiz_and_mmbench_on_their_servers(tmp_path):
    """VQAv2 test-dev, VizWiz test and MMBench through its server, as the paper's Table 1."""
    spec = load_config(EvalSpec, "llava-7b/evaluate", [])
    expected = {"vqav2": {"split": "test-dev"}, "vizwiz": {"split": "test"}, "mmbench": {"local": False}}
    for name, official in expected.items():
        benchmark = make_benchmark(name, tmp_path, spec.options.get(name))
        assert {k: benchmark.options[k] for k in official} == official
        assert benchmark.server_scored and benchmark.column_title == benchmark.title
    for name in ("gqa", "pope", "mme", "scienceqa", "textvqa", "mmmu"):  # scored locally, as the paper did
        assert not make_benchmark(name, tmp_path, spec.options.get(name)).server_scored
    # The class defaults (the toy world's) are local, and their columns say so.
    assert make_benchmark("vqav2", tmp_path).column_title == "VQAv2 (val, local)"
    assert make_benchmark("vizwiz", tmp_path).column_title == "VizWiz (val, local)"
    assert make_benchmark("mmbench", tmp_path).column_title == "MMB (local, no GPT matching)"


def test_mme_prompt_is_llava_15s_without_please_answer_yes_or_no(tmp_path):
    subtask = tmp_path / "mme" / "MME_Benchmark_release_version" / "existence"
    subtask.mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(subtask / "000000006040.jpg")
    (subtask / "000000006040.txt").write_text(
        "Is there a train in this image? Please answer yes or no.\tYes\n"
        "Is there a bed in this image?  Please answer yes or no.\tNo\n"  # the release's double space
    )
    prompts = [s.prompt for s in make_benchmark("mme", tmp_path).samples()]
    assert prompts == [f"Is there a train in this image?\n{SHORT}", f"Is there a bed in this image?\n{SHORT}"]


def test_vqav2_test_dev_asks_llavas_file_and_uploads_every_test2015_question(tmp_path):
    root = tmp_path / "vqav2"
    text = f"Is the ball flying towards the batter?\n{SHORT}"
    write_jsonl(
        root / "llava_vqav2_mscoco_test-dev2015.jsonl",
        [
            {"question_id": 262144000, "image": "COCO_test2015_000000262144.jpg", "text": text, "category": "default"},
            {
                "question_id": 262144001,
                "image": "COCO_test2015_000000262144.jpg",
                "text": f"What is he doing?\n{SHORT}",
            },
        ],
    )
    write_jsonl(
        root / "llava_vqav2_mscoco_test2015.jsonl",
        [
            {"question_id": 1, "image": "COCO_test2015_000000000001.jpg", "text": f"A test-std question?\n{SHORT}"},
            {"question_id": 262144000, "image": "COCO_test2015_000000262144.jpg", "text": text},
            {
                "question_id": 262144001,
                "image": "COCO_test2015_000000262144.jpg",
                "text": f"What is he doing?\n{SHORT}",
            },
        ],
    )
    benchmark = make_benchmark("vqav2", tmp_path, {"split": "test-dev"})
    samples = benchmark.samples()
    assert [s.prompt for s in samples] == [text, f"What is he doing?\n{SHORT}"]  # the file's text, as it is
    assert samples[0].image == str(root / "test2015" / "COCO_test2015_000000262144.jpg")
    assert benchmark.score(samples, {"262144000": "Yes"}) == {}
    upload = benchmark.submission(samples, {"262144000": "Yes.", "262144001": "Swinging the bat"})
    # convert_vqav2_for_submission.py: every test2015 question in its file's order, EvalAI-processed.
    assert upload == {
        "vqav2_test-dev2015_upload.json": [
            {"question_id": 1, "answer": ""},
            {"question_id": 262144000, "answer": "yes"},
            {"question_id": 262144001, "answer": "swinging bat"},
        ]
    }


def test_vqav2_test_dev_without_the_test2015_file_fails_before_inference(tmp_path):
    write_jsonl(
        tmp_path / "vqav2" / "llava_vqav2_mscoco_test-dev2015.jsonl", [{"question_id": 1, "image": "a", "text": "q"}]
    )
    with pytest.raises(FileNotFoundError, match="llava_vqav2_mscoco_test2015.jsonl"):
        make_benchmark("vqav2", tmp_path, {"split": "test-dev"}).samples()


def test_vizwiz_test_asks_llavas_file_and_uploads_image_and_answer(tmp_path):
    text = f"What is this?\nWhen the provided information is insufficient, respond with 'Unanswerable'.\n{SHORT}"
    write_jsonl(
        tmp_path / "vizwiz" / "llava_test.jsonl",
        [
            {"question_id": 0, "image": "VizWiz_test_00000000.jpg", "text": text},
            {"question_id": 1, "image": "VizWiz_test_00000001.jpg", "text": text},
        ],
    )
    benchmark = make_benchmark("vizwiz", tmp_path, {"split": "test"})
    samples = benchmark.samples()
    assert [s.prompt for s in samples] == [text, text]
    assert samples[1].image == str(tmp_path / "vizwiz" / "test" / "VizWiz_test_00000001.jpg")
    assert benchmark.score(samples, {"0": "Unanswerable"}) == {}
    # convert_vizwiz_for_submission.py: {image, answer} per question, EvalAI-processed.
    assert benchmark.submission(samples, {"0": "Unanswerable", "1": "A can of Coke."}) == {
        "vizwiz_test_upload.json": [
            {"image": "VizWiz_test_00000000.jpg", "answer": "unanswerable"},
            {"image": "VizWiz_test_00000001.jpg", "answer": "can of coke"},
        ]
    }
    # The val split (local) asks the same wording, built from the official annotations.
    val = [
        {
            "image": "VizWiz_val_00000001.jpg",
            "question": "What is this?",
            "answer_type": "unanswerable",
            "answers": [{"answer": "unanswerable", "answer_confidence": "yes"}] * 10,
        }
    ]
    (tmp_path / "vizwiz" / "val.json").write_text(json.dumps(val))
    assert make_benchmark("vizwiz", tmp_path).samples()[0].prompt == text


def write_textvqa(root, questions):
    """The official annotation file as textvqa.org releases it (no OCR tokens in it) and LLaVA-1.5's
    question file, whose "question_id" is the image's id and whose prompts carry the OCR tokens."""
    data = [
        {
            "question": "what is the brand of this camera?",
            "image_id": "003a8ae2ef43b901",
            "image_classes": ["Camera"],
            "flickr_original_url": "https://example.org/a.jpg",
            "flickr_300k_url": "https://example.org/b.jpg",
            "image_width": 1024,
            "image_height": 664,
            "answers": ["dakota"] * 9 + ["dakota digital"],
            "question_tokens": ["what", "is", "the", "brand", "of", "this", "camera"],
            "question_id": 34602,
            "set_name": "val",
        },
        {
            "question": "what does the small white text spell?",
            "image_id": "003a8ae2ef43b901",
            "image_classes": [],
            "flickr_original_url": "",
            "flickr_300k_url": "",
            "image_width": 1024,
            "image_height": 664,
            "answers": ["copenhagen"] * 10,
            "question_tokens": [],
            "question_id": 34603,
            "set_name": "val",
        },
    ]
    root.mkdir(parents=True, exist_ok=True)
    (root / "TextVQA_0.5.1_val.json").write_text(
        json.dumps({"dataset_type": "val", "dataset_name": "textvqa", "dataset_version": "0.5.1", "data": data})
    )
    write_jsonl(root / "llava_textvqa_val_v051_ocr.jsonl", questions)


TEXTVQA_OCR = [
    {
        "question_id": "003a8ae2ef43b901",
        "image": "003a8ae2ef43b901.jpg",
        "text": f"What is the brand of this camera?\nReference OCR token: DAKOTA, DIGITAL, DIGITAL, Camera\n{SHORT}",
    },
    {
        "question_id": "003a8ae2ef43b901",
        "image": "003a8ae2ef43b901.jpg",
        "text": f"What does the small white text spell?\n{SHORT}",
    },  # an image whose OCR found nothing
]


def test_textvqa_ocr_tokens_reach_the_prompt_with_the_official_annotation_file(tmp_path):
    write_textvqa(tmp_path / "textvqa", TEXTVQA_OCR)
    benchmark = make_benchmark("textvqa", tmp_path)
    brand, spell = benchmark.samples()
    assert brand.prompt == TEXTVQA_OCR[0]["text"] and spell.prompt == TEXTVQA_OCR[1]["text"]
    assert (brand.key, spell.key) == ("34602", "34603")  # paired with the annotations by image and question
    assert brand.target == ["dakota"] * 9 + ["dakota digital"]
    assert brand.image == str(tmp_path / "textvqa" / "train_images" / "003a8ae2ef43b901.jpg")
    assert benchmark.score([brand, spell], {"34602": "Dakota", "34603": "Copenhagen."})["accuracy"] == 100
    plain = make_benchmark("textvqa", tmp_path, {"ocr": False}).samples()[0]
    assert plain.prompt == f"What is the brand of this camera?\n{SHORT}"


def test_textvqa_a_question_file_without_ocr_tokens_is_an_error_not_a_silent_loss(tmp_path):
    write_textvqa(tmp_path / "textvqa", [TEXTVQA_OCR[1]])
    with pytest.raises(ValueError, match="Reference OCR token"):
        make_benchmark("textvqa", tmp_path).samples()
    assert make_benchmark("textvqa", tmp_path, {"ocr": False}).samples()[0].key == "34603"


def jpeg_base64():
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(buffer, format="JPEG")
    return base64.b64encode(buffer.getvalue()).decode()


MMBENCH_COLUMNS = [
    "index",
    "question",
    "hint",
    "A",
    "B",
    "C",
    "D",
    "answer",
    "category",
    "image",
    "source",
    "l2-category",
    "comment",
    "split",
]


def write_mmbench(root, name="mmbench_dev_20230712.tsv"):
    """Two questions as the released dev TSV holds them: each with its circular copies (the options
    rotated, index + k x 1,000,000), one with a hint, one with three options."""
    image = jpeg_base64()
    rows = [
        [5, "What colour is it?", "A photo.", "red", "green", "blue", "pink", "A"],
        [1000005, "What colour is it?", "A photo.", "green", "blue", "pink", "red", "D"],
        [2000005, "What colour is it?", "A photo.", "blue", "pink", "red", "green", "C"],
        [3000005, "What colour is it?", "A photo.", "pink", "red", "green", "blue", "B"],
        [9, "How many?", "nan", "one", "two", "three", "", "B"],
        [1000009, "How many?", "nan", "two", "three", "one", "", "A"],
        [2000009, "How many?", "nan", "three", "one", "two", "", "C"],
    ]
    root.mkdir(parents=True, exist_ok=True)
    with (root / name).open("w", newline="") as f:
        writer = csv.writer(f, delimiter="\t")
        writer.writerow(MMBENCH_COLUMNS)
        for index, question, hint, a, b, c, d, answer in rows:
            writer.writerow(
                [
                    index,
                    question,
                    hint,
                    a,
                    b,
                    c,
                    d,
                    answer,
                    "color_attribute",
                    image,
                    "src",
                    "attribute_reasoning",
                    "nan",
                    "dev",
                ]
            )
    return rows


def test_mmbench_asks_each_row_once_and_scores_circular_groups_as_the_server(tmp_path):
    write_mmbench(tmp_path / "mmbench")
    benchmark = make_benchmark("mmbench", tmp_path)  # local: the toy world's default
    samples = benchmark.samples()
    assert len(samples) == 7  # the TSV's rows hold the rotations: no further ones are made
    assert samples[1].prompt == f"A photo.\nWhat colour is it?\nA. green\nB. blue\nC. pink\nD. red\n{LETTER}"
    assert samples[4].prompt == f"How many?\nA. one\nB. two\nC. three\n{LETTER}"  # "nan" hint: none
    assert {s.unit for s in samples} == {"5", "9"}  # a --limit draw keeps a question's rotations together
    gold = {s.key: s.target["answer"] for s in samples}
    assert benchmark.score(samples, gold)["accuracy"] == 100
    one_wrong = gold | {"2000009": "A"}  # the second question wrong in one rotation: wrong
    assert benchmark.score(samples, one_wrong)["accuracy"] == 50
    assert benchmark.score(samples, {s.key: "red" for s in samples})["accuracy"] == 50  # the option's text
    assert benchmark.score(samples, {s.key: "A" for s in samples})["accuracy"] == 0  # "always A" never survives


def test_mmbench_upload_is_the_converters_xlsx_and_no_local_number(tmp_path):
    from openpyxl import load_workbook

    write_mmbench(tmp_path / "mmbench")
    benchmark = make_benchmark("mmbench", tmp_path, {"local": False})
    samples = benchmark.samples()
    assert benchmark.server_scored and benchmark.score(samples, {}) == {}
    answers = {s.key: f"{s.target['answer']}." for s in samples if s.key != "9"}
    files = benchmark.submission(samples, answers)
    sheet = load_workbook(io.BytesIO(files["mmbench_dev_20230712.xlsx"])).active
    rows = [list(r) for r in sheet.iter_rows(values_only=True)]
    # convert_mmbench_for_submission.py: hint, category, source, image, comment, l2-category dropped,
    # the model's answer as it is in "prediction" at position 6.
    assert rows[0] == ["index", "question", "A", "B", "C", "D", "prediction", "answer", "split"]
    assert rows[1] == [5, "What colour is it?", "red", "green", "blue", "pink", "A.", "A", "dev"]
    assert rows[5] == [9, "How many?", "one", "two", "three", None, None, "B", "dev"]  # unanswered: empty
    assert len(rows) == 8 and sheet.title == "Sheet1"


def test_mmbench_test_split_has_no_answers_to_score_locally(tmp_path):
    root = tmp_path / "mmbench"
    root.mkdir()
    columns = [c for c in MMBENCH_COLUMNS if c != "answer"]
    with (root / "mmbench_test_en_20231003.tsv").open("w", newline="") as f:
        writer = csv.writer(f, delimiter="\t")
        writer.writerow(columns)
        writer.writerow([3, "Which?", "nan", "x", "y", "nan", "nan", "c", jpeg_base64(), "s", "l2", "nan", "test"])
    options = {"tsv": "mmbench_test_en_20231003.tsv"}
    with pytest.raises(ValueError, match="no answer column"):
        make_benchmark("mmbench", tmp_path, options).samples()
    upload = make_benchmark("mmbench", tmp_path, options | {"local": False})
    samples = upload.samples()
    assert samples[0].prompt == f"Which?\nA. x\nB. y\n{LETTER}"
    assert "mmbench_test_en_20231003.xlsx" in upload.submission(samples, {"3": "B"})


def write_scienceqa(root):
    problems = {
        str(i): {
            "question": f"Q{i}?",
            "choices": ["a", "b", "c"],
            "answer": i % 3,
            "hint": "",
            "image": "image.png",
            "subject": "natural science",
        }
        for i in range(60)
    }
    root.mkdir(parents=True, exist_ok=True)
    (root / "problems.json").write_text(json.dumps(problems))
    (root / "pid_splits.json").write_text(json.dumps({"test": list(problems)}))


def test_scienceqa_unreadable_answer_is_wrong_as_llava_15_scores_it_or_a_seeded_pick(tmp_path):
    write_scienceqa(tmp_path / "scienceqa")
    official = make_benchmark("scienceqa", tmp_path)
    samples = official.samples()
    assert samples[0].prompt == f"Q0?\nA. a\nB. b\nC. c\n{LETTER}"
    unreadable = {s.key: "I cannot tell." for s in samples}
    assert official.score(samples, unreadable)["accuracy"] == 0  # eval_science_qa.py's get_pred_idx: -1
    assert official.score(samples, {"0": "The answer is A."} | {"1": "B. b"})["accuracy"] == pytest.approx(200 / 60)
    seeded = make_benchmark("scienceqa", tmp_path, {"unparsed": "random"})
    first = seeded.score(samples, unreadable)["accuracy"]
    assert 10 < first < 60 and seeded.score(samples, unreadable)["accuracy"] == first  # chance, reproduced
    picks = [seeded.chosen(s, "?") for s in samples]
    assert picks == [seeded.chosen(s, "?") for s in reversed(samples)][::-1]  # per question, not per call order
    other = make_benchmark("scienceqa", tmp_path, {"unparsed": "random", "seed": 1})
    assert [other.chosen(s, "?") for s in samples] != picks
    with pytest.raises(ValueError, match="unparsed"):
        make_benchmark("scienceqa", tmp_path, {"unparsed": "skip"}).samples()


def test_the_report_marks_server_columns_to_upload_and_names_local_ones():
    uploads = {m: f"/runs/eval/x/submissions/vqav2/m{m}/vqav2_test-dev2015_upload.json" for m in (2, 4)}
    results = []
    for m in (2, 4):
        results += [
            PairResult("vqav2", m, "upload", {}, 107394, reason="to upload", uploads=[uploads[m]]),
            PairResult("mmbench", m, "scored", {"accuracy": 61.0}, 4377, title="MMB (local, no GPT matching)"),
            PairResult("pope", m, "scored", {"f1": 85.0}, 8910),
        ]
    text = table(results)
    header = text.splitlines()[0]
    assert header.startswith("| # tokens | VQAv2 | POPE | MMB (local, no GPT matching) |")
    assert "Avg of the scored columns (not the paper's 11)" in header
    assert text.splitlines()[2].startswith("| 2 | to upload | 85.0 | 61.0 |")
    for path in uploads.values():
        assert path in text
    assert "VQAv2: to upload to its evaluation server" in text


def test_the_sweep_writes_the_upload_file_and_reports_no_number_for_a_server_split(tmp_path):
    text = f"What?\n{SHORT}"
    questions = [{"question_id": 7, "image": "a.jpg", "text": text}, {"question_id": 8, "image": "b.jpg", "text": text}]
    write_jsonl(tmp_path / "data" / "vqav2" / "llava_vqav2_mscoco_test-dev2015.jsonl", questions)
    write_jsonl(
        tmp_path / "data" / "vqav2" / "llava_vqav2_mscoco_test2015.jsonl",
        [{"question_id": q, "image": "x.jpg", "text": text} for q in (6, 7, 8)],
    )
    (tmp_path / "export").mkdir()
    (tmp_path / "export" / "config.json").write_text(json.dumps({"max_visual_tokens": 8}))
    config = EvalSpec(
        model=str(tmp_path / "export"),
        out=str(tmp_path / "out"),
        data_root=str(tmp_path / "data"),
        benchmarks=["vqav2"],
        budgets="4",
        options={"vqav2": {"split": "test-dev"}},
    ).sweep_config()
    sweep = Sweep(config, log=lambda _: None)
    sweep.finish_pair(
        "vqav2",
        4,
        [{"key": "7", "prediction": "Two", "error": ""}, {"key": "8", "prediction": "", "error": "image: missing"}],
    )
    result = sweep.score("vqav2", 4)
    path = tmp_path / "out" / "submissions" / "vqav2" / "m4" / "vqav2_test-dev2015_upload.json"
    assert (result.status, result.scores, result.rejected, result.uploads) == ("upload", {}, 1, [str(path)])
    assert json.loads(path.read_text()) == [
        {"question_id": 6, "answer": ""},
        {"question_id": 7, "answer": "2"},
        {"question_id": 8, "answer": ""},
    ]
    assert not sweep.scores_path("vqav2", 4).exists()
    assert "| 4 | to upload |" in table([result])
