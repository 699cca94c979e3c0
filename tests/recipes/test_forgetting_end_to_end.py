"""End to end on real MNIST: SA forgets digit 0 of the shipped theta* and keeps 1-9; the training path
that made the shipped CVAE and classifier still trains, caches and reloads."""

import pytest
import torch
from conftest import mnist_available

from sa_utils.eval.metrics import evaluate_forgetting
from sa_utils.recipes import mnist_vae
from sa_utils.storage import shipped

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not mnist_available(), reason="MNIST not in $SA_DATA_DIR")]


def test_sa_forgets_zero_and_keeps_the_rest(cache):
    # the quick recipe's shipped theta* and classifier; a shorter SA run and a smaller Fisher and evaluation
    r = mnist_vae.recipe("quick", fisher_samples=2_000, sa_steps=750, eval_per_class=200)
    assert shipped.shipped_file(mnist_vae.cvae_name(r)) and shipped.shipped_file(mnist_vae.classifier_name(r))
    torch.set_num_threads(2)
    clf = mnist_vae.pretrained_classifier(r, progress=False)
    base = mnist_vae.pretrained_cvae(r, progress=False)
    before = evaluate_forgetting(base, clf, 0, n_per_class=r.eval_per_class)
    forgotten, result = mnist_vae.forget_digits(base, r, 0, progress=False)
    after = evaluate_forgetting(forgotten, clf, 0, n_per_class=r.eval_per_class)
    assert result.steps_done == 750
    assert after["entropy_forget"] > before["entropy_forget"] + 0.5
    assert after["p_forget"] < 0.5 * before["p_forget"]
    assert after["acc_remember"] > before["acc_remember"] - 0.05
    # the cached run is reused, not retrained
    again, result2 = mnist_vae.forget_digits(base, r, 0, progress=False)
    assert result2.resumed_from == 750
    assert all(torch.equal(a, b) for a, b in zip(again.model.parameters(), forgotten.model.parameters()))


def test_the_training_path_of_the_shipped_models_trains_caches_and_reloads(cache, monkeypatch):
    # the code that made the shipped files, on the first 2,048 training images (an epoch in about a second)
    full = mnist_vae.mnist
    monkeypatch.setattr(mnist_vae, "mnist", lambda train: tuple(t[:2_048] for t in full(train)))
    r = mnist_vae.recipe("quick", cvae_epochs=3, classifier_epochs=3)
    assert shipped.shipped_file(mnist_vae.cvae_name(r)) is None  # not the shipped settings: it must train
    base = mnist_vae.pretrained_cvae(r, progress=False)
    path = mnist_vae.cvae_path(r)
    assert path.parent == mnist_vae._mnist_dir() and path.exists()
    losses = mnist_vae.cvae_training_curve(r)
    assert len(losses) == 3 and losses[-1] < losses[0]
    again = mnist_vae.pretrained_cvae(r, progress=False)  # loaded, not trained again
    assert all(torch.equal(a, b) for a, b in zip(again.model.parameters(), base.model.parameters()))
    clf = mnist_vae.pretrained_classifier(r, progress=False)
    x, y = full(False)
    with torch.no_grad():
        acc = (clf(x[:2_000]).argmax(1) == y[:2_000]).float().mean().item()
    assert acc > 0.25, acc  # well above chance (0.1) after 96 steps at the recipe's lr 1e-4 (measured: 0.39)
