"""CoSwin: the Florence image encoder (paper §2.2).

A Swin Transformer (window self-attention with relative position bias, shifted windows, stochastic depth) whose
patch embedding and patch merging are replaced by CvT's overlapping convolutional embeddings: a k7/s4/p2 conv
before stage 1 and a k3/s2/p1 conv before each later stage, each followed by LayerNorm. Global average pooling
gives the image feature.

Nothing depends on the input size at construction: each stage pads its map to a multiple of the window, masks
the padding out of the attention and builds (and caches, per map size) the shifted-window masks on first use.
A map no larger than the window is not shifted, as in Swin; with the padding masked out, it behaves like Swin's
window shrunk to the map, and it is computed that way (no padding at all).

Speed (issue 17; numbers in benchmarks/RESULTS.md). A block lays its map out in windows with one gather of
precomputed indices (pad + roll + partition in one copy) and back with one more; ``qkv`` and ``proj`` run on the
map's real tokens only, so padding costs attention, not matmuls (unicl_small at 64 px: 182.5 -> 105.9 GFLOP per
training step); the relative position bias and the window mask form one additive mask broadcast over the batch.
On a CPU in training, attention is a plain matmul + softmax (no CPU kernel returns the bias' gradient; SDPA would
fall back to the same math plus an -inf check); elsewhere ``F.scaled_dot_product_attention``. The tower's forward +
backward against the previous code, same process: 1.11x (coswin_tiny) and 2.38x (coswin_small) at 64 px. Then
(issue 17): the gather writes q, k, v straight in the (image, head, window) batch order the matmuls read, and the
scatter reads the output where it lies (one copy each way instead of two), and on a CPU the k3 embeddings onto
maps of <= 16 positions run as unfold + matmul (oneDNN's backward is ~4x slower there); results/coswin_ab.md.
Numerics are pinned by tests/test_coswin_numerics.py (a seeded tower's output and gradients, saved before).
State-dict keys are timm's and unchanged, so every existing checkpoint loads as it is.

Compared with timm's Swin of the same widths, depths, heads and window (issue 10): the same init (Linear weights
trunc-normal 0.02 and zero biases, LayerNorm ones/zeros, bias tables trunc-normal 0.02; the convolutions keep
PyTorch's default init, each followed by a LayerNorm that fixes its output scale), the same final LayerNorm and
average pooling. The differences are the design's: overlapping convolutional embeddings (a k3 conv between stages
costs 9C x 2C per output token where Swin's patch merging costs 4C x 2C), and padding masked out of attention
(timm lets zero padding be attended). Supervised on the world (benchmarks/bench_learnability.py, towers stepped in
lockstep on the same batches, 48 px, lr 1e-3, the issue's recipe of 1,000 steps): on today's world, whose labelled
subject is always drawn large (7 px radius at 48 px), CoSwin reaches top-1 0.81 / 0.99 / 1.00 at steps 250 / 500 /
1,000 and timm's Swin 0.90 / 1.00 / 1.00 (results/learnability.md), at 1.09x Swin's time per step. The issue's
CoSwin 0.30 vs Swin 0.54 came from the earlier world, where half the subjects were small (4 px radius): there
CoSwin reached 0.50 at 1,000 steps and Swin trained unstably (0.11); shape, not the tower, was the hard part, and
no init or masking defect was found.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from timm.layers import DropPath, Mlp, calculate_drop_path_rates, trunc_normal_
from timm.models.swin_transformer import WindowAttention, window_partition
from torch import nn
from torch.utils.checkpoint import checkpoint

from florence_lib.config import ConfigError, field

MASKED = -100.0
"""Additive attention mask value (Swin's). Finite on purpose: a padded query whose whole shifted-window region
is padding would otherwise softmax over nothing but -inf and turn the (discarded) output and its gradient NaN."""


@dataclasses.dataclass
class CoSwinConfig:
    """CoSwin hyper-parameters; stage ``i`` has width ``embed_dim * 2**i``."""

    embed_dim: int = field(96, min=1, help="width of stage 1")
    depths: tuple[int, ...] = field((2, 2, 6, 2), min=1, help="blocks per stage")
    num_heads: tuple[int, ...] = field((3, 6, 12, 24), min=1, help="attention heads per stage")
    window_size: int = field(7, min=1, help="side of the square attention window, in tokens")
    mlp_ratio: float = field(4.0, min=0.25)
    drop_path_rate: float = field(0.1, min=0.0, max=1.0, help="stochastic depth, rising linearly to this")
    in_chans: int = field(3, min=1)

    def validate(self) -> None:
        if len(self.depths) != len(self.num_heads):
            raise ConfigError(f"num_heads: {self.num_heads} must have one entry per stage of depths {self.depths}")


SMALL_MAP = 16
"""Output maps of at most this many positions are convolved as unfold + matmul on a CPU (see ConvEmbed)."""


class ConvEmbed(nn.Module):
    """CvT's overlapping convolutional token embedding: a strided conv, then LayerNorm over channels.

    Takes NCHW, returns NHWC (the layout the transformer blocks work in).
    """

    def __init__(self, in_chans: int, dim: int, kernel_size: int, stride: int, padding: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size, stride, padding)
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, height, width = x.shape
        (k, _), (s, _), (p, _) = self.proj.kernel_size, self.proj.stride, self.proj.padding
        out_h, out_w = (height + 2 * p - k) // s + 1, (width + 2 * p - k) // s + 1
        if x.device.type == "cpu" and out_h * out_w <= SMALL_MAP:
            # The same convolution as unfold + one matmul: oneDNN's backward is slow on tiny maps (measured on
            # CoSwin-S at 64 px: 4x4 -> 2x2 with 384 -> 768 channels, 348 ms vs 81 ms forward + backward).
            cols = F.unfold(x, k, padding=p, stride=s).transpose(1, 2)  # [B, L, C k k], the weight's order
            out = F.linear(cols, self.proj.weight.flatten(1), self.proj.bias).view(b, out_h, out_w, -1)
        else:
            # channels-last in, channels-last out: the permute to NHWC is then free. Later stages' inputs are
            # NHWC maps viewed as NCHW, already channels-last; only the image is copied (3 channels).
            out = self.proj(x.contiguous(memory_format=torch.channels_last)).permute(0, 2, 3, 1)
        return self.norm(out)


def _region_slices(size: int, window: int, shift: int) -> list[slice]:
    """Swin's three bands per axis of a cyclically shifted map: tokens from different bands are not neighbours."""
    if shift == 0:
        return [slice(0, size)]
    return [slice(0, size - window), slice(size - window, size - shift), slice(size - shift, size)]


def window_attention_mask(
    height: int, width: int, window: int, shift: tuple[int, int], device: torch.device | None = None
) -> torch.Tensor | None:
    """The additive mask ``[num_windows, window**2, window**2]`` for a ``height x width`` map.

    A query may not attend to a key from another band of the shifted map (Swin's SW-MSA mask) nor to a key that
    is padding. Windows are laid out as after padding to window multiples and rolling by ``-shift``.
    None when nothing needs masking (no shift, no padding).
    """
    hp, wp = -(-height // window) * window, -(-width // window) * window
    if (hp, wp) == (height, width) and not any(shift):
        return None
    region = torch.zeros(1, hp, wp, 1, device=device)
    for i, rows in enumerate(_region_slices(hp, window, shift[0])):
        for j, cols in enumerate(_region_slices(wp, window, shift[1])):
            region[:, rows, cols] = 3 * i + j
    valid = torch.zeros(1, hp, wp, 1, device=device)
    valid[:, :height, :width] = 1
    valid = torch.roll(valid, shifts=(-shift[0], -shift[1]), dims=(1, 2))
    region = window_partition(region, (window, window)).flatten(1)  # [nW, N]
    valid = window_partition(valid, (window, window)).flatten(1).bool()
    blocked = (region[:, :, None] != region[:, None, :]) | ~valid[:, None, :]
    return torch.zeros(blocked.shape, device=device).masked_fill(blocked, MASKED)


@functools.lru_cache(maxsize=256)
def window_order(
    height: int, width: int, window: int, shift: tuple[int, int], device: torch.device | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Token indices that lay a ``height x width`` map out in (shifted) windows, and back, in one gather each.

    ``gather[j]`` is the map position (row-major) of window-order token ``j``, for the map padded to window
    multiples, rolled by ``-shift`` and partitioned as :func:`window_attention_mask` assumes; padding points at
    token 0 (any real token would do: the mask hides padding keys and padded queries are dropped). ``scatter[i]``
    is where map token ``i`` sits in window order. One gather replaces Swin's pad + roll + partition copies and
    one more its reverse + roll + crop copies.
    """
    hp, wp = -(-height // window) * window, -(-width // window) * window
    grid = F.pad(torch.arange(height * width).view(1, height, width), (0, wp - width, 0, hp - height), value=-1)[0]
    grid = torch.roll(grid, shifts=(-shift[0], -shift[1]), dims=(0, 1))
    order = grid.view(hp // window, window, wp // window, window).transpose(1, 2).reshape(-1)
    real = order >= 0
    scatter = torch.empty(height * width, dtype=torch.long)
    scatter[order[real]] = torch.nonzero(real).squeeze(1)
    return order.clamp(min=0).to(device), scatter.to(device)


@functools.lru_cache(maxsize=64)
def relative_position_index(height: int, width: int, window: int, device: torch.device | None = None) -> torch.Tensor:
    """Flat ``[height * width * height * width]`` rows of a ``(2 window - 1)^2`` bias table for a ``height x
    width`` grid of tokens (timm's ``relative_position_index`` when the grid is the whole window)."""
    coords = torch.stack(torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")).flatten(1)
    rel = coords[:, :, None] - coords[:, None, :] + window - 1
    return (rel[0] * (2 * window - 1) + rel[1]).flatten().to(device)


class WindowSelfAttention(WindowAttention):
    """timm's window attention (same parameters, same state-dict keys) over a whole ``[B, L, C]`` token map at once.

    The projections run on the map's real tokens only: ``qkv`` before the tokens are gathered into (padded,
    shifted) windows, ``proj`` after they are scattered back, so padding costs attention, not matmuls. One call
    of ``F.scaled_dot_product_attention`` covers all windows, with the relative position bias and the window mask
    summed into one additive mask ``[num_windows * heads, N, N]`` broadcast over the batch (timm's fused path
    expands it to the batch: ``B`` times the memory and additions).
    """

    def rel_pos_bias(self, height: int, width: int) -> torch.Tensor:
        """``[1, heads, N, N]`` bias among the tokens of a ``height x width`` grid no larger than the window."""
        if (height, width) == tuple(self.window_size):
            return self._get_rel_pos_bias()
        table = self.relative_position_bias_table
        index = relative_position_index(height, width, self.window_size[0], table.device)
        n = height * width
        return table[index].view(n, n, -1).permute(2, 0, 1).unsqueeze(0)

    def forward_map(self, x: torch.Tensor, grid: tuple[int, int], order: tuple[torch.Tensor, torch.Tensor] | None,
                    mask: torch.Tensor | None) -> torch.Tensor:
        """``x`` [B, L, C]; ``order``: :func:`window_order`'s (gather, scatter), None when the map is one window
        of shape ``grid`` (else ``grid`` is the window).

        Attention runs over a batch of (image, head, window) in that order, so that the gather into windows writes
        q, k and v straight into the layout the matmuls read (one copy, where gathering tokens and then permuting
        heads forward took two), and the scatter back reads the output where it lies; the bias is laid out to match.
        """
        b, length, c = x.shape
        heads, n = self.num_heads, grid[0] * grid[1]
        qkv = self.qkv(x).view(b, length, 3, heads, c // heads).permute(2, 0, 3, 1, 4)  # [3, B, heads, L, d], a view
        qkv = qkv.contiguous() if order is None else qkv.index_select(3, order[0])
        nw = qkv.shape[3] // n
        q, k, v = qkv.view(3, b, heads * nw, n, c // heads).unbind(0)
        bias = self.rel_pos_bias(*grid).transpose(0, 1)  # [heads, 1, N, N]
        bias = bias if mask is None else bias + mask.unsqueeze(0).to(bias.dtype)  # [heads, nW, N, N]
        bias = bias.expand(heads, nw, n, n).reshape(1, heads * nw, n, n).to(q.dtype)
        if q.is_cuda or not bias.requires_grad:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        else:  # CPU kernels cannot return the bias' gradient: SDPA would fall back to this, plus an -inf check
            out = ((q * self.scale) @ k.transpose(-2, -1) + bias).softmax(-1) @ v
        out = out.view(b, heads, nw * n, c // heads).transpose(1, 2)  # [B, nW * N, heads, d], a view
        out = out.reshape(b, length, c) if order is None else out.index_select(1, order[1]).view(b, length, c)
        return self.proj(out)


class CoSwinBlock(nn.Module):
    """A Swin block: (shifted) window attention and an MLP, both pre-norm residual with stochastic depth."""

    def __init__(
        self, dim: int, num_heads: int, window_size: int, shifted: bool, mlp_ratio: float, drop_path: float
    ) -> None:
        super().__init__()
        self.window_size = window_size
        self.shift = window_size // 2 if shifted else 0
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowSelfAttention(dim, num_heads=num_heads, window_size=window_size)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def shift_for(self, height: int, width: int) -> tuple[int, int]:
        """No shift along an axis that fits in one window (there is nothing to connect across windows)."""
        return (self.shift if height > self.window_size else 0, self.shift if width > self.window_size else 0)

    def _attention(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        b, h, w, c = x.shape
        win = self.window_size
        if h <= win and w <= win:
            # One window holds the whole map: attend over the map as it is. The same as padding it to the window
            # and masking the padding (up to exp(MASKED)), without computing the padding.
            return self.attn.forward_map(x.reshape(b, h * w, c), (h, w), None, None).view(b, h, w, c)
        order = window_order(h, w, win, self.shift_for(h, w), x.device)
        return self.attn.forward_map(x.reshape(b, h * w, c), (win, win), order, mask).view(b, h, w, c)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        x = x + self.drop_path(self._attention(self.norm1(x), mask))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class CoSwinStage(nn.Module):
    """A convolutional embedding followed by alternating regular and shifted window blocks (NCHW -> NHWC)."""

    def __init__(
        self,
        in_chans: int,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        drop_paths: list[float],
        first: bool,
    ) -> None:
        super().__init__()
        kernel, stride, padding = (7, 4, 2) if first else (3, 2, 1)
        self.embed = ConvEmbed(in_chans, dim, kernel, stride, padding)
        self.blocks = nn.ModuleList(
            CoSwinBlock(dim, num_heads, window_size, i % 2 == 1, mlp_ratio, drop_paths[i]) for i in range(depth)
        )
        self.grad_checkpointing = False
        self._masks: dict[tuple, torch.Tensor | None] = {}  # (h, w, shift, device) -> mask; not state

    def mask(self, block: CoSwinBlock, height: int, width: int, device: torch.device) -> torch.Tensor | None:
        shift = block.shift_for(height, width)
        key = (height, width, shift, device)
        if key not in self._masks:
            self._masks[key] = window_attention_mask(height, width, block.window_size, shift, device)
        return self._masks[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.embed(x)
        height, width = x.shape[1:3]
        for block in self.blocks:
            mask = self.mask(block, height, width, x.device)
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, mask, use_reentrant=False)
            else:
                x = block(x, mask)
        return x


class CoSwin(nn.Module):
    """The CoSwin image encoder. ``forward`` returns pooled features ``[B, num_features]``."""

    def __init__(
        self,
        embed_dim: int = 96,
        depths: tuple[int, ...] = (2, 2, 6, 2),
        num_heads: tuple[int, ...] = (3, 6, 12, 24),
        window_size: int = 7,
        mlp_ratio: float = 4.0,
        drop_path_rate: float = 0.1,
        in_chans: int = 3,
    ) -> None:
        super().__init__()
        dims = [embed_dim * 2**i for i in range(len(depths))]
        drop_paths = calculate_drop_path_rates(drop_path_rate, list(depths), stagewise=True)
        self.stages = nn.ModuleList(
            CoSwinStage(
                in_chans if i == 0 else dims[i - 1], dims[i], depths[i], num_heads[i], window_size, mlp_ratio,
                drop_paths[i], first=i == 0,
            )
            for i in range(len(depths))
        )
        self.norm = nn.LayerNorm(dims[-1])
        self.feature_dims = dims
        self.num_features = dims[-1]
        self.apply(_init_weights)

    @classmethod
    def from_config(cls, cfg: CoSwinConfig) -> CoSwin:
        return cls(**dataclasses.asdict(cfg))

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block's activations in the backward pass instead of storing them."""
        for stage in self.stages:
            stage.grad_checkpointing = enable

    def forward_features(self, x: torch.Tensor) -> dict[str, torch.Tensor | list[torch.Tensor]]:
        """``pooled`` [B, C]: the final LayerNorm, averaged over positions. ``features``: each stage's output as
        an NCHW map (widths ``feature_dims``, strides 4, 8, 16, 32), un-normalised: a detection neck adds its own."""
        features = self.stage_maps(x)
        pooled = self.norm(features[-1].permute(0, 2, 3, 1)).mean((1, 2))
        return {"pooled": pooled, "features": features}

    def stage_maps(self, x: torch.Tensor, last: int = -1) -> list[torch.Tensor]:
        """Each stage's output up to stage ``last`` (later stages are not run), as NCHW maps."""
        features = []
        for stage in self.stages[:last % len(self.stages) + 1]:
            x = stage(x).permute(0, 3, 1, 2)
            features.append(x)
        return features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_features(x)["pooled"]


def _init_weights(module: nn.Module) -> None:
    if isinstance(module, nn.Linear):
        trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)


def interpolate_rel_pos_bias(
    state_dict: Mapping[str, torch.Tensor], new_window_size: int
) -> dict[str, torch.Tensor]:
    """Resample every relative-position-bias table in ``state_dict`` for a ``new_window_size`` window (bicubic).

    For the high-resolution phase (224 -> 384 px in the paper), where the window grows with the image, as in
    Swin's fine-tuning at 384. Other entries pass through unchanged.
    """
    side = 2 * new_window_size - 1
    out = dict(state_dict)
    for key, table in state_dict.items():
        if not key.endswith("relative_position_bias_table"):
            continue
        old_side = int(round(table.shape[0] ** 0.5))
        if old_side * old_side != table.shape[0]:
            raise ValueError(f"{key}: {table.shape[0]} positions is not a square (2w-1)^2 table")
        if old_side == side:
            continue
        grid = table.T.reshape(1, -1, old_side, old_side).float()
        grid = F.interpolate(grid, size=(side, side), mode="bicubic", align_corners=False)
        out[key] = grid.reshape(-1, side * side).T.contiguous().to(table.dtype)
    return out
