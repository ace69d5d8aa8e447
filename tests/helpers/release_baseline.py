"""The release's computation in the release's structure, to time it on the machine at hand.

Speed goals are ratios to the release. The release's own figures were measured on another host, so the benchmarks
time this re-implementation beside ours in one process instead: channels-first (N, C, T, V) tensors, Conv2d
layers, permutes around every LayerNorm and Linear, a per-group einsum, two-pass mean and std, and the release's
parameter names (a released state dict loads into it as is). Written from docs/spec-mmn.md; a test checks it against
the reference fixture, so the baseline is the release's numbers, not a strawman.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from mmn.model.layers import DropPath  # the same stochastic depth as the release's


def _to_last(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 2, 3, 1)


def _to_first(x: torch.Tensor) -> torch.Tensor:
    return x.permute(0, 3, 1, 2)


class _MLP(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(c, 2 * c), nn.GELU(), nn.Linear(2 * c, c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class _MSM(nn.Module):
    def __init__(self, c: int, v: int) -> None:
        super().__init__()
        self.adj = nn.Parameter(torch.eye(v))
        self.fc = nn.Linear(c, c)
        self.bn = nn.BatchNorm2d(c)

    def forward(self, m: torch.Tensor) -> torch.Tensor:
        m = torch.einsum("nctw,vw->nctw", m, self.adj)  # per-joint gain by the column sums, as released
        return self.bn(torch.tanh(_to_first(self.fc(_to_last(m)))))


class _Block(nn.Module):
    def __init__(self, c: int, v: int, drop_path: float) -> None:
        super().__init__()
        q = c // 4
        self.norm_1 = nn.LayerNorm(c)
        self.mapping = nn.Linear(c, c)
        self.gconv = nn.Parameter(nn.init.trunc_normal_(torch.empty(4, v, v), std=0.02))
        self.tconv = nn.Conv2d(q, q, (3, 1), padding=(1, 0), groups=4)
        self.Motion = nn.Sequential(nn.Conv2d(2 * q, 2 * q, (3, 1), padding=(1, 0), groups=2 * q, bias=False),
                                    nn.BatchNorm2d(2 * q), nn.GELU())
        self.MSM = _MSM(2 * q, v)
        self.MTM = nn.Sequential(nn.Conv2d(2 * q, 2 * q, (3, 1), padding=(1, 0)), nn.Tanh(), nn.BatchNorm2d(2 * q))
        self.aggregation_gate = nn.Sequential(nn.Conv2d(c, q, 1, bias=False), nn.BatchNorm2d(q), nn.ReLU(),
                                              nn.Conv2d(q, 3, 1, bias=False), nn.Sigmoid())
        self.aggregation = nn.Sequential(nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c), nn.GELU())
        self.proj = nn.Linear(c, c)
        self.norm_2 = nn.LayerNorm(c)
        self.mlp = _MLP(c)
        self.drop_path = DropPath(drop_path)

    @staticmethod
    def _modulate(y: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
        mean = y.mean(dim=(2, 3), keepdim=True)
        std = y.std(dim=(2, 3), keepdim=True)
        return (y - mean) / (std + 1e-6) * (1 + gamma) + beta

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, t, v = x.shape
        q = c // 4
        residual = _to_last(x)
        u = _to_first(self.mapping(self.norm_1(_to_last(x))))
        skeleton, temporal, motion = u[:, :q], u[:, q:2 * q], u[:, 2 * q:]
        g = torch.einsum("nhctu,hvu->nhctv", skeleton.reshape(n, 4, q // 4, t, v), self.gconv).reshape(n, q, t, v)
        p = self.tconv(temporal)
        d = motion[:, :, 1:] - motion[:, :, :-1]
        d = torch.cat([d, d[:, :, -1:]], dim=2)
        m = self.Motion(d)
        gamma_s, beta_s = self.MSM(m).chunk(2, dim=1)
        gamma_t, beta_t = self.MTM(m).chunk(2, dim=1)
        g_hat = self._modulate(g, gamma_s, beta_s)
        p_hat = self._modulate(p, gamma_t, beta_t)
        w = self.aggregation_gate(torch.cat([p_hat, g_hat, m], dim=1))
        f = torch.cat([w[:, 0:1] * p, w[:, 1:2] * g, w[:, 2:3] * m], dim=1)
        f = self.aggregation(f)
        out = residual + self.drop_path(self.proj(_to_last(f)))
        out = out + self.drop_path(self.mlp(self.norm_2(out)))
        return _to_first(out)


class _Stage(nn.Module):
    def __init__(self, c: int, v: int, rates: list[float]) -> None:
        super().__init__()
        self.blocks = nn.Sequential(*(_Block(c, v, r) for r in rates))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class _Down(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.reduction = nn.Conv2d(c, c, (3, 1), stride=(2, 1), padding=(1, 0), padding_mode="replicate")
        self.bn = nn.BatchNorm2d(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.reduction(x))


class _Fusion(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()

        def down(k: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(c, c, (k, 1), stride=(k, 1)), nn.BatchNorm2d(c), nn.ReLU())

        self.down1, self.down2, self.down3 = down(8), down(4), down(2)
        self.f4_proc = nn.Sequential(nn.BatchNorm2d(c), nn.ReLU())
        self.gate_conv = nn.Sequential(nn.Conv2d(4 * c, c, 1), nn.BatchNorm2d(c), nn.ReLU(), nn.Conv2d(c, 4, 1))
        self.dropout = nn.Dropout(0.1)
        self.res_conv = nn.Conv2d(c, c, 1)

    def forward(self, f1: torch.Tensor, f2: torch.Tensor, f3: torch.Tensor, f4: torch.Tensor) -> torch.Tensor:
        f1, f2, f3, f4 = self.down1(f1), self.down2(f2), self.down3(f3), self.f4_proc(f4)
        w = torch.softmax(self.gate_conv(torch.cat([f1, f2, f3, f4], dim=1)), dim=1)
        fused = w[:, 0:1] * f1 + w[:, 1:2] * f2 + w[:, 2:3] * f3 + w[:, 3:4] * f4
        return self.dropout(fused) + self.res_conv(f4)


class ReleaseBaseline(nn.Module):
    """The released MMN (4 scales × 3 blocks, width 96) in the release's structure and names."""

    def __init__(self, num_joints: int = 44, num_classes: int = 52, channels: int = 96) -> None:
        super().__init__()
        self.projection = nn.Sequential(nn.Conv2d(2, 4, 1), nn.GELU(), nn.Conv2d(4, 6, 1), nn.GELU(),
                                        nn.Conv2d(6, channels, 1))
        self.STPE = nn.Parameter(nn.init.trunc_normal_(torch.empty(channels, num_joints), std=0.02))
        rates = torch.linspace(0, 0.3, 12).tolist()
        self.MFM = nn.ModuleList(_Stage(channels, num_joints, rates[3 * i:3 * i + 3]) for i in range(4))
        self.DSs = nn.ModuleList(_Down(channels) for _ in range(3))
        self.fusion = _Fusion(channels)
        self.head_dropout = nn.Dropout(0.1)
        self.head = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor, index_t: torch.Tensor) -> torch.Tensor:
        n, c, t, v, m = x.shape
        x = x.permute(0, 1, 2, 4, 3).reshape(n, c, t, m * v)
        x = self.projection(x)
        k = torch.arange(x.shape[1] // 2, dtype=torch.float32, device=x.device)
        angles = index_t.unsqueeze(-1) * torch.exp(k * (-2 * math.log(10000.0) / x.shape[1]))
        te = torch.stack([angles.sin(), angles.cos()], dim=-1).flatten(-2)  # (N, T, C)
        x = x + te.permute(0, 2, 1).unsqueeze(-1) * self.STPE.unsqueeze(1)
        scales = [x]
        for down in self.DSs:
            scales.append(down(scales[-1]))
        features = [stage(s) for stage, s in zip(self.MFM, scales)]
        fused = self.fusion(*features)
        return self.head(self.head_dropout(fused.mean(dim=(2, 3))))
