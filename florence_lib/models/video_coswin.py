"""Video CoSwin: CoSwin inflated to 3D for video (paper §2.6, the Video Swin recipe on CoSwin's conv embeddings).

- The k7/s4 convolutional token embedding becomes a 3D *tube* embedding (temporal kernel/stride configurable,
  Video Swin's 2x4x4 patches by default) and each k3/s2 conv patch merging a 3D conv (temporal kernel 1 and
  stride 1 by default: time is not downsampled between stages, as in Video Swin). Temporal padding replicates the
  edge frames instead of adding zeros, so a still clip stays still at its ends (and inflation stays exact).
- Self-attention runs in 3D shifted windows with a relative position bias over (dt, dh, dw); inflation fills its
  table with the 2D table copied along time.
- Window sizes may differ per stage (the paper's "dynamic window size"): ``window_size`` and ``temporal_window``
  hold one entry per stage (or one for all).

Windows at small sizes: along a dimension no larger than the window, the window is *clipped* to the map and that
dimension is not shifted; the bias is indexed with the relative positions inside the clipped window. (Video Swin
and torchvision's swin3d clip the window too but slice the index of the full window, ``index[:N, :N]``, which
pairs the wrong table entries as soon as height or width is clipped.) Along a larger dimension that the window
does not divide, the map is padded and the padding masked out, as in the 2D CoSwin. Nothing depends on the
input size at construction; masks and bias indices are built and cached per map size on first use.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, calculate_drop_path_rates, trunc_normal_
from torch import nn
from torch.utils.checkpoint import checkpoint

from florence_lib.config import ConfigError, deep_merge, field, from_dict, to_dict
from florence_lib.models.coswin import MASKED, CoSwinConfig, interpolate_rel_pos_bias
from florence_lib.registry import Registry

Size3 = tuple[int, int, int]


@dataclasses.dataclass
class VideoCoSwinConfig:
    """Video CoSwin hyper-parameters: CoSwin's, plus time. Stage ``i`` has width ``embed_dim * 2**i``.

    Assumptions where the paper is silent: the tube embedding takes Video Swin's temporal patch of 2 frames
    (kernel 2, stride 2); patch merging keeps time (kernel 1, stride 1); windows are square in space.
    """

    embed_dim: int = field(96, min=1, help="width of stage 1")
    depths: tuple[int, ...] = field((2, 2, 6, 2), min=1, help="blocks per stage")
    num_heads: tuple[int, ...] = field((3, 6, 12, 24), min=1, help="attention heads per stage")
    window_size: tuple[int, ...] = field((7,), min=1, help="spatial window side per stage (one value: all)")
    temporal_window: tuple[int, ...] = field((8,), min=1, help="temporal window per stage (one value: all)")
    temporal_kernel: int = field(2, min=1, help="temporal kernel of the tube embedding")
    temporal_stride: int = field(2, min=1, help="temporal stride of the tube embedding")
    merge_temporal_kernel: int = field(1, min=1, help="temporal kernel of the 3D conv patch merging")
    merge_temporal_stride: int = field(1, min=1, help="temporal stride of the 3D conv patch merging")
    mlp_ratio: float = field(4.0, min=0.25)
    drop_path_rate: float = field(0.1, min=0.0, max=1.0, help="stochastic depth, rising linearly to this")
    in_chans: int = field(3, min=1)
    num_frames: int = field(8, min=1, help="frames of the clips it is meant for (the model takes any number)")

    def validate(self) -> None:
        n = len(self.depths)
        if len(self.num_heads) != n:
            raise ConfigError(f"num_heads: {self.num_heads} must have one entry per stage of depths {self.depths}")
        for name in ("window_size", "temporal_window"):
            if len(getattr(self, name)) not in (1, n):
                raise ConfigError(f"{name}: {getattr(self, name)} must have one entry or one per stage ({n})")
        if self.temporal_stride > self.temporal_kernel or self.merge_temporal_stride > self.merge_temporal_kernel:
            raise ConfigError("temporal_stride: a stride larger than its kernel would skip frames")

    def stage_window(self, stage: int) -> Size3:
        """(time, height, width) window of ``stage``."""
        spatial = self.window_size[stage if len(self.window_size) > 1 else 0]
        temporal = self.temporal_window[stage if len(self.temporal_window) > 1 else 0]
        return temporal, spatial, spatial

    @classmethod
    def from_image(cls, image: CoSwinConfig, **video: object) -> VideoCoSwinConfig:
        """The video config of a 2D CoSwin: its widths, depths and windows, with ``video`` keys on top."""
        base = {k: v for k, v in dataclasses.asdict(image).items() if k != "window_size"}
        return cls(**{**base, "window_size": (image.window_size,), **video})


VIDEO_ENCODERS: Registry[VideoCoSwinConfig] = Registry("video encoder")


def _preset(name: str, cfg: VideoCoSwinConfig) -> VideoCoSwinConfig:
    VIDEO_ENCODERS.register(name)(lambda **kw: from_dict(VideoCoSwinConfig, deep_merge(to_dict(cfg), kw)))
    return cfg


# coswin_tiny's widths and window; 8 frames at 48 px -> 4 x (12, 6, 3, 2)^2 token maps. The temporal window
# grows from 2 (with shifts) to the whole clip in the late stages: "dynamic window size".
VIDEO_COSWIN_TINY = _preset("video_coswin_tiny", VideoCoSwinConfig(
    embed_dim=32, depths=(1, 1, 2, 1), num_heads=(1, 2, 4, 8), window_size=(4,), temporal_window=(2, 2, 4, 4),
    drop_path_rate=0.1, num_frames=8,
))
# The paper's scale: CoSwin-H (see models/presets.py) on 32-frame clips at 224 px -> 16 x (56, 28, 14, 7)^2.
# Assumption for the dynamic windows: Video Swin's 8x7x7 in stages 1-2, then windows that cover the whole map
# (16 x 14 x 14 and 16 x 7 x 7): the late maps are small enough for global attention.
VIDEO_COSWIN_HUGE = _preset("video_coswin_huge", VideoCoSwinConfig(
    embed_dim=352, depths=(2, 2, 16, 2), num_heads=(11, 22, 44, 88), window_size=(7, 7, 14, 7),
    temporal_window=(8, 8, 16, 16), drop_path_rate=0.5, num_frames=32,
))


# ----------------------------------------------------------------------------------------------- windows
def window_layout(size: Size3, window: Size3, shifted: bool) -> tuple[Size3, Size3]:
    """(window, shift) used on a map of ``size``: clipped to the map where it is larger, and no shift along a
    dimension that fits in one window (there is nothing to connect across windows)."""
    clipped = tuple(min(w, s) for w, s in zip(window, size, strict=True))
    shift = tuple(w // 2 if shifted and s > w else 0 for w, s in zip(window, size, strict=True))
    return clipped, shift  # type: ignore[return-value]


def _bands(size: int, window: int, shift: int) -> list[slice]:
    """Swin's bands along one axis of a cyclically shifted map: tokens of different bands are not neighbours."""
    if shift == 0:
        return [slice(0, size)]
    return [slice(0, size - window), slice(size - window, size - shift), slice(size - shift, size)]


