"""The derived DeepSpeed config runs in real DeepSpeed on this machine's CPU (gloo, fp32)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from checkout import REPO_ROOT

pytestmark = pytest.mark.e2e

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import torch, deepspeed
    from mqt_llava.train.spec import StageSpec
    from mqt_llava.train.deepspeed_config import deepspeed_config

    deepspeed.init_distributed("gloo")
    results = {}
    for zero in (2, 3):
        spec = StageSpec(model="tiny", stage="stage2", template="vicuna_v1", data="-", global_batch_size=8,
                         micro_batch_size=2, lr=1e-2, zero_stage=zero)
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
        optimizer = torch.optim.AdamW(model.parameters(), lr=spec.lr)
        engine, *_ = deepspeed.initialize(model=model, optimizer=optimizer, config=deepspeed_config(spec, False))
        x = torch.randn(2, 8); y = x.sum(1, keepdim=True)
        losses = []
        for i in range(32):  # 32 micro-batches of 2 -> 8 optimizer steps at accumulation 4
            loss = torch.nn.functional.mse_loss(engine(x), y)
            engine.backward(loss)
            engine.step()
            losses.append(loss.item())
        results[zero] = dict(steps=engine.global_steps, first=sum(losses[:8]) / 8, last=sum(losses[-8:]) / 8)
    print("RESULT " + json.dumps(results), flush=True)
    os._exit(0)  # skips gloo's exit-time abort race; see TWO_RANKS below
    """
)


def test_derived_config_trains_with_zero2_and_zero3_on_cpu():
    env = {
        **os.environ,
        "DS_ACCELERATOR": "cpu",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": "29561",
        "RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_RANK": "0",
    }
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT], cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=600
    )
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert done.returncode == 0 and line, done.stdout[-2000:] + done.stderr[-3000:]
    results = json.loads(line.removeprefix("RESULT "))
    for zero in ("2", "3"):
        assert results[zero]["steps"] == 8  # 32 micro-batches / accumulation 4
        assert results[zero]["last"] < results[zero]["first"]


TWO_RANKS = textwrap.dedent(
    """
    import os, sys
    import torch, deepspeed
    sys.path.insert(0, "tests")
    from small_model import small_spec
    from mqt_llava.train.spec import StageSpec
    from mqt_llava.data.conversation import build_sample
    from mqt_llava.model.builder import build_model
    from mqt_llava.model.stages import configure_trainable
    from mqt_llava.train.deepspeed_config import deepspeed_config

    deepspeed.init_distributed("gloo")
    rank = int(os.environ["RANK"])
    torch.manual_seed(0)
    built = build_model(small_spec())
    configure_trainable(built.model, "stage2")
    spec = StageSpec(model="tiny", stage="stage2", template="vicuna_v1", data="-", global_batch_size=4,
                     micro_batch_size=2, num_workers=2, lr=1e-3, zero_stage=int(sys.argv[1]))
    params = [p for p in built.model.parameters() if p.requires_grad]
    engine, *_ = deepspeed.initialize(model=built.model, optimizer=torch.optim.AdamW(params, lr=1e-3),
                                      config=deepspeed_config(spec, False))

    def batch(has_image):
        question = ("<image>\\n" if has_image else "") + "Hi?"
        conv = [{"from": "human", "value": question}, {"from": "gpt", "value": "Yes."}]
        s = build_sample(conv, "vicuna_v1", built.tokenizer, has_image, 512, 8)
        ids, labels = torch.tensor([s.input_ids] * 2), torch.tensor([s.labels] * 2)
        pixels = torch.zeros(2, 3, 32, 32, dtype=torch.uint8) if has_image else None
        return dict(input_ids=ids, labels=labels, attention_mask=torch.ones_like(ids), pixel_values=pixels)

    # Rank 0's micro-batches are text-only at steps 0 and 2; rank 1 always has images.
    for step, has_image in enumerate([False, True, False, True] if rank == 0 else [True] * 4):
        engine.backward(engine(**batch(has_image), num_visual_tokens=4).loss)
        engine.step()
    print(f"RANK {rank} STEPS {engine.global_steps}", flush=True)
    # After the work is done, torch's gloo and TCPStore threads outlive destroy_process_group(), and
    # about one exit in twenty then aborts in a C++ static destructor ("terminate called without an
    # active exception", rc -6). Ray Train's workers never exit this way; this script skips the race.
    torch.distributed.barrier()
    torch.distributed.destroy_process_group()
    os._exit(0)
    """
)


@pytest.mark.parametrize("zero", [2, 3])
def test_ranks_with_and_without_images_in_the_same_step_train_together(zero):
    """Without the model's blank-image path this fails: ZeRO-2's gradient reduction and ZeRO-3's
    parameter gathers see different tensors on the two ranks (a gloo collective mismatch)."""
    procs = []
    for rank in range(2):
        env = {
            **os.environ,
            "DS_ACCELERATOR": "cpu",
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": f"2960{zero}",
            "RANK": str(rank),
            "WORLD_SIZE": "2",
            "LOCAL_RANK": str(rank),
        }
        procs.append(
            subprocess.Popen(
                [sys.executable, "-c", TWO_RANKS, str(zero)],
                cwd=REPO_ROOT,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    outputs = [p.communicate(timeout=300) for p in procs]
    for rank, (proc, (out, err)) in enumerate(zip(procs, outputs, strict=True)):
        noise = ("FutureWarning", "return func(")
        err = "\n".join(line for line in err.splitlines() if not any(n in line for n in noise))
        assert proc.returncode == 0 and f"RANK {rank} STEPS 4" in out, (
            f"rank {rank} rc {proc.returncode}: {err[-3000:]}"
        )
