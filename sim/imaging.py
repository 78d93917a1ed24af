"""Image operations of the reference processor: small, pure, deterministic numpy functions."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from astropy.io import fits
from PIL import Image

Array = np.ndarray[Any, Any]


def render_stars(size: int, x: Array, y: Array, flux: Array, fwhm_px: float) -> Array:
    """Gaussian stars on a size x size image (7x7 stamps, added with np.add.at)."""
    image = np.zeros((size, size), dtype=np.float64)
    if len(x) == 0:
        return image
    sigma = fwhm_px / 2.3548
    offsets = np.arange(-3, 4)
    dy, dx = np.meshgrid(offsets, offsets, indexing="ij")
    xi, yi = np.round(x).astype(int), np.round(y).astype(int)
    px = xi[:, None, None] + dx[None]
    py = yi[:, None, None] + dy[None]
    r2 = (px - x[:, None, None]) ** 2 + (py - y[:, None, None]) ** 2
    weight = np.exp(-r2 / (2 * sigma**2))
    weight /= weight.sum(axis=(1, 2), keepdims=True)
    values = flux[:, None, None] * weight
    inside = (px >= 0) & (px < size) & (py >= 0) & (py < size)
    np.add.at(image, (py[inside], px[inside]), values[inside])
    return image


def bin_image(image: Array, factor: int) -> Array:
    """Mean over factor x factor blocks (edges that do not fill a block are dropped)."""
    h, w = (image.shape[0] // factor) * factor, (image.shape[1] // factor) * factor
    if h == 0 or w == 0:
        return np.zeros((1, 1), dtype=np.float32)
    view = image[:h, :w].reshape(h // factor, factor, w // factor, factor)
    binned: Array = view.mean(axis=(1, 3)).astype(np.float32)
    return binned


def background_model(image: Array, box: int) -> Array:
    """Median of each box x box block: the background model (a small image)."""
    h, w = (image.shape[0] // box) * box, (image.shape[1] // box) * box
    if h == 0 or w == 0:
        return np.full((1, 1), np.median(image), dtype=np.float32)
    blocks = image[:h, :w].reshape(h // box, box, w // box, box).swapaxes(1, 2)
    return np.median(blocks.reshape(h // box, w // box, box * box), axis=2).astype(np.float32)


def expand_model(model: Array, shape: tuple[int, int]) -> Array:
    """The background model back at full resolution (nearest block)."""
    ys = np.minimum(np.arange(shape[0]) * model.shape[0] // shape[0], model.shape[0] - 1)
    xs = np.minimum(np.arange(shape[1]) * model.shape[1] // shape[1], model.shape[1] - 1)
    return model[np.ix_(ys, xs)]


def find_peaks(signal: Array, threshold: Array) -> tuple[Array, Array]:
    """Pixels above threshold that are the maximum of their 3x3 neighbourhood, in (y, x)
    order (so detection numbering is deterministic). Borders are excluded."""
    h, w = signal.shape
    core = signal[1:-1, 1:-1]
    ok = core > threshold[1:-1, 1:-1]
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy == 0 and dx == 0:
                continue
            neighbour = signal[1 + dy : h - 1 + dy, 1 + dx : w - 1 + dx]
            ok &= core > neighbour if (dy, dx) < (0, 0) else core >= neighbour
    ys, xs = np.nonzero(ok)
    return ys + 1, xs + 1


def box_sums(image: Array, ys: Array, xs: Array, radius: int) -> tuple[Array, Array]:
    """Sum and pixel count of the (2r+1)^2 box around each position (summed-area table)."""
    h, w = image.shape
    table: Array = np.zeros((h + 1, w + 1), dtype=np.float64)
    table[1:, 1:] = np.cumsum(np.cumsum(image, axis=0), axis=1)
    y0, y1 = np.clip(ys - radius, 0, h), np.clip(ys + radius + 1, 0, h)
    x0, x1 = np.clip(xs - radius, 0, w), np.clip(xs + radius + 1, 0, w)
    sums = table[y1, x1] - table[y0, x1] - table[y1, x0] + table[y0, x0]
    return sums, (y1 - y0) * (x1 - x0)


def moments(image: Array, ys: Array, xs: Array) -> dict[str, Array]:
    """Centroid and second moments from the 3x3 neighbourhood of each peak."""
    stack = np.stack([image[ys + dy, xs + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)])
    stack = np.clip(stack, 1e-6, None)
    dy = np.repeat([-1.0, 0.0, 1.0], 3)[:, None]
    dx = np.tile([-1.0, 0.0, 1.0], 3)[:, None]
    total = stack.sum(axis=0)
    cx, cy = (stack * dx).sum(axis=0) / total, (stack * dy).sum(axis=0) / total
    return {
        "x": xs + cx,
        "y": ys + cy,
        "xx": (stack * (dx - cx) ** 2).sum(axis=0) / total,
        "yy": (stack * (dy - cy) ** 2).sum(axis=0) / total,
        "xy": (stack * (dx - cx) * (dy - cy)).sum(axis=0) / total,
    }


def fits_image(data: Array | None, header: dict[str, Any] | None = None) -> bytes:
    """One-HDU FITS image bytes (no time-dependent keywords, so output is reproducible)."""
    hdu = fits.PrimaryHDU(data=data)
    for key, value in (header or {}).items():
        hdu.header[key if len(key) <= 8 and "." not in key else f"HIERARCH {key}"] = value
    buf = io.BytesIO()
    hdu.writeto(buf)
    return buf.getvalue()


def read_fits_image(data: bytes) -> tuple[Array, fits.Header]:
    with fits.open(io.BytesIO(data), memmap=False) as hdus:
        return np.array(hdus[0].data), hdus[0].header.copy()


def jpeg(image: Array) -> bytes:
    """A greyscale JPEG preview scaled between the 1st and 99th percentile."""
    finite = image[np.isfinite(image)]
    low, high = np.percentile(finite, [1, 99]) if finite.size else (0.0, 1.0)
    scaled = np.clip((image - low) / max(high - low, 1e-9), 0, 1)
    picture = Image.fromarray((np.nan_to_num(scaled) * 255).astype(np.uint8)[::-1], mode="L")
    buf = io.BytesIO()
    picture.save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def resample_nearest(source: Array, sx: Array, sy: Array, fill: float = np.nan) -> Array:
    """Values of ``source`` at pixel positions (sx, sy), nearest pixel; outside = fill."""
    xi, yi = np.round(sx).astype(int), np.round(sy).astype(int)
    inside = (xi >= 0) & (xi < source.shape[1]) & (yi >= 0) & (yi < source.shape[0])
    out = np.full(sx.shape, fill, dtype=np.float64)
    out[inside] = source[yi[inside], xi[inside]]
    return out


def smooth3(image: Array) -> Array:
    """A 3x3 box smoothing (the 'convolution' of the stack and diff stages)."""
    padded = np.pad(np.nan_to_num(image), 1, mode="edge")
    total = np.zeros(image.shape, dtype=np.float64)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            total += padded[1 + dy : padded.shape[0] - 1 + dy, 1 + dx : padded.shape[1] - 1 + dx]
    return (total / 9.0).astype(np.float32)
