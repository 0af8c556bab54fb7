"""Write ``fixtures/coswin_reference.safetensors``: a seeded CoSwin's output and gradients, the numerics CoSwin must keep.

Run once from the code state whose numerics are the contract (issue 17: main at 22de051, before the speed work);
``tests/test_coswin_numerics.py`` then checks every later CoSwin against it within 1e-5. Regenerating it is a
deliberate change of CoSwin's numerics (existing checkpoints would then compute something else):

    PYTHONPATH=$PWD python tests/coswin_reference.py
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

from florence_lib.models import create_image_encoder

HERE = Path(__file__).parent / "fixtures"
CASES = {
    # (preset, overrides, batch, image size): maps 18/9/5/3 and 10/5/3/2 cover padded, shifted and single windows
    "small_w7": ("coswin_small", {"embed_dim": 16, "depths": (2, 2, 2, 2), "num_heads": (1, 2, 2, 4),
                                  "drop_path_rate": 0.0}, 2, 72),
    "tiny": ("coswin_tiny", {}, 2, 40),
}


SAMPLES = 512
"""Gradient entries kept per parameter (evenly spaced): any change of the numerics shows in them, and the fixture
stays small."""


def sample(t: torch.Tensor) -> torch.Tensor:
    flat = t.flatten()
    return flat if len(flat) <= SAMPLES else flat[torch.linspace(0, len(flat) - 1, SAMPLES).long()]


def reference(case: str) -> dict[str, torch.Tensor]:
    """Forward (train mode) and backward of ``(out * w).sum()``; the output, the input's gradient and every parameter's
    (:func:`sample`d), keyed by the parameter's state-dict name (so a renamed key fails too)."""
    name, overrides, batch, size = CASES[case]
    torch.manual_seed(0)
    model = create_image_encoder(name, **overrides).train()
    for key, p in model.named_parameters():  # make the relative position bias matter
        if key.endswith("relative_position_bias_table"):
            torch.nn.init.normal_(p, std=0.5)
    x = torch.randn(batch, 3, size, size, requires_grad=True)
    out = model(x)
    w = torch.randn(out.shape)
    (out * w).sum().backward()
    tensors = {"output": out.detach(), "input_grad": sample(x.grad)}
    tensors.update({f"grad.{k}": sample(p.grad) for k, p in model.named_parameters()})
    return {f"{case}.{k}": v.contiguous() for k, v in tensors.items()}


def main() -> None:
    tensors: dict[str, torch.Tensor] = {}
    for case in CASES:
        tensors.update(reference(case))
    save_file(tensors, HERE / "coswin_reference.safetensors")
    print(f"{len(tensors)} tensors, {sum(t.numel() for t in tensors.values()):,} values")


if __name__ == "__main__":
    main()
