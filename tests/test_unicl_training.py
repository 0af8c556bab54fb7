"""What makes a UniCL run learn: CLIP's text-tower init, the in-place temperature clamp, the collapse detector."""

from __future__ import annotations

import math

import pytest
import torch

from florence_lib.models import create_model
from florence_lib.models.text_encoder import TextTransformer
from florence_lib.training.engine import Engine
from florence_lib.training.schedules import build_scheduler


@pytest.mark.parametrize("width, layers", [(64, 2), (256, 6)])
def test_text_transformer_init_follows_clip(width, layers):
    torch.manual_seed(0)
    tower = TextTransformer(vocab_size=3000, context_length=77, width=width, layers=layers, heads=4)
    attn, proj, fc = width**-0.5, width**-0.5 * (2 * layers) ** -0.5, (2 * width) ** -0.5
    expected = {"attn.qkv": attn, "attn.proj": proj, "mlp.fc1": fc, "mlp.fc2": proj}
    for block in tower.blocks:
        for name, std in expected.items():
            linear = block.get_submodule(name)
            assert linear.weight.std().item() == pytest.approx(std, rel=0.08), name
            assert linear.bias.abs().max().item() == 0.0
    assert tower.token_embedding.weight.std().item() == pytest.approx(0.02, rel=0.03)
    assert tower.positional_embedding.std().item() == pytest.approx(0.01, rel=0.05)


def _temperature_run(pushes: list[float]) -> list[float]:
    """logit_scale after each step of an objective that pulls the temperature up (+1) or down (-1)."""
    model = create_model("unicl_tiny", init_logit_scale=math.log(90))
    optimizer = torch.optim.AdamW([model.logit_scale], lr=0.05, weight_decay=0.0)
    direction = {"sign": 1.0}

    def objective(m, batch):
        return -direction["sign"] * m.temperature_scale(), {}

    engine = Engine(model, objective, optimizer, build_scheduler(optimizer, warmup_steps=0, total_steps=100),
                    device=torch.device("cpu"), grad_clip=None)
    trace = []
    for sign in pushes:
        direction["sign"] = sign
        engine.train_step({})
        trace.append(model.logit_scale.item())
    return trace


def test_temperature_overshoots_the_bound_is_clamped_and_comes_back_down():
    bound = math.log(100)
    trace = _temperature_run([1.0] * 10 + [-1.0] * 30)
    up, down = trace[:10], trace[10:]
    # AdamW steps of ~0.05 from ln 90 = 4.50 cross ln 100 = 4.61 within 3 steps: the clamp holds it at the bound.
    assert all(v <= bound + 1e-6 for v in trace)
    assert up[-1] == pytest.approx(bound, abs=1e-6) and up[2] == pytest.approx(bound, abs=1e-6)
    # ...and once the loss wants a warmer temperature, it moves off the bound (a forward-pass clamp would pass
    # no gradient from there, and the parameter, free to grow past the bound, could never come back).
    assert down[-1] < bound - 0.3 and down[-1] < down[-10] < bound
