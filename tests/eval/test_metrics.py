import math

import pytest
import torch

from sa_utils.eval import metrics
from sa_utils.eval.metrics import accuracy, class_probability, frechet_distance, mean_entropy


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


def test_wilson_interval_matches_reference_values_and_refuses_bad_counts():
    from sa_utils.eval.metrics import rate_with_interval, rates_differ, wilson_interval

    lo, hi = wilson_interval(0, 28)
    assert lo == 0.0 and abs(hi - 0.1206) < 1e-3  # 0 of 28: up to 0.12 is compatible
    lo, hi = wilson_interval(7, 28)
    assert abs(lo - 0.1268) < 1e-3 and abs(hi - 0.4336) < 1e-3  # Wilson (1927), z = 1.96
    assert rate_with_interval(0.25, 28) == "0.25 [0.13, 0.43]"
    assert rates_differ(0.9, 0.1, 28) == 1 and rates_differ(0.1, 0.9, 28) == -1 and rates_differ(0.25, 0.3, 28) == 0
    with pytest.raises(ValueError, match="number of images"):
        wilson_interval(0, 0)
    with pytest.raises(ValueError, match="outside 0..n"):
        wilson_interval(30, 28)
