"""HPSv2.1 (Wu et al. 2023, Human Preference Score v2): open_clip's ViT-H-14
with the ``HPS_v2.1_compressed.pt`` weights (``xswu/HPSv2``; a torch file with
an open_clip ``state_dict``), scored as ``hpsv2.score`` does:

    score = cos(image_features, text_features)

(open_clip's normalised features, ``logits_per_image``'s diagonal without the
logit scale), on open_clip's validation transform: torchvision ``Resize(224,
bicubic)`` of the shorter side on the PIL image, ``CenterCrop(224)`` (rounded
offset), CLIP mean/std; open_clip's tokenizer (77 tokens, padded with 0).
Plain torch (scoring/clip.py), weights loaded with ``weights_only``.
"""

from __future__ import annotations

import os
import sys

import torch
from torch import nn

from . import base, clip
from .pickscore import ClipScorer, tokenizer

NAME = "hpsv2.1"
WEIGHTS = "HPS_v2.1_compressed.pt"
FILES = {
    "checkpoint": base.FileSpec(WEIGHTS, "hpsv2", "xswu/HPSv2", WEIGHTS, exts=(".pt", ".pth", ".safetensors"),
                                choice=True),
}
# open_clip's ViT-H-14: head width 80 in the image tower (16 heads), 16 text heads, exact GELU.
VISION_HEADS, TEXT_HEADS, ACT = 16, 16, "gelu"


def build(files, dtype=torch.float32, ops=nn) -> ClipScorer:
    """HPSv2.1's Scorer from ``files["checkpoint"]`` (open_clip state dict, optionally under
    ``state_dict`` and with DDP's ``module.`` prefix), trunk in ``dtype``."""
    path = files["checkpoint"]
    sd = clip.load_weights(path)
    if "visual.conv1.weight" not in sd:
        raise ValueError(f"checkpoint {path}: not an open_clip state dict (visual.conv1.weight missing)")
    model = clip.build_clip(sd, None, act=ACT, vision_heads=VISION_HEADS, text_heads=TEXT_HEADS, dtype=dtype,
                            ops=ops, source=f"checkpoint {path}")
    if not hasattr(model, "text_model"):
        raise ValueError(f"checkpoint {path}: no text tower (HPSv2.1 needs the whole open_clip model)")
    return ClipScorer(NAME, model, tokenizer(files, "open_clip"), os.path.basename(path), "round", False)


base.register(sys.modules[__name__])
