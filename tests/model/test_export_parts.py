import pytest
import torch

from mqt_llava.model.builder import build_model
from mqt_llava.model.export import load_part_state, save_export
from small_model import small_spec


def test_load_part_state_reads_only_that_part(built, tmp_path):
    save_export(built, tmp_path)
    state = load_part_state(tmp_path, "connector")
    assert state.keys() == built.model.connector.state_dict().keys()
    for key, value in built.model.connector.state_dict().items():
        assert torch.equal(state[key], value)
    fresh = build_model(small_spec())  # other random weights, loaded with the exported MQT
    fresh.model.connector.load_state_dict(state)
    assert torch.equal(fresh.model.connector.queries, built.model.connector.queries)
    assert not torch.equal(fresh.model.language_model.lm_head.weight, built.model.language_model.lm_head.weight)


def test_load_part_state_errors(built, tmp_path):
    with pytest.raises(FileNotFoundError, match="is not an export"):
        load_part_state(tmp_path, "connector")
    save_export(built, tmp_path)
    with pytest.raises(KeyError, match="no weights for part 'projector'"):
        load_part_state(tmp_path, "projector")
