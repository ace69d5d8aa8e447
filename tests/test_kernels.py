"""Hand-written paths (`mmn.model.kernels`, `mmn.model.modulation`, the block's frame difference and residual
drop-path, replicate-padded temporal convs) give what the plain PyTorch ops give: values and gradients in training,
values in the fused oneDNN kernels that run with autograd off."""
from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from mmn.model import kernels
from mmn.model.block import frame_difference
from mmn.model.layers import Concat, DropPath, Linear, TemporalConv
from mmn.model.modulation import modulate, standardise

needs_onednn = pytest.mark.skipif(not kernels.ONEDNN, reason="this PyTorch build has no usable oneDNN ops")


def _values_and_grads(fn, *tensors: torch.Tensor) -> list[torch.Tensor]:
    leaves = [t.detach().clone().requires_grad_(t.requires_grad) for t in tensors]
    out = fn(*leaves)
    out.backward(torch.linspace(-1, 1, out.numel()).view_as(out))
    return [out.detach()] + [leaf.grad for leaf in leaves if leaf.requires_grad]


@needs_onednn
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("input_grad", [True, False])
def test_trainable_linear_matches_f_linear(with_bias: bool, input_grad: bool) -> None:
    generator = torch.Generator().manual_seed(0)
    # A channels-last activation sliced on its channels, as the block feeds its branches: not contiguous.
    x = torch.randn(3, 5, 7, 40, generator=generator)[..., 8:32].requires_grad_(input_grad)
    weight = torch.randn(12, 24, generator=generator).requires_grad_()
    bias = torch.randn(12, generator=generator).requires_grad_() if with_bias else None
    tensors = [t for t in (x, weight, bias) if t is not None]

    def ours(x, weight, bias=None):
        return kernels.trainable_linear(x, weight, bias)

    expected = _values_and_grads(F.linear, *tensors)
    got = _values_and_grads(ours, *tensors)
    assert len(got) == len(expected) == 1 + sum(t.requires_grad for t in tensors)
    for g, e in zip(got, expected):
        assert g.shape == e.shape
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-5)


@needs_onednn
def test_trainable_linear_runs_on_onednn_only_where_it_applies() -> None:
    x, weight = torch.randn(4, 8), torch.randn(3, 8, requires_grad=True)

    def product_node(out: torch.Tensor) -> str:
        node = out.grad_fn
        while node.name() == "ViewBackward0":  # the reshape back to the input's leading axes
            node = node.next_functions[0][0]
        return node.name()

    assert product_node(kernels.trainable_linear(x, weight, None)) == "_OneDnnLinearBackward"
    assert product_node(kernels.trainable_linear(x.double(), weight.double(), None)) == "MmBackward0"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert kernels.trainable_linear(x, weight, None).dtype == torch.bfloat16


def test_modulation_gradients_are_exact() -> None:
    generator = torch.Generator().manual_seed(0)
    y = torch.randn(3, 5, 4, 6, dtype=torch.float64, generator=generator, requires_grad=True)
    gamma_beta = torch.randn(3, 5, 4, 12, dtype=torch.float64, generator=generator, requires_grad=True)
    assert torch.autograd.gradcheck(modulate, (y, gamma_beta))


def test_modulation_matches_the_composed_ops() -> None:
    generator = torch.Generator().manual_seed(0)
    y = 3 * torch.randn(4, 8, 6, 10, generator=generator) + 1
    gamma_beta = torch.randn(4, 8, 6, 20, generator=generator)

    def composed(y, gamma_beta):
        return standardise(y) * (1 + gamma_beta[..., :10]) + gamma_beta[..., 10:]

    expected = _values_and_grads(composed, y.requires_grad_(), gamma_beta.requires_grad_())
    got = _values_and_grads(modulate, y, gamma_beta)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-4, atol=1e-5)


def test_frame_difference_gradients_are_exact() -> None:
    x = torch.randn(2, 6, 3, 8, dtype=torch.float64, generator=torch.Generator().manual_seed(0), requires_grad=True)
    # A channel slice, as the block passes its motion channels.
    assert torch.autograd.gradcheck(lambda x: frame_difference(x[..., 4:]), (x,))
    diff = x[:, 1:] - x[:, :-1]
    torch.testing.assert_close(frame_difference(x), torch.cat((diff, diff[:, -1:]), dim=1), rtol=0, atol=0)


