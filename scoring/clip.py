"""CLIP in plain torch (no ComfyUI, transformers or open_clip at run time):
the ViT image tower, the causal text transformer and their projections, for
the estimators built on CLIP (PickScore v1, HPSv2.1, the LAION aesthetic
predictor's ViT-L/14).

One module, ``CLIP``, with the parameter names of transformers' ``CLIPModel``
(``vision_model.*``, ``text_model.*``, ``visual_projection``,
``text_projection``, ``logit_scale``), so a transformers checkpoint (PickScore's
``model.safetensors``, openai/clip-vit-large-patch14's, or a ComfyUI
``clip_vision`` file of the vision half) loads without renaming; an open_clip
state dict (HPSv2.1) is renamed by ``from_open_clip`` (fused ``in_proj``
split into q/k/v, ``proj`` matrices transposed into Linear weights).

Both layouts compute the same function: pre-norm blocks, class token and
learned positions, ``ln_post`` on the class token, text pooled at the first
end-of-text token (the largest id, as both originals take it), embeddings
projected without bias. Activation: ``quick_gelu`` (OpenAI's models) or exact
``gelu`` (LAION's ViT-H/14, open_clip's default).

Inputs: ``preprocess`` is the originals' PIL pipeline on the 8-bit image
(ComfyUI's SaveImage quantisation): bicubic resize of the shorter side to 224
(torchvision's/transformers' output size: the longer side truncated), centre
crop (transformers floors the offset, torchvision rounds it: ``crop="floor"`` /
``"round"``), CLIP's mean/std. ``Tokenizer`` is CLIP's byte-level BPE on the
``vocab.json``/``merges.txt`` that ComfyUI ships in ``comfy/sd1_tokenizer``
(the same vocabulary as OpenAI's and LAION's CLIP), built on the ``tokenizers``
library with the normalisation of transformers' fast CLIP tokenizer
(``flavour="hf"``) or of open_clip's ``SimpleTokenizer`` (``"open_clip"``:
HTML entities unescaped, ``ftfy`` when installed, NFC otherwise).
"""

from __future__ import annotations

import html
import importlib.util
import json
import math
import os
import unicodedata
from concurrent.futures import ThreadPoolExecutor
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

PIXEL_MEAN = (0.48145466, 0.4578275, 0.40821073)
PIXEL_STD = (0.26862954, 0.26130258, 0.27577711)
CONTEXT = 77
SOT, EOT = "<|startoftext|>", "<|endoftext|>"
SPLIT = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""

# transformers' config.json "vision_config"/"text_config" keys -> ours
_HF_KEYS = {"hidden_size": "width", "num_hidden_layers": "layers", "num_attention_heads": "heads",
            "intermediate_size": "mlp", "hidden_act": "act", "layer_norm_eps": "eps", "patch_size": "patch",
            "image_size": "image_size", "vocab_size": "vocab", "max_position_embeddings": "context"}


# --------------------------------------------------------------------------- model

def _act(name: str):
    if name == "quick_gelu":
        return lambda x: x * torch.sigmoid(1.702 * x)
    if name in ("gelu", "gelu_python"):
        return F.gelu
    raise ValueError(f"activation {name!r} is not CLIP's (quick_gelu or gelu)")


