"""The lmms-eval plugin against the real lmms-eval API. lmms-eval is not a dependency of this
project (it pulls in some 60 packages), so without it this module is reported as skipped; run it
in an environment that has it (docs/evaluation.md: "lmms-eval plugin")."""

import pytest

lmms_eval = pytest.importorskip("lmms_eval")

from lmms_eval.api.instance import Instance  # noqa: E402

from mqt_llava.inference import InferenceEngine, Request  # noqa: E402
from mqt_llava.model.export import save_export  # noqa: E402
from mqt_llava.toy.world import random_scene, render_scene  # noqa: E402


def instance(context, doc_id, max_new_tokens, until=None):
    kwargs = {"max_new_tokens": max_new_tokens} | ({"until": until} if until else {})
    args = (context, kwargs, lambda doc: [doc["image"]] if doc["image"] else [], doc_id, "toy", "test")
    return Instance("generate_until", args, idx=0, metadata={"task": "toy", "doc_id": doc_id, "repeats": 1})


def test_the_entry_point_resolves_and_answers_match_the_engine(built, tmp_path):
    from lmms_eval.models import get_model

    save_export(built, tmp_path)
    cls = get_model("mqt_llava")  # through the `lmms_eval.models` entry point
    model = cls.create_from_arg_string(f"pretrained={tmp_path},num_visual_tokens=3", {"batch_size": 2})
    assert model.num_visual_tokens == 3 and model.batch_size == 2
    docs = [{"image": render_scene(random_scene(i), 40, 30)} for i in range(3)] + [{"image": None}]
    model.task_dict = {"toy": {"test": docs}}
    requests = [
        instance("<image>\nWhat colour is the circle?", 0, 6),
        instance("How many shapes?", 1, 6),
        instance("Is there a square?", 2, 4),
        instance("Name a colour.", 3, 6),
    ]
    answers = model.generate_until(requests)
    engine = InferenceEngine.from_export(tmp_path)
    questions = ["What colour is the circle?", "How many shapes?", "Is there a square?", "Name a colour."]
    for doc, question, length, answer in zip(docs, questions, (6, 6, 4, 6), answers, strict=True):
        assert answer == engine.generate([Request(question, doc["image"])], 3, max_new_tokens=length)[0]


def test_stop_strings_and_a_budget_above_M(built, tmp_path):
    from mqt_llava.eval.lmms_eval_plugin import MQTLlava

    save_export(built, tmp_path)
    with pytest.raises(ValueError, match="num_tokens: 9 outside 1..8"):
        MQTLlava(str(tmp_path), num_visual_tokens=9)
    model = MQTLlava(str(tmp_path), num_visual_tokens=8)
    model.task_dict = {"toy": {"test": [{"image": None}]}}
    full = model.generate_until([instance("Say something.", 0, 8)])[0]
    assert len(full) > 1
    cut = model.generate_until([instance("Say something.", 0, 8, until=[full[1]])])[0]
    assert cut == full.split(full[1])[0]
