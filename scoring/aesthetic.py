"""The LAION aesthetic predictor v2 ("improved aesthetic predictor",
christophschuhmann/improved-aesthetic-predictor): an MLP on CLIP ViT-L/14's
L2-normalised image embedding, image-only (no prompt).

* the head, ``sac+logos+ava1-l14-linearMSE.pth`` (a torch state dict):
  ``layers`` = Linear(768, 1024), Dropout(0.2), Linear(1024, 128), Dropout(0.2),
  Linear(128, 64), Dropout(0.1), Linear(64, 16), Linear(16, 1) -- no activation
  between them, as published (dropouts are identities at inference);
* the embedding: OpenAI's CLIP ViT-L/14 (quick_gelu) in transformers' format,
  ``openai/clip-vit-large-patch14``'s ``model.safetensors`` or a ComfyUI
  ``clip_vision`` file of its vision half (``vision_model.*`` and
  ``visual_projection``), with transformers' CLIPProcessor preprocessing.

score = MLP(e / |e|), e = CLIP image embedding; roughly 1..10 on the LAION scale.
"""

from __future__ import annotations

import os
import sys
from typing import Sequence

import torch
from torch import nn

from . import base, clip

NAME = "aesthetic"
HEAD = "sac+logos+ava1-l14-linearMSE.pth"
CLIP_WEIGHTS = "clip-vit-large-patch14.safetensors"
FILES = {
    "checkpoint": base.FileSpec(HEAD, "aesthetic", "camenduru/improved-aesthetic-predictor", HEAD,
                                exts=(".pth", ".pt", ".safetensors"), choice=True),
    "clip": base.FileSpec(CLIP_WEIGHTS, "clip_vision", "openai/clip-vit-large-patch14", "model.safetensors",
                          exts=(".safetensors",), choice=True),
}
VISION_HEADS, ACT = 16, "quick_gelu"  # OpenAI's ViT-L/14
HEAD_LAYERS = (0, 2, 4, 6, 7)


class AestheticHead(nn.Module):
    """The published MLP; ``layers`` indices as in the .pth (dropouts kept as identities)."""

    def __init__(self, dim: int = 768, ops=nn):
        super().__init__()
        self.layers = nn.Sequential(ops.Linear(dim, 1024), nn.Dropout(0.2), ops.Linear(1024, 128), nn.Dropout(0.2),
                                    ops.Linear(128, 64), nn.Dropout(0.1), ops.Linear(64, 16), ops.Linear(16, 1))

    def forward(self, x):
        return self.layers(x)


class Aesthetic(nn.Module):
    """CLIP's image half + the head, one module for ComfyUI to manage."""

    def __init__(self, clip_model: clip.CLIP, head: AestheticHead):
        super().__init__()
        self.clip, self.head = clip_model, head

    def forward(self, pixels):
        e = self.clip.encode_image(pixels, normalize=True)  # float32, L2-normalised
        return self.head(e.to(self.head.layers[0].weight.dtype)).float()[:, 0]


def load_head(path: str, ops=nn) -> AestheticHead:
    sd = clip.load_weights(path)
    need = [f"layers.{i}.{p}" for i in HEAD_LAYERS for p in ("weight", "bias")]
    missing = [k for k in need if k not in sd]
    if missing:
        raise ValueError(f"checkpoint {path} is not the LAION aesthetic predictor's MLP "
                         f"({', '.join(missing[:3])} missing)")
    dim = int(sd["layers.0.weight"].shape[1])
    with torch.device("meta"):
        head = AestheticHead(dim, ops)
    want = head.state_dict()
    bad = [k for k in want if tuple(sd[k].shape) != tuple(want[k].shape)]
    if bad:
        raise ValueError(f"checkpoint {path}: {bad[0]} has shape {tuple(sd[bad[0]].shape)}, expected "
                         f"{tuple(want[bad[0]].shape)}")
    head.load_state_dict({k: sd[k].float() for k in want}, assign=True)
    return head.eval().requires_grad_(False)


class AestheticScorer(base.Scorer):
    name = NAME
    needs_prompt = False

    def __init__(self, model: Aesthetic, weights: str):
        self.module, self.weights = model, weights

    def pixels(self, images) -> torch.Tensor:
        return clip.preprocess(images, self.module.clip.image_size, "floor")

    @torch.no_grad()
    def score(self, images: torch.Tensor, prompts: Sequence[str] = ()) -> torch.Tensor:
        base.check_batch(images, prompts, False)
        return self.module(self.pixels(images).to(self.device, self.dtype)).float().cpu()


def build(files, dtype=torch.float32, ops=nn) -> AestheticScorer:
    """The aesthetic Scorer from ``files["checkpoint"]`` (the MLP .pth) and ``files["clip"]``
    (ViT-L/14 in transformers' layout; a config.json beside it is used when present),
    CLIP in ``dtype``, the head in float32."""
    from .pickscore import read_config
    head = load_head(files["checkpoint"], ops)
    cpath = files["clip"]
    cfg = read_config({"checkpoint": cpath, "config": files.get("clip_config")})
    model = clip.build_clip(clip.load_weights(cpath), cfg, text=False, act=ACT, vision_heads=VISION_HEADS,
                            dtype=dtype, ops=ops, source=f"CLIP {cpath}")
    if model.cfg["embed_dim"] != head.layers[0].in_features:
        raise ValueError(f"CLIP {cpath}: embeddings of size {model.cfg['embed_dim']}, the aesthetic head "
                         f"{files['checkpoint']} takes {head.layers[0].in_features} (CLIP ViT-L/14 expected)")
    return AestheticScorer(Aesthetic(model, head), os.path.basename(files["checkpoint"]))


base.register(sys.modules[__name__])
