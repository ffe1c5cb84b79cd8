"""scikit-learn's bundled 8x8 handwritten digits (1,797 images, shipped inside the wheel: no download).

    ds = load_digits()     # 1,437 train / 360 test images, uint8 [N, 1, 8, 8], classes "0".."9"

The split is fixed and documented: scikit-learn's train_test_split with test_size=360, stratified by
class, random_state=0. Pixel values 0-16 are scaled to 0-255 (round(v * 255 / 16)).
"""

from __future__ import annotations

import numpy as np
import torch

from ..core.errors import DataError
from .dataset import Dataset

TEST_IMAGES = 360


def load_digits() -> Dataset:
    try:
        from sklearn.datasets import load_digits as sk_digits
        from sklearn.model_selection import train_test_split
    except ImportError:
        raise DataError("--dataset digits needs scikit-learn: pip install scikit-learn") from None
    bunch = sk_digits()
    images = np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8)[:, None]  # [N, 1, 8, 8]
    labels = bunch.target.astype(np.int64)
    tr_x, te_x, tr_y, te_y = train_test_split(images, labels, test_size=TEST_IMAGES, stratify=labels, random_state=0)
    return Dataset(torch.from_numpy(tr_x), torch.from_numpy(tr_y), torch.from_numpy(te_x), torch.from_numpy(te_y),
                   "scikit-learn load_digits (bundled)", tuple(str(d) for d in range(10)), "digits")
