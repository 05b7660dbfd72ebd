"""The runtime's preprocessing, in Python, for building and checking models.

decode -> grey ("L") or RGB -> Image.resize((w, h), BILINEAR) (antialiased,
8-bit result) -> float32 / 255 -> (x - mean[c]) / std[c] -> NCHW or NHWC.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image


def preprocess(data: bytes | Image.Image, inp: dict) -> np.ndarray:
    """One encoded image (or decoded PIL image) -> tensor [1, ...] per the manifest's [input]."""
    img = data if isinstance(data, Image.Image) else Image.open(io.BytesIO(data))
    img = img.convert("L" if inp["channels"] == 1 else "RGB")
    img = img.resize((inp["width"], inp["height"]), Image.BILINEAR)
    x = np.asarray(img, dtype=np.float32) / np.float32(255.0)
    if x.ndim == 2:
        x = x[:, :, None]
    x = (x - np.asarray(inp["mean"], np.float32)) / np.asarray(inp["std"], np.float32)
    if inp["layout"] == "nchw":
        x = x.transpose(2, 0, 1)
    return np.ascontiguousarray(x[None], dtype=np.float32)
