import math

import pytest
import torch

from sa_utils.metrics import accuracy, class_probability, frechet_distance, mean_entropy


def test_entropy_bounds():
    assert mean_entropy(torch.full((5, 10), 0.1)) == pytest.approx(math.log(10), rel=1e-6)
    assert mean_entropy(torch.eye(10)) == pytest.approx(0.0, abs=1e-6)


def test_probability_and_accuracy():
    probs = torch.tensor([[0.7, 0.3], [0.2, 0.8]])
    assert class_probability(probs, 0) == pytest.approx(0.45)
    assert accuracy(probs, torch.tensor([0, 0])) == 0.5


def test_frechet_distance_closed_form_for_diagonal_gaussians():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(200_000, 3, generator=g) * torch.tensor([1.0, 2.0, 0.5])
    b = torch.randn(200_000, 3, generator=g) * torch.tensor([2.0, 2.0, 1.5]) + torch.tensor([1.0, 0.0, -1.0])
    expected = (1 + 0 + 1) + (1 - 2) ** 2 + 0 + (0.5 - 1.5) ** 2  # |dmu|^2 + sum (sa - sb)^2
    assert frechet_distance(a, b) == pytest.approx(expected, rel=0.02)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)


def test_frechet_distance_needs_two_samples():
    with pytest.raises(ValueError, match="at least two"):
        frechet_distance(torch.zeros(1, 3), torch.zeros(5, 3))