@pytest.mark.parametrize(("kernel", "stride", "padding", "frames", "groups"),
                         [(3, 2, 1, 64, 1), (3, 2, 1, 7, 1), (3, 1, 1, 9, 2), (5, 3, 2, 11, 2), (3, 2, 1, 1, 1)])
def test_replicate_padded_temporal_conv_matches_conv2d(kernel: int, stride: int, padding: int, frames: int,
                                                       groups: int) -> None:
    """The pyramid's downsamplers on channels-last tensors: the release's Conv2d(padding_mode="replicate")."""
    torch.manual_seed(0)
    ours = TemporalConv(8, 8, kernel, stride=stride, padding=padding, groups=groups,
                        padding_mode="replicate").double()
    reference = torch.nn.Conv2d(8, 8, (kernel, 1), stride=(stride, 1), padding=(padding, 0), groups=groups,
                                padding_mode="replicate").double()
    reference.load_state_dict(ours.state_dict())
    x = torch.randn(3, frames, 5, 8, dtype=torch.float64)
    expected = _values_and_grads(lambda x: reference(x.permute(0, 3, 1, 2)).permute(0, 2, 3, 1),
                                 x.requires_grad_())
    got = _values_and_grads(ours, x)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, rtol=1e-12, atol=1e-12)


@needs_onednn
@pytest.mark.parametrize("activation", ["none", "relu", "gelu", "tanh", "sigmoid"])
@pytest.mark.parametrize("with_residual", [False, True])
def test_fused_linear_matches_the_plain_ops(activation: str, with_residual: bool) -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 7, 40, generator=generator)[..., 8:32]  # a channel slice, as the block's branches get
    weight, bias = torch.randn(12, 24, generator=generator), torch.randn(12, generator=generator)
    residual = torch.randn(3, 5, 7, 12, generator=generator) if with_residual else None
    expected = kernels.ACTIVATIONS[activation](F.linear(x, weight, bias))
    if with_residual:
        expected = residual + expected
    with torch.inference_mode():
        got = kernels.linear(x, weight, bias, activation, residual)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


@needs_onednn
@pytest.mark.parametrize(("stride", "groups", "activation"), [(1, 1, "none"), (1, 8, "gelu"), (1, 1, "tanh"),
                                                              (2, 1, "relu"), (4, 2, "sigmoid")])
def test_fused_temporal_conv_matches_conv2d(stride: int, groups: int, activation: str) -> None:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(3, 16, 5, 8, generator=generator)
    weight, bias = torch.randn(8, 8 // groups, 3, 1, generator=generator), torch.randn(8, generator=generator)
    expected = kernels.ACTIVATIONS[activation](
        F.conv2d(x.permute(0, 3, 1, 2), weight, bias, stride=(stride, 1), padding=(1, 0), groups=groups))
    with torch.inference_mode():
        got = kernels.temporal_conv(x, weight, bias, 1, stride, groups, activation)
    torch.testing.assert_close(got, expected.permute(0, 2, 3, 1), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("training", [True, False])
def test_residual_drop_path_equals_adding_the_dropped_branch(training: bool) -> None:
    drop = DropPath(0.4).train(training)
    layer = Linear(5, 5)
    residual, x = torch.randn(64, 3, 5), torch.randn(64, 3, 5)
    with torch.no_grad():
        torch.manual_seed(7)
        expected = residual + drop(layer(x))
        torch.manual_seed(7)
        got = drop.add_to(residual, layer, x)
    torch.testing.assert_close(got, expected)
    kept = (got - residual).flatten(1).abs().sum(1) > 0
    assert 0 < int(kept.sum()) < 64 if training else bool(kept.all())


@pytest.mark.parametrize("grad", [True, False])
def test_concat_lays_parts_out_as_cat(grad: bool) -> None:
    like = torch.randn(2, 3, 4, 10)
    parts = [torch.randn(2, 3, 4, 2), torch.randn(2, 3, 4, 3), torch.randn(2, 3, 4, 5)]
    with torch.set_grad_enabled(grad):
        concat = Concat(like, [2, 3, 5])
        assert all(slot is None for slot in concat.slots) is grad  # out= has no gradient: cat instead
        written = torch.mul(parts[1], 2.0, out=concat.slots[1])  # a producer writing straight into its slot
        got = concat.join([parts[0], written, parts[2]])
    torch.testing.assert_close(got, torch.cat([parts[0], 2 * parts[1], parts[2]], dim=-1), rtol=0, atol=0)
