"""The networks of the book: the paper's conditional VAE and the evaluation classifier."""

from sa_utils.models.classifier import CIFARClassifier, MNISTClassifier
from sa_utils.models.cvae import CVAE, CVAEConfig

__all__ = ["CIFARClassifier", "CVAE", "CVAEConfig", "MNISTClassifier"]
