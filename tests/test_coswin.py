"""CoSwin's fast attention path equals Swin's reference path, and CoSwin learns (overfits a small world set)."""

import pytest
import torch
import torch.nn.functional as F
from timm.models.swin_transformer import WindowAttention, window_partition, window_reverse

from florence_lib.data.world import World, WorldClassification, WorldConfig
from florence_lib.models import create_image_encoder
from florence_lib.models.coswin import (
    CoSwinBlock,
    relative_position_index,
    window_attention_mask,
    window_order,
)


def reference_attention(block: CoSwinBlock, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Swin's path, as timm writes it: pad, roll, partition, timm's WindowAttention (with the mask), reverse,
    roll back, crop."""
    _, h, w, c = x.shape
    win, shift = block.window_size, block.shift_for(h, w)
    x = F.pad(x, (0, 0, 0, (-w) % win, 0, (-h) % win))
    hp, wp = x.shape[1:3]
    x = torch.roll(x, shifts=(-shift[0], -shift[1]), dims=(1, 2))
    windows = window_partition(x, (win, win)).flatten(1, 2)
    windows = WindowAttention.forward(block.attn, windows, mask=mask).view(-1, win, win, c)
    x = torch.roll(window_reverse(windows, (win, win), hp, wp), shifts=shift, dims=(1, 2))
    return x[:, :h, :w]


def reference_block(block: CoSwinBlock, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    x = x + reference_attention(block, block.norm1(x), mask)
    return x + block.mlp(block.norm2(x))


@pytest.mark.parametrize("size", [(8, 12), (6, 6), (10, 7), (9, 13), (4, 4), (3, 3), (2, 4), (1, 1)])
@pytest.mark.parametrize("shifted", [False, True])
def test_fast_attention_equals_swin_reference_path(size, shifted):
    """One gather + SDPA with the bias and mask summed == pad/roll/partition + timm's attention, values and
    gradients, on divisible, padded and single-window maps (the last attended without padding at all)."""
    torch.manual_seed(0)
    block = CoSwinBlock(16, num_heads=2, window_size=4, shifted=shifted, mlp_ratio=2.0, drop_path=0.0)
    torch.nn.init.normal_(block.attn.relative_position_bias_table, std=1.0)  # make the bias matter
    x = torch.randn(3, *size, 16, requires_grad=True)
    mask = window_attention_mask(*size, 4, block.shift_for(*size))
    fast = block(x, mask)
    (grad_fast,) = torch.autograd.grad(fast.square().sum(), x)
    ref = reference_block(block, x, mask)
    (grad_ref,) = torch.autograd.grad(ref.square().sum(), x)
    torch.testing.assert_close(fast, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grad_fast, grad_ref, rtol=1e-5, atol=1e-5)
    with torch.no_grad():  # the bias needs no gradient: the fused SDPA kernel
        torch.testing.assert_close(block(x, mask), ref, rtol=1e-5, atol=1e-5)


def test_window_order_is_pad_roll_partition_and_scatter_inverts_it():
    h, w, win, shift = 6, 9, 4, (2, 2)
    gather, scatter = window_order(h, w, win, shift)
    grid = F.pad(torch.arange(h * w, dtype=torch.float).view(1, h, w, 1) + 1, (0, 0, 0, 3, 0, 2))  # 0 = padding
    grid = torch.roll(grid, shifts=(-2, -2), dims=(1, 2))
    expected = window_partition(grid, (win, win)).flatten().long() - 1
    real = expected >= 0
    assert torch.equal(gather[real], expected[real]) and len(gather) == 2 * 3 * 16
    assert torch.equal(gather[scatter], torch.arange(h * w))


def test_relative_position_index_of_the_whole_window_is_timms():
    attn = WindowAttention(8, num_heads=2, window_size=5)
    assert torch.equal(relative_position_index(5, 5, 5), attn.relative_position_index.flatten())


def test_coswin_overfits_a_small_world_set():
    """A real learning check: 48 single-object scenes, 8 shape classes; the tower + a linear head fit them."""
    torch.manual_seed(0)
    world = World(WorldConfig(min_objects=1, max_objects=1, label_by="shape", image_size=32))
    data = WorldClassification(world, "train", 48)
    images, labels = torch.stack([data[i][0] for i in range(48)]), torch.tensor(data.targets)
    tower = create_image_encoder("coswin_tiny")
    model = torch.nn.Sequential(tower, torch.nn.Linear(tower.num_features, 8))
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.0)
    for _ in range(60):
        loss = F.cross_entropy(model(images), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(images).argmax(1) == labels).float().mean().item()
    assert accuracy >= 0.95, f"train accuracy {accuracy:.2f} after 60 full-batch steps"


def test_compile_key_compiles_in_place_and_keeps_checkpoint_keys():
    """``compile: true`` must not rename state-dict keys (torch.compile's wrapper would add ``_orig_mod.``)."""
    from florence_lib.config import from_dict
    from florence_lib.models import create_model
    from florence_lib.training.config import PretrainConfig
    from florence_lib.training.pretrain import build_engine

    cfg = from_dict(PretrainConfig, {"compile": True, "precision": "fp32"})
    model = create_model("unicl_tiny")
    keys = list(model.state_dict())
    build_engine(cfg, model, torch.device("cpu"))
    assert list(model.state_dict()) == keys
    assert model.image_encoder._compiled_call_impl is not None  # compiled lazily, at the first forward
