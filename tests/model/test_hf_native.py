import subprocess
import sys

import torch

from mqt_llava.model.export import save_export

LOAD = """
import sys, torch
from mqt_llava.model import MQTLlavaForConditionalGeneration  # registers the Auto classes
from transformers import AutoConfig, AutoModelForImageTextToText
from mqt_llava.model import MatryoshkaQueryTransformer, TokenSchedule

path = sys.argv[1]
config = AutoConfig.from_pretrained(path)
model = AutoModelForImageTextToText.from_pretrained(path).eval()
assert type(model) is MQTLlavaForConditionalGeneration, type(model)
assert isinstance(model.connector, MatryoshkaQueryTransformer) and TokenSchedule("log", 8).support == (2, 4, 8)
ids = torch.tensor([[1, 5, -200, 7, 9]])
with torch.no_grad():
    logits = model(input_ids=ids, pixel_values=torch.zeros(1, 3, 32, 32, dtype=torch.uint8), num_visual_tokens=3).logits
torch.save(logits, sys.argv[2])
print(config.model_type, config.max_visual_tokens)
"""


def test_an_export_loads_through_the_auto_classes_once_the_model_class_is_imported(built, tmp_path):
    save_export(built, tmp_path / "export")
    # A fresh process: nothing but importing the model class may have registered it.
    done = subprocess.run(
        [sys.executable, "-c", LOAD, str(tmp_path / "export"), str(tmp_path / "logits.pt")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["mqt_llava", str(built.model.config.max_visual_tokens)]
    ids = torch.tensor([[1, 5, -200, 7, 9]])
    with torch.no_grad():
        expected = built.model(
            input_ids=ids, pixel_values=torch.zeros(1, 3, 32, 32, dtype=torch.uint8), num_visual_tokens=3
        ).logits
    torch.testing.assert_close(torch.load(tmp_path / "logits.pt"), expected)


def test_a_tokenizer_loads_from_an_export_in_a_process_that_never_imported_the_model(built, tmp_path):
    """Ray Data's tokenize tasks load a tokenizer without having imported the model class. From an
    export, transformers also reads its config.json, whose model type must then be registered: without
    that it warns of a config "of type ``" (and would build any config it needed wrongly)."""
    save_export(built, tmp_path / "export")
    script = (
        "import sys\nfrom mqt_llava.model.tokenizer import load_pretrained_tokenizer\n"
        "print(len(load_pretrained_tokenizer(sys.argv[1])))"
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "export")], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == str(len(built.tokenizer)) and "model of type" not in done.stderr, done.stderr
