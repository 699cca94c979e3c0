"""Plain training loops (no forgetting): the CVAE, the classifier, the DDPM, and fine-tuning.
Each checkpoints as it goes and resumes exactly (:mod:`.loops`)."""

from sa_utils.training.loops import classifier_accuracy, classifier_loss, cvae_loss, fit, train_ddpm

__all__ = ["classifier_accuracy", "classifier_loss", "cvae_loss", "fit", "train_ddpm"]
