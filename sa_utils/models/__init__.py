"""The networks of the book: the paper's conditional VAE and the evaluation classifier."""
from .classifier import MNISTClassifier
from .cvae import CVAE, CVAEConfig

__all__ = ["CVAE", "CVAEConfig", "MNISTClassifier"]
