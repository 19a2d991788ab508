"""Stage 2 starts from stage 1's export by reading the connector's bytes alone, from wherever the
export lives (a local path or a URI), not by copying the export to every worker first."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mqt_llava.config import ConfigError
from mqt_llava.model.builder import build_model
from mqt_llava.model.export import load_part_state, save_export
from mqt_llava.model.stages import CONNECTOR
from mqt_llava.train.loop import stage_model
from mqt_llava.train.plan import StageRun, check_init_from, plan_steps
from mqt_llava.train.spec import StageSpec
from small_model import small_spec

PROC_IO = Path("/proc/self/io")


def wide_llm_spec(**connector):
    """The LLM about 300 times the connector's bytes (17 MB against 53 KB), as a 7B export is about
    400 times its connector: a copy of the export and a read of the connector differ clearly."""
    spec = small_spec(**connector)
    architecture = dict(
        spec.llm.architecture,
        hidden_size=256,
        intermediate_size=1024,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
    )
    return spec.model_copy(update={"llm": spec.llm.model_copy(update={"architecture": architecture})})


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(1)
    built = build_model(wide_llm_spec())
    path = tmp_path_factory.mktemp("stage1") / "export"
    save_export(built, path)
    return path, built


def run_from(init_from: str | None) -> StageRun:
    stage = StageSpec(
        model="tiny",
        stage="stage2",
        template="vicuna_v1",
        data="-",
        global_batch_size=2,
        micro_batch_size=2,
        lr=1e-3,
        init_from=init_from,
    )
    return StageRun(
        stage=stage,
        model=wide_llm_spec(),
        name="t",
        storage="/tmp",
        plan=plan_steps(stage, wide_llm_spec(), 10),
        use_gpu=False,
    )


def bytes_read() -> int:
    """Bytes this process has read through read(2) and pread(2), every thread, any file: the count
    does not depend on how the code under test reaches the files."""
    return int(next(line for line in PROC_IO.read_text().splitlines() if line.startswith("rchar:")).split()[1])


def nbytes(state: dict[str, torch.Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in state.values())


@pytest.mark.skipif(not PROC_IO.exists(), reason="counts bytes read with Linux's /proc/self/io")
def test_stage2_reads_only_the_connector_of_an_export_at_a_uri(exported):
    path, built = exported
    export_bytes = sum(f.stat().st_size for f in path.iterdir())
    connector_bytes = nbytes(built.model.connector.state_dict())
    assert export_bytes > 200 * connector_bytes
    stage_model(run_from(None))  # imports and first-use reads out of the way
    before = bytes_read()
    stage_model(run_from(None))
    building = bytes_read() - before  # what building the model reads by itself (its tokenizer files)
    before = bytes_read()
    two = stage_model(run_from(path.as_uri()))  # file:///...: the way s3:// and gs:// exports are read
    read = bytes_read() - before - building
    for key, value in built.model.connector.state_dict().items():
        assert torch.equal(two.model.connector.state_dict()[key], value), key
    # The connector, its shard's header, config-free: a few KB over the connector, never the export.
    assert read < connector_bytes + 64 * 1024, f"read {read} bytes for a {connector_bytes}-byte connector"


@pytest.mark.skipif(not PROC_IO.exists(), reason="counts bytes read with Linux's /proc/self/io")
def test_a_sharded_bf16_export_gives_its_connector_from_the_connector_s_shard_alone(exported, tmp_path):
    _, built = exported
    weights = {key: value.to(torch.bfloat16) for key, value in built.model.state_dict().items()}
    expected = {key.removeprefix("connector."): v for key, v in weights.items() if key.startswith("connector.")}
    built.model.save_pretrained(tmp_path, state_dict=weights, max_shard_size="2MB")  # empties `weights`
    assert (tmp_path / "model.safetensors.index.json").is_file() and len(list(tmp_path.glob("*.safetensors"))) > 4
    before = bytes_read()
    state = load_part_state(tmp_path.as_uri(), CONNECTOR)
    read = bytes_read() - before
    assert state.keys() == expected.keys()
    assert all(state[key].dtype == torch.bfloat16 and torch.equal(state[key], expected[key]) for key in expected)
    assert read < nbytes(expected) + 64 * 1024  # not the other shards
    local = load_part_state(tmp_path, CONNECTOR)  # a local path reads the same way
    assert all(torch.equal(local[key], expected[key]) for key in expected)


def test_an_init_from_at_a_uri_is_checked_in_the_driver(exported, tmp_path):
    path, _ = exported
    stage = run_from(path.as_uri()).stage
    check_init_from(stage, wide_llm_spec())  # the model's own connector: accepted
    with pytest.raises(ConfigError, match="connector differs from the model's"):
        check_init_from(stage, wide_llm_spec(num_queries=4))
    with pytest.raises(ConfigError, match="is not an export"):
        check_init_from(stage.model_copy(update={"init_from": tmp_path.as_uri()}), wide_llm_spec())


def test_a_stage1_export_from_before_the_position_table_option_is_accepted(exported, tmp_path):
    """Exports written before `position_table` existed name no such option (their table was the fixed
    sin-cos one, the option's default): the driver reads them as that default, not as a difference."""
    import json
    import shutil

    path, _ = exported
    old = tmp_path / "old-export"
    shutil.copytree(path, old)
    config = json.loads((old / "config.json").read_text())
    del config["connector"]["position_table"]
    (old / "config.json").write_text(json.dumps(config))
    check_init_from(run_from(str(old)).stage, wide_llm_spec())
    with pytest.raises(ConfigError, match="position_table"):
        check_init_from(run_from(str(old)).stage, wide_llm_spec(position_table="trained_in_stage1"))
