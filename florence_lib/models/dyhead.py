"""Dynamic Head (Dai et al. 2021) on CoSwin: the Florence object-level adapter (paper §2.4).

CoSwin's stage outputs at strides 8, 16 and 32 (each LayerNorm-ed: CoSwin leaves its maps un-normalised) go
through torchvision's ``FeaturePyramidNetwork`` with ``LastLevelP6P7`` (strides 64 and 128), then through
``num_blocks`` Dynamic Head blocks that attend over the three axes of the feature pyramid in turn:

- **spatial-aware**: a modulated deformable 3x3 conv (offsets and masks from a zero-initialised 3x3 conv) applied
  to the level itself, to its finer neighbour (stride 2) and to its coarser neighbour (then upsampled);
- **scale-aware**: each of those (up to) three maps is weighted by ``hard_sigmoid(relu(conv1x1(avgpool(x))))``
  and the weighted maps are averaged;
- **task-aware**: DyReLU, the max of two per-channel lines whose slopes and intercepts come from pooled context.

Offsets are computed at the size of the map they deform *into*: the stride-2 conv over the finer neighbour
produces a map of this level's size and uses this level's offsets, and the conv over the coarser neighbour
produces a map of that level's size and uses that level's offsets. (The reference applies this level's offsets
to the coarser map, a size mismatch its CUDA op does not check: microsoft/DynamicHead issue #25.) Every map
size follows from the input (level ``l`` has side ``ceil(side_{l-1} / 2)``), so any input size works,
including sides not divisible by 32.

On top sits the one-stage ATSS head (classification, box deltas against one square anchor per position and
level, centerness), whose targets and losses live in :mod:`florence_lib.losses.detection`.
"""

from __future__ import annotations

import dataclasses
import math
from collections import OrderedDict

import torch
import torch.nn.functional as F
from timm.layers import LayerNorm2d
from torch import nn
from torchvision.ops import FeaturePyramidNetwork
from torchvision.ops.feature_pyramid_network import LastLevelP6P7

from florence_lib.config import field
from florence_lib.models.coswin import CoSwin
from florence_lib.models.deform_conv import Impl, deform_conv2d

BOX_WEIGHTS = (10.0, 10.0, 5.0, 5.0)
"""Box-delta scaling of (dx, dy, dw, dh), as in Faster R-CNN and ATSS."""
_MAX_LOG_SCALE = math.log(1000.0 / 16)


@dataclasses.dataclass
class DyHeadConfig:
    """The detector: an image-encoder preset, the pyramid, the Dynamic Head blocks and the ATSS head."""

    backbone: str = field("coswin_tiny", help="image encoder preset (florence_lib.models.IMAGE_ENCODERS)")
    channels: int = field(64, min=8, help="width of the pyramid and of every Dynamic Head block")
    num_blocks: int = field(2, min=0, help="Dynamic Head blocks in sequence (the reference: 6)")
    num_classes: int = field(8, min=1, help="detection classes (1 for class-agnostic proposals)")
    group_norm_groups: int = field(16, min=1, help="GroupNorm groups after each deformable conv")
    anchor_scale: float = field(8.0, min=0.5, help="anchor side in strides (ATSS: 8)")
    prior_prob: float = field(0.01, min=1e-4, max=0.5, help="initial foreground probability of the classifier")
    deform_impl: Impl = "auto"


def hard_sigmoid(x: torch.Tensor) -> torch.Tensor:
    """relu6(x + 3) / 6, the reference's h_sigmoid."""
    return F.relu6(x + 3.0) / 6.0