class _Attention(nn.Module):
    def __init__(self, width, heads, ops):
        super().__init__()
        self.heads = heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (ops.Linear(width, width) for _ in range(4))

    def forward(self, x, causal=False):
        b, n, c = x.shape
        q, k, v = (p(x).view(b, n, self.heads, c // self.heads).transpose(1, 2)
                   for p in (self.q_proj, self.k_proj, self.v_proj))
        o = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
        return self.out_proj(o.transpose(1, 2).reshape(b, n, c))


class _Mlp(nn.Module):
    def __init__(self, width, hidden, act, ops):
        super().__init__()
        self.fc1, self.fc2, self.act = ops.Linear(width, hidden), ops.Linear(hidden, width), _act(act)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class _Layer(nn.Module):
    def __init__(self, cfg, ops):
        super().__init__()
        self.layer_norm1 = ops.LayerNorm(cfg["width"], eps=cfg["eps"])
        self.self_attn = _Attention(cfg["width"], cfg["heads"], ops)
        self.layer_norm2 = ops.LayerNorm(cfg["width"], eps=cfg["eps"])
        self.mlp = _Mlp(cfg["width"], cfg["mlp"], cfg["act"], ops)

    def forward(self, x, causal=False):
        x = x + self.self_attn(self.layer_norm1(x), causal)
        return x + self.mlp(self.layer_norm2(x))


class _Encoder(nn.Module):
    def __init__(self, cfg, ops):
        super().__init__()
        self.layers = nn.ModuleList(_Layer(cfg, ops) for _ in range(cfg["layers"]))

    def forward(self, x, causal=False):
        for layer in self.layers:
            x = layer(x, causal)
        return x


class _VisionEmbeddings(nn.Module):
    def __init__(self, cfg, ops):
        super().__init__()
        w, p = cfg["width"], cfg["patch"]
        self.class_embedding = nn.Parameter(torch.empty(w))
        self.patch_embedding = ops.Conv2d(3, w, p, stride=p, bias=False)
        self.position_embedding = ops.Embedding((cfg["image_size"] // p) ** 2 + 1, w)

    def forward(self, pixels):
        x = self.patch_embedding(pixels.to(self.patch_embedding.weight.dtype)).flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        return torch.cat([cls, x], 1) + self.position_embedding.weight.to(x.dtype)


class VisionTransformer(nn.Module):
    def __init__(self, cfg, ops=nn):
        super().__init__()
        self.embeddings = _VisionEmbeddings(cfg, ops)
        self.pre_layrnorm = ops.LayerNorm(cfg["width"], eps=cfg["eps"])  # transformers' spelling
        self.encoder = _Encoder(cfg, ops)
        self.post_layernorm = ops.LayerNorm(cfg["width"], eps=cfg["eps"])

    def forward(self, pixels):
        x = self.encoder(self.pre_layrnorm(self.embeddings(pixels)))
        return self.post_layernorm(x[:, 0])


class _TextEmbeddings(nn.Module):
    def __init__(self, cfg, ops):
        super().__init__()
        self.token_embedding = ops.Embedding(cfg["vocab"], cfg["width"])
        self.position_embedding = ops.Embedding(cfg["context"], cfg["width"])

    def forward(self, ids):
        return self.token_embedding(ids) + self.position_embedding.weight[: ids.shape[1]]


class TextTransformer(nn.Module):
    def __init__(self, cfg, ops=nn):
        super().__init__()
        self.embeddings = _TextEmbeddings(cfg, ops)
        self.encoder = _Encoder(cfg, ops)
        self.final_layer_norm = ops.LayerNorm(cfg["width"], eps=cfg["eps"])

    def forward(self, ids):
        x = self.final_layer_norm(self.encoder(self.embeddings(ids), causal=True))
        return x[torch.arange(ids.shape[0], device=ids.device), ids.argmax(-1)]  # first end-of-text


class CLIP(nn.Module):
    """CLIP with transformers' parameter names; ``text=False`` builds the image half only."""

    def __init__(self, cfg: Mapping, text: bool = True, ops=nn):
        super().__init__()
        self.cfg = cfg
        v = cfg["vision"]
        self.vision_model = VisionTransformer(v, ops)
        self.visual_projection = ops.Linear(v["width"], cfg["embed_dim"], bias=False)
        self.image_size = v["image_size"]
        if text:
            t = cfg["text"]
            self.text_model = TextTransformer(t, ops)
            self.text_projection = ops.Linear(t["width"], cfg["embed_dim"], bias=False)
            self.logit_scale = nn.Parameter(torch.empty(()))

    def encode_image(self, pixels, normalize=True):
        x = self.visual_projection(self.vision_model(pixels))
        return F.normalize(x.float(), dim=-1) if normalize else x

    def encode_text(self, ids, normalize=True):
        x = self.text_projection(self.text_model(ids))
        return F.normalize(x.float(), dim=-1) if normalize else x


# --------------------------------------------------------------------------- configs and loading

def config_from_hf(cfg: Mapping, source: str = "config.json") -> dict:
    """Our config from a transformers ``CLIPConfig`` (``config.json``)."""
    out = {"embed_dim": cfg.get("projection_dim", 512)}
    for side, need in (("vision", ("hidden_size", "num_hidden_layers", "num_attention_heads", "patch_size")),
                       ("text", ("hidden_size", "num_hidden_layers", "num_attention_heads"))):
        sub = cfg.get(f"{side}_config")
        if not isinstance(sub, Mapping) or any(k not in sub for k in need):
            raise ValueError(f"{source}: not a CLIP config ({side}_config missing or incomplete)")
        d = {"act": "quick_gelu", "eps": 1e-5, "image_size": 224, "vocab": 49408, "context": CONTEXT}
        d.update({_HF_KEYS[k]: v for k, v in sub.items() if k in _HF_KEYS})
        d.setdefault("mlp", 4 * d["width"])
        out[side] = d
    return out


def _shape_config(sd: Mapping, vision_heads: int | None, text_heads: int | None, act: str) -> dict:
    """Config read off a state dict in our (transformers) layout; heads and the
    activation are not in the tensors and come from the caller."""
    pre = "vision_model."
    w = int(sd[pre + "embeddings.class_embedding"].shape[0])
    patch = int(sd[pre + "embeddings.patch_embedding.weight"].shape[-1])
    grid = math.isqrt(int(sd[pre + "embeddings.position_embedding.weight"].shape[0]) - 1)
    layers = len({k.split(".")[3] for k in sd if k.startswith(pre + "encoder.layers.")})
    cfg = {"embed_dim": int(sd["visual_projection.weight"].shape[0]),
           "vision": {"width": w, "layers": layers, "heads": vision_heads or w // 64, "patch": patch,
                      "image_size": grid * patch, "mlp": int(sd[pre + "encoder.layers.0.mlp.fc1.weight"].shape[0]),
                      "act": act, "eps": 1e-5}}
    if "text_model.embeddings.token_embedding.weight" in sd:
        tw = int(sd["text_model.final_layer_norm.weight"].shape[0])
        cfg["text"] = {"width": tw, "heads": text_heads or tw // 64,
                       "layers": len({k.split(".")[3] for k in sd if k.startswith("text_model.encoder.layers.")}),
                       "vocab": int(sd["text_model.embeddings.token_embedding.weight"].shape[0]),
                       "context": int(sd["text_model.embeddings.position_embedding.weight"].shape[0]),
                       "mlp": int(sd["text_model.encoder.layers.0.mlp.fc1.weight"].shape[0]), "act": act, "eps": 1e-5}
    return cfg


def from_open_clip(sd: Mapping) -> dict:
    """An open_clip CLIP state dict (``visual.*``, ``transformer.*``, ...) in our layout."""
    out = {}

    def block(src, dst):
        layers = sorted({int(k[len(src):].split(".")[0]) for k in sd if k.startswith(src)})
        for i in layers:
            s, d = f"{src}{i}.", f"{dst}{i}."
            wq, wk, wv = sd[s + "attn.in_proj_weight"].chunk(3)
            bq, bk, bv = sd[s + "attn.in_proj_bias"].chunk(3)
            for n, wt, bs in (("q", wq, bq), ("k", wk, bk), ("v", wv, bv)):
                out[d + f"self_attn.{n}_proj.weight"], out[d + f"self_attn.{n}_proj.bias"] = wt, bs
            for a, b in (("attn.out_proj", "self_attn.out_proj"), ("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"),
                         ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")):
                out[d + b + ".weight"], out[d + b + ".bias"] = sd[s + a + ".weight"], sd[s + a + ".bias"]

    v, vm = "visual.", "vision_model."
    out[vm + "embeddings.class_embedding"] = sd[v + "class_embedding"]
    out[vm + "embeddings.patch_embedding.weight"] = sd[v + "conv1.weight"]
    out[vm + "embeddings.position_embedding.weight"] = sd[v + "positional_embedding"]
    for a, b in (("ln_pre", "pre_layrnorm"), ("ln_post", "post_layernorm")):
        out[vm + b + ".weight"], out[vm + b + ".bias"] = sd[v + a + ".weight"], sd[v + a + ".bias"]
    block(v + "transformer.resblocks.", vm + "encoder.layers.")
    out["visual_projection.weight"] = sd[v + "proj"].t()
    if "token_embedding.weight" in sd:
        tm = "text_model."
        out[tm + "embeddings.token_embedding.weight"] = sd["token_embedding.weight"]
        out[tm + "embeddings.position_embedding.weight"] = sd["positional_embedding"]
        out[tm + "final_layer_norm.weight"], out[tm + "final_layer_norm.bias"] = sd["ln_final.weight"], sd["ln_final.bias"]
        block("transformer.resblocks.", tm + "encoder.layers.")
        out["text_projection.weight"] = sd["text_projection"].t()
        out["logit_scale"] = sd["logit_scale"]
    return out


def load_weights(path: str) -> dict:
    """A state dict from ``.safetensors`` or a torch file, weights only (a
    pickle with code in it is refused). ValueError naming the file otherwise."""
    try:
        if str(path).endswith(".safetensors"):
            from safetensors.torch import load_file
            sd = load_file(str(path), device="cpu")
        else:
            sd = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{path}: cannot be read as weights ({type(e).__name__}: {e})") from None
    if isinstance(sd, Mapping) and isinstance(sd.get("state_dict"), Mapping):
        sd = sd["state_dict"]
    if not isinstance(sd, Mapping) or not all(isinstance(k, str) for k in sd):
        raise ValueError(f"{path}: not a state dict (got {type(sd).__name__})")
    if sd and all(k.startswith("module.") for k in sd):  # saved from DistributedDataParallel
        sd = {k[len("module."):]: t for k, t in sd.items()}
    return dict(sd)


def build_clip(sd: Mapping, cfg: Mapping | None = None, *, text: bool = True, act: str = "gelu",
               vision_heads: int | None = None, text_heads: int | None = None, dtype=torch.float32, ops=nn,
               source: str = "checkpoint") -> CLIP:
    """A CLIP in eval mode with the weights of ``sd`` (our layout; open_clip's
    is detected and renamed), built on the meta device. The shape comes from
    ``cfg`` (``config_from_hf``) or the tensors (heads and activation from the
    arguments). Every tensor the model uses must be present with its shape."""
    if "visual.conv1.weight" in sd:
        try:
            sd = from_open_clip(sd)
        except KeyError as e:
            raise ValueError(f"{source}: an incomplete open_clip state dict ({e.args[0]} missing)") from None
    if "vision_model.embeddings.class_embedding" not in sd:
        raise ValueError(f"{source} is not a CLIP checkpoint (no vision_model.* or visual.* tensors)")
    if cfg is None:
        cfg = _shape_config(sd, vision_heads, text_heads, act)
    text = text and "text" in cfg and "text_model.embeddings.token_embedding.weight" in sd
    with torch.device("meta"):
        model = CLIP(cfg, text=text, ops=ops)
    want = model.state_dict()
    missing = [k for k in want if k not in sd]
    bad = [f"{k} {tuple(sd[k].shape)} (expected {tuple(want[k].shape)})" for k in want
           if k in sd and tuple(sd[k].shape) != tuple(want[k].shape)]
    if missing or bad:
        parts = ([f"{len(missing)} tensors missing (e.g. {', '.join(missing[:3])})"] if missing else []) + \
                ([f"{len(bad)} with the wrong shape (e.g. {'; '.join(bad[:3])})"] if bad else [])
        raise ValueError(f"{source} does not fit the expected CLIP: {', '.join(parts)}")
    model.load_state_dict({k: sd[k] for k in want}, assign=True)
    model.to(dtype)
    if text:
        model.logit_scale.data = model.logit_scale.data.float()
    return model.eval().requires_grad_(False)


# --------------------------------------------------------------------------- images

def to_uint8(images) -> list[np.ndarray]:
    """ComfyUI IMAGE (B, H, W, C) float in [0, 1] -> uint8 as SaveImage writes it (truncation)."""
    if isinstance(images, torch.Tensor):
        return list(np.clip(255.0 * images.detach().float().cpu().numpy(), 0, 255).astype(np.uint8))
    return [np.asarray(a) for a in images]


def resized_size(height: int, width: int, size: int) -> tuple[int, int]:
    """The shorter side to ``size``, the longer one scaled and truncated (torchvision and transformers agree)."""
    if height <= width:
        return size, int(size * width / height)
    return int(size * height / width), size


def _one(img: np.ndarray, size: int, crop: str) -> np.ndarray:
    from PIL import Image
    if img.ndim == 3 and img.shape[2] == 1:
        img = img[..., 0]
    if img.ndim == 3 and img.shape[2] == 4:
        img = img[..., :3]
    h, w = img.shape[:2]
    nh, nw = resized_size(h, w, size)
    pil = Image.fromarray(img).convert("RGB").resize((nw, nh), Image.BICUBIC)
    if crop == "floor":  # transformers' center_crop
        top, left = (nh - size) // 2, (nw - size) // 2
    else:  # torchvision's CenterCrop
        top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
    return np.asarray(pil.crop((left, top, left + size, top + size)))


def preprocess(images, size: int = 224, crop: str = "floor", workers: int = 4) -> torch.Tensor:
    """Pixels (B, 3, size, size) float32 from a ComfyUI IMAGE tensor or uint8
    (H, W, C) arrays (sizes may differ): PIL bicubic resize of the shorter side,
    centre crop, CLIP's mean/std. PIL releases the GIL, so images resize in a pool."""
    if crop not in ("floor", "round"):
        raise ValueError(f"crop: 'floor' or 'round', not {crop!r}")
    imgs = to_uint8(images)
    if not imgs:
        raise ValueError("images: empty batch")
    if len(imgs) > 1 and workers > 1:
        with ThreadPoolExecutor(max_workers=min(workers, len(imgs))) as pool:
            out = list(pool.map(lambda a: _one(a, size, crop), imgs))
    else:
        out = [_one(a, size, crop) for a in imgs]
    x = torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).float().div_(255.0)
    return (x - torch.tensor(PIXEL_MEAN).view(1, 3, 1, 1)) / torch.tensor(PIXEL_STD).view(1, 3, 1, 1)


# --------------------------------------------------------------------------- text

def comfy_tokenizer_dir() -> str | None:
    """ComfyUI's ``comfy/sd1_tokenizer`` (CLIP's vocab.json and merges.txt),
    located without importing ComfyUI; None when ComfyUI is not on the path."""
    try:
        spec = importlib.util.find_spec("comfy")
    except (ImportError, ValueError):
        spec = None
    roots = list(spec.submodule_search_locations or []) if spec else []
    if os.environ.get("COMFYUI_PATH"):
        roots.append(os.path.join(os.environ["COMFYUI_PATH"], "comfy"))
    for r in roots:
        d = os.path.join(r, "sd1_tokenizer")
        if os.path.isfile(os.path.join(d, "vocab.json")) and os.path.isfile(os.path.join(d, "merges.txt")):
            return d
    return None


def _clean_open_clip(text: str) -> str:
    try:
        import ftfy
        text = ftfy.fix_text(text)
    except ImportError:
        text = unicodedata.normalize("NFC", text)
    return html.unescape(html.unescape(text)).strip()


class Tokenizer:
    """CLIP's BPE: ``<|startoftext|> ... <|endoftext|>`` truncated to
    ``context`` tokens (the last one stays end-of-text), padded with ``pad_id``
    (the end-of-text token for transformers' OpenAI tokenizer, 0 for open_clip;
    neither changes a score: the text model is causal and pooled at the first
    end-of-text). ``flavour`` picks the text normalisation (see module doc)."""

    def __init__(self, vocab_file: str | None = None, merges_file: str | None = None, flavour: str = "hf",
                 context: int = CONTEXT, pad_id: int | None = None):
        from tokenizers import Regex, Tokenizer as _T, normalizers, pre_tokenizers
        from tokenizers.models import BPE
        if flavour not in ("hf", "open_clip"):
            raise ValueError(f"flavour: 'hf' or 'open_clip', not {flavour!r}")
        if vocab_file is None or merges_file is None:
            d = comfy_tokenizer_dir()
            if d is None:
                raise ValueError("CLIP tokenizer: vocab.json/merges.txt not given and ComfyUI's "
                                 "comfy/sd1_tokenizer was not found")
            vocab_file, merges_file = vocab_file or os.path.join(d, "vocab.json"), merges_file or os.path.join(d, "merges.txt")
        with open(vocab_file, encoding="utf-8") as f:
            vocab = json.load(f)
        with open(merges_file, encoding="utf-8") as f:
            lines = f.read().strip().split("\n")[1:49152 - 256 - 2 + 1]  # as CLIP and transformers read it
        merges = [tuple(m.split()) for m in lines]
        if SOT not in vocab or EOT not in vocab:
            raise ValueError(f"{vocab_file}: not CLIP's vocabulary ({SOT}/{EOT} missing)")
        tok = _T(BPE(vocab=vocab, merges=merges, continuing_subword_prefix="", end_of_word_suffix="</w>",
                     fuse_unk=False, unk_token=EOT))
        tok.normalizer = normalizers.Sequence([normalizers.NFC(), normalizers.Replace(Regex(r"\s+"), " "),
                                               normalizers.Lowercase()])
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(SPLIT), behavior="removed", invert=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False)])
        self._tok, self.flavour, self.context = tok, flavour, context
        self.sot, self.eot = vocab[SOT], vocab[EOT]
        self.pad_id = (0 if flavour == "open_clip" else self.eot) if pad_id is None else pad_id

    def encode(self, prompt: str) -> list[int]:
        """Ids of one prompt, start and end tokens included, truncated, unpadded."""
        if self.flavour == "open_clip":
            prompt = _clean_open_clip(prompt)
        ids = self._tok.encode(prompt, add_special_tokens=False).ids[: self.context - 2]
        return [self.sot] + ids + [self.eot]

    def __call__(self, prompts: Sequence[str]) -> torch.Tensor:
        rows = [self.encode(p) for p in prompts]
        return torch.tensor([r + [self.pad_id] * (self.context - len(r)) for r in rows], dtype=torch.long)
