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


def test_a_word_yaml_reads_as_a_boolean_where_text_is_asked_says_how_to_quote_it():
    """`--set answer=Yes` is YAML's True (as `answer: Yes` in a file is): the refusal names the field and
    the quoting that keeps the word; a quoted word is text, and booleans stay booleans elsewhere."""
    from mqt_llava.explain import ExplainSpec

    fields = ["model=m", "image=i.png", "question=q"]
    with pytest.raises(
        ConfigError, match=r"answer: Input should be a valid string; YAML read the value as True: quote"
    ):
        load_config(ExplainSpec, None, [*fields, "answer=Yes"])
    assert load_config(ExplainSpec, None, [*fields, 'answer="Yes"']).answer == "Yes"
    assert apply_overrides({}, ["options.ocr=no"]) == {"options": {"ocr": False}}  # an untyped field: a boolean


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
