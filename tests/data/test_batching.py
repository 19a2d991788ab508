import numpy as np
import torch

from mqt_llava.data.batches import LlavaCollate
from mqt_llava.data.samples import modality_grouped_batches, ragged
from mqt_llava.model.modeling import IGNORE_INDEX


def numpy_batch(lengths, has_image, start=0):
    n = len(lengths)
    ids = [np.arange(1, length + 1, dtype=np.int32) + 100 * (start + i) for i, length in enumerate(lengths)]
    return {
        "id": np.array([f"r{start + i}" for i in range(n)]),
        "input_ids": ragged(ids),
        "labels": ragged([np.where(np.arange(len(x)) % 2, x, IGNORE_INDEX).astype(np.int32) for x in ids]),
        "length": np.array(lengths, dtype=np.int32),
        "has_image": np.array(has_image, dtype=bool),
        "pixel_values": np.stack([np.full((3, 4, 4), start + i, np.uint8) for i in range(n)]),
    }


def test_collate_right_pads_to_the_longest_and_keeps_only_real_images():
    batch = numpy_batch([3, 5, 2], [True, False, True])
    out = LlavaCollate(pad_token_id=0)(batch)
    assert out["input_ids"].shape == (3, 5) and out["input_ids"].dtype == torch.long
    assert out["input_ids"][0].tolist() == [1, 2, 3, 0, 0]
    assert out["attention_mask"].tolist() == [[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [1, 1, 0, 0, 0]]
    assert (out["labels"][0, 3:] == IGNORE_INDEX).all()
    assert out["labels"][1].tolist() == [IGNORE_INDEX, 102, IGNORE_INDEX, 104, IGNORE_INDEX]
    assert out["pixel_values"].shape == (2, 3, 4, 4) and out["pixel_values"].dtype == torch.uint8
    assert out["pixel_values"][:, 0, 0, 0].tolist() == [0, 2]  # rows 0 and 2: the image samples


def test_modality_grouping_separates_modalities_sorts_lengths_and_loses_nothing():
    rng = np.random.default_rng(0)
    batches = []
    for b in range(10):
        lengths = rng.integers(5, 200, 16).tolist()
        batches.append(numpy_batch(lengths, (rng.random(16) < 0.7).tolist(), start=16 * b))
    grouped = list(modality_grouped_batches(iter(batches), batch_size=8, group_batches=4, seed=1))
    ids = [i for g in grouped for i in g["id"]]
    assert sorted(ids) == sorted(i for b in batches for i in b["id"])  # nothing lost or repeated
    for g in grouped:
        assert g["has_image"].all() or not g["has_image"].any()
        assert list(g["length"]) == sorted(g["length"])
    assert sum(len(g["id"]) < 8 for g in grouped) <= 2  # only the stream's last batch per modality
    again = list(modality_grouped_batches(iter(batches), batch_size=8, group_batches=4, seed=1))
    assert [list(g["id"]) for g in again] == [list(g["id"]) for g in grouped]  # seeded


def test_grouping_reduces_padding_compared_with_arrival_order():
    rng = np.random.default_rng(1)
    batches = [numpy_batch(rng.integers(5, 300, 8).tolist(), [True] * 8, start=8 * b) for b in range(16)]

    def padding(stream):
        return sum(int(b["length"].max()) * len(b["length"]) - int(b["length"].sum()) for b in stream)

    assert padding(modality_grouped_batches(iter(batches), 8, 8)) < 0.5 * padding(batches)
