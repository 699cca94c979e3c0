"""The independent evaluation classifier (chapter 2).

A small CNN trained on real MNIST, never on generated images. Every experiment judges
forgetting (entropy, probability of the forgotten class) and remembering (accuracy,
Frechet distance in its 128-d feature space) with it.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class MNISTClassifier(nn.Module):
    feature_dim = 128

    def __init__(self, n_classes: int = 10, dropout: float = 0.25):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 5, padding=2)
        self.conv2 = nn.Conv2d(32, 64, 5, padding=2)
        self.fc1 = nn.Linear(64 * 7 * 7, self.feature_dim)
        self.fc2 = nn.Linear(self.feature_dim, n_classes)
        self.dropout = nn.Dropout(dropout)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer features used for the Frechet distance."""
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return F.relu(self.fc1(self.dropout(x.flatten(1))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(self.features(x)))
