"""Linear maps and temporal convolutions on PyTorch's oneDNN kernels, with bias, activation or residual add fused in.

On a CPU, the oneDNN ops apply the bias and a pointwise epilogue while the product is still in cache; the plain
`F.linear` + activation pair instead writes the output, re-reads it for the activation and, for a broadcast bias,
first fills the output with the bias. oneDNN's matrix product also outruns the BLAS `addmm` that `F.linear` calls
for this network's narrow shapes. Elsewhere (CUDA, other dtypes, autocast, builds without oneDNN) the same calls run
as plain PyTorch ops.

The fused oneDNN ops have no autograd formulas, so they run only with autograd off. With it on, the product runs
through `_OneDnnLinear`, an autograd function of its own, and the activation and residual add as plain ops.

A fused model of K members (trial packs, `mmn.pack`) holds member k's channels at [k·C, (k+1)·C) of the last axis.
Its convolutions are grouped convolutions, and its linear maps per-member products: `grouped_linear`, whose
implementation `GROUPED_LINEAR` selects.
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
            conv = torch.ops.mkldnn._convolution_pointwise(first, conv_w, None, [1, 0], [2, 1], [1, 1], 8, "none",
                                                           [], "")
            return (torch.allclose(linear, torch.relu(F.linear(x, w, b)).reshape(-1, 6), atol=1e-5)
                    and torch.allclose(conv, F.conv2d(first, conv_w, stride=(2, 1), padding=(1, 0), groups=8),
                                       atol=1e-5))
    except (AttributeError, RuntimeError, TypeError):
        return False


ONEDNN = _has_onednn_ops()  # whether the oneDNN ops run here and agree with the plain ops


def autocast_on(x: torch.Tensor) -> bool:
    """Whether autocast is on for x's device; devices without autocast (meta, for one) never have it."""
    return x.device.type in ("cpu", "cuda") and torch.is_autocast_enabled(x.device.type)


def _onednn_applies(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return (ONEDNN and x.device.type == "cpu" and x.dtype == weight.dtype == torch.float32
            and not autocast_on(x))


def _fused(x: torch.Tensor, weight: torch.Tensor) -> bool:
    return _onednn_applies(x, weight) and not torch.is_grad_enabled()


def _algorithm(activation: str) -> str:
    return "none" if activation == "gelu" else ""  # "none": the exact (erf) GELU, as F.gelu computes it


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
    if not _onednn_applies(x, weight):
        return F.linear(x, weight, bias)
    flat = x.reshape(-1, x.shape[-1]).contiguous()
    return _OneDnnLinear.apply(flat, weight, bias).view(*x.shape[:-1], weight.shape[0])


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, activation: str = "none",
           residual: torch.Tensor | None = None) -> torch.Tensor:
    """residual + activation(x @ weight.T + bias) over the last axis of x; residual has the output's shape."""
    if _fused(x, weight) and (residual is None or (activation == "none" and residual.is_contiguous())):
        flat = x.reshape(-1, x.shape[-1])
        if residual is None:
            out = torch.ops.mkldnn._linear_pointwise(flat, weight, bias, activation, [], _algorithm(activation))
        else:
            out = torch.ops.mkldnn._linear_pointwise.binary(flat, residual.view(-1, weight.shape[0]), weight, bias,
                                                            "add")
        return out.view(*x.shape[:-1], weight.shape[0])
    out = ACTIVATIONS[activation](trainable_linear(x, weight, bias))
    return out if residual is None else residual + out


def temporal_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int, stride: int = 1,
                  groups: int = 1, activation: str = "none") -> torch.Tensor:
    """activation of a (kernel, 1) convolution with zero padding over the frames of a channels-last (N, T, V, C) x.

    (N, T, V, C) viewed as (N, C, T, V) is Conv2d's channels_last format, so neither side needs a layout copy.
    """
    first = x.permute(0, 3, 1, 2)
    if _fused(x, weight):
        out = torch.ops.mkldnn._convolution_pointwise(first, weight, bias, [padding, 0], [stride, 1], [1, 1], groups,
                                                      activation, [], _algorithm(activation))
    else:
        out = ACTIVATIONS[activation](F.conv2d(first, weight, bias, stride=(stride, 1), padding=(padding, 0),
                                               groups=groups))
    return out.permute(0, 2, 3, 1)


