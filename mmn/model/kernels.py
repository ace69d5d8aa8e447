"""Linear maps and temporal convolutions on PyTorch's oneDNN kernels, with bias, activation or residual add fused in.

On a CPU, the oneDNN ops apply the bias and a pointwise epilogue while the product is still in cache; the plain
`F.linear` + activation pair instead writes the output, re-reads it for the activation and, for a broadcast bias,
first fills the output with the bias. oneDNN's matrix product is also faster than the BLAS `addmm` that `F.linear`
calls for this network's narrow shapes (about 105 against 75 GFLOP/s for 90112×96 by 96×96 on 2 AVX2 cores).
Elsewhere (CUDA, other dtypes, autocast, builds without oneDNN) the same calls run as plain PyTorch ops.

The oneDNN ops have no autograd formulas: `linear`, `linear_add` and `temporal_conv` are for inference, and
`trainable_linear` wraps the plain product in an autograd function of its own for training.
"""
from __future__ import annotations

from collections.abc import Callable

import torch
from torch.nn import functional as F

ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "none": lambda x: x, "relu": torch.relu, "gelu": F.gelu, "tanh": torch.tanh, "sigmoid": torch.sigmoid,
}


def _has_onednn_ops() -> bool:
    """Whether the oneDNN ops exist and still compute what the plain ops do: they are PyTorch internals (what
    torch.compile emits), so a torch release may change them; then the plain ops run instead."""
    try:
        if not torch.backends.mkldnn.is_available():
            return False
        with torch.no_grad():
            x, w, b = torch.randn(4, 3, 5, 8), torch.randn(6, 8), torch.randn(6)
            linear = torch.ops.mkldnn._linear_pointwise(x.reshape(-1, 8), w, b, "relu", [], "")
            conv_w = torch.randn(8, 1, 3, 1)
            first = x.permute(0, 3, 1, 2)
            conv = torch.ops.mkldnn._convolution_pointwise(first, conv_w, None, [1, 0], [1, 1], [1, 1], 8, "none",
                                                           [], "")
            return (torch.allclose(linear, torch.relu(F.linear(x, w, b)).reshape(-1, 6), atol=1e-5)
                    and torch.allclose(conv, F.conv2d(first, conv_w, padding=(1, 0), groups=8), atol=1e-5))
    except (AttributeError, RuntimeError, TypeError):
        return False


ONEDNN = _has_onednn_ops()  # whether the oneDNN ops run here and agree with the plain ops


def _onednn_applies(x: torch.Tensor) -> bool:
    return (ONEDNN and x.device.type == "cpu" and x.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu"))


def _fused(x: torch.Tensor) -> bool:
    return _onednn_applies(x) and not torch.is_grad_enabled()


def _algorithm(activation: str) -> str:
    return "none" if activation == "gelu" else ""  # "none": the exact (erf) GELU, as F.gelu computes it


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
           activation: str = "none") -> torch.Tensor:
    """activation(x @ weight.T + bias) over the last axis of x."""
    if not _fused(x):
        return ACTIVATIONS[activation](F.linear(x, weight, bias))
    flat = x.reshape(-1, x.shape[-1])
    out = torch.ops.mkldnn._linear_pointwise(flat, weight, bias, activation, [], _algorithm(activation))
    return out.view(*x.shape[:-1], weight.shape[0])


def linear_add(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
               residual: torch.Tensor) -> torch.Tensor:
    """residual + x @ weight.T + bias; residual has the output's shape."""
    if not _fused(x) or not residual.is_contiguous():
        return residual + F.linear(x, weight, bias)
    flat = x.reshape(-1, x.shape[-1])
    out = torch.ops.mkldnn._linear_pointwise.binary(flat, residual.view(-1, weight.shape[0]), weight, bias, "add")
    return out.view(residual.shape)


def temporal_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int, groups: int,
                  activation: str = "none") -> torch.Tensor:
    """A (kernel, 1) convolution with zero padding over the frames of a channels-last (N, T, V, C) tensor.

    (N, T, V, C) viewed as (N, C, T, V) is Conv2d's channels_last format, so neither side needs a layout copy.
    """
    first = x.permute(0, 3, 1, 2)
    if not _fused(x):
        out = ACTIVATIONS[activation](F.conv2d(first, weight, bias, padding=(padding, 0), groups=groups))
    else:
        out = torch.ops.mkldnn._convolution_pointwise(first, weight, bias, [padding, 0], [1, 1], [1, 1], groups,
                                                      activation, [], _algorithm(activation))
    return out.permute(0, 2, 3, 1)


def _onednn_product(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


class _OneDnnLinear(torch.autograd.Function):
    """x @ weight.T + bias for a 2-D x, forward and input gradient on oneDNN; the weight gradient, whose long
    reduction over every position the BLAS product handles as fast, stays on `mm`."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.has_bias = bias is not None
        return _onednn_product(x, weight, bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x, weight = ctx.saved_tensors
        grad = grad.contiguous()
        grad_x = _onednn_product(grad, weight.t().contiguous(), None) if ctx.needs_input_grad[0] else None
        grad_weight = grad.t().mm(x) if ctx.needs_input_grad[1] else None
        grad_bias = grad.sum(0) if ctx.has_bias and ctx.needs_input_grad[2] else None
        return grad_x, grad_weight, grad_bias


def trainable_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """F.linear(x, weight, bias), differentiable, on oneDNN where it applies."""
    if not _onednn_applies(x) or weight.dtype != torch.float32:
        return F.linear(x, weight, bias)
    flat = x.reshape(-1, x.shape[-1]).contiguous()
    return _OneDnnLinear.apply(flat, weight, bias).view(*x.shape[:-1], weight.shape[0])
