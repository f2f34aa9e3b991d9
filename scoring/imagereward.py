"""ImageReward (Xu et al., NeurIPS 2023) in plain torch: network, tokenizer,
preprocessing, weights-only loading, and its Scorer (scoring/base.py).

The model is the one of the published ``ImageReward.pt`` (THUDM/ImageReward):

* BLIP's ViT-L/16 at 224 px (24 blocks, width 1024, 16 heads, LayerNorm eps
  1e-6, pre-norm blocks, class token, learned positions), returning the whole
  normalised token sequence;
* BLIP's BERT-base text encoder (12 layers, width 768, post-norm) with a
  cross-attention to the image tokens in every layer, word and position
  embeddings only (BLIP's BERT has no token-type embedding);
* an MLP head on the text encoder's first token: five Linear layers and no
  activation between them (as published), 768 -> 1024 -> 128 -> 64 -> 16 -> 1;
* the score is ``(head - MEAN) / STD`` with the constants of the release.

Module and parameter names are those of the release, so its state dict loads
without a key mapping (``load_state_dict`` checks every tensor we use and
ignores the ones scoring never reads: BLIP's ITC projections and BERT's
``position_ids`` buffer). Layers are built from an ``ops`` namespace
(``Linear``, ``Conv2d``, ``LayerNorm``, ``Embedding``; ``torch.nn`` by default),
as ComfyUI's own models are, so a host can skip the random initialisation and
cast weights on the fly.

Text: BERT's uncased WordPiece with BLIP's two extra tokens (``[DEC]``,
``[ENC]``), padded and truncated to 35 tokens; the self-attention mask is BERT's
additive ``-10000`` on padding, the cross-attention is unmasked. Images: the
release's preprocessing (torchvision ``Resize(224, bicubic)`` of the shorter
side on a PIL image, ``CenterCrop(224)``, CLIP's mean/std), done here with PIL
on the 8-bit image (ComfyUI's ``SaveImage`` quantisation, so a score is the
score of the saved file).
"""

from __future__ import annotations

import json
import math
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

MEAN = 0.16717362830052426
STD = 1.0333394966054072
IMAGE_SIZE = 224
MAX_TEXT_TOKENS = 35
PIXEL_MEAN = (0.48145466, 0.4578275, 0.40821073)
PIXEL_STD = (0.26862954, 0.26130258, 0.27577711)
EXTRA_TOKENS = ("[DEC]", "[ENC]")  # BLIP's bos and encoder tokens, ids 30522 and 30523 after BERT's vocabulary

# ImageReward's med_config.json (BLIP's BERT config); encoder_width is replaced by the ViT's width (1024).
MED_CONFIG = {
    "architectures": ["BertModel"], "attention_probs_dropout_prob": 0.1, "hidden_act": "gelu",
    "hidden_dropout_prob": 0.1, "hidden_size": 768, "initializer_range": 0.02, "intermediate_size": 3072,
    "layer_norm_eps": 1e-12, "max_position_embeddings": 512, "model_type": "bert", "num_attention_heads": 12,
    "num_hidden_layers": 12, "pad_token_id": 0, "type_vocab_size": 2, "vocab_size": 30524, "encoder_width": 768,
    "add_cross_attention": True,
}
VIT_LARGE = {"width": 1024, "depth": 24, "heads": 16, "patch": 16, "image_size": IMAGE_SIZE}
IGNORED_KEYS = ("blip.vision_proj.", "blip.text_proj.", "blip.text_encoder.embeddings.position_ids")


