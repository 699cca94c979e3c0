import math

import pytest
import torch

from sa_utils import metrics
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


class _CountingAdapter:
    """A stand-in generative model whose samples depend on its weights and a setting."""

    cache_samples = True

    def __init__(self, scale: float = 1.0):
        self.model = torch.nn.Linear(4, 4)
        self.scale, self._calls = scale, 0

    @property
    def device(self):
        return torch.device("cpu")

    def config(self):
        return {"model": "counting"}

    def sample(self, c, generator=None):
        self._calls += 1
        noise = torch.rand(len(c), 4, generator=generator)
        return (self.scale * self.model(noise)).view(len(c), 1, 2, 2)


def test_cached_samples_are_keyed_by_weights_settings_and_request(cache):
    torch.manual_seed(0)
    a = _CountingAdapter()
    x1, c1 = metrics.generate_per_class(a, [0, 1], 3, seed=5)
    x2, c2 = metrics.generate_per_class(a, [0, 1], 3, seed=5)
    assert a._calls == 2 and torch.equal(x1, x2) and torch.equal(c1, c2)  # second call: from the cache
    assert len(list((cache / "samples").glob("*.safetensors"))) == 1
    metrics.generate_per_class(a, [0, 1], 3, seed=6)  # another seed: computed
    assert a._calls == 4
    with torch.no_grad():
        a.model.weight[0, 0] += 1e-3  # one weight changed: computed again, and different
    x3, _ = metrics.generate_per_class(a, [0, 1], 3, seed=5)
    assert a._calls == 6 and not torch.equal(x1, x3)
    a.scale = 2.0  # a sampling setting changed
    metrics.generate_per_class(a, [0, 1], 3, seed=5)
    assert a._calls == 8
    metrics.generate_per_class(a, [0, 1], 3, seed=5, cache=False)  # opt-out computes and stores nothing
    assert a._calls == 10 and len(list((cache / "samples").glob("*.safetensors"))) == 4
