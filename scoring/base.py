"""The quality-estimator slot: what every estimator module provides.

An estimator module (``scoring/imagereward.py``, ``scoring/pickscore.py``,
``scoring/hps.py``, ``scoring/aesthetic.py``) exposes

* ``NAME``: the estimator id (``"imagereward"``, ``"pickscore"``, ``"hpsv2.1"``,
  ``"aesthetic"``), the key of ``ESTIMATORS`` and of calibrated tables;
* ``FILES``: ``{role: FileSpec}``, the files it needs, as users download them;
* ``build(files: dict[str, str], dtype) -> Scorer``: ``files`` maps each role
  of ``FILES`` to a local path (resolved by the nodes in ComfyUI's folders),
  ``dtype`` the dtype of the trunk (the module may keep parts in float32).

and registers itself with ``register(module)`` at import (or is listed in
``MODULES``, imported by ``estimators()``).

A ``Scorer`` holds the ``nn.Module`` that ComfyUI manages (the nodes wrap
``.module`` in a ModelPatcher, so ComfyUI moves it between devices);
``score`` runs on whatever device/dtype the module's weights are on at the
time of the call and returns float32 scores on the CPU. Scoring has no side
effect on the module's placement.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

import torch
from torch import nn


@dataclass(frozen=True)
class FileSpec:
    """One file an estimator needs.

    ``name``: the file name users download (the default choice of the loader);
    ``folder``: the ComfyUI models folder it lives in (e.g. ``"image_reward"``,
    ``"clip_vision"``); ``repo``/``path``: where it is on the Hugging Face hub
    (``None`` when not downloadable); ``exts``: file extensions the loader
    lists for this role (empty: only ``name``); ``choice``: whether the user
    picks this file in the loader (weights) or it is found by name (configs,
    vocabularies); ``alternatives``: other relative paths tried in the folder
    (e.g. ``bert-base-uncased/vocab.txt``)."""
    name: str
    folder: str
    repo: str | None = None
    path: str | None = None
    exts: tuple[str, ...] = ()
    choice: bool = False
    alternatives: tuple[str, ...] = ()

    @property
    def url(self) -> str | None:
        if self.repo is None:
            return None
        return f"https://huggingface.co/{self.repo}/resolve/main/{self.path or self.name}"


class Scorer:
    """A quality estimator ready to score.

    Attributes: ``name`` (estimator id, = the module's ``NAME``), ``weights``
    (file name of the weights it was built from, recorded in calibrated
    tables), ``needs_prompt`` (False for image-only estimators: prompts are
    then ignored), ``module`` (the ``nn.Module`` ComfyUI manages),
    ``batch_size`` (images per forward pass a caller should use at most)."""

    name: str = ""
    weights: str = ""
    needs_prompt: bool = True
    module: nn.Module
    batch_size: int = 32

    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        """Scores (B,) float32 on the CPU of a ComfyUI IMAGE (B, H, W, C) float
        in [0, 1] against one prompt per image, computed on the module's
        current device and dtype."""
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        p = next(self.module.parameters(), None)
        return p.device if p is not None else torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        p = next(self.module.parameters(), None)
        return p.dtype if p is not None else torch.float32


def check_batch(images: torch.Tensor, prompts: Sequence[str], needs_prompt: bool = True) -> list[str]:
    """The checks every ``score`` makes: a non-empty (B, H, W, C) batch and,
    when prompts matter, one prompt per image. Returns the prompts as a list."""
    if images is None or images.ndim != 4 or images.shape[0] == 0:
        shape = None if images is None else tuple(images.shape)
        raise ValueError(f"images: expected a non-empty (B, H, W, C) batch, got {shape}")
    prompts = list(prompts) if prompts is not None else []
    if needs_prompt and len(prompts) != images.shape[0]:
        raise ValueError(f"prompt: {len(prompts)} prompts for a batch of {images.shape[0]} images")
    return prompts


# The estimator modules, by NAME. Estimator modules call register(sys.modules[__name__]).
ESTIMATORS: dict[str, object] = {}
# Modules of the package imported by estimators() (relative names); a missing one is skipped.
MODULES = ("imagereward", "pickscore", "hps", "aesthetic")


def register(module) -> object:
    for attr in ("NAME", "FILES", "build"):
        if not hasattr(module, attr):
            raise TypeError(f"estimator module {module.__name__} lacks {attr}")
    ESTIMATORS[module.NAME] = module
    return module


def estimators() -> dict[str, object]:
    """``{NAME: module}`` of every estimator module of the package, imported
    on first use (ImageReward first, then in ``MODULES`` order)."""
    pkg = __name__.rsplit(".", 1)[0]
    for m in MODULES:
        try:
            mod = importlib.import_module(f"{pkg}.{m}")
        except ModuleNotFoundError as e:
            if e.name == f"{pkg}.{m}":  # not written yet
                continue
            raise
        if getattr(mod, "NAME", None) and mod.NAME not in ESTIMATORS:
            register(mod)
    return {k: ESTIMATORS[k] for k in sorted(ESTIMATORS, key=lambda k: (k != "imagereward", k))}