def partition(x: torch.Tensor, window: Size3) -> torch.Tensor:
    """[B, T, H, W, C] (each dimension a multiple of ``window``) -> [B, num_windows, window volume, C]."""
    b, t, h, w, c = x.shape
    wt, wh, ww = window
    x = x.view(b, t // wt, wt, h // wh, wh, w // ww, ww, c).permute(0, 1, 3, 5, 2, 4, 6, 7)
    return x.reshape(b, -1, wt * wh * ww, c)


def unpartition(windows: torch.Tensor, window: Size3, size: Size3) -> torch.Tensor:
    """Inverse of :func:`partition`."""
    b, c = windows.shape[0], windows.shape[-1]
    (t, h, w), (wt, wh, ww) = size, window
    x = windows.view(b, t // wt, h // wh, w // ww, wt, wh, ww, c).permute(0, 1, 4, 2, 5, 3, 6, 7)
    return x.reshape(b, t, h, w, c)


def window_attention_mask_3d(size: Size3, window: Size3, shift: Size3,
                             device: torch.device | None = None) -> torch.Tensor | None:
    """Additive mask ``[num_windows, N, N]`` for a map of ``size`` (window and shift as from
    :func:`window_layout`): no attention across bands of the shifted map, none to padding. None if not needed."""
    padded = tuple(-(-s // w) * w for s, w in zip(size, window, strict=True))
    if padded == tuple(size) and not any(shift):
        return None
    region = torch.zeros(1, *padded, 1, device=device)
    bands = [_bands(p, w, s) for p, w, s in zip(padded, window, shift, strict=True)]
    for i, ts in enumerate(bands[0]):
        for j, hs in enumerate(bands[1]):
            for k, ws in enumerate(bands[2]):
                region[:, ts, hs, ws] = (3 * i + j) * 3 + k
    valid = torch.zeros(1, *padded, 1, device=device)
    valid[:, : size[0], : size[1], : size[2]] = 1
    valid = torch.roll(valid, shifts=tuple(-s for s in shift), dims=(1, 2, 3))
    region = partition(region, window)[0, ..., 0]  # [nW, N]
    valid = partition(valid, window)[0, ..., 0].bool()
    blocked = (region[:, :, None] != region[:, None, :]) | ~valid[:, None, :]
    return torch.zeros(blocked.shape, device=device).masked_fill(blocked, MASKED)


def relative_position_index_3d(window: Size3, table_window: Size3) -> torch.Tensor:
    """``[N, N]`` row of the bias table for each token pair of a (clipped) ``window``, in the table of the full
    ``table_window``: indexed by the pair's true offset (dt, dh, dw), time slowest."""
    coords = torch.stack(torch.meshgrid(*(torch.arange(w) for w in window), indexing="ij")).flatten(1)
    rel = coords[:, :, None] - coords[:, None, :]
    rel += torch.tensor([w - 1 for w in table_window])[:, None, None]
    _, th, tw = (2 * w - 1 for w in table_window)
    return (rel[0] * th + rel[1]) * tw + rel[2]


# ----------------------------------------------------------------------------------------------- layers
class WindowAttention3D(nn.Module):
    """Multi-head self-attention inside 3D windows with a relative position bias (Video Swin's)."""

    def __init__(self, dim: int, num_heads: int, window: Size3) -> None:
        super().__init__()
        self.num_heads, self.window = num_heads, tuple(window)
        volume = (2 * window[0] - 1) * (2 * window[1] - 1) * (2 * window[2] - 1)
        self.relative_position_bias_table = nn.Parameter(torch.zeros(volume, num_heads))
        trunc_normal_(self.relative_position_bias_table, std=0.02)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self._index: dict[tuple, torch.Tensor] = {}  # (window, device) -> index; not state

    def position_bias(self, window: Size3) -> torch.Tensor:
        """``[heads, N, N]`` bias for a window of ``window`` (at most the full window)."""
        key = (tuple(window), self.relative_position_bias_table.device)
        if key not in self._index:
            self._index[key] = relative_position_index_3d(window, self.window).to(key[1])
        index = self._index[key]
        n = index.shape[0]
        return self.relative_position_bias_table[index.view(-1)].view(n, n, -1).permute(2, 0, 1)

    def forward(self, x: torch.Tensor, window: Size3, mask: torch.Tensor | None) -> torch.Tensor:
        """``x`` [B, num_windows, N, C]; ``mask`` [num_windows, N, N] (additive) or None."""
        b, nw, n, c = x.shape
        q, k, v = self.qkv(x).view(b, nw, n, 3, self.num_heads, c // self.num_heads).permute(3, 0, 1, 4, 2, 5)
        bias = self.position_bias(window).to(q.dtype)[None]  # [1, heads, N, N]
        if mask is not None:
            bias = bias + mask[:, None].to(q.dtype)  # [nW, heads, N, N]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # [B, nW, heads, N, hd]
        return self.proj(out.transpose(2, 3).reshape(b, nw, n, c))


class VideoCoSwinBlock(nn.Module):
    """A 3D Swin block: (shifted) window attention and an MLP, both pre-norm residual with stochastic depth."""

    def __init__(self, dim: int, num_heads: int, window: Size3, shifted: bool, mlp_ratio: float,
                 drop_path: float) -> None:
        super().__init__()
        self.window, self.shifted = tuple(window), shifted
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention3D(dim, num_heads, window)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def layout(self, size: Size3) -> tuple[Size3, Size3]:
        return window_layout(size, self.window, self.shifted)

    def _attention(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        size = tuple(x.shape[1:4])
        window, shift = self.layout(size)
        pads = [(-s) % w for s, w in zip(size, window, strict=True)]
        x = F.pad(x, (0, 0, 0, pads[2], 0, pads[1], 0, pads[0]))
        padded = tuple(x.shape[1:4])
        if any(shift):
            x = torch.roll(x, shifts=tuple(-s for s in shift), dims=(1, 2, 3))
        x = unpartition(self.attn(partition(x, window), window, mask), window, padded)
        if any(shift):
            x = torch.roll(x, shifts=shift, dims=(1, 2, 3))
        return x[:, : size[0], : size[1], : size[2]]

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.drop_path(self._attention(self.norm1(x), mask))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class TubeEmbed(nn.Module):
    """A 3D conv over [B, C, T, H, W], then LayerNorm over channels; returns [B, T, H, W, C].

    Spatial padding is zeros (as the 2D ConvEmbed); temporal padding replicates the edge frames, and the last
    frame is repeated as needed for the temporal stride to cover every frame (ceil mode: 5 frames at kernel 2,
    stride 2 give 3 steps; a single image is a one-step clip).
    """

    def __init__(self, in_chans: int, dim: int, kernel: Size3, stride: Size3, padding: Size3) -> None:
        super().__init__()
        self.temporal_padding, self.temporal_kernel, self.temporal_stride = padding[0], kernel[0], stride[0]
        self.proj = nn.Conv3d(in_chans, dim, kernel, stride, (0, padding[1], padding[2]))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p, k, s = self.temporal_padding, self.temporal_kernel, self.temporal_stride
        length = x.shape[2] + 2 * p
        extra = k - length if length < k else (-(length - k)) % s
        if p or extra:
            x = F.pad(x, (0, 0, 0, 0, p, p + extra), mode="replicate")
        return self.norm(self.proj(x).permute(0, 2, 3, 4, 1))


def _padding(kernel: int, stride: int) -> int:
    """CvT's padding rule (k7/s4 -> 2, k3/s2 -> 1), also used along time (k2/s2 -> 0, k3/s1 -> 1)."""
    return (kernel - stride + 1) // 2


class VideoCoSwinStage(nn.Module):
    """A tube embedding / 3D conv merging followed by alternating regular and shifted 3D window blocks."""

    def __init__(self, in_chans: int, dim: int, depth: int, num_heads: int, window: Size3, mlp_ratio: float,
                 drop_paths: list[float], temporal: tuple[int, int], first: bool) -> None:
        super().__init__()
        k, s = (7, 4) if first else (3, 2)
        kt, st = temporal
        self.embed = TubeEmbed(in_chans, dim, (kt, k, k), (st, s, s), (_padding(kt, st), _padding(k, s),
                                                                     _padding(k, s)))
        self.blocks = nn.ModuleList(
            VideoCoSwinBlock(dim, num_heads, window, i % 2 == 1, mlp_ratio, drop_paths[i]) for i in range(depth))
        self.grad_checkpointing = False
        self._masks: dict[tuple, torch.Tensor | None] = {}

    def mask(self, block: VideoCoSwinBlock, size: Size3, device: torch.device) -> torch.Tensor | None:
        window, shift = block.layout(size)
        key = (size, window, shift, device)
        if key not in self._masks:
            self._masks[key] = window_attention_mask_3d(size, window, shift, device)
        return self._masks[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, C, T, H, W] -> [B, T', H', W', C']."""
        x = self.embed(x)
        size = tuple(x.shape[1:4])
        for block in self.blocks:
            mask = self.mask(block, size, x.device)
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, mask, use_reentrant=False)
            else:
                x = block(x, mask)
        return x


class VideoCoSwin(nn.Module):
    """The Video CoSwin encoder: clips [B, C, T, H, W] -> pooled features [B, num_features]."""

    def __init__(self, cfg: VideoCoSwinConfig) -> None:
        super().__init__()
        cfg.validate()
        self.config = cfg
        n = len(cfg.depths)
        dims = [cfg.embed_dim * 2**i for i in range(n)]
        drop_paths = calculate_drop_path_rates(cfg.drop_path_rate, list(cfg.depths), stagewise=True)
        self.stages = nn.ModuleList(
            VideoCoSwinStage(
                cfg.in_chans if i == 0 else dims[i - 1], dims[i], cfg.depths[i], cfg.num_heads[i],
                cfg.stage_window(i), cfg.mlp_ratio, drop_paths[i],
                (cfg.temporal_kernel, cfg.temporal_stride) if i == 0
                else (cfg.merge_temporal_kernel, cfg.merge_temporal_stride), first=i == 0,
            )
            for i in range(n)
        )
        self.norm = nn.LayerNorm(dims[-1])
        self.feature_dims, self.num_features = dims, dims[-1]
        self.apply(_init_weights)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        for stage in self.stages:
            stage.grad_checkpointing = enable

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """``pooled`` [B, C]: final LayerNorm averaged over (T, H, W); ``features``: each stage's [B, C, T, H, W]."""
        if x.ndim != 5:
            raise ValueError(f"expected clips [B, C, T, H, W], got shape {tuple(x.shape)}")
        features = []
        for stage in self.stages:
            x = stage(x).permute(0, 4, 1, 2, 3)
            features.append(x)
        pooled = self.norm(x.permute(0, 2, 3, 4, 1)).mean((1, 2, 3))
        return {"pooled": pooled, "features": features}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)["pooled"]

    def no_weight_decay(self) -> set[str]:
        return {n for n, p in self.named_parameters() if p.ndim <= 1 or n.endswith("relative_position_bias_table")}


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def create_video_encoder(name: str, **overrides: object) -> VideoCoSwin:
    """A Video CoSwin preset (``video_coswin_tiny``, ``video_coswin_huge``) with config ``overrides``."""
    return VideoCoSwin(VIDEO_ENCODERS.create(name, **overrides))


# ----------------------------------------------------------------------------------------------- inflation
def inflate_state_dict(image_state: Mapping[str, torch.Tensor], video: VideoCoSwin, time_bias: float = 0.0
                       ) -> dict[str, torch.Tensor]:
    """The 2D CoSwin weights ``image_state`` inflated for ``video`` (which gives the target shapes).

    Conv kernels are repeated along time and divided by the temporal kernel size (a still clip then gives the
    2D responses); relative-position tables are resampled to the video's spatial window if it differs (bicubic)
    and copied along time; everything else is inherited as is. Keys must match one to one.

    ``time_bias`` (>= 0) is subtracted from the copied table once per frame of temporal offset, so attention starts
    local in time. A still clip still gives the 2D responses at any value: its keys repeat along time and the
    bias and window masks factor into time x space, so the softmax weights of one spatial offset sum to the same
    total. With 0 (Video Swin) a token of a strong checkpoint's deep stages attends about evenly over the frames
    of its window (whose content barely differs), averaging away the change over time the head reads.
    """
    if time_bias < 0:
        raise ValueError(f"inflation: time_bias {time_bias} must be >= 0 (a penalty on temporal offsets)")
    target = video.state_dict()
    missing = sorted(set(target) - set(image_state))
    unexpected = sorted(k for k in set(image_state) - set(target) if not k.endswith("relative_position_index"))
    if missing or unexpected:
        raise KeyError(f"inflation: video keys without 2D weights {missing[:5]}, 2D keys without a video "
                       f"parameter {unexpected[:5]}")
    out: dict[str, torch.Tensor] = {}
    for key, want in target.items():
        have = image_state[key]
        if key.endswith("embed.proj.weight") and have.ndim == 4:
            kt = want.shape[2]
            out[key] = have[:, :, None].repeat(1, 1, kt, 1, 1) / kt
        elif key.endswith("relative_position_bias_table"):
            wt, wh, _ = _table_window(key, video)
            table = interpolate_rel_pos_bias({key: have}, wh)[key]
            offsets = (torch.arange(2 * wt - 1) - (wt - 1)).abs().to(table.dtype)
            penalty = (time_bias * offsets).repeat_interleave(table.shape[0])[:, None]
            out[key] = table.repeat(2 * wt - 1, 1) - penalty  # time is the slowest index of the 3D table
        else:
            out[key] = have
        if out[key].shape != want.shape:
            raise ValueError(f"inflation: {key}: 2D {tuple(have.shape)} does not inflate to {tuple(want.shape)}")
    return out


def _table_window(key: str, video: VideoCoSwin) -> Size3:
    return video.get_submodule(key.rsplit(".", 1)[0]).window


def inflate(image_encoder: nn.Module, image_config: CoSwinConfig, time_bias: float = 0.0,
            stages: int | None = None, **video: object) -> VideoCoSwin:
    """A Video CoSwin with ``image_encoder``'s (a 2D CoSwin) architecture and inflated weights; ``video``:
    config keys of :class:`VideoCoSwinConfig` (temporal kernel, windows, frames...); ``time_bias``: see
    :func:`inflate_state_dict`. ``stages``: inflate only the first that many stages (embedding or merging and
    blocks); the later stages and the final norm keep their random init (null: inflate everything)."""
    model = VideoCoSwin(VideoCoSwinConfig.from_image(image_config, **video))
    state = inflate_state_dict(image_encoder.state_dict(), model, time_bias)
    if stages is not None:
        if not 0 <= stages <= len(model.stages):
            raise ValueError(f"inflation: stages {stages} must be in 0..{len(model.stages)}")
        kept = tuple(f"stages.{i}." for i in range(stages))
        fresh = model.state_dict()
        state = {k: (v if k.startswith(kept) or stages == len(model.stages) else fresh[k]) for k, v in state.items()}
    model.load_state_dict(state)
    return model


__all__ = [
    "VIDEO_ENCODERS",
    "VideoCoSwin",
    "VideoCoSwinConfig",
    "WindowAttention3D",
    "create_video_encoder",
    "inflate",
    "inflate_state_dict",
    "relative_position_index_3d",
    "window_attention_mask_3d",
    "window_layout",
]
