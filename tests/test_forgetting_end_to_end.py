"""End to end on real MNIST at a small size: SA forgets digit 0 and keeps 1-9."""
import pytest
import torch

from conftest import mnist_available
from sa_utils import zoo
from sa_utils.metrics import evaluate_forgetting

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not mnist_available(), reason="MNIST not in $SA_DATA_DIR")]


def test_sa_forgets_zero_and_keeps_the_rest(cache):
    r = zoo.recipe("quick", cvae_epochs=3, classifier_epochs=1, fisher_samples=2_000, sa_steps=1_000,
                   eval_per_class=200)
    torch.set_num_threads(2)
    clf = zoo.pretrained_classifier(r, progress=False)
    base = zoo.pretrained_cvae(r, progress=False)
    before = evaluate_forgetting(base, clf, 0, n_per_class=r.eval_per_class)
    forgotten, result = zoo.forget_digits(base, r, 0, progress=False)
    after = evaluate_forgetting(forgotten, clf, 0, n_per_class=r.eval_per_class)
    assert result.steps_done == 1_000
    assert after["entropy_forget"] > before["entropy_forget"] + 0.5
    assert after["p_forget"] < 0.5 * before["p_forget"]
    assert after["acc_remember"] > before["acc_remember"] - 0.05
    # the cached run is reused, not retrained
    again, result2 = zoo.forget_digits(base, r, 0, progress=False)
    assert result2.resumed_from == 1_000
    assert all(torch.equal(a, b) for a, b in zip(again.model.parameters(), forgotten.model.parameters()))
