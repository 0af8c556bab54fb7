"""Video CoSwin: shapes at any (T, H, W), the 3D shifted-window attention against a per-token-pair brute force,
clipped windows indexed by true offsets, and inflation from 2D (a still clip gives the frame's 2D feature)."""

from __future__ import annotations

import pytest
import torch

from florence_lib.config import ConfigError, from_dict
from florence_lib.models import create_image_encoder
from florence_lib.models.presets import COSWIN_TINY
from florence_lib.models.video_coswin import (
    VIDEO_ENCODERS,
    VideoCoSwin,
    VideoCoSwinBlock,
    VideoCoSwinConfig,
    create_video_encoder,
    inflate,
    relative_position_index_3d,
    window_attention_mask_3d,
)


@pytest.mark.parametrize(("t", "h", "w", "tokens"), [
    (8, 48, 48, [(4, 12, 12), (4, 6, 6), (4, 3, 3), (4, 2, 2)]),
    (5, 37, 50, [(3, 9, 12), (3, 5, 6), (3, 3, 3), (3, 2, 2)]),  # odd T (last frame repeated), non-square
    (1, 32, 32, [(1, 8, 8), (1, 4, 4), (1, 2, 2), (1, 1, 1)]),  # a single image
    (12, 70, 64, [(6, 17, 16), (6, 9, 8), (6, 5, 4), (6, 3, 2)]),  # maps the window does not divide
])
def test_shapes_at_any_size(t, h, w, tokens):
    torch.manual_seed(0)
    model = create_video_encoder("video_coswin_tiny").eval()
    with torch.no_grad():
        out = model.forward_features(torch.randn(2, 3, t, h, w))
    assert out["pooled"].shape == (2, model.num_features)
    assert [tuple(f.shape[2:]) for f in out["features"]] == tokens
    assert [f.shape[1] for f in out["features"]] == model.feature_dims
    assert torch.isfinite(out["pooled"]).all()


def test_backward_reaches_every_parameter():
    model = create_video_encoder("video_coswin_tiny", drop_path_rate=0.0)
    model(torch.randn(2, 3, 6, 40, 40)).sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


