"""The independent evaluation classifier (chapter 2).

A small CNN trained on real MNIST, never on generated images. Every experiment judges
forgetting (entropy, probability of the forgotten class) and remembering (accuracy,
Frechet distance in its 50-d feature space) with it. Its design follows the evaluator in
the authors' code (two 5x5 convolutions with batch norm, dropout, a 50-unit hidden
layer), so that entropies and probabilities are comparable with the paper's.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MNISTClassifier(nn.Module):
    feature_dim = 50

    def __init__(self, n_classes: int = 10, dropout: float = 0.5):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, 5)
        self.bn1 = nn.BatchNorm2d(10)
        self.conv2 = nn.Conv2d(10, 20, 5)
        self.bn2 = nn.BatchNorm2d(20)
        self.drop2d = nn.Dropout2d(dropout)
        self.fc1 = nn.Linear(320, self.feature_dim)
        self.fc2 = nn.Linear(self.feature_dim, n_classes)
        self.dropout = nn.Dropout(dropout)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Hidden-layer features used for the Frechet distance."""
        x = F.relu(F.max_pool2d(self.bn1(self.conv1(x)), 2))
        x = F.relu(F.max_pool2d(self.bn2(self.drop2d(self.conv2(x))), 2))
        return F.relu(self.fc1(x.flatten(1)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class logits."""
        return self.fc2(self.dropout(self.features(x)))


class CIFARClassifier(nn.Module):
    """Evaluation CNN for CIFAR-10 (Part II full mode): three conv blocks, 256-d features.

    Same interface as :class:`MNISTClassifier` (``features`` and ``fc2``), so the metrics
    of :mod:`sa_utils.eval.metrics` -- entropy, P(forgotten class), accuracy and the Frechet
    distance in its feature space, which works offline -- apply unchanged.
    """

    feature_dim = 256

    def __init__(self, n_classes: int = 10, dropout: float = 0.3):
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, padding=1),
                nn.BatchNorm2d(cout),
                nn.ReLU(),
                nn.Conv2d(cout, cout, 3, padding=1),
                nn.BatchNorm2d(cout),
                nn.ReLU(),
                nn.MaxPool2d(2),
            )

        self.body = nn.Sequential(block(3, 64), block(64, 128), block(128, 256))
        self.fc1 = nn.Linear(256, self.feature_dim)
        self.fc2 = nn.Linear(self.feature_dim, n_classes)
        self.dropout = nn.Dropout(dropout)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.fc1(self.body(x).mean((2, 3))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(self.features(x)))
