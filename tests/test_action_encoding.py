"""Action encodings: two-hot is lossless and follows the DreamerV3 formula; ablation encoders' shapes."""

import pytest
import torch

from w4rl_core.models.action_encoding import (
    LinearEncoder,
    OneHotEncoder,
    TwoHotEncoder,
    make_action_encoder,
)

LOW, HIGH = [-1.0, -1.0, 0.0, -2.0], [1.0, 1.0, 5.0, 2.0]


def test_two_hot_round_trip_over_random_actions():
    enc = TwoHotEncoder(LOW, HIGH, bins=21)
    g = torch.Generator().manual_seed(0)
    low, high = torch.tensor(LOW), torch.tensor(HIGH)
    a = low + (high - low) * torch.rand(10_000, 4, generator=g)
    e = enc.encode(a)
    assert e.shape == (10_000, 4 * 21)
    assert (enc.decode(e) - a).abs().max() < 1e-5
    per_dim = e.reshape(-1, 4, 21)
    assert torch.allclose(per_dim.sum(-1), torch.ones(10_000, 4))
    assert ((per_dim > 0).sum(-1) <= 2).all()  # at most two non-zero bins


def test_two_hot_matches_the_formula_and_the_bounds():
    enc = TwoHotEncoder([-1.0], [1.0], bins=21)  # bins every 0.1
    t = enc.encode(torch.tensor([[0.43]]))[0]
    k = 14  # b_14 = 0.4, b_15 = 0.5
    assert t[k].item() == pytest.approx((0.5 - 0.43) / 0.1, abs=1e-5)
    assert t[k + 1].item() == pytest.approx((0.43 - 0.4) / 0.1, abs=1e-5)
    assert t.sum().item() == pytest.approx(1.0)
    edges = enc.encode(torch.tensor([[-1.0], [1.0]]))
    assert edges[0, 0] == 1 and edges[0, 1:].sum() == 0
    assert edges[1, -1] == 1 and edges[1, :-1].sum() == 0
    assert torch.allclose(enc.decode(edges), torch.tensor([[-1.0], [1.0]]))
    # Outside the bounds: clamped to the edge bins, never a wrong index.
    outside = enc.encode(torch.tensor([[-3.0], [7.0]]))
    assert torch.allclose(outside, edges)


def test_two_hot_is_differentiable():
    a = torch.tensor([[0.3, -0.2, 1.0, 0.5]], requires_grad=True)
    TwoHotEncoder(LOW, HIGH).encode(a).pow(2).sum().backward()
    assert a.grad is not None and torch.isfinite(a.grad).all()


def test_one_hot_and_linear_shapes_and_values():
    a = torch.tensor([[0.04, 0.96, 2.5, -2.0]])
    one = OneHotEncoder(LOW, HIGH, bins=21).encode(a)
    assert one.shape == (1, 84) and one.sum() == 4
    assert one.reshape(4, 21).argmax(-1).tolist() == [10, 20, 10, 0]
    lin = LinearEncoder(LOW, HIGH)
    e = lin.encode(a)
    assert e.shape == (1, 4) and e.min() >= -1 and e.max() <= 1
    assert torch.allclose(lin.decode(e), a, atol=1e-6)


def test_factory_and_validation():
    assert make_action_encoder("two_hot", LOW, HIGH, 21).features == 84
    assert make_action_encoder("linear", LOW, HIGH).features == 4
    with pytest.raises(ValueError, match="unknown action encoding"):
        make_action_encoder("fast", LOW, HIGH)
    with pytest.raises(ValueError, match="low < high"):
        TwoHotEncoder([1.0], [0.0])
