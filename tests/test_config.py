import pytest

from mqt_llava.config import ConfigError, apply_overrides, load_config, preset_path
from mqt_llava.model.spec import ModelSpec


def test_presets_load():
    tiny = load_config(ModelSpec, preset_path("tiny"))
    assert tiny.connector.num_queries == 32 and tiny.image.aspect == "pad"
    paper = load_config(ModelSpec, preset_path("llava-7b"))
    assert paper.vision_tower.pretrained == "openai/clip-vit-large-patch14-336"
    assert paper.llm.pretrained == "lmsys/vicuna-7b-v1.5"
    assert paper.connector.num_queries == 256


def test_overrides_set_nested_fields_with_yaml_types():
    spec = load_config(
        ModelSpec, preset_path("tiny"), ["connector.num_queries=16", "connector.order=projection_then_attention"]
    )
    assert spec.connector.num_queries == 16 and spec.connector.order == "projection_then_attention"
    assert apply_overrides({}, ["a.b.c=[1, 2]"]) == {"a": {"b": {"c": [1, 2]}}}


def test_yes_and_no_are_text_where_text_is_asked_and_booleans_where_a_boolean_is():
    from mqt_llava.explain import ExplainSpec
    from mqt_llava.train.spec import StageSpec

    assert apply_overrides({}, ["answer=Yes", "b=no", "c=On", "d=true", "e=FALSE"]) == dict(
        answer="Yes", b="no", c="On", d=True, e=False
    )
    explain = load_config(ExplainSpec, None, ["model=m", "image=i.png", "question=q", "answer=Yes"])
    assert explain.answer == "Yes"  # a toy existence answer, not YAML 1.1's True
    stage = load_config(StageSpec, preset_path("tiny", "stage2"), ["bf16=no", "group_by_modality=on"])
    assert stage.bf16 is False and stage.group_by_modality is True


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ("connector.num_queries=0", "connector.num_queries"),
        ("connector.order=sideways", "connector.order"),
        ("connector.typo=1", "connector.typo"),
    ],
)
def test_bad_values_name_the_field(override, field):
    with pytest.raises(ConfigError, match=field.replace(".", r"\.")):
        load_config(ModelSpec, preset_path("tiny"), [override])


def test_malformed_override_and_missing_preset_are_clear():
    with pytest.raises(ConfigError, match="key.path=value"):
        apply_overrides({}, ["no_equals_sign"])
    with pytest.raises(ConfigError, match="presets"):
        preset_path("llava-70b")
