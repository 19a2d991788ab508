"""The derived DeepSpeed config runs in real DeepSpeed on this machine's CPU (gloo, fp32)."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from mqt_llava.config import REPO_ROOT

pytestmark = pytest.mark.e2e

SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    import torch, deepspeed
    from mqt_llava.config import StageSpec
    from mqt_llava.train.deepspeed_config import deepspeed_config

    deepspeed.init_distributed("gloo")
    results = {}
    for zero in (2, 3):
        spec = StageSpec(stage="stage2", template="vicuna_v1", data="-", global_batch_size=8, micro_batch_size=2,
                         lr=1e-2, zero_stage=zero)
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
    print("RESULT " + json.dumps(results))
    """
)


def test_derived_config_trains_with_zero2_and_zero3_on_cpu():
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29561",
           "RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}  # fmt: skip
    done = subprocess.run([sys.executable, "-c", SCRIPT], cwd=REPO_ROOT, env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    assert done.returncode == 0 and line, done.stdout[-2000:] + done.stderr[-3000:]
    results = json.loads(line.removeprefix("RESULT "))
    for zero in ("2", "3"):
        assert results[zero]["steps"] == 8  # 32 micro-batches / accumulation 4
        assert results[zero]["last"] < results[zero]["first"]