def _attention(q, k, v, heads: int, mask=None):
    """Multi-head attention of (B, N, C) projections; ``mask`` additive, broadcast to (B, heads, Nq, Nk)."""
    b, n, c = q.shape
    q, k, v = (t.reshape(b, t.shape[1], heads, c // heads).transpose(1, 2) for t in (q, k, v))
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out.transpose(1, 2).reshape(b, n, c)


# --------------------------------------------------------------------------- BLIP ViT

class _ViTAttention(nn.Module):
    def __init__(self, dim, heads, ops):
        super().__init__()
        self.heads = heads
        self.qkv = ops.Linear(dim, 3 * dim)
        self.proj = ops.Linear(dim, dim)

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return self.proj(_attention(q, k, v, self.heads))


class _ViTMlp(nn.Module):
    def __init__(self, dim, hidden, ops):
        super().__init__()
        self.fc1 = ops.Linear(dim, hidden)
        self.fc2 = ops.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class _ViTBlock(nn.Module):
    def __init__(self, dim, heads, ops):
        super().__init__()
        self.norm1 = ops.LayerNorm(dim, eps=1e-6)
        self.attn = _ViTAttention(dim, heads, ops)
        self.norm2 = ops.LayerNorm(dim, eps=1e-6)
        self.mlp = _ViTMlp(dim, 4 * dim, ops)

    def forward(self, x):
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class _PatchEmbed(nn.Module):
    def __init__(self, patch, dim, ops):
        super().__init__()
        self.proj = ops.Conv2d(3, dim, kernel_size=patch, stride=patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)


class VisionTransformer(nn.Module):
    """BLIP's ViT: the normalised token sequence (B, 1 + (S/P)^2, width) of images (B, 3, S, S)."""

    def __init__(self, width=1024, depth=24, heads=16, patch=16, image_size=IMAGE_SIZE, ops=nn):
        super().__init__()
        n = (image_size // patch) ** 2
        self.patch_embed = _PatchEmbed(patch, width, ops)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, width))
        self.pos_embed = nn.Parameter(torch.zeros(1, n + 1, width))
        self.blocks = nn.ModuleList([_ViTBlock(width, heads, ops) for _ in range(depth)])
        self.norm = ops.LayerNorm(width, eps=1e-6)

    def forward(self, pixels):
        x = self.patch_embed(pixels)
        cls = self.cls_token.to(x).expand(x.shape[0], -1, -1)
        x = torch.cat([cls, x], dim=1)
        x = x + self.pos_embed.to(x)[:, :x.shape[1]]
        for blk in self.blocks:
            x = blk(x)
        return self.norm(x)


# --------------------------------------------------------------------------- BLIP BERT (med)

class _BertSelfAttention(nn.Module):
    def __init__(self, hidden, kv_width, heads, ops):
        super().__init__()
        self.heads = heads
        self.query = ops.Linear(hidden, hidden)
        self.key = ops.Linear(kv_width, hidden)
        self.value = ops.Linear(kv_width, hidden)

    def forward(self, x, context, mask):
        return _attention(self.query(x), self.key(context), self.value(context), self.heads, mask)


class _BertOutput(nn.Module):
    """``LayerNorm(dense(x) + residual)`` (BERT's post-norm); BertSelfOutput and BertOutput alike."""

    def __init__(self, d_in, hidden, eps, ops):
        super().__init__()
        self.dense = ops.Linear(d_in, hidden)
        self.LayerNorm = ops.LayerNorm(hidden, eps=eps)

    def forward(self, x, residual):
        return self.LayerNorm(self.dense(x) + residual)


class _BertAttention(nn.Module):
    def __init__(self, hidden, kv_width, heads, eps, ops):
        super().__init__()
        self.self = _BertSelfAttention(hidden, kv_width, heads, ops)
        self.output = _BertOutput(hidden, hidden, eps, ops)

    def forward(self, x, context, mask):
        return self.output(self.self(x, context, mask), x)


class _BertIntermediate(nn.Module):
    def __init__(self, hidden, inner, ops):
        super().__init__()
        self.dense = ops.Linear(hidden, inner)

    def forward(self, x):
        return F.gelu(self.dense(x))


class _BertLayer(nn.Module):
    def __init__(self, cfg, ops):
        super().__init__()
        h, heads, eps = cfg["hidden_size"], cfg["num_attention_heads"], cfg["layer_norm_eps"]
        self.attention = _BertAttention(h, h, heads, eps, ops)
        self.crossattention = _BertAttention(h, cfg["encoder_width"], heads, eps, ops)
        self.intermediate = _BertIntermediate(h, cfg["intermediate_size"], ops)
        self.output = _BertOutput(cfg["intermediate_size"], h, eps, ops)

    def forward(self, x, self_mask, image):
        x = self.attention(x, x, self_mask)
        x = self.crossattention(x, image, None)
        return self.output(self.intermediate(x), x)


class _BertEmbeddings(nn.Module):
    def __init__(self, cfg, ops):
        super().__init__()
        self.word_embeddings = ops.Embedding(cfg["vocab_size"], cfg["hidden_size"])
        self.position_embeddings = ops.Embedding(cfg["max_position_embeddings"], cfg["hidden_size"])
        self.LayerNorm = ops.LayerNorm(cfg["hidden_size"], eps=cfg["layer_norm_eps"])

    def forward(self, ids):
        pos = torch.arange(ids.shape[1], device=ids.device)[None]
        return self.LayerNorm(self.word_embeddings(ids) + self.position_embeddings(pos))


class _BertEncoder(nn.Module):
    def __init__(self, cfg, ops):
        super().__init__()
        self.layer = nn.ModuleList([_BertLayer(cfg, ops) for _ in range(cfg["num_hidden_layers"])])


class BertTextEncoder(nn.Module):
    """BLIP's multimodal BERT: token states (B, L, 768) of ``ids`` attending to ``image`` tokens."""

    def __init__(self, cfg: Mapping, ops=nn):
        super().__init__()
        self.config = dict(cfg)
        self.embeddings = _BertEmbeddings(cfg, ops)
        self.encoder = _BertEncoder(cfg, ops)

    def forward(self, ids, attention_mask, image):
        x = self.embeddings(ids)
        # BERT's extended mask: 0 where attended, -10000 on padding (added to the logits, not -inf)
        mask = ((1.0 - attention_mask[:, None, None, :].to(x.dtype)) * -10000.0)
        for layer in self.encoder.layer:
            x = layer(x, mask, image)
        return x


class _Blip(nn.Module):
    def __init__(self, med_config, vit, ops):
        super().__init__()
        self.visual_encoder = VisionTransformer(**vit, ops=ops)
        self.text_encoder = BertTextEncoder({**med_config, "encoder_width": vit["width"]}, ops)


class _Head(nn.Module):
    def __init__(self, width, ops):
        super().__init__()
        dims = (width, 1024, 128, 64, 16, 1)
        # indices 0, 2, 4, 6, 7 as in the release (its Dropout layers sit at 1, 3, 5)
        layers = []
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(ops.Linear(a, b))
            if i < 3:
                layers.append(nn.Identity())
        self.layers = nn.Sequential(*layers)

    def forward(self, x):
        return self.layers(x)


class ImageReward(nn.Module):
    """ImageReward: ``forward(pixels, ids, attention_mask)`` -> normalised scores (B,).

    ``pixels`` come from ``preprocess``; ``ids`` / ``attention_mask`` (B, 35)
    from ``Tokenizer``. The head runs in float32 whatever the trunk's dtype."""

    def __init__(self, med_config: Mapping | None = None, vit: Mapping | None = None, ops=nn):
        super().__init__()
        self.med_config = dict(med_config or MED_CONFIG)
        self.vit_config = dict(vit or VIT_LARGE)
        self.blip = _Blip(self.med_config, self.vit_config, ops)
        self.mlp = _Head(self.med_config["hidden_size"], ops)

    @property
    def image_size(self) -> int:
        return int(self.vit_config["image_size"])

    def features(self, pixels, ids, attention_mask):
        """The text encoder's first token (B, 768), float32, with the image in its cross-attention."""
        image = self.blip.visual_encoder(pixels)
        return self.blip.text_encoder(ids, attention_mask, image)[:, 0, :].float()

    def forward(self, pixels, ids, attention_mask):
        feats = self.features(pixels, ids, attention_mask)
        head = self.mlp(feats.to(self.mlp.layers[0].weight.dtype)).float()
        return ((head - MEAN) / STD)[:, 0]


def check_state_dict(model: nn.Module, sd: Mapping[str, torch.Tensor], source: str = "checkpoint") -> dict:
    """The part of an ImageReward state dict ``model`` uses, checked: every
    tensor present with its shape. Raises ValueError naming ``source`` and the
    first missing or misshapen keys otherwise (a truncated or foreign file)."""
    if not isinstance(sd, Mapping) or not all(isinstance(k, str) for k in sd):
        raise ValueError(f"{source}: not a state dict (got {type(sd).__name__})")
    want = model.state_dict()
    missing = [k for k in want if k not in sd]
    bad = [f"{k} {tuple(sd[k].shape)} (expected {tuple(want[k].shape)})" for k in want
           if k in sd and (not isinstance(sd[k], torch.Tensor) or sd[k].shape != want[k].shape)]
    if missing or bad:
        parts = []
        if missing:
            parts.append(f"{len(missing)} tensors missing (e.g. {', '.join(missing[:3])})")
        if bad:
            parts.append(f"{len(bad)} with the wrong shape (e.g. {'; '.join(bad[:3])})")
        raise ValueError(f"{source} is not an ImageReward checkpoint: {', '.join(parts)}")
    return {k: sd[k] for k in want}


def load_checkpoint(path: str) -> dict:
    """A state dict from ``.safetensors`` or a torch file, without unpickling
    code (``weights_only``). A file that cannot be read raises ValueError naming it."""
    try:
        if str(path).endswith(".safetensors"):
            from safetensors.torch import load_file
            return load_file(str(path), device="cpu")
        return torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # truncated, corrupt, or a pickle with code in it
        raise ValueError(f"checkpoint {path}: cannot be read as weights ({type(e).__name__}: {e})") from None


def check_med_config(cfg, source: str = "med_config.json") -> dict:
    """The BERT config as ImageReward needs it, checked (JSON text, path-free mapping)."""
    if isinstance(cfg, (str, bytes)):
        try:
            cfg = json.loads(cfg)
        except json.JSONDecodeError as e:
            raise ValueError(f"{source}: not valid JSON ({e})") from None
    need = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "vocab_size",
            "max_position_embeddings", "layer_norm_eps")
    if not isinstance(cfg, Mapping) or any(k not in cfg for k in need):
        missing = [k for k in need if not isinstance(cfg, Mapping) or k not in cfg]
        raise ValueError(f"{source}: not a BERT config (missing {', '.join(missing)})")
    if cfg.get("hidden_act", "gelu") != "gelu" or cfg.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"{source}: only gelu and absolute positions are supported, as in ImageReward")
    return dict(cfg)


