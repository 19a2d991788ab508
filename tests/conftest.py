from __future__ import annotations

import pytest
import torch

from mqt_llava.config import ModelSpec
from mqt_llava.model.builder import BuiltModel, build_model
from small_model import small_spec


@pytest.fixture
def spec() -> ModelSpec:
    return small_spec()


@pytest.fixture
def built() -> BuiltModel:
    torch.manual_seed(0)
    result = build_model(small_spec())
    result.model.eval()
    return result
