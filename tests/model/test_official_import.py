"""The official checkpoint's importer, on a tiny model written in the official (LLaVA) layout: module
names, shapes and the order of operations as the official code has them (read for facts; the
reference below is written here). The official stage 1 trains the position table, so the reference's
table is a trained-like one (sin-cos plus noise), not the sin-cos table it starts from. After import,
the platform's model gives the logits the official arithmetic gives on the same weights."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch import nn
from transformers import CLIPImageProcessor, CLIPVisionConfig, CLIPVisionModel, LlamaConfig, LlamaForCausalLM

from mqt_llava.model.connectors.mqt import MatryoshkaQueryTransformer
from mqt_llava.model.export import read_config
from mqt_llava.model.modeling import MQTLlavaForConditionalGeneration
from mqt_llava.model.official import NotAnOfficialCheckpoint, connector_state, import_official
from mqt_llava.model.tokenizer import byte_level_tokenizer

WIDTH, LLM_WIDTH, HEADS, SIDE, GRID_SIDE = 64, 48, 4, 4, 6  # 16 queries; a 48-px image in 8-px patches: 6 x 6


def official_table(side: int, dim: int) -> np.ndarray:
    """MAE's 2D sin-cos table as the official code builds it: its meshgrid takes x (the column) first,
    so the first half of the channels encodes the column, the second the row."""

    def axis(positions, d):
        omega = 1.0 / 10000 ** (np.arange(d // 2, dtype=np.float64) / (d / 2))
        angles = np.outer(positions.reshape(-1), omega)
        return np.concatenate([np.sin(angles), np.cos(angles)], axis=1)

    columns, rows = np.meshgrid(np.arange(side), np.arange(side))
    return np.concatenate([axis(columns, dim // 2), axis(rows, dim // 2)], axis=1)


def trained_like_table(side: int, dim: int, seed: int = 0) -> torch.Tensor:
    """The official table after stage 1 trained it: sin-cos plus noise of std 0.05."""
    noise = torch.randn(side * side, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return (torch.tensor(official_table(side, dim)) + 0.05 * noise).float()


class OfficialAbstractor(nn.Module):
    """The official query abstractor's arithmetic: ln_q(query + table), keys ln_k(table resized to the
    feature grid), values ln_v(features), torch's MultiheadAttention, then `@ proj`. The table is a
    parameter, as stage 1 trains it."""

    def __init__(self) -> None:
        super().__init__()
        self.pos_embed = nn.Parameter(trained_like_table(SIDE, WIDTH))
        self.query = nn.Parameter(torch.randn(SIDE * SIDE, WIDTH))
        self.attn = nn.MultiheadAttention(WIDTH, HEADS)
        self.ln_q, self.ln_k, self.ln_v = (nn.LayerNorm(WIDTH, eps=1e-6) for _ in range(3))
        self.proj = nn.Parameter(torch.randn(WIDTH, LLM_WIDTH) * LLM_WIDTH**-0.5)
        with torch.no_grad():  # LayerNorms away from identity, so a channel mix-up would show
            for p in [
                *self.ln_q.parameters(),
                *self.ln_k.parameters(),
                *self.ln_v.parameters(),
                self.attn.in_proj_bias,
            ]:
                p.normal_(0.5, 0.5)

    def forward(self, features: torch.Tensor, m: int) -> torch.Tensor:
        batch = features.shape[0]
        square = self.pos_embed.reshape(1, SIDE, SIDE, -1).permute(0, 3, 1, 2)
        keys = F.interpolate(square, size=(GRID_SIDE, GRID_SIDE), mode="bicubic", align_corners=False)
        keys = keys.permute(0, 2, 3, 1).flatten(0, 2)
        q = (self.query[:m] + self.pos_embed[:m]).unsqueeze(1).repeat(1, batch, 1)
        out = self.attn(
            self.ln_q(q), self.ln_k(keys.unsqueeze(1).repeat(1, batch, 1)), self.ln_v(features.permute(1, 0, 2))
        )[0]
        return out.permute(1, 0, 2) @ self.proj


@pytest.fixture(scope="module")
def official(tmp_path_factory):
    """(checkpoint dir, tower, llama, abstractor) in LLaVA's layout, written in two formats."""
    torch.manual_seed(0)
    root = tmp_path_factory.mktemp("official")
    tower = CLIPVisionModel(
        CLIPVisionConfig(
            image_size=48,
            patch_size=8,
            hidden_size=WIDTH,
            intermediate_size=128,
            num_hidden_layers=3,
            num_attention_heads=4,
        )
    ).eval()
    tower.save_pretrained(root / "clip")
    CLIPImageProcessor(size={"shortest_edge": 48}, crop_size={"height": 48, "width": 48}).save_pretrained(root / "clip")
    tokenizer = byte_level_tokenizer()
    llama = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tokenizer),
            hidden_size=LLM_WIDTH,
            intermediate_size=96,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=4,
            max_position_embeddings=256,
        )
    ).eval()
    abstractor = OfficialAbstractor().eval()
    state = llama.state_dict() | {f"model.query_abstractor.{k}": v for k, v in abstractor.state_dict().items()}
    config = llama.config.to_dict() | {
        "model_type": "llava_llama",
        "mm_vision_tower": str(root / "clip"),
        "mm_vision_select_layer": -2,
        "image_aspect_ratio": "pad",
    }
    for fmt in ("safetensors", "bin"):
        folder = root / fmt
        folder.mkdir()
        (folder / "config.json").write_text(json.dumps(config))
        tokenizer.save_pretrained(folder)
        state = {k: v.contiguous().clone() for k, v in state.items()}
        if fmt == "safetensors":
            save_file(state, str(folder / "model.safetensors"))
        else:
            torch.save(state, folder / "pytorch_model.bin")
    return root, tower, llama, abstractor


