"""The official MQT-LLaVA checkpoint (`gordonhu608/MQT-LLaVA-7b`, LLaVA's format) imported as this
platform's export, with the official behaviour (keys from position only, the checkpoint's own
position table).

    python jobs/import_official.py --set checkpoint=/models/MQT-LLaVA-7b --set out=/models/mqt-llava-7b-export

What the LLaVA format holds (facts read from the official code, none of it copied):

    config.json                   a Llama config plus `mm_vision_tower` (the CLIP tower by name),
                                  `mm_vision_select_layer`, `image_aspect_ratio`
    model.embed_tokens, model.layers.*, model.norm, lm_head      the Llama weights
    model.query_abstractor.query            (M, 1024) latent queries
    model.query_abstractor.pos_embed        (M, 1024) the position table of the 16 x 16 query grid:
                                            built as MAE's 2D sin-cos table (column half first), a
                                            parameter that the official stage 1 trains with the rest
                                            of the abstractor, so the released one is not sin-cos
    model.query_abstractor.attn.*           torch's MultiheadAttention(1024, 16 heads): the stacked
                                            in_proj (q, k, v) and out_proj
    model.query_abstractor.ln_q/ln_k/ln_v   LayerNorms (eps 1e-6)
    model.query_abstractor.proj             (1024, llm width): tokens = attention output @ proj
    tokenizer files               the Vicuna tokenizer
    (the CLIP tower's weights are usually absent: LLaVA loads it by name, so does the importer)

The official forward: queries ln_q(query[:m] + pos_embed[:m]); keys ln_k(pos_embed resized bicubic
to the feature grid), the same for every image; values ln_v(features); one MultiheadAttention; then
`@ proj`. This platform's MQT with `keys: position_only` computes exactly that, so every tensor is
copied as it is (the stacked in_proj split into the q, k and v projections, `proj` transposed into
a bias-free linear layer), the table included: whatever a checkpoint's table holds, it is imported
unchanged. Only shapes are checked, each against the connector's, and a mismatch is refused naming
the tensor and both shapes.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from pydantic import Field

from mqt_llava.config import Spec
from mqt_llava.model.connectors.mqt import MatryoshkaQueryTransformer

PREFIX = "model.query_abstractor."
TOWER_PREFIX = "model.vision_tower.vision_tower."  # LLaVA's CLIPVisionTower wraps the HF model as .vision_tower
OFFICIAL_HEADS = 16  # fixed in the official builder; a checkpoint does not record it
LLAMA_FIELDS = (
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "max_position_embeddings",
    "rms_norm_eps",
    "rope_theta",
    "hidden_act",
    "bos_token_id",
    "eos_token_id",
    "pad_token_id",
    "tie_word_embeddings",
    "attention_bias",
)


class NotAnOfficialCheckpoint(ValueError):
    pass


def read_weights(checkpoint: Path, keep) -> dict[str, torch.Tensor]:
    """The tensors whose names `keep` accepts, from safetensors or PyTorch shards (with or without an
    index), without loading the others."""
    from safetensors import safe_open

    found: dict[str, torch.Tensor] = {}
    shards = sorted(checkpoint.glob("*.safetensors"))
    if shards:
        for shard in shards:
            with safe_open(str(shard), framework="pt") as f:
                for key in f.keys():  # noqa: SIM118 (a safetensors handle is not iterable)
                    if keep(key):
                        found[key] = f.get_tensor(key)
        return found
    for shard in sorted(checkpoint.glob("pytorch_model*.bin")):
        state = torch.load(shard, map_location="cpu", weights_only=True, mmap=True)
        found |= {k: v for k, v in state.items() if keep(k)}
    return found


def connector_state(
    official: dict[str, torch.Tensor], connector: MatryoshkaQueryTransformer
) -> dict[str, torch.Tensor]:
    """The official query abstractor's tensors (names without the prefix) as this connector's state
    dict, in fp32. A tensor missing, or of a shape other than the connector's, is refused naming it."""
    expected = {name: tuple(t.shape) for name, t in connector.state_dict().items()}
    width = connector.width

    def take(name: str, shape: tuple[int, ...]) -> torch.Tensor:
        if name not in official:
            raise NotAnOfficialCheckpoint(f"{PREFIX}{name} is missing")
        if tuple(official[name].shape) != shape:
            raise NotAnOfficialCheckpoint(
                f"{PREFIX}{name} has shape {tuple(official[name].shape)}; this connector (M = "
                f"{connector.num_queries}, width {width}, a {connector.query_side} x {connector.query_side} "
                f"query grid) needs {shape}"
            )
        return official[name]

    w_q, w_k, w_v = take("attn.in_proj_weight", (3 * width, width)).split(width)
    b_q, b_k, b_v = take("attn.in_proj_bias", (3 * width,)).split(width)
    state = {
        "pos_embed": take("pos_embed", expected["pos_embed"]),
        "queries": take("query", expected["queries"]),
        "ln_q.weight": take("ln_q.weight", (width,)),
        "ln_q.bias": take("ln_q.bias", (width,)),
        "ln_k.weight": take("ln_k.weight", (width,)),
        "ln_k.bias": take("ln_k.bias", (width,)),
        "ln_v.weight": take("ln_v.weight", (width,)),
        "ln_v.bias": take("ln_v.bias", (width,)),
        "q_proj.weight": w_q,
        "q_proj.bias": b_q,
        "k_proj.weight": w_k,
        "k_proj.bias": b_k,
        "v_proj.weight": w_v,
        "v_proj.bias": b_v,
        "out_proj.weight": take("attn.out_proj.weight", expected["out_proj.weight"]),
        "out_proj.bias": take("attn.out_proj.bias", expected["out_proj.bias"]),
        "output_proj.weight": take("proj", expected["output_proj.weight"][::-1]).t(),
    }
    return {k: v.to(torch.float32).contiguous() for k, v in state.items()}


