import pytest
import torch

from mqt_llava.data.conversation import build_sample
from mqt_llava.model.export import save_export
from mqt_llava.train.loop import stage_model
from mqt_llava.train.plan import StageRun, plan_steps
from mqt_llava.train.spec import StageSpec
from small_model import small_spec


def run_with(**changes) -> StageRun:
    fields = dict(
        model="tiny", stage="stage2", template="vicuna_v1", data="-", global_batch_size=2, micro_batch_size=2, lr=1e-3
    )
    stage = StageSpec(**{**fields, **changes})
    return StageRun(
        stage=stage,
        model=small_spec(),
        name="t",
        storage="/tmp",
        plan=plan_steps(stage, small_spec(), 10),
        use_gpu=False,
    )


def test_stage_model_trains_only_the_stage_parts_and_starts_from_init_from(built, tmp_path):
    save_export(built, tmp_path)
    one = stage_model(run_with(stage="stage1", template="plain", init_from=str(tmp_path)))
    assert torch.equal(one.model.connector.queries, built.model.connector.queries)
    trainable = {name.split(".")[0] for name, p in one.model.named_parameters() if p.requires_grad}
    assert trainable == {"connector"}
    two = stage_model(run_with())
    assert {name.split(".")[0] for name, p in two.model.named_parameters() if p.requires_grad} == {
        "connector",
        "language_model",
    }


def batch(tokenizer):
    sample = build_sample(
        [{"from": "human", "value": "<image>\nWhat colour is the circle?"}, {"from": "gpt", "value": "Red"}],
        "vicuna_v1",
        tokenizer,
        has_image=True,
        max_length=512,
        visual_tokens=8,
    )
    ids = torch.tensor([sample.input_ids])
    return dict(
        input_ids=ids,
        labels=torch.tensor([sample.labels]),
        attention_mask=torch.ones_like(ids),
        pixel_values=torch.zeros(1, 3, 32, 32, dtype=torch.uint8),
    )


@pytest.mark.parametrize("checkpointing", [False, True])
def test_gradient_checkpointing_gives_the_same_gradients(checkpointing):
    reference = stage_model(run_with())
    model = stage_model(run_with(gradient_checkpointing=checkpointing))
    assert model.model.language_model.is_activation_checkpointing is checkpointing
    for built in (reference, model):
        built.model.train()
        built.model(**batch(built.tokenizer), num_visual_tokens=4).loss.backward()
    for (name, a), b in zip(reference.model.named_parameters(), model.model.parameters(), strict=True):
        if a.requires_grad:
            torch.testing.assert_close(a.grad, b.grad, msg=name)