def vit_config(sd: Mapping, source: str = "checkpoint") -> dict:
    """The ViT's shape read off a BLIP state dict (ViT-L/16 at 224 for the
    release): width, depth, patch and image size from the tensors, heads =
    width / 64 as in BLIP's ViT-B and ViT-L."""
    pre = "blip.visual_encoder."
    need = [pre + "cls_token", pre + "pos_embed", pre + "patch_embed.proj.weight"]
    if not isinstance(sd, Mapping) or any(k not in sd for k in need):
        missing = [k for k in need if not isinstance(sd, Mapping) or k not in sd]
        raise ValueError(f"{source} is not an ImageReward checkpoint: {', '.join(missing)} missing")
    width = int(sd[pre + "cls_token"].shape[-1])
    patch = int(sd[pre + "patch_embed.proj.weight"].shape[-1])
    grid = math.isqrt(int(sd[pre + "pos_embed"].shape[1]) - 1)
    depth = len({k.split(".")[3] for k in sd if k.startswith(pre + "blocks.")})
    if width % 64 or grid * grid + 1 != sd[pre + "pos_embed"].shape[1] or depth == 0:
        raise ValueError(f"{source}: a vision encoder of width {width}, {depth} blocks and "
                         f"{tuple(sd[pre + 'pos_embed'].shape)} positions is not BLIP's ViT")
    return {"width": width, "depth": depth, "heads": width // 64, "patch": patch, "image_size": grid * patch}


def load_model(state_dict: Mapping, med_config: Mapping | None = None, ops=nn, dtype=torch.float32,
               source: str = "checkpoint") -> ImageReward:
    """An ImageReward in eval mode with the weights of ``state_dict`` (built
    on the meta device, so nothing is initialised twice), trunk in ``dtype``,
    head in float32. The ViT's shape is read off the state dict (see ``vit_config``)."""
    if isinstance(state_dict, Mapping) and isinstance(state_dict.get("state_dict"), Mapping):
        state_dict = state_dict["state_dict"]
    with torch.device("meta"):
        model = ImageReward(check_med_config(med_config or MED_CONFIG), vit_config(state_dict, source), ops=ops)
    sd = check_state_dict(model, state_dict, source)
    model.load_state_dict(sd, assign=True)
    model.to(dtype)
    model.mlp.to(torch.float32)
    return model.eval().requires_grad_(False)


def unused_keys(model: nn.Module, sd: Mapping) -> list[str]:
    """Keys of ``sd`` neither used by ``model`` nor known to be unused by scoring."""
    want = model.state_dict()
    return [k for k in sd if k not in want and not k.startswith(IGNORED_KEYS)]


# --------------------------------------------------------------------------- inputs

def resized_size(height: int, width: int, size: int = IMAGE_SIZE) -> tuple[int, int]:
    """torchvision's ``Resize(size)``: the shorter side to ``size``, the longer one scaled and truncated."""
    if height <= width:
        return size, int(size * width / height)
    return int(size * height / width), size


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """ComfyUI IMAGE (B, H, W, C) in [0, 1] -> uint8 as ComfyUI's SaveImage writes it (truncation)."""
    return np.clip(255.0 * images.detach().float().cpu().numpy(), 0, 255).astype(np.uint8)


def _preprocess_one(img: np.ndarray, size: int) -> np.ndarray:
    from PIL import Image
    h, w = img.shape[:2]
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    pil = Image.fromarray(img)
    nh, nw = resized_size(h, w, size)
    pil = pil.resize((nw, nh), Image.BICUBIC)
    top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
    pil = pil.crop((left, top, left + size, top + size)).convert("RGB")
    return np.asarray(pil)


def preprocess(images, size: int = IMAGE_SIZE, workers: int = 4) -> torch.Tensor:
    """Pixels (B, 3, size, size) float32 for ImageReward from uint8 images
    (B, H, W, C) or a list of (H, W, C) arrays (sizes may differ): the release's
    bicubic resize of the shorter side, centre crop, CLIP normalisation.
    The PIL resizes run in a thread pool (PIL releases the GIL)."""
    imgs = list(images)
    if not imgs:
        raise ValueError("images: empty batch")
    if len(imgs) > 1 and workers > 1:
        with ThreadPoolExecutor(max_workers=min(workers, len(imgs))) as pool:
            out = list(pool.map(lambda a: _preprocess_one(np.asarray(a), size), imgs))
    else:
        out = [_preprocess_one(np.asarray(a), size) for a in imgs]
    x = torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(PIXEL_STD).view(1, 3, 1, 1)
    return (x - mean) / std


class Tokenizer:
    """BERT's uncased WordPiece (``vocab.txt`` of bert-base-uncased) with
    BLIP's added tokens, as ImageReward calls it: ``[CLS] ... [SEP]``, padded
    and truncated to ``max_length``. Built on the ``tokenizers`` library."""

    def __init__(self, vocab_file: str, max_length: int = MAX_TEXT_TOKENS):
        from tokenizers import Tokenizer as _T, normalizers, pre_tokenizers, processors
        from tokenizers.models import WordPiece
        vocab = {}
        with open(vocab_file, encoding="utf-8") as f:
            for i, line in enumerate(f):
                vocab[line.rstrip("\n")] = i
        for t in ("[CLS]", "[SEP]", "[PAD]", "[UNK]"):
            if t not in vocab:
                raise ValueError(f"{vocab_file}: not a BERT vocabulary ({t} missing)")
        tok = _T(WordPiece(vocab, unk_token="[UNK]", max_input_chars_per_word=100))
        tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                    strip_accents=None, lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        cls, sep = vocab["[CLS]"], vocab["[SEP]"]
        tok.post_processor = processors.TemplateProcessing(
            single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
        tok.add_special_tokens([t for t in ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]") if t in vocab])
        tok.add_special_tokens(list(EXTRA_TOKENS))
        tok.enable_truncation(max_length=max_length)
        tok.enable_padding(length=max_length, pad_id=vocab["[PAD]"], pad_token="[PAD]")
        self._tok, self.max_length, self.vocab_size = tok, max_length, tok.get_vocab_size(with_added_tokens=True)

    def __call__(self, prompts: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        enc = self._tok.encode_batch(list(prompts))
        ids = torch.tensor([e.ids for e in enc], dtype=torch.long)
        mask = torch.tensor([e.attention_mask for e in enc], dtype=torch.long)
        return ids, mask


@torch.no_grad()
def score(model: ImageReward, tokenizer: Tokenizer, images, prompts: Sequence[str], device=None,
          dtype=None) -> torch.Tensor:
    """Scores (B,) float32 on the CPU of uint8 images against their prompts (one
    per image), in one pass on ``device`` with pixels in ``dtype`` (default:
    where and how the model's weights are)."""
    prompts = list(prompts)
    n = len(images)
    if n == 0:
        raise ValueError("images: empty batch")
    if len(prompts) != n:
        raise ValueError(f"prompts: {len(prompts)} prompts for {n} images")
    w = model.blip.visual_encoder.pos_embed
    device, dtype = device or w.device, dtype or w.dtype
    pixels = preprocess(images, model.image_size).to(device=device, dtype=dtype)
    ids, mask = tokenizer(prompts)
    return model(pixels, ids.to(device), mask.to(device)).float().cpu()


# --------------------------------------------------------------------------- the estimator slot

from . import base  # noqa: E402

NAME = "imagereward"
CHECKPOINT, MED_CONFIG_FILE, VOCAB_FILE = "ImageReward.pt", "med_config.json", "vocab.txt"
FILES = {
    "checkpoint": base.FileSpec(CHECKPOINT, "image_reward", "THUDM/ImageReward", "ImageReward.pt",
                                exts=(".pt", ".pth", ".bin", ".safetensors"), choice=True),
    "med_config": base.FileSpec(MED_CONFIG_FILE, "image_reward", "THUDM/ImageReward", "med_config.json"),
    "vocab": base.FileSpec(VOCAB_FILE, "image_reward", "google-bert/bert-base-uncased", "vocab.txt",
                           alternatives=("bert-base-uncased/vocab.txt",)),
}


class ImageRewardScorer(base.Scorer):
    """ImageReward behind the Scorer interface (prompted, normalised scores)."""

    name = NAME
    needs_prompt = True

    def __init__(self, model: ImageReward, tokenizer: Tokenizer, weights: str = CHECKPOINT):
        if tokenizer.vocab_size != model.med_config["vocab_size"]:
            raise ValueError(f"vocab.txt: {tokenizer.vocab_size} tokens with BLIP's two, the checkpoint has "
                             f"{model.med_config['vocab_size']} (bert-base-uncased's vocab.txt expected)")
        self.module, self.tokenizer, self.weights = model, tokenizer, weights

    def score(self, images: torch.Tensor, prompts: Sequence[str]) -> torch.Tensor:
        prompts = base.check_batch(images, prompts, True)
        w = self.module.blip.visual_encoder.pos_embed
        return score(self.module, self.tokenizer, to_uint8(images), prompts, device=w.device, dtype=w.dtype)


def build(files: Mapping[str, str], dtype=torch.float32, ops=nn) -> ImageRewardScorer:
    """The Scorer of ``files`` (``checkpoint``, ``med_config``, ``vocab``: paths), trunk in ``dtype``."""
    import os
    with open(files["med_config"], encoding="utf-8") as f:
        cfg = check_med_config(f.read(), files["med_config"])
    src = f"checkpoint {files['checkpoint']}"
    sd = load_checkpoint(files["checkpoint"])
    model = load_model(sd, cfg, ops=ops, dtype=dtype, source=src)
    scorer = ImageRewardScorer(model, Tokenizer(files["vocab"]), os.path.basename(files["checkpoint"]))
    scorer.unused = unused_keys(model, sd.get("state_dict", sd) if isinstance(sd, Mapping) else sd)
    return scorer


base.register(sys.modules[__name__])
