"""The release's reference outputs, kept in tests/fixtures (docs/spec-mmn.md says what each holds)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
REFERENCE = FIXTURES / "mmn_ma52_reference.pt"  # the released model's state dict, inputs and logits
RAW_VAL = FIXTURES / "ma52_raw"  # four raw val clips in the release's pickle format
PREPROCESSED_VAL = FIXTURES / "ma52_preprocess_val.npz"  # what the release's loader returns for them
MOTION_VAL = FIXTURES / "ma52_motion_val.npz"  # the same for its motion streams (jm, bm)


def load_reference() -> dict[str, Any]:
    import torch

    return torch.load(REFERENCE, map_location="cpu", weights_only=True)
