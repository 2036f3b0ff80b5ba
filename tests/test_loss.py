"""The fused, chunked output layer + cross-entropy equals the plain one, loss and gradients."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from pycpilot.train.loss import ChunkedLinearCrossEntropy, chunked_loss


@pytest.mark.parametrize("chunk", [1, 7, 64, 1000])
def test_matches_plain_cross_entropy(chunk: int) -> None:
    torch.manual_seed(0)
    hidden = torch.randn(50, 16, requires_grad=True)
    weight = torch.randn(300, 16, requires_grad=True)
    targets = torch.randint(0, 300, (50,))
    expected = F.cross_entropy(hidden @ weight.t(), targets)
    expected.backward()
    gh, gw = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    got = ChunkedLinearCrossEntropy.apply(hidden, weight, targets, chunk)
    (got * 3).backward()  # a scaled upstream gradient must scale both gradients
    assert got.item() == pytest.approx(expected.item(), rel=1e-5)
    assert torch.allclose(hidden.grad, 3 * gh, atol=1e-5) and torch.allclose(weight.grad, 3 * gw, atol=1e-5)
    with torch.no_grad():
        assert chunked_loss(hidden, weight, targets, chunk).item() == pytest.approx(expected.item(), rel=1e-5)
