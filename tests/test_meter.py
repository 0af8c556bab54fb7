"""METER model: shapes for several image sizes and text lengths, padding masks, presets, no-decay names."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from florence_lib.config import ConfigError
from florence_lib.models.meter import (
    METER,
    METERForVQA,
    METERPretraining,
    count_fusion_parameters,
    fold,
    meter_config,
    sincos_2d,
)

TINY_TEXT = {"pretrained": False, "width": 32, "layers": 1, "heads": 2}


def tiny(**overrides):
    return meter_config("meter_tiny", text=TINY_TEXT, width=32, heads=2, **overrides)


@pytest.mark.parametrize(("size", "length", "stage", "tokens"), [
    (32, 5, 2, 4), (48, 12, 2, 9), (64, 20, 2, 16), (64, 7, -1, 4), (96, 3, 1, 144)])
def test_shapes_for_image_sizes_and_text_lengths(size: int, length: int, stage: int, tokens: int) -> None:
    torch.manual_seed(0)
    model = METER(tiny(image_stage=stage)).eval()
    ids = torch.randint(1000, 2000, (3, length))
    mask = torch.ones(3, length, dtype=torch.long)
    out = model(torch.randn(3, 3, size, size), ids, mask)
    assert out["text"].shape == (3, length, 32)
    assert out["image"].shape == (3, tokens, 32)
    assert out["pooled"].shape == (3, 64)
    assert out["pooled"].abs().max() <= 1.0  # two tanh poolers


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_padding_does_not_change_the_result(pooling: str) -> None:
    torch.manual_seed(0)
    model = METER(tiny(text_pooling=pooling)).eval()
    images = torch.randn(2, 3, 32, 32)
    ids = torch.randint(1000, 2000, (2, 6))
    mask = torch.ones(2, 6, dtype=torch.long)
    padded_ids = torch.cat([ids, torch.zeros(2, 5, dtype=torch.long)], 1)
    padded_mask = torch.cat([mask, torch.zeros(2, 5, dtype=torch.long)], 1)
    a = model(images, ids, mask)
    b = model(images, padded_ids, padded_mask)
    torch.testing.assert_close(a["pooled"], b["pooled"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a["image"], b["image"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(a["text"], b["text"][:, :6], atol=1e-5, rtol=1e-5)


def test_image_positions_are_distinct_for_any_grid() -> None:
    for h, w in ((2, 2), (3, 5), (4, 4)):
        pos = sincos_2d(h, w, 32)
        assert pos.shape == (h * w, 32)
        assert torch.cdist(pos, pos).add(torch.eye(h * w)).min() > 0.1


def test_image_positions_vary_in_every_dimension_on_a_small_grid() -> None:
    # MAE's indices-based version is ~one constant vector on a 3x3 grid (95% of its energy): invisible after LN
    pos = sincos_2d(3, 3, 128)
    torch.testing.assert_close(pos.mean(0), torch.zeros(128), atol=1e-5, rtol=0)
    assert (pos.std(0) > 0.45).float().mean() > 0.95  # (nearly) every dimension tells cells apart, at std ~0.5
    assert pos.pow(2).sum(1).mean() == pytest.approx(128 * 0.25 * 8 / 9, rel=0.05)
    torch.testing.assert_close(sincos_2d(1, 1, 8), torch.zeros(1, 8))


def test_frozen_image_tower_gets_no_gradient() -> None:
    model = METER(tiny(freeze_image=True))
    assert not any(p.requires_grad for p in model.image_encoder.parameters())
    out = model(torch.randn(2, 3, 32, 32), torch.randint(1000, 2000, (2, 5)), torch.ones(2, 5, dtype=torch.long))
    out["pooled"].sum().backward()
    assert model.image_map.weight.grad is not None  # the map into the fusion still learns


def test_fold_puts_each_cells_fine_tokens_in_its_channels() -> None:
    fine = torch.arange(2 * 6 * 6, dtype=torch.float32).view(1, 2, 6, 6)
    folded = fold(fine, (3, 3))
    assert folded.shape == (1, 8, 3, 3)
    # coarse cell (1, 2) holds fine rows 2-3, columns 4-5 of each channel, row-major, channel by channel
    assert folded[0, :, 1, 2].tolist() == [16, 17, 22, 23, 52, 53, 58, 59]
    with pytest.raises(ValueError, match="does not tile"):
        fold(torch.zeros(1, 2, 7, 6), (3, 3))


@pytest.mark.parametrize("size", [32, 48, 64])
def test_concatenated_stages_enter_as_one_token_per_cell(size: int) -> None:
    torch.manual_seed(0)
    model = METER(tiny(image_concat_stages=(0, 1))).eval()
    images = torch.randn(2, 3, size, size)
    fmap = model.stage_map(images)
    features = model.image_encoder.forward_features(images)["features"]
    grid = features[2].shape[-1]
    assert fmap.shape == (2, 128 + 32 * 16 + 64 * 4, grid, grid)  # stage 2, then stage 0 (4x4), stage 1 (2x2)
    torch.testing.assert_close(fmap[:, :128], features[2])
    torch.testing.assert_close(fmap[:, 128:640], fold(features[0], (grid, grid)))
    torch.testing.assert_close(fmap[:, 640:], fold(features[1], (grid, grid)))
    out = model(images, torch.randint(1000, 2000, (2, 5)), torch.ones(2, 5, dtype=torch.long))
    assert out["image"].shape == (2, grid * grid, 32)
    with pytest.raises(ConfigError, match="before image_stage"):
        tiny(image_concat_stages=(2,))


def test_heads_and_pretrained_text_tower() -> None:
    cfg = meter_config("meter_tiny")  # MiniLM's first 2 layers, loaded offline
    pre = METERPretraining(cfg).eval()
    assert len(pre.meter.text_encoder.encoder.layer) == 2
    assert pre.mlm_head.decoder.out_features == 30522
    vqa = METERForVQA(cfg, 7).eval()
    logits = vqa(torch.randn(2, 3, 64, 64), torch.tensor([[101, 2054, 102]] * 2), torch.ones(2, 3, dtype=torch.long))
    assert logits.shape == (2, 7)
    head = [type(m).__name__ for m in vqa.head.net]
    assert head == ["Linear", "LayerNorm", "GELU", "Linear"]


def test_no_weight_decay_covers_text_and_modality_embeddings() -> None:
    names = METERPretraining(tiny()).no_weight_decay()
    assert "meter.modality_embedding.weight" in names
    assert "meter.text_encoder.embeddings.word_embeddings.weight" in names
    assert "meter.text_encoder.embeddings.position_embeddings.weight" in names
    assert "meter.text_layers.0.self_attn.q.weight" not in names
    assert "meter.text_layers.0.self_attn.q.bias" in names


def test_bad_configs_are_refused() -> None:
    with pytest.raises(ConfigError, match="pretrained MiniLM"):
        meter_config("meter_tiny", text={"layers": 8})
    with pytest.raises(ConfigError, match="divisible"):
        meter_config("meter_tiny", width=130)


def test_paper_preset_sizes() -> None:
    counts = count_fusion_parameters(meter_config("meter_paper"))
    assert 600e6 < counts["image"] < 660e6  # CoSwin-H
    assert 100e6 < counts["text"] < 130e6  # RoBERTa-base sized BERT (WordPiece vocabulary)
    # METER's 6+6 co-attention layers at 768: ~14.2M (text) + 14.2M (image) per layer pair of attn x2 + FFN
    assert 100e6 < counts["fusion"] < 120e6


def test_attention_adds_positions_to_queries_and_keys_only() -> None:
    from florence_lib.models.meter import Attention

    torch.manual_seed(0)
    attn = Attention(8, 2).eval()
    x, ctx, qp, kp = torch.randn(2, 3, 8), torch.randn(2, 5, 8), torch.randn(1, 3, 8), torch.randn(1, 5, 8)
    wk, wv = attn.kv.weight.split(8)
    bk, bv = attn.kv.bias.split(8)
    q = (attn.q(x + qp)).view(2, 3, 2, 4).transpose(1, 2)
    k = F.linear(ctx + kp, wk, bk).view(2, 5, 2, 4).transpose(1, 2)
    v = F.linear(ctx, wv, bv).view(2, 5, 2, 4).transpose(1, 2)
    expected = attn.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(2, 3, 8))
    torch.testing.assert_close(attn(x, ctx, query_pos=qp, key_pos=kp), expected)


def test_position_every_layer_changes_the_fusion_only_through_positions() -> None:
    torch.manual_seed(0)
    plain = METER(tiny()).eval()
    every = METER(tiny(position_every_layer=True)).eval()
    every.load_state_dict(plain.state_dict())
    images, ids = torch.randn(2, 3, 48, 48), torch.randint(1000, 2000, (2, 5))
    mask = torch.ones(2, 5, dtype=torch.long)
    a, b = plain(images, ids, mask)["pooled"], every(images, ids, mask)["pooled"]
    assert a.shape == b.shape and not torch.allclose(a, b)
