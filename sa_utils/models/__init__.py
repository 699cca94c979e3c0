"""The networks of the book: the paper's conditional VAE and the evaluation classifier."""
from .classifier import CIFARClassifier, MNISTClassifier
from .cvae import CVAE, CVAEConfig

__all__ = ["CIFARClassifier", "CVAE", "CVAEConfig", "MNISTClassifier"]
