"""MNIST through torchvision, with a clear message when the data is missing offline (chapter 2)."""

from __future__ import annotations

from pathlib import Path

import torch

from sa_utils.runtime import data_dir

_RAW_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)


class DataNotFoundError(FileNotFoundError):
    """Raised when a dataset is neither on disk nor downloadable."""


def load_mnist(
    train: bool = True, root: str | Path | None = None, download: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return MNIST as ``(images, labels)``: float images in [0, 1] of shape ``[N, 1, 28, 28]``.

    ``root`` defaults to :func:`sa_utils.runtime.data_dir` (``$SA_DATA_DIR``). If the raw
    files are missing the download is attempted; when that fails (no internet) the
    error says where to put the files.
    """
    root = Path(root) if root is not None else data_dir()
    raw = root / "MNIST" / "raw"
    have_files = all((raw / f).exists() or (raw / (f + ".gz")).exists() for f in _RAW_FILES)
    from torchvision import datasets  # imported here: the rest of sa_utils runs without torchvision

    try:
        ds = datasets.MNIST(str(root), train=train, download=download and not have_files)
    except Exception as err:  # network errors come in many types
        raise DataNotFoundError(
            f"MNIST is not in {raw} and could not be downloaded ({type(err).__name__}: {err}).\n"
            "Fix: copy the four raw IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte, "
            f"t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte) into {raw}, or point SA_DATA_DIR "
            "at a folder that has MNIST/raw/ (e.g. export SA_DATA_DIR=../shared/data)."
        ) from err
    images = ds.data.unsqueeze(1).float().div_(255.0)
    return images, ds.targets.clone().long()


def load_cifar10(
    train: bool = True, root: str | Path | None = None, download: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return CIFAR-10 as ``(images, labels)``: float images in [0, 1] of shape ``[N, 3, 32, 32]``.

    Same conventions as :func:`load_mnist`: ``root`` defaults to ``$SA_DATA_DIR`` and a
    failed download ends in an error that says where the files belong.
    """
    root = Path(root) if root is not None else data_dir()
    folder = root / "cifar-10-batches-py"
    from torchvision import datasets

    try:
        ds = datasets.CIFAR10(str(root), train=train, download=download and not folder.exists())
    except Exception as err:
        raise DataNotFoundError(
            f"CIFAR-10 is not in {folder} and could not be downloaded ({type(err).__name__}: {err}).\n"
            "Fix: extract cifar-10-python.tar.gz (https://www.cs.toronto.edu/~kriz/cifar.html) into "
            f"{root}, so that {folder}/data_batch_1 exists, or point SA_DATA_DIR at a folder that has it."
        ) from err
    images = torch.from_numpy(ds.data).permute(0, 3, 1, 2).float().div_(255.0).contiguous()
    return images, torch.tensor(ds.targets, dtype=torch.long)
