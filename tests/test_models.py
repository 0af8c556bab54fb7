"""CoSwin, the text towers and the UniCL model: shapes at any input size, window masks, presets, checkpointing."""

import math

import pytest
import torch
from timm.layers import resize_rel_pos_bias_table_simple
from timm.models.swin_transformer import SwinTransformerBlock

from florence_lib.config import ConfigError, from_dict, to_dict
from florence_lib.data.tokenizer import Tokenizer
from florence_lib.losses import unicl_loss
from florence_lib.models import (
    UniCLConfig,
    UniCLModel,
    count_parameters,
    create_image_encoder,
    create_model,
    create_text_encoder,
    interpolate_rel_pos_bias,
    list_models,
    model_config,
)
from florence_lib.models.coswin import MASKED, CoSwinBlock, window_attention_mask
from florence_lib.models.text_encoder import end_positions
from florence_lib.training.engine import clamp_parameters


@pytest.fixture(scope="module")
def tiny_image_encoder():
    torch.manual_seed(0)
    return create_image_encoder("coswin_tiny").eval()


@pytest.mark.parametrize("size", [(32, 32), (64, 64), (72, 72), (96, 96), (64, 100)])
def test_coswin_shapes_at_any_input_size(tiny_image_encoder, size):
    out = tiny_image_encoder.forward_features(torch.randn(2, 3, *size))
    assert out["pooled"].shape == (2, 256)
    h, w = (size[0] - 3) // 4 + 1, (size[1] - 3) // 4 + 1  # k7/s4/p2, then k3/s2/p1 halves (rounding up)
    for i, (feature, dim) in enumerate(zip(out["features"], (32, 64, 128, 256))):
        assert feature.shape == (2, dim, -(-h // 2**i), -(-w // 2**i))
        if size[0] % 32 == 0 and size[1] % 32 == 0:
            assert feature.shape[-2:] == (size[0] // 4 // 2**i, size[1] // 4 // 2**i)  # strides 4, 8, 16, 32
    assert torch.isfinite(out["pooled"]).all()


@pytest.mark.parametrize("shift", [0, 2])
def test_block_matches_timm_swin_block(shift):
    """Where no padding is needed, a CoSwin block is exactly a Swin block (same weights, same masks)."""
    torch.manual_seed(0)
    ours = CoSwinBlock(16, num_heads=2, window_size=4, shifted=shift > 0, mlp_ratio=4.0, drop_path=0.0).eval()
    timm_block = SwinTransformerBlock(16, (8, 12), num_heads=2, window_size=4, shift_size=shift).eval()
    timm_block.load_state_dict(ours.state_dict())
    x = torch.randn(2, 8, 12, 16)
    mask = window_attention_mask(8, 12, 4, ours.shift_for(8, 12))
    torch.testing.assert_close(ours(x, mask), timm_block(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shift", [0, 2])
@pytest.mark.parametrize("size", [(6, 10), (7, 5), (3, 3)])
def test_block_matches_timm_swin_block_on_padded_sizes(shift, size):
    """On sizes the window does not divide, CoSwin pads bottom/right (Swin's order: pad, then roll) and masks the
    padding out. timm's block, run on the same padded map with the same mask, must give the same output on the
    real tokens: this pins the padding side, the pad-then-shift order, the window layout and the crop."""
    h, w = size
    torch.manual_seed(0)
    ours = CoSwinBlock(16, num_heads=2, window_size=4, shifted=shift > 0, mlp_ratio=4.0, drop_path=0.0).eval()
    hp, wp = -(-h // 4) * 4, -(-w // 4) * 4
    shift_hw = ours.shift_for(h, w)
    timm_block = SwinTransformerBlock(16, (hp, wp), num_heads=2, window_size=4, shift_size=max(shift_hw),
                                      always_partition=True).eval()
    timm_block.load_state_dict(ours.state_dict(), strict=False)
    timm_block.shift_size = shift_hw
    mask = window_attention_mask(h, w, 4, shift_hw)
    timm_block.attn_mask = mask
    x = torch.randn(2, h, w, 16)
    with torch.no_grad():
        padded = torch.randn(2, hp, wp, 16)  # whatever the padding holds: masked, it cannot matter
        padded[:, :h, :w] = timm_block.norm1(x)
        y = x + timm_block._attn(padded)[:, :h, :w]
        y = y + timm_block.mlp(timm_block.norm2(y))
        torch.testing.assert_close(ours(x, mask), y, rtol=1e-5, atol=1e-5)


def test_windows_do_not_see_each_other():
    torch.manual_seed(0)
    x = torch.randn(1, 8, 8, 16)
    bumped = x.clone()
    bumped[0, 0, 0] += torch.randn(16)  # not a constant: LayerNorm would erase that
    for shifted, reached in ((False, (slice(0, 4), slice(0, 4))), (True, (slice(0, 2), slice(0, 2)))):
        block = CoSwinBlock(16, num_heads=2, window_size=4, shifted=shifted, mlp_ratio=2.0, drop_path=0.0)
        mask = window_attention_mask(8, 8, 4, block.shift_for(8, 8))
        with torch.no_grad():
            change = (block(bumped, mask) - block(x, mask)).abs().sum(-1)[0]
        # regular block: the top-left window only; shifted block: token (0,0) sits in the wrapped-around corner
        # band of the last shifted window, whose only other members are the 2x2 tokens around it
        assert (change[reached] > 1e-4).all()
        change[reached] = 0
        assert change.max() < 1e-6


def test_mask_blocks_padding_and_foreign_bands():
    mask = window_attention_mask(6, 6, 4, (0, 0))  # padded to 8x8: four windows, three of them part padding
    assert mask.shape == (4, 16, 16)
    assert (mask[0] == 0).all()
    key_is_pad = torch.arange(16) % 4 >= 2  # window (0, 1) covers columns 4..7; 6 and 7 are padding
    assert (mask[1][:, key_is_pad] == MASKED).all() and (mask[1][:, ~key_is_pad] == 0).all()
    assert window_attention_mask(8, 8, 4, (0, 0)) is None
    shifted = window_attention_mask(8, 8, 4, (2, 2))
    assert (shifted[0] == 0).all() and (shifted[3] != 0).any()  # only windows that wrap around are split
    assert (shifted[3] == 0).sum() == 4 * 4 * 4  # four 2x2 bands: each token attends to its band of 4


def test_map_that_fits_one_window_is_not_shifted():
    block = CoSwinBlock(8, num_heads=1, window_size=4, shifted=True, mlp_ratio=1.0, drop_path=0.0)
    assert block.shift_for(3, 9) == (0, 2)


def test_grad_checkpointing_gives_identical_gradients():
    # stochastic depth on: checkpointing must replay the dropout RNG
    model = create_model("unicl_tiny", image={"drop_path_rate": 0.2}, text={"vocab_size": 2000}).train()
    images, ids = torch.randn(4, 3, 32, 32), torch.randint(1000, 2000, (4, 12))
    ids[:, 8] = 102
    mask = torch.ones_like(ids)

    def grads() -> dict[str, torch.Tensor]:
        model.zero_grad()
        torch.manual_seed(1)
        image, text, scale = model(images, ids, mask)
        unicl_loss(image, text, torch.tensor([0, 1, 0, 2]), scale).backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}

    plain = grads()
    model.set_grad_checkpointing(True)
    checkpointed = grads()
    assert plain.keys() == checkpointed.keys() and len(plain) == len(list(model.parameters()))
    for name in plain:
        torch.testing.assert_close(checkpointed[name], plain[name], rtol=0, atol=1e-6, msg=name)


def test_rel_pos_bias_interpolation():
    """Resizing must be Swin's bicubic resize of the (2w-1) x (2w-1) grid, not merely shape-preserving: a table
    that varies along the dy axis only (one slope per head) is compared with timm's implementation of it, and
    must still vary along dy only (a transposed or scrambled resize fails)."""
    key = "image_encoder.stages.2.blocks.1.attn.relative_position_bias_table"
    state = create_model("unicl_tiny").state_dict()
    assert interpolate_rel_pos_bias(state, 4)[key] is state[key]
    dy = torch.arange(7, dtype=torch.float32)[:, None].expand(7, 7).reshape(-1, 1)  # row index of the grid

    def ramp(heads: int) -> torch.Tensor:  # (49, heads): head h rises with slope h + 1 along dy
        return (dy * torch.arange(1, heads + 1)).contiguous()

    heads = state[key].shape[1]
    varying = {k: ramp(v.shape[1]) if k.endswith("bias_table") else v for k, v in state.items()}
    resized = interpolate_rel_pos_bias(varying, 8)
    table = resized[key]
    assert table.shape == (15 * 15, heads)
    torch.testing.assert_close(table, resize_rel_pos_bias_table_simple(ramp(heads), (8, 8), (15 * 15, heads)))
    grid = table.T.reshape(heads, 15, 15)
    torch.testing.assert_close(grid, grid[:, :, :1].expand_as(grid))  # constant along dx
    assert (grid[:, 1:, 0] > grid[:, :-1, 0] - 1e-4).all() and (grid[:, -1, 0] > grid[:, 0, 0] + 5).all()
    bigger = UniCLModel(model_config("unicl_tiny", image={"window_size": 8}))
    bigger.load_state_dict(resized)  # strict: every other key and shape carries over


def test_text_transformer_pools_at_end_token_and_ignores_what_follows():
    torch.manual_seed(0)
    text = create_text_encoder("text_tiny").eval()
    ids = torch.randint(1000, 2000, (2, 10))
    ids[:, 6] = 102
    mask = torch.ones_like(ids)
    mask[:, 7:] = 0
    changed = ids.clone()
    changed[:, 7:] = 0  # what follows [SEP] (padding) cannot reach it through causal attention
    with torch.no_grad():
        out = text(ids, mask)
        assert out.shape == (2, 128)
        torch.testing.assert_close(text(changed, mask), out)
        ids2 = ids.clone()
        ids2[:, 3] += 1  # but what precedes it does
        assert not torch.allclose(text(ids2, mask), out)
    no_end = torch.tensor([[101, 5, 6, 0, 0], [101, 102, 9, 102, 0]])
    assert end_positions(no_end, (no_end != 0).long(), 102).tolist() == [2, 1]


def test_minilm_tower_loads_offline_and_knows_english():
    text = create_text_encoder("minilm_l6").eval()
    assert text.width == 384
    batch = Tokenizer(context_length=16)(["a photo of a cat", "a picture of a kitten", "stock markets fell sharply"])
    with torch.no_grad():
        out = text(batch["input_ids"], batch["attention_mask"])
        short = text(batch["input_ids"][:, :12], batch["attention_mask"][:, :12])
    assert out.shape == (3, 384)
    torch.testing.assert_close(short, out, rtol=1e-4, atol=1e-5)  # mean pooling ignores padding
    out = torch.nn.functional.normalize(out, dim=-1)
    assert out[0] @ out[1] > out[0] @ out[2] + 0.3  # pretrained sentence embeddings, not a random init


def test_presets_and_huge_parameter_counts():
    assert {"unicl_tiny", "unicl_small", "unicl_minilm_tiny", "unicl_base", "unicl_huge"} <= set(list_models())
    huge = count_parameters("unicl_huge")  # meta device: 0.9B parameters, no memory
    assert huge["image"] == pytest.approx(637e6, rel=0.02)
    assert huge["text"] == pytest.approx(256e6, rel=0.02)
    assert huge["total"] > huge["image"] + huge["text"]
    assert count_parameters("unicl_tiny")["total"] < 10e6


def test_unicl_model_interface_and_temperature():
    model = create_model("unicl_tiny")
    ids = torch.randint(1000, 2000, (3, 77))
    image, text, scale = model(torch.randn(3, 3, 64, 64), ids, torch.ones_like(ids))
    assert image.shape == text.shape == (3, 128)
    torch.testing.assert_close(image.norm(dim=-1), torch.ones(3))
    assert scale.item() == pytest.approx(1 / 0.07)
    with torch.no_grad():
        model.logit_scale.fill_(10.0)
    clamp_parameters(model)  # what the engines do after each optimizer step
    assert model.temperature_scale().item() == pytest.approx(100.0)
    no_decay = model.no_weight_decay()
    assert {"logit_scale", "text_encoder.token_embedding.weight", "text_encoder.positional_embedding",
            "image_encoder.stages.0.blocks.0.attn.relative_position_bias_table",
            "image_encoder.stages.0.embed.norm.weight", "text_encoder.blocks.0.attn.qkv.bias"} <= no_decay
    assert not {"image_projection.weight", "text_encoder.blocks.0.attn.qkv.weight",
                "image_encoder.stages.0.embed.proj.weight"} & no_decay


def test_configs_round_trip_and_overrides_are_checked():
    for name in ("unicl_tiny", "unicl_minilm_tiny"):
        cfg = model_config(name)
        assert from_dict(UniCLConfig, to_dict(cfg)) == cfg
    assert model_config("unicl_tiny", image={"window_size": 8}).image.window_size == 8
    with pytest.raises(ConfigError, match="image.window"):
        model_config("unicl_tiny", image={"window": 8})
    with pytest.raises(ConfigError, match="num_heads"):
        model_config("unicl_tiny", image={"num_heads": (1, 2)})
    assert math.isclose(model_config("unicl_huge").max_logit_scale, math.log(100))


def test_text_transformer_packed_equals_timm_blocks_over_the_padded_batch():
    """The tower computes each row only up to its end token (and the last block only the end tokens): the same
    outputs and gradients as timm's blocks run over the whole padded batch, as the tower computed them before.
    In float64, where the two agree to ~1e-15 (in float32 each is ~1e-6 off float64, the packed one no further)."""
    from timm.models.vision_transformer import Block

    torch.manual_seed(0)
    text = create_text_encoder("text_tiny", layers=3, vocab_size=500).double().train()
    ids = torch.randint(1, 500, (5, 12))
    ids[ids == 102] = 7
    for row, end in enumerate([3, 11, 0, 6]):
        ids[row, end] = 102
    mask = torch.ones_like(ids)
    mask[4, 9:] = 0  # no [SEP]: pooled at the last real token
    ids[4, 9:] = 0

    def reference() -> torch.Tensor:
        x = text.token_embedding(ids) + text.positional_embedding[: ids.shape[1]]
        for block in text.blocks:
            x = Block.forward(block, x, is_causal=True)
        return text.ln_final(x)[torch.arange(len(ids)), end_positions(ids, mask, 102)]

    weights = torch.randn(5, 128, dtype=torch.float64)
    grads = []
    for fn in (reference, lambda: text(ids, mask)):
        text.zero_grad(set_to_none=True)
        out = fn()
        (out * weights).sum().backward()
        grads.append((out.detach(), {n: p.grad.clone() for n, p in text.named_parameters()}))
    (ref, ref_grads), (out, out_grads) = grads
    torch.testing.assert_close(out, ref)
    for name, grad in ref_grads.items():
        torch.testing.assert_close(out_grads[name], grad, msg=lambda m, name=name: f"{name}: {m}")
    text.set_grad_checkpointing(True)
    torch.testing.assert_close(text(ids, mask), ref)
