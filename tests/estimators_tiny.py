"""Tiny CLIP estimators with seeded weights, in the published layouts: PickScore's (transformers
CLIPModel, safetensors) and HPSv2.1's (open_clip, ``state_dict`` under ``module.``). For the core tests and
for host tests whose workflows load PickScore or HPSv2.1 (the CLIP tokenizer is ComfyUI's own)."""

from pathlib import Path

import torch

from tools.reflect_pack import module

clip = module("scoring.clip")

CFG = {"embed_dim": 24,
       "vision": {"width": 32, "layers": 2, "heads": 16, "patch": 14, "image_size": 224, "mlp": 64,
                  "act": "gelu", "eps": 1e-5},
       "text": {"width": 32, "layers": 2, "heads": 16, "vocab": 49408, "context": 77, "mlp": 64, "act": "gelu",
                "eps": 1e-5}}


def tiny_state_dict(seed=0, cfg=CFG):
    with torch.device("meta"):
        m = clip.CLIP(cfg)
    g = torch.Generator().manual_seed(seed)
    sd = {}
    for k, v in m.state_dict().items():
        r = torch.randn(v.shape, generator=g)
        if "norm" in k:
            r = 1 + 0.2 * r if k.endswith("weight") else 0.2 * r
        elif k == "logit_scale":
            r = torch.tensor(4.6)
        elif v.ndim >= 2 and "embedding" not in k:
            r = r / v.shape[1] ** 0.5
        sd[k] = r.contiguous()
    return sd


def to_open_clip(sd):
    """Our (transformers) layout back to open_clip's, as the inverse of from_open_clip."""
    out = {}

    def block(src, dst):
        for i in sorted({int(k[len(src):].split(".")[0]) for k in sd if k.startswith(src)}):
            s, d = f"{src}{i}.", f"{dst}{i}."
            out[d + "attn.in_proj_weight"] = torch.cat([sd[s + f"self_attn.{n}_proj.weight"] for n in "qkv"])
            out[d + "attn.in_proj_bias"] = torch.cat([sd[s + f"self_attn.{n}_proj.bias"] for n in "qkv"])
            for a, b in (("attn.out_proj", "self_attn.out_proj"), ("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"),
                         ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")):
                out[d + a + ".weight"], out[d + a + ".bias"] = sd[s + b + ".weight"], sd[s + b + ".bias"]
    vm = "vision_model."
    out["visual.class_embedding"] = sd[vm + "embeddings.class_embedding"]
    out["visual.conv1.weight"] = sd[vm + "embeddings.patch_embedding.weight"]
    out["visual.positional_embedding"] = sd[vm + "embeddings.position_embedding.weight"]
    for a, b in (("ln_pre", "pre_layrnorm"), ("ln_post", "post_layernorm")):
        out[f"visual.{a}.weight"], out[f"visual.{a}.bias"] = sd[vm + b + ".weight"], sd[vm + b + ".bias"]
    block(vm + "encoder.layers.", "visual.transformer.resblocks.")
    out["visual.proj"] = sd["visual_projection.weight"].t().contiguous()
    out["token_embedding.weight"] = sd["text_model.embeddings.token_embedding.weight"]
    out["positional_embedding"] = sd["text_model.embeddings.position_embedding.weight"]
    out["ln_final.weight"], out["ln_final.bias"] = sd["text_model.final_layer_norm.weight"], sd["text_model.final_layer_norm.bias"]
    block("text_model.encoder.layers.", "transformer.resblocks.")
    out["text_projection"] = sd["text_projection.weight"].t().contiguous()
    out["logit_scale"] = sd["logit_scale"]
    return out




def write_files(models_dir, seed=0) -> dict:
    """PickScore's ``model.safetensors`` in ``models_dir``/pickscore, HPSv2.1's ``HPS_v2.1_compressed.pt`` in
    ``models_dir``/hpsv2 (one seeded tiny CLIP in both layouts), and the aesthetic predictor's head
    (``sac+logos+ava1-l14-linearMSE.pth`` in ``models_dir``/aesthetic) on the vision half of a tiny 768-wide
    CLIP in ``models_dir``/clip_vision: the folders and names the loaders look for; returns {estimator: path}."""
    from safetensors.torch import save_file
    aesthetic = module("scoring.aesthetic")
    models_dir = Path(models_dir)
    sd = tiny_state_dict(seed)
    for sub in ("pickscore", "hpsv2", "aesthetic", "clip_vision"):
        (models_dir / sub).mkdir(parents=True, exist_ok=True)
    ps, hp = models_dir / "pickscore" / "model.safetensors", models_dir / "hpsv2" / "HPS_v2.1_compressed.pt"
    save_file(sd, str(ps))
    torch.save({"state_dict": {"module." + k: v for k, v in to_open_clip(sd).items()}}, hp)
    full = tiny_state_dict(seed + 1, {"embed_dim": 768, "vision": dict(CFG["vision"], act="quick_gelu"),
                                      "text": CFG["text"]})
    vision = {k: v for k, v in full.items() if k.startswith(("vision_model.", "visual_projection."))}
    save_file(vision, str(models_dir / "clip_vision" / aesthetic.CLIP_WEIGHTS))
    g = torch.Generator().manual_seed(seed + 2)
    head = {k: torch.randn(v.shape, generator=g) / 8 for k, v in aesthetic.AestheticHead().state_dict().items()}
    ae = models_dir / "aesthetic" / aesthetic.HEAD
    torch.save(head, ae)
    return {"pickscore": ps, "hpsv2.1": hp, "aesthetic": ae}
