"""An lmms-eval model plugin, so lmms-eval's task zoo can run an MQT-LLaVA export at any budget:

    pip install lmms-eval            # not a dependency of this project
    lmms-eval --model mqt_llava --model_args pretrained=runs/train/tiny-stage2/export,num_visual_tokens=16 \
        --tasks mme --batch_size 8

Registered through the `lmms_eval.models` entry point (pyproject.toml), which points at
`manifest()`. Generation goes through the platform's inference engine (vicuna_v1 prompt, pad
images), the registered backend `backend=` names (default hf), so lmms-eval's numbers and
`jobs/evaluate.py`'s come from the same model path; the metrics are lmms-eval's own
(docs/evaluation.md says where they differ).
"""

from __future__ import annotations

from collections import defaultdict

from lmms_eval.api.model import lmms
from PIL import Image

from mqt_llava.data.conversation import IMAGE_PLACEHOLDER
from mqt_llava.inference import Request, load_engine
from mqt_llava.model.budgets import check_budget


def manifest():
    from lmms_eval.models.registry_v2 import ModelManifest

    return ModelManifest(model_id="mqt_llava", simple_class_path="mqt_llava.eval.lmms_eval_plugin.MQTLlava")


class MQTLlava(lmms):
    """`num_visual_tokens`: the budget m (default M); `device`: cpu or cuda (bf16); `backend`: the
    inference engine (a name registered in mqt_llava.inference.ENGINES)."""

    def __init__(
        self,
        pretrained: str,
        num_visual_tokens: int | None = None,
        batch_size: int = 1,
        device: str = "cpu",
        backend: str = "hf",
        **kwargs,
    ) -> None:
        super().__init__()
        import torch

        dtype = torch.bfloat16 if str(device).startswith("cuda") else None
        self.engine = load_engine(pretrained, backend, device, dtype)
        m = self.engine.max_visual_tokens if num_visual_tokens is None else int(num_visual_tokens)
        self.num_visual_tokens = check_budget(  # min..M, or a clear error
            m, self.engine.max_visual_tokens, "num_visual_tokens", self.engine.min_visual_tokens
        )
        self.batch_size_per_gpu = int(batch_size)

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    def request(self, instance) -> tuple[Request, dict]:
        context, gen_kwargs, doc_to_visual, doc_id, task, split = instance.args
        visuals = [v for v in doc_to_visual(self.task_dict[task][split][doc_id]) if isinstance(v, Image.Image)]
        # The engine's template places the image itself; lmms-eval's own placeholder would be text here.
        question = context.replace(IMAGE_PLACEHOLDER, "").strip()
        return Request(question, visuals[0].convert("RGB") if visuals else None), dict(gen_kwargs)

    def generate_until(self, requests) -> list[str]:
        prepared = [self.request(r) for r in requests]
        answers: list[str] = [""] * len(requests)
        groups: dict[int, list[int]] = defaultdict(list)  # one generation length per batch
        for i, (_, kwargs) in enumerate(prepared):
            groups[int(kwargs.get("max_new_tokens", 128))].append(i)
        for max_new_tokens, indices in groups.items():
            for start in range(0, len(indices), self.batch_size):
                chunk = indices[start : start + self.batch_size]
                batch = [prepared[i][0] for i in chunk]
                completions = self.engine.complete(batch, self.num_visual_tokens, max_new_tokens)
                for i, text in zip(chunk, (c.text for c in completions), strict=True):
                    for stop in prepared[i][1].get("until") or []:
                        text = text.split(stop)[0] if stop else text
                    answers[i] = text
                    self.cache_hook.add_partial("generate_until", requests[i].args[:2], text)
        return answers

    def loglikelihood(self, requests):
        raise NotImplementedError("mqt_llava answers by generation; loglikelihood tasks are not supported")

    def generate_until_multi_round(self, requests):
        raise NotImplementedError("mqt_llava does not support multi-round generation tasks")