class OfficialImportSpec(Spec):
    """jobs/import_official.py's spec: which checkpoint, where its export goes."""

    checkpoint: str = Field(description="the LLaVA-format checkpoint directory (e.g. gordonhu608/MQT-LLaVA-7b)")
    out: str = Field(description="the export directory to write")
    vision_tower: str | None = Field(None, description="a local copy of the CLIP tower it names (default: its own)")
    num_heads: int = Field(OFFICIAL_HEADS, ge=1, description="the query transformer's heads (not in the checkpoint)")


def import_official(
    checkpoint: str | Path, out: str | Path, vision_tower: str | None = None, num_heads: int = OFFICIAL_HEADS
) -> Path:
    """Write `checkpoint` (a LLaVA-format MQT-LLaVA directory) as an export at `out`. `vision_tower`:
    a local copy of the CLIP tower the checkpoint names (default: its `mm_vision_tower`)."""
    from transformers import CLIPImageProcessorPil, CLIPVisionModel, LlamaConfig, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    from mqt_llava.model.builder import BuiltModel
    from mqt_llava.model.export import save_export
    from mqt_llava.model.image_settings import ImageSettings
    from mqt_llava.model.modeling import MQTLlavaForConditionalGeneration
    from mqt_llava.model.spec import ModelSpec
    from mqt_llava.model.tokenizer import load_pretrained_tokenizer

    checkpoint, out = Path(checkpoint), Path(out)
    try:
        config = json.loads((checkpoint / "config.json").read_text())
    except FileNotFoundError:
        raise NotAnOfficialCheckpoint(f"{checkpoint}: no config.json") from None
    if "mm_vision_tower" not in config:
        raise NotAnOfficialCheckpoint(f"{checkpoint}: config.json names no mm_vision_tower (not a LLaVA checkpoint)")
    official = {k.removeprefix(PREFIX): v for k, v in read_weights(checkpoint, lambda k: k.startswith(PREFIX)).items()}
    if "query" not in official:
        raise NotAnOfficialCheckpoint(f"{checkpoint}: no {PREFIX}query (not an MQT-LLaVA checkpoint)")

    llama = LlamaConfig(**{k: config[k] for k in LLAMA_FIELDS if k in config})
    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()  # the query abstractor's keys are expected to go unused here
    try:
        language_model, info = LlamaForCausalLM.from_pretrained(checkpoint, config=llama, output_loading_info=True)
    finally:
        hf_logging.set_verbosity(previous)
    if info["missing_keys"]:
        raise NotAnOfficialCheckpoint(f"{checkpoint}: Llama weights missing: {sorted(info['missing_keys'])[:5]}")
    tower_source = vision_tower or config["mm_vision_tower"]
    tower = CLIPVisionModel.from_pretrained(tower_source)
    in_checkpoint = read_weights(checkpoint, lambda k: k.startswith(TOWER_PREFIX))
    if in_checkpoint:  # a checkpoint that carries its tower: those weights win
        tower.load_state_dict({k.removeprefix(TOWER_PREFIX): v for k, v in in_checkpoint.items()}, strict=True)
    settings = ImageSettings.from_processor(CLIPImageProcessorPil.from_pretrained(tower_source))
    options = {
        "kind": "mqt",
        "num_queries": official["query"].shape[0],
        "num_heads": num_heads,
        "order": "attention_then_projection",
        "keys": "position_only",
        "position_table": "trained_in_stage1",
    }
    layer = int(config.get("mm_vision_select_layer", -2))
    model = MQTLlavaForConditionalGeneration.from_parts(
        tower,
        language_model,
        connector=options,
        vision_feature_layer=layer,
        image_mean=list(settings.mean),
        image_std=list(settings.std),
        image_aspect_ratio=config.get("image_aspect_ratio", "pad"),
    )
    model.connector.load_state_dict(connector_state(official, model.connector), strict=True)
    spec = ModelSpec(
        name="mqt-llava-7b-official" if llama.hidden_size == 4096 else "mqt-llava-official",
        vision_tower={"pretrained": str(tower_source), "feature_layer": layer},
        llm={"architecture": {"model_type": "llama"} | {k: v for k, v in llama.to_dict().items() if k in LLAMA_FIELDS}},
        tokenizer={"pretrained": str(checkpoint)},
        connector=options,
        max_length=int(config.get("tokenizer_model_max_length", 2048)),
    )
    built = BuiltModel(
        model=model, tokenizer=load_pretrained_tokenizer(str(checkpoint)), image_settings=settings, spec=spec
    )
    save_export(built, out, record={"imported_from": str(checkpoint.resolve()), "model": spec.model_dump()})
    return out
