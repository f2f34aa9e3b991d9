"""Sliding Window Guidance (Kaiser, Adaloglou, Kollmann 2024): SWG and M-SWG.

The guidance's negative prediction is the model's own prediction assembled
from square (here: rectangular) crops of the input: ``n`` crops per dimension
of size ``k``, averaged where crops overlap. Guidance happens in denoised space
(the reference's EDM2 networks output D(x; sigma), as ComfyUI's denoiser):

    SWG:      D = D_pos + s * (D_pos - D_crops)
    M-SWG:    D = D_pos + s * mask * (D_pos - D_crops),  mask = overlap > 1
    CFG+SWG:  D = D_pos + w * (D_pos - D_uncond) + s * (D_pos - D_crops)

Reference: ``swg_guidance`` / ``compute_score`` of the paper's ``sample_edm2.py``.
There the crop offsets are ``stride * i`` with the integer stride
``(size - k) // (n - 1)``; when ``n - 1`` does not divide ``size - k`` the last
crop stops short of the edge and the uncovered pixels divide by a zero
weight. ``reference_offsets`` reproduces that layout; ``crop_offsets`` (used
by default) spreads the offsets with rounding so the last crop always ends at
the edge, and equals the reference wherever the reference covers the latent.
"""

from __future__ import annotations

import itertools
import math
from typing import Callable, Sequence

import torch


def reference_offsets(size: int, k: int, n: int) -> list[int]:
    """The reference's offsets along one dimension: ``stride * i``."""
    stride = (size - k) // (n - 1) if n > 1 else 0
    return [stride * i for i in range(n)]


def crop_offsets(size: int, k: int, n: int) -> list[int]:
    """Offsets of ``n`` crops of size ``k`` spread over ``size``, first at 0 and
    last ending at the edge."""
    check_layout(size, k, n, "size")
    if n == 1:
        return [0]
    return [round(i * (size - k) / (n - 1)) for i in range(n)]


def check_layout(size: int, k: int, n: int, name: str = "size") -> None:
    if k <= 0:
        raise ValueError(f"crop size must be positive (got {k})")
    if n <= 0:
        raise ValueError(f"crops per dimension must be positive (got {n})")
    if k > size:
        raise ValueError(f"crop size {k} is larger than the latent's {name} {size}")
    if n > 1 and k == size:
        raise ValueError(f"{n} crops of the full {name} {size} would all be the same crop; use 1 crop or a smaller size")


def windows(height: int, width: int, k_h: int, k_w: int, n_h: int, n_w: int) -> list[tuple[int, int, int, int]]:
    """Crop windows ``(top, bottom, left, right)``, in the reference's order
    (outer loop over the horizontal index, inner over the vertical one)."""
    tops = crop_offsets(height, k_h, n_h)
    lefts = crop_offsets(width, k_w, n_w)
    return [(t, t + k_h, l, l + k_w) for l in lefts for t in tops]


def windows_nd(sizes: Sequence[int], ks: Sequence[int], ns: Sequence[int]) -> list[tuple[tuple[int, int], ...]]:
    """Crop windows over the last ``len(sizes)`` dimensions (e.g. frames,
    height, width of a video latent), each a tuple of ``(lo, hi)`` per
    dimension; the last dimension's index is the outermost loop, as in ``windows``."""
    offs = [crop_offsets(s, k, n) for s, k, n in zip(sizes, ks, ns)]
    out = []
    for combo in itertools.product(*reversed(offs)):
        out.append(tuple((o, o + k) for o, k in zip(reversed(combo), ks)))
    return out


def as_ranges(win) -> tuple[tuple[int, int], ...]:
    """A window as ``(lo, hi)`` per dimension: the 2-D ``(top, bottom, left, right)`` or already ranges."""
    if isinstance(win[0], (tuple, list)):
        return tuple(tuple(r) for r in win)
    t, b, l, r = win
    return ((t, b), (l, r))


def window_size(win) -> str:
    """A window's size as text, e.g. '6 x 8'."""
    return " x ".join(str(hi - lo) for lo, hi in as_ranges(win))


def overlap_nd(sizes: Sequence[int], wins, like: torch.Tensor | None = None):
    """How many crops cover each position of the cropped dimensions, shape (1, 1, *sizes)."""
    w = torch.zeros(1, 1, *sizes, dtype=like.dtype if like is not None else torch.float32,
                    device=like.device if like is not None else None)
    for win in wins:
        w[(Ellipsis, *[slice(lo, hi) for lo, hi in as_ranges(win)])] += 1
    return w


def overlap(height: int, width: int, wins: Sequence[tuple[int, int, int, int]], like: torch.Tensor | None = None):
    """How many crops cover each position, shape (1, 1, H, W)."""
    w = torch.zeros(1, 1, height, width, dtype=like.dtype if like is not None else torch.float32,
                    device=like.device if like is not None else None)
    for t, b, l, r in wins:
        w[..., t:b, l:r] += 1
    return w


def assemble(crops: Sequence[torch.Tensor], wins: Sequence[tuple[int, int, int, int]], shape, weight: torch.Tensor):
    """Average per-crop predictions back into a full-size prediction."""
    out = torch.zeros(shape, dtype=crops[0].dtype, device=crops[0].device)
    for y, (t, b, l, r) in zip(crops, wins):
        out[..., t:b, l:r] += y
    return out / weight


def crop_prediction(denoise_crops: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                    wins: Sequence[tuple[int, int, int, int]]):
    """The model's prediction assembled from crops of ``x``.

    ``denoise_crops(xc)`` gets all crops stacked along the batch (crop-major:
    crop 0 of every image, then crop 1, ...) and returns their predictions; all
    crops have the same size, so they run as one batch. Returns (prediction,
    overlap weight)."""
    b = x.shape[0]
    xc = torch.cat([x[..., t:bt, l:r] for t, bt, l, r in wins])
    yc = denoise_crops(xc)
    weight = overlap(x.shape[-2], x.shape[-1], wins, like=x)
    return assemble(list(yc.split(b)), wins, x.shape, weight), weight


def guidance_term(d_pos: torch.Tensor, d_crops: torch.Tensor, scale: float, weight: torch.Tensor | None = None,
                  masked: bool = False) -> torch.Tensor:
    """The SWG term ``s * mask * (D_pos - D_crops)`` that is added to a prediction."""
    mask = (weight > 1).to(d_pos.dtype) if masked else 1.0
    return scale * mask * (d_pos - d_crops)


def round_crop(k: int, size: int, multiple: int = 1) -> int:
    """A crop size the model can take: ``k`` rounded to the nearest multiple of
    the model's patch size (transformers embed ``multiple`` x ``multiple``
    patches), at least one patch and at most the latent ``size``."""
    if k <= 0:
        raise ValueError(f"crop size must be positive (got {k})")
    if multiple <= 1:
        return k
    r = max(multiple, math.floor(k / multiple + 0.5) * multiple)  # nearest multiple, ties up
    if r > size:
        r = (size // multiple) * multiple
    if r < multiple:
        raise ValueError(f"the latent ({size}) is smaller than one patch ({multiple}) of the model")
    return r


def guide(d_pos: torch.Tensor, d_crops: torch.Tensor, scale: float, weight: torch.Tensor | None = None,
          masked: bool = False, d_uncond: torch.Tensor | None = None, cfg_scale: float = 0.0) -> torch.Tensor:
    """SWG / M-SWG, optionally with a CFG (or weak-model) term of its own weight."""
    out = d_pos + guidance_term(d_pos, d_crops, scale, weight, masked)
    if d_uncond is not None:
        out = out + cfg_scale * (d_pos - d_uncond)
    return out