# ----------------------------------------------------------------------------------------- brute force
def brute_force_attention(block: VideoCoSwinBlock, x: torch.Tensor) -> torch.Tensor:
    """Global attention over all tokens with the window rules written per token pair, in map coordinates.

    Along each axis, the window is clipped to the map where the map is smaller (no shift then); otherwise two
    tokens share a shifted window iff floor((c - shift) / w) agrees (tokens before the shift form the wrapped
    window of their own). The bias is the full table's entry at the pair's true offset (dt, dh, dw).
    """
    _, *size, c = x.shape
    full = block.window
    window = [min(wd, s) for wd, s in zip(full, size, strict=True)]
    shift = [wd // 2 if block.shifted and s > wd else 0 for wd, s in zip(full, size, strict=True)]
    coords = torch.stack(torch.meshgrid(*(torch.arange(s) for s in size), indexing="ij"), -1).view(-1, 3)
    group = torch.div(coords - torch.tensor(shift), torch.tensor(window), rounding_mode="floor")
    allowed = (group[:, None, :] == group[None, :, :]).all(-1)
    rel = coords[:, None, :] - coords[None, :, :] + torch.tensor(full) - 1
    index = (rel[..., 0] * (2 * full[1] - 1) + rel[..., 1]) * (2 * full[2] - 1) + rel[..., 2]
    index = torch.where(allowed, index, 0)  # pairs too far apart for the table are masked anyway
    attn = block.attn
    bias = attn.relative_position_bias_table[index].permute(2, 0, 1)  # [heads, N, N]
    heads = attn.num_heads
    q, k, v = attn.qkv(x.view(-1, c)).view(-1, 3, heads, c // heads).permute(1, 2, 0, 3)
    logits = q @ k.transpose(-1, -2) * (c // heads) ** -0.5 + bias
    out = logits.masked_fill(~allowed, float("-inf")).softmax(-1) @ v  # [heads, N, hd]
    return attn.proj(out.transpose(0, 1).reshape(-1, c)).view(x.shape)


@pytest.mark.parametrize(("size", "window", "shifted"), [
    ((4, 8, 8), (2, 4, 4), False),
    ((4, 8, 8), (2, 4, 4), True),
    ((5, 6, 7), (2, 4, 4), True),  # padded in every dimension, shifted
    ((3, 3, 6), (4, 4, 4), True),  # T and H clipped (no shift there), W padded and shifted
    ((1, 2, 3), (2, 4, 4), True),  # everything clipped: one window, no shift
    ((6, 5, 9), (3, 2, 4), True),
])
def test_window_attention_matches_brute_force(size, window, shifted):
    torch.manual_seed(0)
    block = VideoCoSwinBlock(16, 2, window, shifted, 4.0, 0.0)
    with torch.no_grad():
        block.attn.relative_position_bias_table.normal_(0, 1.0)  # a bias big enough to matter
        x = torch.randn(1, *size, 16)
        mask = window_attention_mask_3d(size, *block.layout(size))
        got = block._attention(x, mask)
        want = brute_force_attention(block, x)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_clipped_window_uses_true_offsets_not_a_slice_of_the_full_index():
    full, clipped = (2, 4, 4), (2, 3, 4)
    index = relative_position_index_3d(clipped, full)
    # token 3 of the clipped window sits at (0, 0, 3), token 4 at (0, 1, 0): offset (0, -1, 3)
    assert index[3, 4] == ((0 + 1) * 7 + (-1 + 3)) * 7 + (3 + 3)
    sliced = relative_position_index_3d(full, full)[:24, :24]  # Video Swin / torchvision's swin3d
    assert not torch.equal(index, sliced)
    assert torch.equal(relative_position_index_3d(full, full)[:16, :16],
                       relative_position_index_3d((1, 4, 4), full))  # clipping time alone is a prefix


def test_mask_is_none_when_nothing_needs_masking():
    assert window_attention_mask_3d((4, 8, 8), (2, 4, 4), (0, 0, 0)) is None
    mask = window_attention_mask_3d((4, 8, 8), (2, 4, 4), (1, 2, 2))
    assert mask.shape == (2 * 2 * 2, 32, 32)


# ----------------------------------------------------------------------------------------- inflation
@pytest.mark.parametrize("temporal", [
    {},  # tube 2x4x4 patches (kernel 2, stride 2), merging keeps time
    {"temporal_kernel": 3, "temporal_stride": 1, "merge_temporal_kernel": 3, "merge_temporal_stride": 1},
    {"temporal_kernel": 4, "temporal_stride": 2, "merge_temporal_kernel": 3, "merge_temporal_stride": 2},
])
@pytest.mark.parametrize("time_bias", [0.0, 4.0])  # a temporal-locality penalty keeps the identity
def test_still_clip_through_the_inflated_model_gives_the_2d_feature(temporal, time_bias):
    torch.manual_seed(0)
    image = create_image_encoder("coswin_tiny").eval()
    with torch.no_grad():
        for p in image.parameters():  # make the test sensitive to every tensor, biases and tables included
            p.add_(0.05 * torch.randn_like(p))
    video = inflate(image, COSWIN_TINY, time_bias, temporal_window=(2, 2, 4, 4), **temporal).eval()
    for frames, side in [(8, 48), (4, 64), (6, 40), (3, 56), (1, 48)]:
        frame = torch.randn(2, 3, side, side)
        with torch.no_grad():
            want = image(frame)
            got = video(frame[:, :, None].expand(-1, -1, frames, -1, -1))
        torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)


def test_inflation_resamples_the_table_for_another_window_and_copies_it_along_time():
    image = create_image_encoder("coswin_tiny")
    video = inflate(image, COSWIN_TINY, window_size=(6,), temporal_window=(3,))
    table = video.stages[0].blocks[0].attn.relative_position_bias_table
    assert table.shape == (5 * 11 * 11, 1)
    slices = table.view(5, 121, 1)
    assert torch.equal(slices[0], slices[4])
    kernel = video.stages[0].embed.proj.weight
    torch.testing.assert_close(kernel.sum(2), image.stages[0].embed.proj.weight)


def test_inflation_time_bias_penalises_each_frame_of_temporal_offset():
    image = create_image_encoder("coswin_tiny")
    plain = inflate(image, COSWIN_TINY, temporal_window=(3,))
    local = inflate(image, COSWIN_TINY, 1.5, temporal_window=(3,))
    for name in ("stages.0.blocks.0.attn.relative_position_bias_table",
                 "stages.3.blocks.0.attn.relative_position_bias_table"):
        have, want = local.get_parameter(name), plain.get_parameter(name)
        rows = want.shape[0] // 5  # offsets dt = -2..2, time slowest
        drop = (want - have).view(5, rows, -1)
        for i, dt in enumerate(range(-2, 3)):
            torch.testing.assert_close(drop[i], torch.full_like(drop[i], 1.5 * abs(dt)))
    with pytest.raises(ValueError, match="time_bias"):
        inflate(image, COSWIN_TINY, -1.0)


def test_partial_inflation_keeps_the_first_stages_and_leaves_the_rest_random():
    image = create_image_encoder("coswin_tiny")
    full = inflate(image, COSWIN_TINY, temporal_window=(2,)).state_dict()
    torch.manual_seed(3)
    partial = inflate(image, COSWIN_TINY, stages=2, temporal_window=(2,)).state_dict()
    torch.manual_seed(3)
    fresh = VideoCoSwin(VideoCoSwinConfig.from_image(COSWIN_TINY, temporal_window=(2,))).state_dict()
    for key, value in partial.items():
        if key.endswith("relative_position_index"):
            continue
        inflated = key.startswith(("stages.0.", "stages.1."))
        assert torch.equal(value, full[key] if inflated else fresh[key]), key
    assert not torch.equal(full["stages.3.blocks.0.attn.qkv.weight"], fresh["stages.3.blocks.0.attn.qkv.weight"])
    with pytest.raises(ValueError, match="stages"):
        inflate(image, COSWIN_TINY, stages=5)


def test_config_refuses_inconsistent_windows():
    with pytest.raises(ConfigError, match="window_size"):
        from_dict(VideoCoSwinConfig, {"window_size": [4, 4]})
    with pytest.raises(ConfigError, match="temporal_stride"):
        from_dict(VideoCoSwinConfig, {"temporal_kernel": 1, "temporal_stride": 2})
    assert set(VIDEO_ENCODERS.names()) >= {"video_coswin_tiny", "video_coswin_huge"}


def test_paper_preset_builds_on_meta():
    with torch.device("meta"):
        model = create_video_encoder("video_coswin_huge")
    params = sum(p.numel() for p in model.parameters())
    assert 600e6 < params < 720e6  # CoSwin-H's 633M plus the temporal kernels and 3D bias tables
    assert model.config.stage_window(2) == (16, 14, 14)