@pytest.mark.parametrize("fmt", ["safetensors", "bin"])
@pytest.mark.parametrize("m", [16, 5, 1])
def test_the_imported_model_gives_the_official_logits(official, tmp_path, fmt, m):
    root, tower, llama, abstractor = official
    export = import_official(root / fmt, tmp_path / "export", num_heads=HEADS)  # the official 7B has 16
    connector = read_config(export)["connector"]
    assert (connector["keys"], connector["position_table"]) == ("position_only", "trained_in_stage1")
    ours = MQTLlavaForConditionalGeneration.from_pretrained(export).eval()
    assert torch.equal(ours.connector.pos_embed.detach(), abstractor.pos_embed.detach())  # imported as it is
    torch.manual_seed(1)
    pixels = torch.randn(2, 3, 48, 48)  # already normalised: both sides take them as they are
    ids = torch.randint(3, 200, (2, 9))
    with torch.no_grad():
        features = tower(pixels, output_hidden_states=True).hidden_states[-2][:, 1:]  # LLaVA's "patch" features
        visual = abstractor(features, m)
        text = llama.get_input_embeddings()(ids)
        native = llama(inputs_embeds=torch.cat([text[:, :3], visual, text[:, 3:]], dim=1)).logits
        with_placeholder = torch.cat([ids[:, :3], torch.full((2, 1), -200), ids[:, 3:]], dim=1)
        imported = ours(input_ids=with_placeholder, pixel_values=pixels, num_visual_tokens=m).logits
    torch.testing.assert_close(imported, native, rtol=1e-4, atol=1e-4)


def our_connector(num_queries: int = SIDE * SIDE) -> MatryoshkaQueryTransformer:
    return MatryoshkaQueryTransformer(
        num_queries, WIDTH, LLM_WIDTH, HEADS, keys="position_only", position_table="trained_in_stage1"
    )


@pytest.mark.parametrize(
    "table",
    [
        "trained-like",  # sin-cos + noise, as stage 1 leaves it
        "rows-first",  # another channel convention: channels meet the table per channel, so it imports too
        "random",  # nothing like sin-cos at all
    ],
)
def test_any_table_of_the_right_shape_is_imported_and_computes_the_official_forward(table):
    torch.manual_seed(2)
    abstractor = OfficialAbstractor().eval()
    with torch.no_grad():
        if table == "rows-first":
            half = WIDTH // 2
            abstractor.pos_embed.copy_(torch.cat([abstractor.pos_embed[:, half:], abstractor.pos_embed[:, :half]], 1))
        elif table == "random":
            abstractor.pos_embed.normal_(0, 1)
    connector = our_connector().eval()
    connector.load_state_dict(connector_state(abstractor.state_dict(), connector), strict=True)
    features = torch.randn(3, GRID_SIDE * GRID_SIDE, WIDTH) * 2
    with torch.no_grad():
        for m in (16, 7, 1):
            torch.testing.assert_close(connector(features, m), abstractor(features, m), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("key", "shape"),
    [("pos_embed", (9, WIDTH)), ("pos_embed", (16, WIDTH + 8)), ("query", (16, WIDTH + 8)), ("proj", (WIDTH, 7))],
)
def test_a_tensor_of_the_wrong_shape_is_refused_naming_it_and_both_shapes(key, shape):
    state = dict(OfficialAbstractor().state_dict())
    state[key] = torch.zeros(shape)
    connector = our_connector()
    expected = {"pos_embed": (16, WIDTH), "query": (16, WIDTH), "proj": (WIDTH, LLM_WIDTH)}[key]
    found, needed = (", ".join(map(str, s)) for s in (shape, expected))
    with pytest.raises(
        NotAnOfficialCheckpoint, match=rf"query_abstractor\.{key} has shape \({found}\).*needs \({needed}\)"
    ):
        connector_state(state, connector)


def test_a_checkpoint_with_a_wrong_size_table_is_refused_by_the_job(official, tmp_path):
    root, _, llama, abstractor = official
    folder = tmp_path / "wrong-table"
    folder.mkdir()
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        if (root / "safetensors" / name).exists():
            (folder / name).write_bytes((root / "safetensors" / name).read_bytes())
    state = llama.state_dict() | {f"model.query_abstractor.{k}": v for k, v in abstractor.state_dict().items()}
    state["model.query_abstractor.pos_embed"] = torch.zeros(25, WIDTH)  # a 5 x 5 grid for 16 queries
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    with pytest.raises(NotAnOfficialCheckpoint, match=r"pos_embed has shape \(25, 64\).*needs \(16, 64\)"):
        import_official(folder, tmp_path / "export")


def test_a_plain_llava_directory_is_refused(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(NotAnOfficialCheckpoint, match="names no mm_vision_tower"):
        import_official(tmp_path, tmp_path / "export")
