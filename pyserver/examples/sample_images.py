"""Three sample pictures for the image examples, drawn in code (no files
are shipped): ``noise.png``, ``gradient.jpg`` and ``blocks.png``, of
different sizes, so that the clients' resizing and both formats are used.

    python -m pyserver.examples.sample_images images    # writes images/*.{png,jpg}
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def sample_arrays(seed: int = 3) -> dict[str, np.ndarray]:
    """File name -> HxWx3 uint8 picture."""
    rng = np.random.default_rng(seed)
    noise = (rng.random((300, 260, 3)) * 255).astype(np.uint8)
    ramp = np.linspace(0, 255, 240, dtype=np.uint8)
    gradient = np.dstack([np.tile(ramp, (200, 1)), np.tile(ramp[::-1], (200, 1)),
                          np.full((200, 240), 128, np.uint8)])
    blocks = np.kron(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8),
                     np.ones((32, 32, 1), np.uint8))
    return {"noise.png": noise, "gradient.jpg": gradient, "blocks.png": blocks}


def write_sample_images(folder: str | Path) -> list[Path]:
    """Writes the pictures into ``folder`` (created); returns their paths.
    Needs Pillow (the ``examples`` extra)."""
    from PIL import Image

    root = Path(folder)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, array in sample_arrays().items():
        path = root / name
        options = {"quality": 95} if name.endswith(".jpg") else {}
        Image.fromarray(array).save(path, **options)
        paths.append(path)
    return paths


def main() -> None:
    if len(sys.argv) != 2:
        raise SystemExit("usage: python -m pyserver.examples.sample_images FOLDER")
    for path in write_sample_images(sys.argv[1]):
        print(path)


if __name__ == "__main__":
    main()