def _grouped_bmm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, members: int) -> torch.Tensor:
    rows = x.reshape(-1, members, x.shape[-1] // members).transpose(0, 1)  # (K, rows, in)
    weights = weight.view(members, -1, weight.shape[-1]).transpose(1, 2)  # (K, in, out)
    out = torch.bmm(rows, weights) if bias is None else torch.baddbmm(bias.view(members, 1, -1), rows, weights)
    return out.transpose(0, 1).reshape(*x.shape[:-1], weight.shape[0])


def _into_channels(rows: torch.Tensor, weights: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """rows (K, R, in) @ weights (K, in, out) (+ bias (K, out)) written straight into an (R, K·out) tensor, member k's
    product in its channels [k·out, (k+1)·out): the batched product's output is that tensor's transposed view, so no
    copy between the batched and the channel layouts follows."""
    members, count, width = rows.shape[0], rows.shape[1], weights.shape[-1]
    out = torch.empty(count, members, width, dtype=rows.dtype, device=rows.device)
    batched = out.transpose(0, 1)
    if bias is None:
        torch.bmm(rows, weights, out=batched)
    else:
        batched.copy_(bias.view(members, 1, width).expand_as(batched)).baddbmm_(rows, weights)
    return out.view(count, members * width)


class _MemberProducts(torch.autograd.Function):
    """Each member's linear map as `_grouped_bmm` computes it, but with its products written into the members'
    channel layout (`_into_channels`), forward and input gradient, where `_grouped_bmm` and its autograd copy each
    output between layouts (15% of a pack-of-8 step on an H200, docs/performance.md). `per_member`: each member's
    weight gradient with an `mm` of its own instead of one batched product: that gradient is a (out × rows)(rows ×
    in) product with a long reduction over the rows, which, batched, cuBLAS ran in a small-tile kernel (42% of the
    same step), while for one `mm`, as in the solo step, it picks its kernel for one long product; K launches
    instead of one. Neither is measured on a GPU yet (benchmarks/gpu_pack_check.sh times both beside `bmm`).

    Under autocast the products run in its dtype, as autocast runs `bmm`; each gradient is returned in its input's
    dtype."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, members: int,
                per_member: bool) -> torch.Tensor:
        dtype = torch.get_autocast_dtype(x.device.type) if autocast_on(x) else x.dtype
        x_rows = x.reshape(-1, x.shape[-1]).to(dtype)  # (R, K·in)
        weights = weight.to(dtype).view(members, -1, weight.shape[-1]).transpose(1, 2)  # (K, in, out)
        out = _into_channels(_by_member(x_rows, members), weights, None if bias is None else bias.to(dtype))
        ctx.save_for_backward(x_rows, weight)
        ctx.members, ctx.per_member, ctx.has_bias, ctx.x_shape, ctx.x_dtype = (members, per_member, bias is not None,
                                                                               x.shape, x.dtype)
        return out.view(*x.shape[:-1], weight.shape[0])

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        x_rows, weight = ctx.saved_tensors
        members, dtype = ctx.members, x_rows.dtype
        grad_rows = grad.reshape(-1, weight.shape[0]).to(dtype)  # (R, K·out)
        grad_members = _by_member(grad_rows, members)  # (K, R, out)
        grad_x = grad_weight = grad_bias = None
        if ctx.needs_input_grad[0]:
            weights = weight.to(dtype).view(members, -1, weight.shape[-1])  # (K, out, in)
            grad_x = _into_channels(grad_members, weights, None).view(ctx.x_shape).to(ctx.x_dtype)
        if ctx.needs_input_grad[1]:
            if ctx.per_member:
                grad_weight = torch.cat([g.t().mm(part) for g, part in zip(grad_rows.chunk(members, dim=1),
                                                                            x_rows.chunk(members, dim=1))])
            else:
                grad_weight = torch.bmm(grad_members.transpose(1, 2), _by_member(x_rows, members)).flatten(0, 1)
            grad_weight = grad_weight.to(weight.dtype)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_rows.sum(0).to(weight.dtype)
        return grad_x, grad_weight, grad_bias, None, None


def _by_member(rows: torch.Tensor, members: int) -> torch.Tensor:
    """(R, K·C) rows as (K, R, C), a view: member k's channels as the k-th matrix."""
    return rows.unflatten(1, (members, -1)).transpose(0, 1)


def _grouped_bmm_out(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, members: int) -> torch.Tensor:
    return _MemberProducts.apply(x, weight, bias, members, False)


def _grouped_bmm_mm(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, members: int) -> torch.Tensor:
    return _MemberProducts.apply(x, weight, bias, members, True)


def _grouped_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, members: int) -> torch.Tensor:
    # (rows, K·in) viewed as (1, K·in, rows, 1), channels_last as the temporal convs: a 1×1 conv with K groups.
    first = x.reshape(-1, x.shape[-1]).t()[None, :, :, None]
    out = F.conv2d(first, weight[:, :, None, None], bias, groups=members)
    return out[0, :, :, 0].t().reshape(*x.shape[:-1], weight.shape[0])


def _grouped_einsum(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, members: int) -> torch.Tensor:
    rows = x.reshape(-1, members, x.shape[-1] // members)
    out = torch.einsum("rki,koi->rko", rows, weight.view(members, -1, weight.shape[-1])).flatten(1)
    return (out if bias is None else out + bias).view(*x.shape[:-1], weight.shape[0])


def _grouped_loop(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, members: int) -> torch.Tensor:
    # One product per member, each on the solo model's kernel (oneDNN on a CPU): K launches, no batched product.
    biases = bias.chunk(members) if bias is not None else [None] * members
    return torch.cat([trainable_linear(part, w, b)
                      for part, w, b in zip(x.chunk(members, dim=-1), weight.chunk(members), biases)], dim=-1)


GROUPED_LINEARS: dict[str, Callable[..., torch.Tensor]] = {
    "bmm": _grouped_bmm, "bmm_out": _grouped_bmm_out, "bmm_mm": _grouped_bmm_mm, "conv": _grouped_conv,
    "einsum": _grouped_einsum, "loop": _grouped_loop,
}
# Which of GROUPED_LINEARS grouped_linear runs. On a 2-core CPU (docs/performance.md) bmm and einsum tie, loop
# trails them and conv runs at about half their speed.
GROUPED_LINEAR = "bmm"


def grouped_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, members: int) -> torch.Tensor:
    """Each member's own linear map: x (..., K·in) holds member k's inputs at [k·in, (k+1)·in), weight (K·out, in)
    and bias (K·out) the members' weights stacked; the output (..., K·out) holds member k's at [k·out, (k+1)·out)."""
    if GROUPED_LINEAR not in GROUPED_LINEARS:
        raise ValueError(f"kernels.GROUPED_LINEAR={GROUPED_LINEAR!r} is not one of {', '.join(GROUPED_LINEARS)}")
    return GROUPED_LINEARS[GROUPED_LINEAR](x, weight, bias, members)
