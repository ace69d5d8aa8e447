"""`fuse_for_inference`: an eval-only copy of an MMN that computes the same logits with fewer passes over memory.

In eval mode a BatchNorm is a fixed per-channel affine map. Each one that follows a linear map is folded into that
map's weight and bias: the pyramid's and the fusion's convs, the motion branch's depthwise conv, the gate's
reduction, the merge, the fusion gate's first layer. The BatchNorm after MSM's and MTM's tanh becomes part of the
modulation arithmetic. The blocks then run on fused kernels (`kernels`): bias, activation and residual add inside
the matrix product, branch outputs written straight into the gate's and the merge's inputs instead of concatenated.

Folding copies the weights as they are now, in milliseconds: fold again before each evaluation so that trained
weights are used. The copy refuses train mode and has nothing for an optimizer to train.
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn import functional as F

from . import kernels
from .block import MotionGuidedBlock, mix_joints
from .layers import centre
from .network import MMN


def _affine(norm: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """Eval-mode BatchNorm as y = x·scale + shift, in float64 so that folding adds no rounding of its own."""
    if norm.running_var is None or norm.running_mean is None:
        raise ValueError("cannot fold a BatchNorm without running statistics (track_running_stats=False)")
    scale = torch.rsqrt(norm.running_var.double() + norm.eps)
    shift = -norm.running_mean.double() * scale
    if norm.weight is not None:
        scale, shift = scale * norm.weight.double(), shift * norm.weight.double() + norm.bias.double()
    return scale, shift


def fold_batch_norm(weight: torch.Tensor, bias: torch.Tensor | None,
                    norm: nn.modules.batchnorm._BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of norm(linear map(x)) for a Linear or conv weight whose first axis is the output channel."""
    scale, shift = _affine(norm)
    folded = weight.double() * scale.view(-1, *(1,) * (weight.ndim - 1))
    new_bias = shift if bias is None else bias.double() * scale + shift
    return folded.to(weight.dtype), new_bias.to(weight.dtype)


def _fold_into(layer: nn.Conv2d | nn.Linear, norm: nn.modules.batchnorm._BatchNorm) -> None:
    """In place: layer becomes layer followed by norm."""
    weight, bias = fold_batch_norm(layer.weight, layer.bias, norm)
    layer.weight = nn.Parameter(weight, requires_grad=False)
    layer.bias = nn.Parameter(bias, requires_grad=False)


