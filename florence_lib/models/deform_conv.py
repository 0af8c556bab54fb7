"""Modulated deformable convolution (DCNv2) that trains at CPU speed, with torchvision's kernel on CUDA.

``torchvision.ops.deform_conv2d`` on a CPU loops over output positions in scalar code: measured on 2 cores at
batch 8, 64 channels, a 32x32 map and a 3x3 kernel, forward + backward takes ~700-1,100 ms against ~10-20 ms for
a plain convolution of the same shape, too slow for a Dynamic Head to train in minutes. A modulated deformable
conv is a bilinear gather followed by a dense product, so the CPU path here is an autograd Function built from
library kernels, with a hand-written backward:

- the input is laid out channels-last with a one-pixel zero border, so each bilinear corner of every kernel
  point is one row of a ``[pixels, channels]`` table (a corner outside the map reads the border: no validity
  masks in the gathers; with offset groups, a row holds one group's channels of a pixel);
- the samples are one ``F.embedding_bag`` call: a bag of 4 corner rows per kernel point, summed with their
  bilinear weight times the modulation mask as per-sample weights (FBGEMM's fused gather-and-sum);
- the samples, ordered (batch, y, x, tap) x channel, are already the im2col matrix: one batched matmul with the
  weight gives the output, in NCHW;
- backward: the weight's gradient and the samples' gradient are one matmul each; the input's gradient is the
  transposed gather, computed as a gather again (the corners sorted by destination row, then ``embedding_bag``
  with one bag per table row: several times faster than ``index_add_``, which runs a small add per source row);
  the offsets' and mask's gradients follow from the per-corner dot products of the sample gradient with the
  corner values (the bilinear derivatives), all of them in one ``torch.sparse.sampled_addmm`` on the corners'
  sparsity pattern (MKL) instead of four gathers and four batched dots.

The sampling convention is torchvision's: tap ``k = i * kw + j`` of output ``(y, x)`` reads the input at
``(y * stride - pad + i * dilation + offset[2k], x * stride - pad + j * dilation + offset[2k + 1])``, a point with
``y <= -1``, ``y >= height`` (same for x) reads zero, and so does a corner outside the map; forward and all
gradients agree with torchvision's to float rounding (tests/test_deform_conv.py: strides, padding, dilation,
non-square kernels, offset groups; measured at the benchmark's shape: <= 5e-7 relative in float32).
"""

from __future__ import annotations

import warnings
from typing import Literal

import torch
import torch.nn.functional as F
import torchvision.ops

from ..distributed import intra_op_threads

Impl = Literal["auto", "gather", "torchvision"]