class ModulatedDeformConv3x3(nn.Module):
    """A 3x3 modulated deformable conv (offsets and masks given by the caller) followed by GroupNorm."""

    def __init__(self, channels: int, stride: int, groups: int, impl: Impl) -> None:
        super().__init__()
        self.stride, self.impl = stride, impl
        self.weight = nn.Parameter(torch.empty(channels, channels, 3, 3))
        nn.init.normal_(self.weight, std=0.01)
        self.norm = nn.GroupNorm(math.gcd(groups, channels), channels)

    def forward(self, x: torch.Tensor, offset: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out = deform_conv2d(x, offset, self.weight, None, stride=self.stride, padding=1, mask=mask, impl=self.impl)
        return self.norm(out)


class ScaleAttention(nn.Module):
    """One weight per map from its global average: avg pool -> 1x1 conv -> ReLU -> hard sigmoid."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.fc = nn.Conv2d(channels, 1, 1)
        nn.init.normal_(self.fc.weight, std=0.01)
        nn.init.zeros_(self.fc.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return hard_sigmoid(F.relu(self.fc(F.adaptive_avg_pool2d(x, 1))))


class DyReLU(nn.Module):
    """Task-aware attention: ``max(a1 x + b1, a2 x + b2)`` per channel, the a's and b's from pooled context.

    Initialised at ``a = (1, 0), b = (0, 0)``, i.e. ReLU, with slopes ranging over +-1 around it (the reference's
    ``lambda_a = 1`` and ``init_a = (1, 0)``).
    """

    def __init__(self, channels: int, reduction: int = 4) -> None:
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(channels, max(1, channels // reduction)), nn.ReLU(),
                                nn.Linear(max(1, channels // reduction), 4 * channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c = x.shape[:2]
        coeffs = hard_sigmoid(self.fc(x.mean((2, 3)))).view(b, 4, c, 1, 1) - 0.5
        a1, b1, a2, b2 = coeffs.unbind(1)
        return torch.maximum(x * (2 * a1 + 1.0) + b1, x * (2 * a2) + b2)


class DyHeadBlock(nn.Module):
    """Scale-, spatial- and task-aware attention over a list of pyramid levels (finest first)."""

    def __init__(self, channels: int, groups: int, impl: Impl) -> None:
        super().__init__()
        self.offset = nn.Conv2d(channels, 27, 3, padding=1)  # 18 offsets (dy, dx per tap) + 9 masks
        nn.init.zeros_(self.offset.weight)
        nn.init.zeros_(self.offset.bias)
        self.conv_same = ModulatedDeformConv3x3(channels, 1, groups, impl)
        self.conv_finer = ModulatedDeformConv3x3(channels, 2, groups, impl)
        self.conv_coarser = ModulatedDeformConv3x3(channels, 1, groups, impl)
        self.scale_attention = ScaleAttention(channels)
        self.task_attention = DyReLU(channels)

    def forward(self, levels: list[torch.Tensor]) -> list[torch.Tensor]:
        offsets = []
        for x in levels:  # at each level's own size: the size of every conv output that uses them
            om = self.offset(x)
            offsets.append((om[:, :18], om[:, 18:].sigmoid()))
        out = []
        for i, x in enumerate(levels):
            maps = [self.conv_same(x, *offsets[i])]
            if i > 0:  # finer neighbour, stride 2 -> this level's size, this level's offsets
                maps.append(self.conv_finer(levels[i - 1], *offsets[i]))
            if i + 1 < len(levels):  # coarser neighbour at its own size with its own offsets, then upsampled
                coarse = self.conv_coarser(levels[i + 1], *offsets[i + 1])
                maps.append(F.interpolate(coarse, size=x.shape[-2:], mode="bilinear", align_corners=False))
            fused = torch.stack([m * self.scale_attention(m) for m in maps]).mean(0)
            out.append(self.task_attention(fused))
        return out


class Scale(nn.Module):
    """A learnable scalar per level on the box deltas (FCOS/ATSS)."""

    def __init__(self) -> None:
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale


def level_anchors(sizes: list[tuple[int, int]], strides: list[int], anchor_scale: float,
                  device: torch.device | None = None) -> torch.Tensor:
    """One square anchor of side ``anchor_scale * stride`` per position and level, xyxy pixels, finest first;
    position ``(i, j)`` of a level is centred on ``((j + 0.5) * stride, (i + 0.5) * stride)``."""
    out = []
    for (h, w), s in zip(sizes, strides, strict=True):
        ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) * s
        xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) * s
        cy, cx = torch.meshgrid(ys, xs, indexing="ij")
        half = anchor_scale * s / 2
        out.append(torch.stack([cx - half, cy - half, cx + half, cy + half], -1).reshape(-1, 4))
    return torch.cat(out)


def encode_boxes(boxes: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """xyxy boxes -> deltas (dx, dy, dw, dh) against anchors, scaled by :data:`BOX_WEIGHTS`."""
    wa, ha = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    xa, ya = anchors[:, 0] + wa / 2, anchors[:, 1] + ha / 2
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    x, y = boxes[:, 0] + w / 2, boxes[:, 1] + h / 2
    wx, wy, ww, wh = BOX_WEIGHTS
    return torch.stack([wx * (x - xa) / wa, wy * (y - ya) / ha, ww * torch.log(w / wa), wh * torch.log(h / ha)], -1)


def decode_boxes(deltas: torch.Tensor, anchors: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`encode_boxes` (``deltas [..., A, 4]``, ``anchors [A, 4]``), log-sizes clamped."""
    wa, ha = anchors[:, 2] - anchors[:, 0], anchors[:, 3] - anchors[:, 1]
    xa, ya = anchors[:, 0] + wa / 2, anchors[:, 1] + ha / 2
    wx, wy, ww, wh = BOX_WEIGHTS
    dx, dy = deltas[..., 0] / wx, deltas[..., 1] / wy
    dw = (deltas[..., 2] / ww).clamp(max=_MAX_LOG_SCALE)
    dh = (deltas[..., 3] / wh).clamp(max=_MAX_LOG_SCALE)
    x, y = xa + dx * wa, ya + dy * ha
    w, h = wa * torch.exp(dw), ha * torch.exp(dh)
    return torch.stack([x - w / 2, y - h / 2, x + w / 2, y + h / 2], -1)


class DyHeadDetector(nn.Module):
    """CoSwin -> FPN (P3-P7) -> Dynamic Head blocks -> ATSS head.

    ``forward(images [B, 3, H, W])`` returns ``cls_logits [B, A, K]``, ``box_deltas [B, A, 4]``,
    ``centerness [B, A]`` (logits), ``anchors [A, 4]`` and ``num_anchors`` per level (finest first), where ``A``
    counts every position of every level; ``features`` holds the Dynamic Head's output maps.
    """

    strides = (8, 16, 32, 64, 128)

    def __init__(self, cfg: DyHeadConfig, backbone: CoSwin) -> None:
        super().__init__()
        self.config = cfg
        self.backbone = backbone
        dims = backbone.feature_dims[1:4]
        if len(dims) != 3:
            raise ValueError(f"backbone: needs 4 stages (strides 4-32), has {len(backbone.feature_dims)}")
        c = cfg.channels
        self.stage_norms = nn.ModuleList(LayerNorm2d(d) for d in dims)
        self.fpn = FeaturePyramidNetwork(list(dims), c, extra_blocks=LastLevelP6P7(c, c))
        self.blocks = nn.ModuleList(DyHeadBlock(c, cfg.group_norm_groups, cfg.deform_impl)
                                    for _ in range(cfg.num_blocks))
        self.cls_logits = nn.Conv2d(c, cfg.num_classes, 3, padding=1)
        self.box_deltas = nn.Conv2d(c, 4, 3, padding=1)
        self.centerness = nn.Conv2d(c, 1, 3, padding=1)
        self.scales = nn.ModuleList(Scale() for _ in self.strides)
        for conv in (self.cls_logits, self.box_deltas, self.centerness):
            nn.init.normal_(conv.weight, std=0.01)
            nn.init.zeros_(conv.bias)
        nn.init.constant_(self.cls_logits.bias, -math.log((1 - cfg.prior_prob) / cfg.prior_prob))

    def pyramid(self, images: torch.Tensor) -> list[torch.Tensor]:
        """The Dynamic Head's output maps P3-P7."""
        stages = self.backbone.forward_features(images)["features"][1:4]
        feats = OrderedDict((f"p{i + 3}", norm(x)) for i, (norm, x) in enumerate(zip(self.stage_norms, stages)))
        levels = list(self.fpn(feats).values())
        for block in self.blocks:
            levels = block(levels)
        return levels

    def forward(self, images: torch.Tensor) -> dict[str, object]:
        levels = self.pyramid(images)
        b = images.shape[0]
        cls, deltas, ctr = [], [], []
        for x, scale in zip(levels, self.scales, strict=True):
            cls.append(self.cls_logits(x).flatten(2).transpose(1, 2))
            deltas.append(scale(self.box_deltas(x)).flatten(2).transpose(1, 2))
            ctr.append(self.centerness(x).flatten(1))
        sizes = [tuple(x.shape[-2:]) for x in levels]
        anchors = level_anchors(sizes, list(self.strides), self.config.anchor_scale, images.device)
        return {"cls_logits": torch.cat(cls, 1), "box_deltas": torch.cat(deltas, 1).reshape(b, -1, 4),
                "centerness": torch.cat(ctr, 1), "anchors": anchors,
                "num_anchors": [h * w for h, w in sizes], "features": levels}

    def freeze_backbone(self, frozen: bool = True) -> None:
        """Stop (or restart) training the image encoder; it then also runs in eval mode (no drop path)."""
        self.backbone.requires_grad_(not frozen)
        self._backbone_frozen = frozen

    def train(self, mode: bool = True) -> DyHeadDetector:
        super().train(mode)
        if getattr(self, "_backbone_frozen", False):
            self.backbone.eval()
        return self


# ------------------------------------------------------------------------------------------------- presets
DETECTOR_PRESETS: dict[str, DyHeadConfig] = {
    # 2 CPU cores: a 64-channel pyramid, two blocks, anchors of 4 strides for 64-160 px scenes.
    "dyhead_tiny": DyHeadConfig(backbone="coswin_tiny", channels=64, num_blocks=2, anchor_scale=4.0),
    # The reference's defaults: 6 blocks x 256 channels on CoSwin-H (Florence's detector).
    "dyhead_paper": DyHeadConfig(backbone="coswin_huge", channels=256, num_blocks=6, anchor_scale=8.0),
}


def detector_config(name: str, **overrides: object) -> DyHeadConfig:
    """Preset ``name`` with ``overrides`` (checked like any config: an unknown key raises ConfigError)."""
    from florence_lib.config import deep_merge, from_dict, to_dict

    if name not in DETECTOR_PRESETS:
        raise KeyError(f"detector: {name!r} is not one of {', '.join(DETECTOR_PRESETS)}")
    return from_dict(DyHeadConfig, deep_merge(to_dict(DETECTOR_PRESETS[name]), dict(overrides)))


def create_detector(cfg: DyHeadConfig, backbone: CoSwin | None = None) -> DyHeadDetector:
    """The detector of ``cfg``; ``backbone`` (e.g. a UniCL checkpoint's image tower) replaces a fresh preset."""
    from florence_lib.models.presets import create_image_encoder

    return DyHeadDetector(cfg, backbone if backbone is not None else create_image_encoder(cfg.backbone))
