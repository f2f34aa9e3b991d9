"""The data: scikit-learn's 8x8 handwritten digits (UCI "Optical Recognition of
Handwritten Digits", 1,797 images, CC BY 4.0), shipped as a 116 KB tensor file so
that neither the lab nor its tests need scikit-learn.

Images are upsampled to 16x16 (bilinear) and scaled to [-1, 1]. The split is fixed:
30 images per class (300) are held out as the test set; the models are trained on
the other 1,497.
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F

from . import WEIGHTS_DIR

DIGITS_FILE = os.path.join(WEIGHTS_DIR, "digits.safetensors")
SIZE = 16
NUM_CLASSES = 10
TEST_PER_CLASS = 30
SPLIT_SEED = 0


def export_digits(path: str = DIGITS_FILE) -> None:
    """Write the digits from scikit-learn (needed only to re-create the shipped file)."""
    from safetensors.torch import save_file
    from sklearn.datasets import load_digits

    d = load_digits()
    images = torch.tensor(d.images, dtype=torch.uint8)  # values 0..16
    labels = torch.tensor(d.target, dtype=torch.uint8)
    save_file({"images": images.contiguous(), "labels": labels.contiguous()}, path,
              metadata={"source": "sklearn.datasets.load_digits (UCI Optical Recognition of Handwritten Digits, "
                                  "CC BY 4.0), pixel values 0..16"})


def load_raw(path: str = DIGITS_FILE) -> tuple[torch.Tensor, torch.Tensor]:
    """(images uint8 (N, 8, 8) with values 0..16, labels int64 (N,))."""
    from safetensors.torch import load_file

    if not os.path.exists(path):
        export_digits(path)
    t = load_file(path)
    return t["images"], t["labels"].long()


def upsample(images8: torch.Tensor, size: int = SIZE) -> torch.Tensor:
    """uint8 0..16 (N, 8, 8) -> float (N, 1, size, size) in [-1, 1], bilinear."""
    x = images8.float().unsqueeze(1) / 16.0 * 2.0 - 1.0
    if size != x.shape[-1]:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return x.clamp(-1.0, 1.0)


def split_indices(labels: torch.Tensor, test_per_class: int = TEST_PER_CLASS, seed: int = SPLIT_SEED):
    """Fixed stratified split: (train_idx, test_idx), both sorted."""
    g = torch.Generator().manual_seed(seed)
    test = []
    for c in range(NUM_CLASSES):
        idx = (labels == c).nonzero().flatten()
        test.append(idx[torch.randperm(len(idx), generator=g)[:test_per_class]])
    test = torch.cat(test).sort().values
    mask = torch.ones(len(labels), dtype=torch.bool)
    mask[test] = False
    return mask.nonzero().flatten(), test


def load(split: str = "train", size: int = SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """(images (N, 1, size, size) in [-1, 1], labels (N,)) of ``train``, ``test`` or ``all``."""
    images, labels = load_raw()
    x = upsample(images, size)
    if split == "all":
        return x, labels
    train, test = split_indices(labels)
    idx = {"train": train, "test": test}[split]
    return x[idx], labels[idx]