def _pair(v: int | tuple[int, int]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def _corner_plan(offset: torch.Tensor, mask: torch.Tensor, size: tuple[int, int], kernel: tuple[int, int],
                 stride: tuple[int, int], padding: tuple[int, int], dilation: tuple[int, int], groups: int):
    """Rows of the four bilinear corners of every (batch, y, x, tap, offset group) point in the bordered table.

    The table is the zero-bordered channels-last input, ``[b * (h + 2) * (w + 2) * groups, channels / groups]``:
    row ``pixel * groups + g`` holds offset group ``g``'s channels of that pixel. Returns ``rows`` [n, 4], the
    fractional parts ``ly, lx`` [n], ``inside`` [n] (the point reads anything) and ``mask`` flattened [n], zero
    outside. Corner order: (y0, x0), (y0, x1), (y1, x0), (y1, x1).
    """
    b, _, ho, wo = offset.shape
    (h, w), (kh, kw) = size, kernel
    taps = kh * kw
    dtype, device = offset.dtype, offset.device
    tap_y = (torch.arange(kh, device=device, dtype=dtype) * dilation[0]).repeat_interleave(kw)[:, None]  # [taps, 1]
    tap_x = (torch.arange(kw, device=device, dtype=dtype) * dilation[1]).repeat(kh)[:, None]
    out_y = torch.arange(ho, device=device, dtype=dtype) * stride[0] - padding[0]
    out_x = torch.arange(wo, device=device, dtype=dtype) * stride[1] - padding[1]
    # [b, ho, wo, taps, groups, 2], contiguous so that everything derived from it is too
    off = offset.view(b, groups, taps, 2, ho, wo).permute(0, 4, 5, 2, 1, 3).contiguous()
    py = out_y[:, None, None, None] + tap_y + off[..., 0]  # [b, ho, wo, taps, groups]
    px = out_x[:, None, None] + tap_x + off[..., 1]
    inside = ((py > -1) & (py < h) & (px > -1) & (px < w)).reshape(-1)
    y0, x0 = py.floor(), px.floor()
    ly, lx = (py - y0).reshape(-1), (px - x0).reshape(-1)
    # Row of corner (y0, x0), by broadcasting the batch and group terms; points outside read row 0 (the border)
    # with weight 0.
    batch = torch.arange(b, device=device).view(b, 1, 1, 1, 1) * (h + 2)
    group = torch.arange(groups, device=device)
    row00 = (((y0.long() + 1 + batch) * (w + 2) + x0.long() + 1) * groups + group).reshape(-1)
    row00 = torch.where(inside, row00, 0)
    rows = row00[:, None] + torch.tensor([0, 1, w + 2, w + 3], device=device) * groups
    if rows.numel() < 2**31 and b * (h + 2) * (w + 2) * groups < 2**31:
        rows = rows.int()  # the sort, the gathers and MKL's sparse kernels are faster on 32-bit indices
    mask = mask.view(b, groups, taps, ho, wo).permute(0, 3, 4, 2, 1).reshape(-1) * inside
    return rows, ly, lx, inside, mask


def _bilinear(ly: torch.Tensor, lx: torch.Tensor) -> torch.Tensor:
    """[n, 4] bilinear weights of the corners (y0, x0), (y0, x1), (y1, x0), (y1, x1)."""
    return torch.stack(((1 - ly) * (1 - lx), (1 - ly) * lx, ly * (1 - lx), ly * lx), 1)


def _corner_dots(rows: torch.Tensor, rows_grad: torch.Tensor, table: torch.Tensor) -> torch.Tensor:
    """[n, 4]: ``<rows_grad[i], table[rows[i, k]]>``, a sampled dense product on the corners' sparsity pattern."""
    n, table_rows = rows.shape[0], table.shape[0]
    index = rows.dtype  # int32 where it fits: MKL's fast path
    with warnings.catch_warnings():  # "sparse CSR support is in beta state", once per process
        warnings.simplefilter("ignore", UserWarning)
        pattern = torch.sparse_csr_tensor(
            torch.arange(0, rows.numel() + 1, 4, dtype=index, device=rows.device), rows.reshape(-1),
            torch.ones(rows.numel(), dtype=table.dtype, device=table.device), size=(n, table_rows),  # unused: beta 0
            check_invariants=False)
        return torch.sparse.sampled_addmm(pattern, rows_grad, table.t(), beta=0.0).values().view(n, 4)


def _scatter_rows(rows: torch.Tensor, weights: torch.Tensor, values: torch.Tensor, table_rows: int) -> torch.Tensor:
    """``out[r] = sum of weights[i, k] * values[i] over rows[i, k] == r``: the transposed weighted gather.

    Sorting the corners by destination row turns the scatter into a gather (``embedding_bag`` with one bag per
    table row), several times faster than ``index_add_`` (which runs one small add per source row).
    """
    flat = rows.reshape(-1)
    order = torch.sort(flat, stable=True).indices
    starts = torch.zeros(table_rows, dtype=torch.long, device=rows.device)
    torch.cumsum(torch.bincount(flat, minlength=table_rows)[:-1], 0, out=starts[1:])
    source_weights = weights.reshape(-1).index_select(0, order)
    return F.embedding_bag(order // 4, values, starts, mode="sum", per_sample_weights=source_weights)


# One intra-op thread for the whole path. Its gathers and element-wise ops are memory-bound and short: over 2
# threads on the shared 2-core machine they took 1-10x their 1-thread time, and with the matmuls alone on the
# caller's 2 threads the whole step took 1.36x the all-1-thread time (139 vs 102 ms median, 1-min load ~6,
# interleaved in one process).
class _GatherDeformConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, offset, mask, weight, bias, stride, padding, dilation):
        with intra_op_threads(1):
            return _GatherDeformConv._fwd(ctx, x, offset, mask, weight, bias, stride, padding, dilation)

    @staticmethod
    def _fwd(ctx, x, offset, mask, weight, bias, stride, padding, dilation):
        b, c, h, w = x.shape
        c_out, _, kh, kw = weight.shape
        ho, wo = offset.shape[2:]
        dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
        with torch.autocast(x.device.type, enabled=False):
            groups = offset.shape[1] // (2 * kh * kw)
            table = F.pad(x.to(dtype).permute(0, 2, 3, 1), (0, 0, 1, 1, 1, 1)).reshape(-1, c // groups)
            rows, ly, lx, inside, m = _corner_plan(offset.to(dtype), mask.to(dtype), (h, w), (kh, kw),
                                                   stride, padding, dilation, groups)
            weights = _bilinear(ly, lx) * m[:, None]  # the mask folded into the corner weights
            # The samples, ordered (batch, y, x, tap) x channel, are the im2col matrix: one matmul gives the output.
            samples = F.embedding_bag(rows, table, mode="sum", per_sample_weights=weights)
            w2d = weight.to(dtype).permute(0, 2, 3, 1).reshape(c_out, -1)  # [c_out, taps * c]
            out = torch.matmul(w2d, samples.view(b, ho * wo, -1).transpose(1, 2))  # [b, c_out, ho * wo]: NCHW
            if bias is not None:
                out += bias.to(dtype)[:, None]
        ctx.save_for_backward(table, samples, rows, weights, ly, lx, inside, m, w2d)
        ctx.shapes = (x.shape, groups, x.dtype, offset.dtype, mask.dtype, weight.shape, weight.dtype,
                      None if bias is None else bias.dtype)
        return out.view(b, c_out, ho, wo).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        with intra_op_threads(1):
            return _GatherDeformConv._bwd(ctx, grad_out)

    @staticmethod
    def _bwd(ctx, grad_out):
        table, samples, rows, weights, ly, lx, inside, m, w2d = ctx.saved_tensors
        x_shape, groups, x_dtype, offset_dtype, mask_dtype, weight_shape, weight_dtype, bias_dtype = ctx.shapes
        b, c, h, w = x_shape
        c_out, _, kh, kw = weight_shape
        _, _, ho, wo = grad_out.shape
        taps = kh * kw
        with torch.autocast(grad_out.device.type, enabled=False):
            go = grad_out.to(table.dtype).reshape(b, c_out, ho * wo)
            grad_weight = torch.bmm(go, samples.view(b, ho * wo, -1)).sum(0)
            grad_weight = grad_weight.view(c_out, kh, kw, c).permute(0, 3, 1, 2)
            grad_bias = go.sum((0, 2)) if bias_dtype is not None else None
            grad_samples = torch.matmul(go.transpose(1, 2), w2d).view(-1, c // groups)  # [(b, y, x, tap, g), c/g]
            grad_x = None
            if ctx.needs_input_grad[0]:
                grad_table = _scatter_rows(rows, weights, grad_samples, table.shape[0])
                grad_x = grad_table.view(b, h + 2, w + 2, c)[:, 1:-1, 1:-1].permute(0, 3, 1, 2)
                grad_x = grad_x.contiguous().to(x_dtype)  # contiguous: AccumulateGrad takes it without a copy
            # Per corner <d sample, corner value>: the derivative of the sample by that corner's weight.
            d00, d01, d10, d11 = _corner_dots(rows, grad_samples, table).unbind(1)
            grad_mask = ((1 - ly) * ((1 - lx) * d00 + lx * d01) + ly * ((1 - lx) * d10 + lx * d11)) * inside
            grad_py = m * ((1 - lx) * (d10 - d00) + lx * (d11 - d01))
            grad_px = m * ((1 - ly) * (d01 - d00) + ly * (d11 - d10))
        grad_offset = torch.stack((grad_py, grad_px), -1).view(b, ho, wo, taps, groups, 2).permute(0, 4, 3, 5, 1, 2)
        grad_offset = grad_offset.reshape(b, groups * 2 * taps, ho, wo).to(offset_dtype)
        grad_mask = grad_mask.view(b, ho, wo, taps, groups).permute(0, 4, 3, 1, 2)
        grad_mask = grad_mask.reshape(b, groups * taps, ho, wo).to(mask_dtype)
        grad_weight = grad_weight.contiguous().to(weight_dtype)
        grad_bias = None if grad_bias is None else grad_bias.to(bias_dtype)
        return grad_x, grad_offset, grad_mask, grad_weight, grad_bias, None, None, None


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

    ``impl="auto"``: torchvision's kernel on CUDA (fused, fast there), the gather path elsewhere (and for the
    reduced-precision inputs torchvision's CPU kernel does not take). Any number of offset groups; no weight groups.
    """
    if impl not in ("auto", "gather", "torchvision"):
        raise ValueError(f"impl: {impl!r} is not one of 'auto', 'gather', 'torchvision'")
    if impl == "torchvision" or (impl == "auto" and x.is_cuda):
        return torchvision.ops.deform_conv2d(x, offset, weight, bias, stride=stride, padding=padding,
                                             dilation=dilation, mask=mask)
    b, c, h, w = x.shape
    c_out, c_in, kh, kw = weight.shape
    if c_in != c:
        raise ValueError(f"weight: {c_in} input channels, x has {c} (weight groups are not supported)")
    groups = offset.shape[1] // (2 * kh * kw)
    if groups == 0 or offset.shape[1] % (2 * kh * kw) or c % groups:
        raise ValueError(f"offset: {offset.shape[1]} channels; a {kh}x{kw} kernel needs {2 * kh * kw} per offset "
                         f"group, and the groups must divide the {c} input channels")
    if mask is None:
        mask = torch.ones(b, groups * kh * kw, *offset.shape[2:], dtype=x.dtype, device=x.device)
    if mask.shape[1] != groups * kh * kw:
        raise ValueError(f"mask: {mask.shape[1]} channels; {groups} offset group(s) of a {kh}x{kw} kernel need "
                         f"{groups * kh * kw}")
    return _GatherDeformConv.apply(x, offset, mask, weight, bias, _pair(stride), _pair(padding), _pair(dilation))
