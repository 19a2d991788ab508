"""The Ray Data processes of a training run start light. Every run starts fresh tokenize tasks,
decode actors and a split coordinator, one after the other before the first batch, and each imports
what the pipeline's functions and arguments name: once that was torch and transformers' model code,
about 5 CPU-s a process. Here the pipeline's pieces are pickled as Ray pickles them (cloudpickle:
functions and classes by reference) and used in a fresh process, which must not import torch,
transformers' model code, DeepSpeed or Ray Train. (Ray Train's controller: tests/train/test_plan.py.)"""

import io
import subprocess
import sys

import cloudpickle
import numpy as np
from PIL import Image

from mqt_llava.data.llava_format import RecordRules
from mqt_llava.data.samples import DecodeImages, tokenize_conversations
from mqt_llava.model.image_settings import ImageSettings
from mqt_llava.model.tokenizer import TokenizerSpec

HEAVY = ("torch", "transformers.modeling_utils", "deepspeed", "ray.train")

USE = f"""
import pickle, sys
tokenize, tokenize_kwargs, decode_class, decode_kwargs, batch = pickle.load(sys.stdin.buffer)
out = decode_class(**decode_kwargs)(tokenize(batch, **tokenize_kwargs))
assert out["pixel_values"].shape == (1, 3, 16, 16) and len(out["input_ids"][0]) > 4, out
print(sorted(name for name in {HEAVY!r} if name in sys.modules))
"""


def test_the_data_pipelines_transforms_run_in_a_process_without_torch():
    png = io.BytesIO()
    Image.new("RGB", (20, 12), "red").save(png, format="PNG")
    batch = {
        "id": np.array(["a"], dtype=object),
        "image": np.array([png.getvalue()], dtype=object),
        "conversations": np.array(
            [[{"from": "human", "value": "<image>\nWhat colour?"}, {"from": "gpt", "value": "Red"}]], dtype=object
        ),
    }
    # What training_dataset hands Ray Data (mqt_llava.data.datasets): the function and its fn_kwargs,
    # the actor class and its constructor's.
    pieces = (
        tokenize_conversations,
        dict(tokenizer=TokenizerSpec(), rules=RecordRules("vicuna_v1", 1024, 4)),
        DecodeImages,
        dict(settings=ImageSettings.square_of(16), aspect="pad"),
        batch,
    )
    done = subprocess.run(
        [sys.executable, "-c", USE], input=cloudpickle.dumps(pieces), capture_output=True, timeout=120
    )
    assert done.returncode == 0, done.stderr.decode()[-3000:]
    assert done.stdout.decode().split("\n")[0] == "[]", done.stdout.decode()


def test_the_package_and_its_light_modules_import_without_torch():
    modules = ["mqt_llava", "mqt_llava.model", "mqt_llava.data.samples", "mqt_llava.data.llava_format"]
    script = f"import sys\nfor m in {modules!r}: __import__(m)\nprint(sorted(n for n in {HEAVY!r} if n in sys.modules))"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "[]"