class FusedModulation(nn.Module):
    """MSM or MTM with its BatchNorm folded: modulate(y) = standardise(y)·(1 + γ) + β from the motion features.

    tanh(z) = 2·sigmoid(2z) − 1, and a fused sigmoid costs half a fused tanh here, so the guidance map's weights are
    doubled and the tanh is a sigmoid s. BatchNorm then makes γ = a·(2s − 1) + c = 2a·s + (c − a) on the first
    half of the channels and β likewise on the second: 1 + γ and β are one fused multiply-add each.
    """

    def __init__(self, module: nn.Module, kind: str) -> None:
        super().__init__()
        self.kind = kind  # "temporal" (MTM), or the MSM mode "released" / "graph"
        guidance = module.conv if kind == "temporal" else module.fc
        self.register_buffer("weight", 2 * guidance.weight.detach())
        self.register_buffer("bias", 2 * guidance.bias.detach())
        if kind != "temporal":
            adjacency = module.adjacency.detach()
            # released: joint w is scaled by Σ_v adj[v, w]; graph: joints are mixed by adj
            mixing = adjacency.sum(0).unsqueeze(-1) if kind == "released" else adjacency.clone()
            self.register_buffer("adjacency", mixing)
        scale, shift = _affine(module.norm)
        scale, shift = (2 * scale).to(guidance.weight.dtype), (shift - scale).to(guidance.weight.dtype)
        half = scale.shape[0] // 2
        self.register_buffer("gain_scale", scale[:half].clone())
        self.register_buffer("gain_shift", 1.0 + shift[:half])
        self.register_buffer("beta_scale", scale[half:].clone())
        self.register_buffer("beta_shift", shift[half:].clone())

    def guidance(self, motion: torch.Tensor) -> torch.Tensor:
        """sigmoid(2z) for MTM's conv or MSM's fc output z."""
        if self.kind == "temporal":
            return kernels.temporal_conv(motion, self.weight, self.bias, self.weight.shape[2] // 2, 1, "sigmoid")
        if self.kind == "released":
            guided = motion * self.adjacency
        else:
            guided = torch.einsum("ntwc,vw->ntvc", motion, self.adjacency)
        return kernels.linear(guided, self.weight, self.bias, "sigmoid")

    def forward(self, y: torch.Tensor, motion: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """Writes the modulated y (N, T, V, q) into out, a tensor or a channel slice of one, and returns out."""
        h = self.guidance(motion)
        half = h.shape[-1] // 2
        centred, std = centre(y)
        inv = (std + 1e-6).reciprocal().unsqueeze(1)  # (N, 1, 1, q), per sample and channel
        # (y − mean)/(std + eps)·(1 + γ) + β with 1 + γ = a·h + 1 + c: the 1/(std + eps) goes into a and 1 + c.
        gain = torch.addcmul(self.gain_shift * inv, h[..., :half], self.gain_scale * inv)
        beta = torch.addcmul(self.beta_shift, h[..., half:], self.beta_scale)
        return torch.addcmul(beta, centred.view_as(y), gain, out=out)


class FusedBlock(nn.Module):
    """A `MotionGuidedBlock` in eval mode, folded; drop-path is the identity there and is left out."""

    def __init__(self, block: MotionGuidedBlock) -> None:
        super().__init__()
        config = block.config
        q = self.quarter = block.quarter
        self.norm_eps = (block.norm1.eps, block.norm2.eps)
        # LayerNorm keeps its weight and bias: folded into the next Linear, it runs PyTorch's slower no-affine path.
        self._keep("norm1", block.norm1.weight, block.norm1.bias)
        self._keep("norm2", block.norm2.weight, block.norm2.bias)
        self.modulated_fusion = config.modulated_fusion
        self.temporal_branch, self.skeleton_branch = config.temporal_branch, config.skeleton_branch
        self.motion_branch = config.motion_branch

        self._keep("mapping", block.mapping.weight, block.mapping.bias)
        if config.temporal_branch:
            self._keep("temporal", block.temporal_conv.weight, block.temporal_conv.bias)
            self.temporal_groups = block.temporal_conv.groups
        if config.skeleton_branch:
            self.register_buffer("joint_mixing", block.joint_mixing.detach().clone())
        self.has_motion = block.motion is not None
        if self.has_motion:
            self._keep("motion", *fold_batch_norm(block.motion.conv.weight, None, block.motion.norm))
        self.mtm = FusedModulation(block.mtm, "temporal") if block.mtm is not None else None
        self.msm = FusedModulation(block.msm, block.msm.mode) if block.msm is not None else None
        # Channel slices of the gate's input, in the release's branch order: temporal, skeleton, motion.
        widths = [w for w, on in ((q, config.temporal_branch), (q, config.skeleton_branch),
                                  (2 * q, config.motion_branch)) if on]
        self.slices = [slice(sum(widths[:i]), sum(widths[:i + 1])) for i in range(len(widths))]
        self.merged = sum(widths)
        self._keep("reduce", *fold_batch_norm(block.gate.reduce.weight, None, block.gate.norm))
        self._keep("expand", block.gate.expand.weight)
        self._keep("merge", *fold_batch_norm(block.merge.weight, None, block.merge_norm))
        self._keep("proj", block.proj.weight, block.proj.bias)
        self._keep("fc1", block.mlp.fc1.weight, block.mlp.fc1.bias)
        self._keep("fc2", block.mlp.fc2.weight, block.mlp.fc2.bias)

    def _keep(self, name: str, weight: torch.Tensor, bias: torch.Tensor | None = None) -> None:
        """Copies of a weight and bias as buffers `<name>_weight`, `<name>_bias` (None: no bias)."""
        self.register_buffer(f"{name}_weight", weight.detach().clone())
        self.register_buffer(f"{name}_bias", None if bias is None else bias.detach().clone())

    def motion_features(self, u: torch.Tensor) -> torch.Tensor:
        """Frame differences (last one repeated) written once, then the depthwise conv, folded BatchNorm and GELU."""
        diff = torch.empty(u.shape, dtype=u.dtype, device=u.device)
        torch.sub(u[:, 1:], u[:, :-1], out=diff[:, :-1])
        diff[:, -1] = diff[:, -2]
        return kernels.temporal_conv(diff, self.motion_weight, self.motion_bias, 1, diff.shape[-1], "gelu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, t, v, c = x.shape
        q = self.quarter
        normed = F.layer_norm(x, (c,), self.norm1_weight, self.norm1_bias, self.norm_eps[0])
        u = kernels.linear(normed, self.mapping_weight, self.mapping_bias)
        motion = self.motion_features(u[..., 2 * q:]) if self.has_motion else None

        gate_in = x.new_empty(n, t, v, self.merged)  # the gate sees modulated outputs where modulation is on
        raw = []  # what the gate weights multiply in the release: the unmodulated outputs
        slices = iter(self.slices)
        branches = []  # (unmodulated output, its modulation or None), in the release's order
        if self.temporal_branch:
            branches.append((kernels.temporal_conv(u[..., q:2 * q], self.temporal_weight, self.temporal_bias,
                                                   self.temporal_weight.shape[2] // 2, self.temporal_groups), self.mtm))
        if self.skeleton_branch:
            branches.append((mix_joints(u[..., :q], self.joint_mixing), self.msm))
        for output, modulation in branches:
            out = gate_in[..., next(slices)]
            if modulation is not None:
                modulation(output, motion, out)
            else:
                out.copy_(output)
            raw.append(output)
        if self.motion_branch:
            gate_in[..., next(slices)] = motion
            raw.append(motion)

        weights = kernels.linear(kernels.linear(gate_in, self.reduce_weight, self.reduce_bias, "relu"),
                                 self.expand_weight, None, "sigmoid")
        merge_in = torch.empty_like(gate_in)
        for i, (part, unmodulated) in enumerate(zip(self.slices, raw)):
            chosen = gate_in[..., part] if self.modulated_fusion else unmodulated
            torch.mul(weights[..., i:i + 1], chosen, out=merge_in[..., part])
        merged = kernels.linear(merge_in, self.merge_weight, self.merge_bias, "gelu")

        x = kernels.linear_add(merged, self.proj_weight, self.proj_bias, x)
        normed = F.layer_norm(x, (c,), self.norm2_weight, self.norm2_bias, self.norm_eps[1])
        hidden = kernels.linear(normed, self.fc1_weight, self.fc1_bias, "gelu")
        return kernels.linear_add(hidden, self.fc2_weight, self.fc2_bias, x)


class InferenceMMN(nn.Module):
    """What `fuse_for_inference` returns: the folded model's eval-mode logits, and only those."""

    def __init__(self, network: MMN) -> None:
        super().__init__()
        self.network = network
        self.config = network.config
        super().train(False)

    def train(self, mode: bool = True) -> "InferenceMMN":
        if mode:
            raise RuntimeError("this model was folded by fuse_for_inference for evaluation only; train the model it "
                               "was built from and call fuse_for_inference again to evaluate the new weights")
        return super().train(False)

    def forward(self, x: torch.Tensor, index_t: torch.Tensor) -> torch.Tensor:
        return self.network(x, index_t)


@torch.no_grad()
def fuse_for_inference(model: MMN) -> InferenceMMN:
    """An eval-only copy of `model` with its current weights folded; `model` itself is left untouched."""
    if isinstance(model, InferenceMMN):
        return model
    # Seeding deepcopy's memo puts each block's folded form in the copy without copying the block first.
    fused_blocks = {id(block): FusedBlock(block) for stage in model.stages.values() for block in stage}
    network = copy.deepcopy(model, memo=fused_blocks).eval()
    for downsample in network.downsamplers:
        _fold_into(downsample.conv, downsample.norm)
        downsample.norm = nn.Identity()
    for level in network.fusion.downsample:
        _fold_into(level["conv"], level["norm"])
        level["norm"] = nn.Identity()
    if network.config.fusion == "gated":
        _fold_into(network.fusion.gate[0], network.fusion.gate[1])
        network.fusion.gate[1] = nn.Identity()
    network.requires_grad_(False)
    return InferenceMMN(network)
