"""PickScore v1 (Kirstain et al., NeurIPS 2023): a CLIP ViT-H/14 fine-tuned on
Pick-a-Pic, in transformers' ``CLIPModel`` format (``yuvalkirstain/PickScore_v1``:
``model.safetensors`` + ``config.json``), scored as its README does:

    score = logit_scale.exp() * cos(image_embeds, text_embeds)

with the processor of ``laion/CLIP-ViT-H-14-laion2B-s32B-b79K`` (transformers'
CLIPImageProcessor: PIL bicubic resize of the shorter side to 224, centre crop
with a floored offset, CLIP mean/std; CLIP's BPE, 77 tokens, truncated).
Plain torch (scoring/clip.py); no transformers at run time.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Mapping, Sequence

import torch
from torch import nn

from . import base, clip

NAME = "pickscore"
WEIGHTS = "model.safetensors"
REPO = "yuvalkirstain/PickScore_v1"
FOLDER = "pickscore"
FILES = {
    "checkpoint": base.FileSpec(WEIGHTS, FOLDER, REPO, WEIGHTS, exts=(".safetensors", ".bin"), choice=True,
                                alternatives=("PickScore_v1/model.safetensors",)),
}
# ViT-H/14 as laion/CLIP-ViT-H-14-laion2B-s32B-b79K's config.json (PickScore's own): used when no config.json
# lies beside the weights; the heads and the activation are not readable off the tensors.
VISION_HEADS, TEXT_HEADS, ACT = 16, 16, "gelu"


def read_config(files: Mapping[str, str]) -> dict | None:
    """transformers' config.json: ``files["config"]``, else the one beside the weights, else None."""
    path = files.get("config") or os.path.join(os.path.dirname(files["checkpoint"]), "config.json")
    if not path or not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        try:
            return clip.config_from_hf(json.load(f), path)
        except json.JSONDecodeError as e:
            raise ValueError(f"{path}: not valid JSON ({e})") from None


def tokenizer(files: Mapping[str, str], flavour: str = "hf") -> clip.Tokenizer:
    """CLIP's BPE from ``files["vocab"]``/``files["merges"]``, or ``files["tokenizer_dir"]``,
    else ComfyUI's comfy/sd1_tokenizer (the same vocabulary)."""
    d = files.get("tokenizer_dir")
    vocab = files.get("vocab") or (os.path.join(d, "vocab.json") if d else None)
    merges = files.get("merges") or (os.path.join(d, "merges.txt") if d else None)
    return clip.Tokenizer(vocab, merges, flavour=flavour)


class ClipScorer(base.Scorer):
    """A CLIP image-text scorer: ``scale * cos(image, text)``; ``scale`` is
    ``logit_scale.exp()`` (PickScore) or 1 (HPSv2.1)."""

    needs_prompt = True

    def __init__(self, name: str, model: clip.CLIP, tok: clip.Tokenizer, weights: str, crop: str,
                 use_logit_scale: bool):
        self.name, self.module, self.tokenizer, self.weights = name, model, tok, weights
        self.crop, self.use_logit_scale = crop, use_logit_scale

    def pixels(self, images) -> torch.Tensor:
        return clip.preprocess(images, self.module.image_size, self.crop)

    @torch.no_grad()
    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        prompts = base.check_batch(images, prompts, True)
        dev, dt = self.device, self.dtype
        img = self.module.encode_image(self.pixels(images).to(dev, dt))
        txt = self.module.encode_text(self.tokenizer(prompts).to(dev))
        s = (img * txt).sum(-1)
        if self.use_logit_scale:
            s = self.module.logit_scale.float().exp() * s
        return s.float().cpu()


def build(files: Mapping[str, str], dtype=torch.float32, ops=nn) -> ClipScorer:
    """PickScore's Scorer from ``files["checkpoint"]`` (transformers' CLIPModel weights; ``config.json``
    beside them or as ``files["config"]``, ViT-H/14 otherwise), trunk in ``dtype``."""
    path = files["checkpoint"]
    model = clip.build_clip(clip.load_weights(path), read_config(files), act=ACT, vision_heads=VISION_HEADS,
                            text_heads=TEXT_HEADS, dtype=dtype, ops=ops, source=f"checkpoint {path}")
    if not hasattr(model, "text_model"):
        raise ValueError(f"checkpoint {path}: no text model (PickScore needs the whole CLIPModel)")
    return ClipScorer(NAME, model, tokenizer(files, "hf"), os.path.basename(path), "floor", True)


base.register(sys.modules[__name__])
