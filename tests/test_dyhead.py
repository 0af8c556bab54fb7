"""Dynamic Head detector: shapes at any input size, the #25 fix (the deformable conv: test_deform_conv.py)."""

import pytest
import torch

from florence_lib.models.dyhead import (
    DyHeadBlock,
    DyReLU,
    create_detector,
    decode_boxes,
    detector_config,
    encode_boxes,
    level_anchors,
)


@pytest.mark.parametrize("size", [(64, 64), (97, 131), (33, 45), (160, 96)])
def test_detector_shapes_at_any_input_size(size):
    torch.manual_seed(0)
    model = create_detector(detector_config("dyhead_tiny", num_classes=3)).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 3, *size))
    sides = [tuple(f.shape[-2:]) for f in out["features"]]
    h, w = (size[0] - 3) // 4 + 1, (size[1] - 3) // 4 + 1  # CoSwin's k7/s4/p2 stem
    expected = []
    for _ in range(5):
        h, w = -(-h // 2), -(-w // 2)
        expected.append((h, w))
    assert sides == expected
    a = sum(hh * ww for hh, ww in expected)
    assert out["num_anchors"] == [hh * ww for hh, ww in expected]
    assert out["cls_logits"].shape == (2, a, 3) and out["box_deltas"].shape == (2, a, 4)
    assert out["centerness"].shape == (2, a) and out["anchors"].shape == (a, 4)
    assert all(f.shape[1] == 64 for f in out["features"])


def test_block_deforms_each_neighbour_with_offsets_of_its_output_size():
    """Every conv of a block gets offsets of the size of the map it writes (the reference's issue #25)."""
    torch.manual_seed(0)
    block = DyHeadBlock(16, 4, "gather")
    seen = []
    for name in ("conv_same", "conv_finer", "conv_coarser"):
        conv = getattr(block, name)
        conv.register_forward_hook(lambda m, args, out, name=name: seen.append(
            (name, tuple(args[1].shape[-2:]), tuple(out.shape[-2:]))))
    levels = [torch.randn(1, 16, s, s + 3) for s in (13, 7, 4)]
    out = block(levels)
    assert [tuple(o.shape) for o in out] == [tuple(x.shape) for x in levels]
    assert {name for name, _, _ in seen} == {"conv_same", "conv_finer", "conv_coarser"}
    for name, offset_size, out_size in seen:
        assert offset_size == out_size, name


def test_block_offsets_start_at_zero_and_dyrelu_starts_as_relu():
    block = DyHeadBlock(8, 4, "gather")
    assert block.offset.weight.abs().sum() == 0
    x = torch.randn(2, 8, 5, 5)
    relu = DyReLU(8)
    torch.nn.init.zeros_(relu.fc[2].weight)
    torch.nn.init.zeros_(relu.fc[2].bias)  # hard_sigmoid(0) = 0.5: a = (1, 0), b = (0, 0)
    torch.testing.assert_close(relu(x), torch.relu(x))


def test_anchors_and_box_coding():
    anchors = level_anchors([(2, 3)], [8], anchor_scale=4.0)
    assert anchors.shape == (6, 4)
    torch.testing.assert_close(anchors[0], torch.tensor([-12.0, -12.0, 20.0, 20.0]))  # centre (4, 4), side 32
    torch.testing.assert_close(anchors[5], torch.tensor([4.0, -4.0, 36.0, 28.0]))  # row 1, col 2: centre (20, 12)
    boxes = torch.tensor([[1.0, 2.0, 11.0, 30.0]]).repeat(6, 1)
    torch.testing.assert_close(decode_boxes(encode_boxes(boxes, anchors), anchors), boxes)


def test_unknown_preset_and_bad_override_are_refused():
    from florence_lib.config import ConfigError

    with pytest.raises(KeyError, match="dyhead_tiny"):
        detector_config("dyhead_huge")
    with pytest.raises(ConfigError, match="channels"):
        detector_config("dyhead_tiny", channels=2)
