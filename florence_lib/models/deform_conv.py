"""Modulated deformable convolution (DCNv2) that trains at CPU speed, with torchvision's kernel on CUDA.

``torchvision.ops.deform_conv2d`` on a CPU loops over output positions in scalar code: measured on 2 cores at
batch 8, 64 channels, a 32x32 map and a 3x3 kernel, forward + backward takes ~700 ms against ~8 ms for a plain
convolution of the same shape, too slow for a Dynamic Head to train in minutes. A modulated deformable conv is
a bilinear gather followed by a dense product, so the CPU path here is two library ops that are vectorised:

1. ``F.grid_sample`` (bilinear, zero padding) samples the input at all ``kh * kw`` kernel points of every
   output position in one call (the points of kernel tap ``k`` stacked along the height axis),
2. the samples, multiplied by the mask, are contracted with the weight in one 1x1 convolution (im2col).

Both have exact gradients through autograd (w.r.t. input, offsets, mask, weight, bias). The sampling convention
is torchvision's: tap ``k = i * kw + j`` of output ``(y, x)`` reads the input at
``(y * stride - pad + i * dilation + offset[2k], x * stride - pad + j * dilation + offset[2k + 1])``, and a
corner outside the map contributes zero; ``grid_sample`` with ``align_corners=False`` and the normalisation
``(2 p + 1) / size - 1`` addresses pixel centres exactly, so the two agree to float rounding (tested).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
import torchvision.ops

Impl = Literal["auto", "grid_sample", "torchvision"]


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def deform_conv2d_grid_sample(
    x: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """``torchvision.ops.deform_conv2d`` (one offset group, no weight groups) as grid_sample + matmul."""
    b, c, h, w = x.shape
    c_out, c_in, kh, kw = weight.shape
    if c_in != c:
        raise ValueError(f"weight: {c_in} input channels, x has {c} (weight groups are not supported)")
    taps = kh * kw
    if offset.shape[1] != 2 * taps:
        raise ValueError(f"offset: {offset.shape[1]} channels; one offset group of a {kh}x{kw} kernel needs "
                         f"{2 * taps}")
    (sh, sw), (ph, pw), (dh, dw) = _pair(stride), _pair(padding), _pair(dilation)
    ho, wo = offset.shape[2:]
    dtype, device = x.dtype, x.device
    # Kernel-tap and output-position grids, in input pixel coordinates.
    tap_y = (torch.arange(kh, device=device, dtype=dtype) * dh).repeat_interleave(kw)  # [taps]
    tap_x = (torch.arange(kw, device=device, dtype=dtype) * dw).repeat(kh)
    out_y = torch.arange(ho, device=device, dtype=dtype) * sh - ph  # [ho]
    out_x = torch.arange(wo, device=device, dtype=dtype) * sw - pw
    offset = offset.view(b, taps, 2, ho, wo)
    py = out_y[None, None, :, None] + tap_y[None, :, None, None] + offset[:, :, 0]  # [b, taps, ho, wo]
    px = out_x[None, None, None, :] + tap_x[None, :, None, None] + offset[:, :, 1]
    grid = torch.stack(((2 * px + 1) / w - 1, (2 * py + 1) / h - 1), dim=-1)  # grid_sample wants (x, y)
    grid = grid.view(b, taps * ho, wo, 2)
    samples = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    samples = samples.view(b, c, taps, ho, wo)
    if mask is not None:
        samples = samples * mask.view(b, 1, taps, ho, wo)
    # A 1x1 convolution is the matmul without the batch-broadcast copies of torch.matmul (3x faster here).
    return F.conv2d(samples.reshape(b, c * taps, ho, wo), weight.reshape(c_out, c * taps, 1, 1), bias)


def deform_conv2d(
    x: torch.Tensor,
    offset: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    mask: torch.Tensor | None = None,
    impl: Impl = "auto",
) -> torch.Tensor:
    """Modulated deformable conv with ``torchvision.ops.deform_conv2d``'s signature and semantics.

    ``impl="auto"``: torchvision's kernel on CUDA (fused, fast there), the grid-sample path elsewhere (and for
    the reduced-precision inputs torchvision's CPU kernel does not take).
    """
    if impl == "auto":
        impl = "torchvision" if x.is_cuda else "grid_sample"
    if impl == "torchvision":
        return torchvision.ops.deform_conv2d(x, offset, weight, bias, stride=stride, padding=padding,
                                             dilation=dilation, mask=mask)
    if impl == "grid_sample":
        return deform_conv2d_grid_sample(x, offset, weight, bias, stride, padding, dilation, mask)
    raise ValueError(f"impl: {impl!r} is not one of 'auto', 'grid_sample', 'torchvision'")
