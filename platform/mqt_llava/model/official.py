"""The official MQT-LLaVA checkpoint (`gordonhu608/MQT-LLaVA-7b`, LLaVA's format) imported as this
platform's export, with the official behaviour (keys from position only).

    python jobs/import_official.py --checkpoint /models/MQT-LLaVA-7b --out /models/mqt-llava-7b-export

What the LLaVA format holds (facts read from the official code, none of it copied):

    config.json                   a Llama config plus `mm_vision_tower` (the CLIP tower by name),
                                  `mm_vision_select_layer`, `image_aspect_ratio`
    model.embed_tokens, model.layers.*, model.norm, lm_head      the Llama weights
    model.query_abstractor.query            (M, 1024) latent queries
    model.query_abstractor.pos_embed        (M, 1024) 2D sin-cos table of the 16 x 16 query grid
    model.query_abstractor.attn.*           torch's MultiheadAttention(1024, 16 heads): the stacked
                                            in_proj (q, k, v) and out_proj
    model.query_abstractor.ln_q/ln_k/ln_v   LayerNorms (eps 1e-6)
    model.query_abstractor.proj             (1024, llm width): tokens = attention output @ proj
    tokenizer files               the Vicuna tokenizer
    (the CLIP tower's weights are usually absent: LLaVA loads it by name, so does the importer)

The one convention that differs: the official 2D sin-cos table puts the column encoding in its first
half and the row encoding in its second (its meshgrid is x first); this platform's table is rows
first. Both sides feed the table through a LayerNorm and a projection, so the import permutes the
channels that meet the table (the queries, ln_q and ln_k, and the input columns of the q and k
projections) by the same half swap, and the imported model computes what the official one does.
The checkpoint's own table is checked against this platform's after the swap (to fp16 precision, as
the official code stores it), so a checkpoint of another convention is refused, not mis-imported.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from mqt_llava.model.connectors.mqt import MatryoshkaQueryTransformer, sincos_2d

PREFIX = "model.query_abstractor."
TOWER_PREFIX = "model.vision_tower.vision_tower."  # LLaVA's CLIPVisionTower wraps the HF model as .vision_tower
OFFICIAL_HEADS = 16  # fixed in the official builder; a checkpoint does not record it
LLAMA_FIELDS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                "num_key_value_heads", "max_position_embeddings", "rms_norm_eps", "rope_theta", "hidden_act",
                "bos_token_id", "eos_token_id", "pad_token_id", "tie_word_embeddings", "attention_bias")  # fmt: skip


class NotAnOfficialCheckpoint(ValueError):
    pass


def half_swap(width: int) -> torch.Tensor:
    """The channel order taking the official table's (columns, rows) halves to this platform's (rows,
    columns): ours[:, c] = official[:, perm[c]]. It is its own inverse."""
    half = width // 2
    return torch.cat([torch.arange(half, width), torch.arange(half)])


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
    """The official query abstractor's tensors (without the prefix) as this connector's state dict."""
    width = connector.width
    perm = half_swap(width)
    w_in, b_in = official["attn.in_proj_weight"], official["attn.in_proj_bias"]
    (w_q, w_k, w_v), (b_q, b_k, b_v) = w_in.split(width), b_in.split(width)
    state = {
        "queries": official["query"][:, perm],
        "ln_q.weight": official["ln_q.weight"][perm], "ln_q.bias": official["ln_q.bias"][perm],
        "ln_k.weight": official["ln_k.weight"][perm], "ln_k.bias": official["ln_k.bias"][perm],
        "ln_v.weight": official["ln_v.weight"], "ln_v.bias": official["ln_v.bias"],
        "q_proj.weight": w_q[:, perm], "q_proj.bias": b_q,
        "k_proj.weight": w_k[:, perm], "k_proj.bias": b_k,
        "v_proj.weight": w_v, "v_proj.bias": b_v,
        "out_proj.weight": official["attn.out_proj.weight"], "out_proj.bias": official["attn.out_proj.bias"],
        "output_proj.weight": official["proj"].t(),
    }  # fmt: skip
    return {k: v.to(torch.float32).contiguous() for k, v in state.items()}


def check_position_table(official: dict[str, torch.Tensor], connector: MatryoshkaQueryTransformer) -> None:
    table = official["pos_embed"].float()
    ours = sincos_2d(connector.query_side, connector.width)[: table.shape[0]]
    if table.shape != ours.shape or not torch.allclose(table[:, half_swap(connector.width)], ours, atol=2e-3):
        raise NotAnOfficialCheckpoint(
            "query_abstractor.pos_embed is not the official 2D sin-cos table (columns first) of a "
            f"{connector.query_side} x {connector.query_side} grid: this importer would mis-read it"
        )


def import_official(checkpoint: str | Path, out: str | Path, vision_tower: str | None = None,
                    num_heads: int = OFFICIAL_HEADS) -> Path:  # fmt: skip
    """Write `checkpoint` (a LLaVA-format MQT-LLaVA directory) as an export at `out`. `vision_tower`:
    a local copy of the CLIP tower the checkpoint names (default: its `mm_vision_tower`)."""
    from transformers import AutoTokenizer, CLIPImageProcessorPil, CLIPVisionModel, LlamaConfig, LlamaForCausalLM
    from transformers.utils import logging as hf_logging

    from mqt_llava.config import ModelSpec
    from mqt_llava.data.images import ImageSettings
    from mqt_llava.model.builder import BuiltModel
    from mqt_llava.model.export import save_export
    from mqt_llava.model.modeling import MQTLlavaForConditionalGeneration

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
    options = {"kind": "mqt", "num_queries": official["query"].shape[0], "num_heads": num_heads,
               "order": "attention_then_projection", "keys": "position_only"}  # fmt: skip
    layer = int(config.get("mm_vision_select_layer", -2))
    model = MQTLlavaForConditionalGeneration.from_parts(
        tower, language_model, connector=options, vision_feature_layer=layer, image_mean=list(settings.mean),
        image_std=list(settings.std), image_aspect_ratio=config.get("image_aspect_ratio", "pad"),
    )  # fmt: skip
    check_position_table(official, model.connector)
    model.connector.load_state_dict(connector_state(official, model.connector), strict=True)
    spec = ModelSpec(
        name="mqt-llava-7b-official" if llama.hidden_size == 4096 else "mqt-llava-official",
        vision_tower={"pretrained": str(tower_source), "feature_layer": layer},
        llm={"architecture": {"model_type": "llama"} | {k: v for k, v in llama.to_dict().items() if k in LLAMA_FIELDS}},
        tokenizer={"pretrained": str(checkpoint)},
        connector=options,
        max_length=int(config.get("tokenizer_model_max_length", 2048)),
    )  # fmt: skip
    built = BuiltModel(model=model, tokenizer=AutoTokenizer.from_pretrained(checkpoint), image_settings=settings,
                       spec=spec)  # fmt: skip
    save_export(built, out, record={"imported_from": str(checkpoint.resolve()), "model": spec.model_dump()})
    return out
