"""A tiny UniCL model and batch shared by the scale-out tests (distributed, gradient cache, DeepSpeed)."""

from __future__ import annotations

import torch

from florence_lib.models import create_model

BATCH, CONTEXT = 8, 12
# Label 0 and 1 occur on both ranks' halves: their positives must be found across ranks.
LABELS = torch.tensor([0, 1, 2, 0, 1, 3, 4, 0])


def tiny_model(drop_path: float = 0.0) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("unicl_tiny", image={"drop_path_rate": drop_path},
                        text={"context_length": CONTEXT, "vocab_size": 512})


def tiny_batch(n: int = BATCH, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(200, 512, (n, CONTEXT), generator=g)
    ids[:, CONTEXT // 2] = 102  # the end token
    return {"image": torch.randn(n, 3, 32, 32, generator=g), "input_ids": ids,
            "attention_mask": torch.ones(n, CONTEXT, dtype=torch.long), "label": LABELS[:n].clone()}


def grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def assert_close_grads(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], rtol: float = 1e-5) -> None:
    assert a.keys() == b.keys() and len(a) > 10
    for name in a:
        err = (a[name] - b[name]).norm() / b[name].norm().clamp(min=1e-12)
        assert err <= rtol, f"{name}: relative gradient error {err:.2e}"
