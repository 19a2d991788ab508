import hashlib
import json

import pytest
from PIL import Image

from mqt_llava.data.images import decode_image
from mqt_llava.data.llava_format import REJECT_REASONS, Rejected, check_record, iter_json_records
from mqt_llava.model.tokenizer import byte_level_tokenizer
from mqt_llava.toy.corpus import (
    INSTRUCT_JSON,
    PRETRAIN_IMAGES,
    PRETRAIN_JSON,
    CorpusSpec,
    write_corpus,
)
from mqt_llava.toy.world import Scene
from odd_corpus import RULES, write_odd_corpus

SMALL = CorpusSpec(seed=3, num_pretrain=30, num_instruct=60, num_eval=10, text_only_fraction=0.2)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("synthetic"), SMALL, workers=1, log=lambda _: None)


def test_every_odd_file_is_accepted_and_every_bad_record_rejected_with_its_reason(tmp_path):
    odd = write_odd_corpus(tmp_path)
    tokenizer = byte_level_tokenizer()
    results = [
        check_record(r, i, str(odd.image_root), tokenizer, RULES)
        for i, r in enumerate(iter_json_records(str(odd.json_path)))
    ]
    accepted = {r["id"]: r for r in results if not isinstance(r, Rejected)}
    rejected = {r.id: r.reason for r in results if isinstance(r, Rejected)}
    assert set(accepted) == set(odd.accepted)
    assert rejected == odd.rejected
    assert set(rejected.values()) <= set(REJECT_REASONS)
    for rid, path in odd.accepted.items():
        row = accepted[rid]
        if path is None:
            assert row["image"] is None and row["image_path"] is None
        else:
            assert row["image"] == (odd.image_root / path).read_bytes()  # original bytes embedded
            assert decode_image(row["image"]).mode == "RGB"
            assert (row["width"], row["height"]) == Image.open(odd.image_root / path).size


def test_558k_format_with_the_plain_template(corpus):
    records = list(iter_json_records(str(corpus / PRETRAIN_JSON)))
    assert len(records) == SMALL.num_pretrain
    rules = RULES.__class__("plain", 512, 8)
    for i, record in enumerate(records):
        row = check_record(record, i, str(corpus / PRETRAIN_IMAGES), byte_level_tokenizer(), rules)
        assert not isinstance(row, Rejected), row
        assert (corpus / PRETRAIN_IMAGES / record["image"]).exists()


def test_665k_format_has_text_only_records_and_llava_folders(corpus):
    records = list(iter_json_records(str(corpus / INSTRUCT_JSON)))
    text_only = [r for r in records if "image" not in r]
    assert 0 < len(text_only) < len(records)
    folders = {r["image"].rsplit("/", 1)[0] for r in records if "image" in r}
    assert folders == {
        "coco/train2017",
        "gqa/images",
        "ocr_vqa/images",
        "textvqa/train_images",
        "vg/VG_100K",
        "vg/VG_100K_2",
    }
    tokenizer = byte_level_tokenizer()
    rows = [
        check_record(r, i, str(corpus), tokenizer, RULES.__class__("vicuna_v1", 1024, 8)) for i, r in enumerate(records)
    ]
    assert not [r for r in rows if isinstance(r, Rejected)]


def test_synthetic_corpus_has_every_question_family(corpus):
    records = json.loads((corpus / INSTRUCT_JSON).read_text())
    text = "\n".join(turn["value"] for r in records for turn in r["conversations"])
    needles = (
        "How many",
        "Where is the",
        "Is there",
        "What colour",
        "small or large",
        "\nA. ",
        "Answer the question using a single word or phrase.",
        "Answer with the option's letter",
    )
    for needle in needles:
        assert needle in text, needle
    formats = {p.suffix for p in corpus.rglob("*") if p.suffix in (".jpg", ".png")}
    assert formats == {".jpg", ".png"}
    sizes = {Image.open(p).size for p in (corpus / "coco/train2017").iterdir()}
    assert len({round(w / h, 2) for w, h in sizes}) > 2  # varied aspect ratios
    scenes = [json.loads(line) for line in (corpus / "eval/scenes.jsonl").read_text().splitlines()]
    assert len(scenes) == SMALL.num_eval and all((corpus / s["image"]).exists() for s in scenes)
    for s in scenes:  # held-out ground truth reloads to the very scene that was rendered
        assert json.loads(json.dumps(Scene.from_dict(s["scene"]).to_dict())) == s["scene"]


def digest(root):
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def test_same_seed_gives_byte_identical_corpus(corpus, tmp_path):
    again = write_corpus(tmp_path / "again", SMALL, workers=2, log=lambda _: None)
    assert digest(again) == digest(corpus)
    other = write_corpus(tmp_path / "other", CorpusSpec(**{**SMALL.__dict__, "seed": 4}), workers=1, log=lambda _: None)
    assert digest(other) != digest(corpus)
