"""Write an RGB ImageFolder tree from FashionMNIST, to try `--dataset folder:DIR` without other data.

    .venv/bin/python examples/make_image_folder.py /tmp/fashion-rgb --per-class 300

Each image becomes a 32x32 RGB PNG with a random colour tint (seeded), in DIR/train/<class>/ and
DIR/test/<class>/ (a sixth of --per-class for the test split). The classes are FashionMNIST's.
"""

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from mixprune import load_fashion_mnist


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--per-class", type=int, default=300, help="training images per class")
    args = ap.parse_args()
    ds = load_fashion_mnist()
    rng = np.random.default_rng(0)
    for split, x, y, n in (("train", ds.train_x, ds.train_y, args.per_class),
                           ("test", ds.test_x, ds.test_y, max(1, args.per_class // 6))):
        for c, name in enumerate(ds.classes):
            folder = args.out / split / name.replace("/", "-")
            folder.mkdir(parents=True, exist_ok=True)
            for i in np.flatnonzero(y.numpy() == c)[:n]:
                gray = x[i, 0].numpy().astype(np.float32)
                tint = rng.uniform(0.4, 1.0, 3)
                rgb = np.clip(gray[..., None] * tint, 0, 255).astype(np.uint8)
                Image.fromarray(rgb, "RGB").resize((32, 32), Image.Resampling.BILINEAR).save(folder / f"{i}.png")
    print(f"wrote {args.out}/train and {args.out}/test")


if __name__ == "__main__":
    main()
