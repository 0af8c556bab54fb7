"""The CPU deformable conv against ``torchvision.ops.deform_conv2d``: forward and every gradient, many geometries."""

import pytest
import torch
import torchvision

from florence_lib.models import deform_conv as dc


def _inputs(dtype, b=2, c=6, size=(9, 11), c_out=5, kernel=(3, 3), stride=1, padding=1, dilation=1, groups=1,
            scale=3.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    ho, wo = ((n + 2 * p - d * (k - 1) - 1) // s + 1 for n, k, s, p, d in
              zip(size, kernel, *(dc._pair(v) for v in (stride, padding, dilation))))
    kh, kw = kernel
    h, w = size
    x = torch.randn(b, c, h, w, generator=g, dtype=dtype)
    offset = torch.randn(b, groups * 2 * kh * kw, ho, wo, generator=g, dtype=dtype) * scale  # many taps fall outside
    mask = torch.rand(b, groups * kh * kw, ho, wo, generator=g, dtype=dtype)
    weight = torch.randn(c_out, c, kh, kw, generator=g, dtype=dtype)
    bias = torch.randn(c_out, generator=g, dtype=dtype)
    return [t.requires_grad_() for t in (x, offset, mask, weight, bias)]


def _forward_backward(impl, inputs, use_mask=True, use_bias=True, **geometry):
    x, offset, mask, weight, bias = inputs
    for t in inputs:
        t.grad = None
    out = dc.deform_conv2d(x, offset, weight, bias if use_bias else None, mask=mask if use_mask else None,
                           impl=impl, **geometry)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(1), dtype=out.dtype)
    (out * grad_out).sum().backward()
    used = [x, offset] + [mask] * use_mask + [weight] + [bias] * use_bias
    return [out.detach()] + [t.grad.clone() for t in used]


def _assert_matches_torchvision(inputs, tol, use_mask=True, use_bias=True, **geometry):
    ours = _forward_backward("gather", inputs, use_mask, use_bias, **geometry)
    ref = _forward_backward("torchvision", inputs, use_mask, use_bias, **geometry)
    names = ["output", "d_input", "d_offset"] + ["d_mask"] * use_mask + ["d_weight"] + ["d_bias"] * use_bias
    for name, a, b in zip(names, ours, ref, strict=True):
        assert a.shape == b.shape, name
        rel = ((a - b).abs().max() / b.abs().max()).item()
        assert rel < tol, f"{name}: relative difference {rel:.2e} ({geometry})"


GEOMETRIES = [
    dict(stride=1, padding=1, dilation=1),
    dict(stride=2, padding=1, dilation=1),
    dict(stride=1, padding=2, dilation=2),
    dict(stride=(2, 1), padding=(0, 2), dilation=(1, 2)),
]


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: "-".join(f"{k}{v}" for k, v in g.items()))
def test_matches_torchvision_in_float64(geometry):
    _assert_matches_torchvision(_inputs(torch.float64, **geometry), 1e-10, **geometry)


@pytest.mark.parametrize("geometry", GEOMETRIES[:2])
def test_matches_torchvision_in_float32_within_1e4(geometry):
    """The issue's tolerance, at the benchmark's channel count and offset scale."""
    inputs = _inputs(torch.float32, b=2, c=64, size=(16, 16), c_out=64, **geometry)
    _assert_matches_torchvision(inputs, 1e-4, **geometry)


def test_offset_groups_other_kernels_and_no_mask_or_bias_match_torchvision():
    geometry = dict(stride=1, padding=(1, 2), dilation=1)
    inputs = _inputs(torch.float64, c=6, size=(7, 10), kernel=(3, 5), groups=3, **geometry)
    _assert_matches_torchvision(inputs, 1e-10, **geometry)
    _assert_matches_torchvision(inputs, 1e-10, use_mask=False, use_bias=False, **geometry)
    inputs = _inputs(torch.float64, b=1, c=4, size=(1, 6), kernel=(1, 1), groups=2, padding=0)
    _assert_matches_torchvision(inputs, 1e-10, padding=0)  # a 1-pixel-high map, a 1x1 kernel


def test_zero_offsets_give_a_plain_convolution():
    x, offset, mask, weight, bias = (t.detach() for t in _inputs(torch.float64, stride=2))
    out = dc.deform_conv2d(x, torch.zeros_like(offset), weight, bias, stride=2, padding=1, impl="gather")
    torch.testing.assert_close(out, torch.nn.functional.conv2d(x, weight, bias, stride=2, padding=1))


def test_gradients_pass_gradcheck():
    """Finite differences on a tiny case (random offsets keep every point off the bilinear kinks)."""
    x, offset, mask, weight, bias = _inputs(torch.float64, b=1, c=2, size=(4, 5), c_out=2, scale=1.5, seed=3)

    def fn(x, offset, mask, weight, bias):
        return dc.deform_conv2d(x, offset, weight, bias, padding=1, mask=mask, impl="gather")

    assert torch.autograd.gradcheck(fn, (x, offset, mask, weight, bias), eps=1e-6, atol=1e-6, fast_mode=True)


def test_reduced_precision_input_is_computed_in_float32():
    inputs = [t.detach() for t in _inputs(torch.float32)]
    x, offset, mask, weight, bias = inputs
    ref = dc.deform_conv2d(x, offset, weight, bias, padding=1, mask=mask, impl="torchvision")
    out = dc.deform_conv2d(x.bfloat16(), offset, weight, bias, padding=1, mask=mask, impl="gather")
    assert out.dtype == torch.bfloat16
    assert ((out.float() - ref).abs().max() / ref.abs().max()).item() < 2e-2  # x's own bf16 rounding


def test_auto_uses_the_gather_path_on_cpu(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("torchvision's CPU kernel was called")

    monkeypatch.setattr(torchvision.ops, "deform_conv2d", refuse)
    x, offset, mask, weight, bias = (t.detach() for t in _inputs(torch.float32))
    assert dc.deform_conv2d(x, offset, weight, bias, padding=1, mask=mask).shape == (2, 5, 9, 11)
    with pytest.raises(ValueError, match="impl"):
        dc.deform_conv2d(x, offset, weight, bias, padding=1, mask=mask, impl="cuda-only")
    with pytest.raises(ValueError, match="offset"):
        dc.deform_conv2d(x, offset[:, :9], weight, bias, padding=1, mask=mask)
    with pytest.raises(ValueError, match="mask"):
        dc.deform_conv2d(x, offset, weight, bias, padding=1, mask=mask[:, :4])


def test_auto_keeps_torchvisions_kernel_on_cuda(monkeypatch):
    calls = []
    monkeypatch.setattr(torchvision.ops, "deform_conv2d", lambda *a, **k: calls.append(a) or "torchvision")

    class FakeCuda(torch.Tensor):
        is_cuda = True

    x = torch.zeros(1, 2, 4, 4).as_subclass(FakeCuda)
    assert dc.deform_conv2d(x, torch.zeros(1, 18, 4, 4), torch.zeros(2, 2, 3, 3), padding=1) == "torchvision"
    assert len(calls) == 1
