"""MTM replaced by a squeeze-and-excitation gate: a worked example of your own module in one of MMN's slots.

The motion features, averaged over frames and joints, give each channel of the temporal branch a gate in (0, 1)
(Hu et al., "Squeeze-and-Excitation Networks"), where MTM modulates it frame by frame. Use it with

    python -m mmn.train --import docs/examples/se_mtm.py model.mtm=se_gate
    python -m ablations.run my_spec.yaml      # a spec with imports: [se_mtm.py] and model.mtm: [true, se_gate]

Built from mmn.model.layers.Linear with `members`, it also trains in trial packs (docs/custom.md).
"""
from __future__ import annotations

import torch
from torch import nn

from mmn.model.layers import Linear
from mmn.model.registry import register


@register("mtm", "se_gate")
class SqueezeExcitationGate(nn.Module):
    def __init__(self, channels: int, members: int = 1, reduction: int = 4) -> None:
        """`channels` is the motion features' width (2q); the temporal branch it gates has q channels."""
        super().__init__()
        self.squeeze = Linear(channels, channels // reduction, activation="relu", members=members)
        self.excite = Linear(channels // reduction, channels // 2, activation="sigmoid", members=members)

    def forward(self, y: torch.Tensor, motion: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
        """y (N, T, V, q) gated per channel by the motion features (N, T, V, 2q); with K members the last axes
        are K·q and K·2q, and the Linears keep each member's channels to itself."""
        gate = self.excite(self.squeeze(motion.mean(dim=(1, 2))))  # (N, K·q)
        return torch.mul(y, gate[:, None, None, :], out=out)
