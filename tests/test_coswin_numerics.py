"""CoSwin's numerics are a contract: a seeded model's output and gradients equal the saved reference.

The reference (tests/fixtures/coswin_reference.safetensors, written by tests/coswin_reference.py from main at
22de051) pins what existing checkpoints compute; speed work on the tower must leave it unchanged within 1e-5.
"""

from pathlib import Path

import pytest
import torch
from coswin_reference import CASES, reference
from safetensors.torch import load_file

FIXTURE = Path(__file__).parent / "fixtures" / "coswin_reference.safetensors"


@pytest.mark.parametrize("case", sorted(CASES))
def test_coswin_output_and_gradients_match_the_saved_reference(case):
    saved = {k: v for k, v in load_file(FIXTURE).items() if k.startswith(f"{case}.")}
    now = reference(case)
    assert sorted(now) == sorted(saved), "parameter names (state-dict keys) changed"
    for key, expected in saved.items():
        torch.testing.assert_close(now[key], expected, rtol=1e-5, atol=1e-5, msg=lambda m, k=key: f"{k}: {m}")
