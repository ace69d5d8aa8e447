"""The benchmarks' yardstick, `tests/helpers/release_baseline.py`, computes the release's numbers; and with the same
weights our model's training gradients equal the ones plain autograd gives through the release's structure: the
hand-written modulation and frame-difference backwards checked end to end (in float64 the linear maps run as plain
F.linear; their oneDNN float32 path is checked against it in test_kernels.py)."""
from __future__ import annotations


import pytest
import torch

from mmn.model import from_released
from mmn.model.layers import DropPath
from mmn.model.released import released_to_ours
from tests.helpers.release_baseline import ReleaseBaseline

pytestmark = pytest.mark.usefixtures("one_thread")


def _baseline(reference: dict, dropout: bool = True) -> ReleaseBaseline:
    baseline = ReleaseBaseline()
    baseline.load_state_dict(reference["state_dict"])  # strict: the release's own names
    if not dropout:
        for module in baseline.modules():
            if isinstance(module, torch.nn.Dropout):
                module.p = 0.0
            elif isinstance(module, DropPath):
                module.rate = 0.0
    return baseline


def test_baseline_reproduces_the_release(reference: dict) -> None:
    with torch.no_grad():
        eval_logits = _baseline(reference).eval()(reference["x"], reference["index_t"])
        train_logits = _baseline(reference, dropout=False).train()(reference["x"], reference["index_t"])
    torch.testing.assert_close(eval_logits, reference["logits_eval"], atol=1e-4, rtol=0)
    torch.testing.assert_close(train_logits, reference["logits_train"], atol=1e-4, rtol=0)


@pytest.mark.slow
def test_training_gradients_equal_the_release_structure(reference: dict) -> None:
    # In float64: float32 gradients of the tensors that get little of the loss's signal differ by a few percent
    # between any two orders of summation, which would hide a wrong backward rather than find one.
    baseline = _baseline(reference, dropout=False).double().train()
    ours = from_released(reference["state_dict"], drop_path=0.0, fusion_dropout=0.0,
                         head_dropout=0.0).double().train()
    x, index_t, labels = reference["x"].double(), reference["index_t"].double(), torch.tensor([3, 17, 51])
    for model in (baseline, ours):
        torch.nn.functional.cross_entropy(model(x, index_t), labels, label_smoothing=0.1).backward()

    ours_grads = {name: p.grad for name, p in ours.named_parameters()}
    largest = max(p.grad.abs().max().item() for p in baseline.parameters())
    compared = 0
    for name, parameter in baseline.named_parameters():
        got = ours_grads[released_to_ours(name)]
        expected = parameter.grad.reshape(got.shape)
        # Relative to the tensor's largest gradient, or to a floor where it is zero but for rounding (a bias that
        # a BatchNorm follows).
        scale = max(expected.abs().max().item(), 1e-3 * largest)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5 * scale, msg=lambda m, name=name: f"{name}: {m}")
        compared += 1
    assert compared == len(ours_grads)
