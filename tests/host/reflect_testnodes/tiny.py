"""Tiny, seeded diffusion models and conditionings built from ComfyUI's own
classes, for host tests that need a real ``MODEL`` but no checkpoint file.

Everything here imports ComfyUI lazily (``comfy`` must be importable: either
inside a running ComfyUI, or after ``hostlib.bootstrap_comfy()``). Models are
ComfyUI's ``supported_models.SD15`` / ``SDXL`` configs with a shrunken UNet
(2 levels, 32/64 channels, context 64), built through
``comfy.model_base.BaseModel`` / ``SDXL`` like a checkpoint load would, with
every parameter written from a seeded generator (ComfyUI creates its layers
uninitialised) and wrapped in a ``comfy.model_patcher.ModelPatcher`` on CPU.

Predictions:
  * ``"eps"``           ModelType.EPS (ModelSamplingDiscrete + EPS)
  * ``"v_prediction"``  ModelType.V_PREDICTION
  * ``"flow"``          an EPS model patched by ComfyUI's own ``ModelSamplingSD3``
                        node (ModelSamplingDiscreteFlow + CONST, ``flow_shift``),
                        i.e. an object patch of ``model_sampling`` on a clone,
                        the way a user would build it in a graph.
  * ``"flow_native"``   ModelType.FLOW set on the model itself (shift 1.0).
"""

from __future__ import annotations

import math

import torch

FAMILIES = ("sd15", "sdxl")
PREDICTIONS = ("eps", "v_prediction", "flow", "flow_native")

# SDXL's ADM input: pooled text embedding + 6 Timestep(256) size/crop embeddings.
SDXL_SIZE_EMBED = 6 * 256


def tiny_unet_config(family: str = "sd15", model_channels: int = 32, context_dim: int = 64,
                     pooled_dim: int = 32, full_size: bool = False) -> dict:
    """A reduced ``unet_config`` of the family (same keys as ComfyUI's model
    detection produces for the full model). ``model_channels`` must be a
    multiple of 32 (ComfyUI's GroupNorm uses 32 groups). ``full_size``: the
    real SD1.5 / SDXL config instead (the other arguments are ignored)."""
    if full_size:
        return full_unet_config(family)
    if model_channels % 32:
        raise ValueError("model_channels must be a multiple of 32 (GroupNorm(32, C))")
    base = {
        "use_checkpoint": False, "image_size": 32, "in_channels": 4, "out_channels": 4,
        "model_channels": model_channels, "num_res_blocks": [1, 1], "channel_mult": [1, 2],
        "use_spatial_transformer": True, "legacy": False, "context_dim": context_dim,
        "use_temporal_attention": False, "use_temporal_resblock": False, "dtype": torch.float32,
    }
    if family == "sd15":
        base.update({
            "adm_in_channels": None, "use_linear_in_transformer": False,
            "transformer_depth": [1, 1], "transformer_depth_middle": 1,
            "transformer_depth_output": [1, 1, 1, 1],
        })
    elif family == "sdxl":
        base.update({
            "num_classes": "sequential", "adm_in_channels": pooled_dim + SDXL_SIZE_EMBED,
            "use_linear_in_transformer": True,
            "transformer_depth": [0, 1], "transformer_depth_middle": 1,
            "transformer_depth_output": [0, 0, 1, 1],
        })
    else:
        raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")
    return base


def full_unet_config(family: str = "sd15") -> dict:
    """The real unet_config of SD1.5 / SDXL (as ComfyUI's model detection gives it)."""
    if family == "sd15":
        return {"use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
                "legacy": False, "adm_in_channels": None, "dtype": torch.float32, "in_channels": 4,
                "model_channels": 320, "num_res_blocks": [2, 2, 2, 2], "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0],
                "channel_mult": [1, 2, 4, 4], "transformer_depth_middle": 1, "use_linear_in_transformer": False,
                "context_dim": 768, "num_heads": 8, "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0],
                "use_temporal_attention": False, "use_temporal_resblock": False}
    if family == "sdxl":
        return {"use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
                "legacy": False, "num_classes": "sequential", "adm_in_channels": 2816, "dtype": torch.float32,
                "in_channels": 4, "model_channels": 320, "num_res_blocks": [2, 2, 2],
                "transformer_depth": [0, 0, 2, 2, 10, 10], "channel_mult": [1, 2, 4], "transformer_depth_middle": 10,
                "use_linear_in_transformer": True, "context_dim": 2048, "num_head_channels": 64,
                "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10], "use_temporal_attention": False,
                "use_temporal_resblock": False}
    raise ValueError(f"family must be one of {FAMILIES}, got {family!r}")


def tiny_model_config(family: str = "sd15", full_size: bool = False, **kw):
    """ComfyUI's ``supported_models.SD15`` / ``SDXL`` instantiated on the tiny
    (or, with ``full_size``, the real) unet config, fp32, no manual cast."""
    import comfy.supported_models as sm

    cls = {"sd15": sm.SD15, "sdxl": sm.SDXL}[family]
    cfg = cls(tiny_unet_config(family, full_size=full_size, **kw))
    if not full_size:
        # the family's unet_extra_config (num_heads / num_head_channels) is for
        # the full width; use 4 heads at any width
        cfg.unet_config["num_heads"] = 4
        cfg.unet_config["num_head_channels"] = -1
    cfg.set_inference_dtype(torch.float32, None)
    return cfg


def seeded_state_dict(module: torch.nn.Module, seed: int = 0, prefix: str = "") -> dict:
    """Values for every parameter of ``module`` from a seeded CPU generator
    (independent of torch's global RNG and of parameter creation order):
    weights ~ N(0, 1/fan_in), norm weights ~ 1 + N(0, 0.02^2), biases and
    other vectors ~ N(0, 0.02^2). Buffers are left to the module."""
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    norm_params = set()
    for mname, mod in module.named_modules():
        if "norm" in type(mod).__name__.lower():
            for pname, _ in mod.named_parameters(recurse=False):
                norm_params.add(f"{mname}.{pname}" if mname else pname)
    sd = {}
    for name, p in sorted(module.named_parameters(), key=lambda kv: kv[0]):
        shape = tuple(p.shape)
        if name in norm_params and name.endswith("weight"):
            v = 1.0 + 0.02 * torch.randn(shape, generator=gen)
        elif len(shape) >= 2:
            fan_in = math.prod(shape[1:])
            v = torch.randn(shape, generator=gen) / math.sqrt(fan_in)
        else:
            v = 0.02 * torch.randn(shape, generator=gen)
        sd[prefix + name] = v.to(p.dtype)
    return sd


def _model_type(prediction: str):
    from comfy.model_base import ModelType

    return {"eps": ModelType.EPS, "v_prediction": ModelType.V_PREDICTION, "flow": ModelType.EPS,
            "flow_native": ModelType.FLOW}[prediction]


def _patcher_class():
    import comfy.model_patcher

    # ComfyUI >= 0.4 builds models with CoreModelPatcher (ModelPatcher unless dynamic VRAM is on)
    return getattr(comfy.model_patcher, "CoreModelPatcher", comfy.model_patcher.ModelPatcher)


def build_tiny_model(family: str = "sd15", prediction: str = "eps", seed: int = 0, *, flow_shift: float = 3.0,
                     model_channels: int = 32, context_dim: int = 64, pooled_dim: int = 32, full_size: bool = False,
                     load_device: str | None = None):
    """A ``ModelPatcher`` (ComfyUI ``MODEL``) of a tiny seeded SD1.5/SDXL UNet
    (``full_size``: the family's real UNet, same seeded init). Weights are
    created on CPU; ``load_device`` (default CPU) is where ComfyUI runs it."""
    if prediction not in PREDICTIONS:
        raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
    import comfy.model_base

    cfg = tiny_model_config(family, full_size=full_size, model_channels=model_channels, context_dim=context_dim,
                            pooled_dim=pooled_dim)
    cpu = torch.device("cpu")
    model_cls = comfy.model_base.SDXL if family == "sdxl" else comfy.model_base.BaseModel
    model = model_cls(cfg, model_type=_model_type(prediction), device=cpu)
    # load the weights the way a checkpoint load does (load_model_weights, "model.diffusion_model." prefix)
    prefix = "model.diffusion_model."
    sd = seeded_state_dict(model.diffusion_model, seed, prefix=prefix)
    n_expected = len(sd)
    missing, unexpected = model.diffusion_model.load_state_dict(
        {k[len(prefix):]: v for k, v in sd.items()}, strict=False)
    if missing or unexpected:
        raise RuntimeError(f"tiny model state dict mismatch: missing={missing} unexpected={unexpected}")
    assert n_expected > 0
    model.eval()
    patcher = _patcher_class()(model, load_device=torch.device(load_device or "cpu"), offload_device=cpu)
    if prediction == "flow":
        patcher = apply_model_sampling(patcher, "flow", shift=flow_shift)
    return patcher


def _run_v1_or_v3(node_cls, method: str, **kwargs):
    """Call a ComfyUI built-in node whether it is V1 (FUNCTION method) or V3 (execute)."""
    if hasattr(node_cls, "execute") and hasattr(node_cls, "define_schema"):
        out = node_cls.execute(**kwargs)
        return tuple(out.result) if hasattr(out, "result") else tuple(out)
    return tuple(getattr(node_cls(), method)(**kwargs))


def apply_model_sampling(patcher, kind: str, shift: float = 3.0, zsnr: bool = False):
    """A clone of ``patcher`` with its ``model_sampling`` object-patched by
    ComfyUI's own nodes: ``"flow"`` -> ModelSamplingSD3(shift) (discrete flow,
    CONST), ``"eps"`` / ``"v_prediction"`` -> ModelSamplingDiscrete(sampling, zsnr)."""
    import comfy_extras.nodes_model_advanced as nma

    if kind == "flow":
        return _run_v1_or_v3(nma.ModelSamplingSD3, "patch", model=patcher, shift=float(shift))[0]
    if kind in ("eps", "v_prediction"):
        return _run_v1_or_v3(nma.ModelSamplingDiscrete, "patch", model=patcher, sampling=kind, zsnr=zsnr)[0]
    raise ValueError(f"kind must be 'flow', 'eps' or 'v_prediction', got {kind!r}")


def model_dims(patcher) -> dict:
    """What a conditioning for this MODEL needs: family, context_dim, pooled_dim, adm_in_channels."""
    base = patcher.model
    uc = base.model_config.unet_config
    adm = uc.get("adm_in_channels") or 0
    family = "sdxl" if type(base).__name__ == "SDXL" else "sd15"
    pooled = adm - SDXL_SIZE_EMBED if family == "sdxl" else uc["context_dim"]
    return {"family": family, "context_dim": uc["context_dim"], "pooled_dim": pooled, "adm_in_channels": adm}


def make_conditioning(model_or_family, seed: int = 0, batch: int = 1, tokens: int = 77, scale: float = 1.0,
                      width: int | None = None, height: int | None = None, context_dim: int = 64,
                      pooled_dim: int | None = None) -> list:
    """A seeded random ComfyUI CONDITIONING ``[[cond(B, tokens, context_dim),
    {"pooled_output": (B, pooled_dim), ...}]]`` for the given MODEL
    (ModelPatcher, dims read from it) or family name. For SDXL, ``width`` /
    ``height`` (pixels) add the size conditioning that CLIPTextEncodeSDXL
    would (width, height, crop 0, target = size)."""
    if isinstance(model_or_family, str):
        family = model_or_family
        if pooled_dim is None:
            pooled_dim = 32 if family == "sdxl" else context_dim
    else:
        d = model_dims(model_or_family)
        family, context_dim, pooled_dim = d["family"], d["context_dim"], d["pooled_dim"]
    gen = torch.Generator(device="cpu").manual_seed(int(seed))
    cond = torch.randn((batch, tokens, context_dim), generator=gen) * scale
    pooled = torch.randn((batch, pooled_dim), generator=gen) * scale
    extra = {"pooled_output": pooled}
    if family == "sdxl" and (width is not None or height is not None):
        w = int(width if width is not None else height)
        h = int(height if height is not None else width)
        extra.update({"width": w, "height": h, "crop_w": 0, "crop_h": 0, "target_width": w, "target_height": h})
    return [[cond, extra]]


def make_latent(batch: int = 1, height: int = 32, width: int = 32, channels: int = 4, seed: int | None = None) -> dict:
    """A ComfyUI LATENT dict; zeros (like EmptyLatentImage) unless ``seed`` is given.
    ``height`` / ``width`` are latent sizes (pixels / 8)."""
    if seed is None:
        samples = torch.zeros((batch, channels, height, width))
    else:
        gen = torch.Generator(device="cpu").manual_seed(int(seed))
        samples = torch.randn((batch, channels, height, width), generator=gen)
    return {"samples": samples}


def latent_stats(samples: torch.Tensor) -> dict:
    s = samples.float()
    finite = bool(torch.isfinite(s).all()) and s.numel() > 0  # an empty batch is no result
    return {
        "shape": list(s.shape), "finite": finite,
        "mean": float(s.mean()) if finite else None, "std": float(s.std()) if finite and s.numel() > 1 else None,
        "min": float(s.min()) if finite else None, "max": float(s.max()) if finite else None,
    }


def lora_layers(patcher, attention_and_conv: bool = True) -> list:
    """(path, module) of the diffusion model's layers a LoRA would target:
    every Conv layer and every Linear layer of the attention blocks."""
    import torch.nn as nn

    out = []
    for name, mod in patcher.model.diffusion_model.named_modules():
        if isinstance(mod, nn.modules.conv._ConvNd):
            out.append((name, mod))
        elif isinstance(mod, nn.Linear) and ("transformer_blocks" in name or "proj_" in name):
            out.append((name, mod))
    return out


def make_lora(patcher, rank: int = 4, seed: int = 0, magnitude: float = 0.2, conv_kernel: bool = True) -> dict:
    """A seeded LoRA / LoCon state dict in kohya's format (``lora_unet_<path>``
    keys with ``lora_up`` / ``lora_down`` / ``alpha``, what ComfyUI's LoRA
    loader reads) on every attention and conv layer of the model. Conv layers
    get a k x k ``lora_down`` and a 1 x 1 ``lora_up`` (LoCon) when
    ``conv_kernel``; the difference weight is about ``magnitude`` times the
    layer's weight."""
    gen = torch.Generator().manual_seed(int(seed))
    sd = {}
    for name, mod in lora_layers(patcher):
        w = mod.weight
        out_ch, in_ch = w.shape[0], w.shape[1]
        r = min(rank, out_ch, in_ch)
        kernel = tuple(w.shape[2:]) if conv_kernel else (1,) * (w.dim() - 2)
        fan_in = in_ch * math.prod(kernel)
        down = torch.randn((r, in_ch, *kernel), generator=gen) / math.sqrt(fan_in)
        up = magnitude * torch.randn((out_ch, r, *([1] * (w.dim() - 2))), generator=gen) / math.sqrt(r)
        if w.dim() == 2:
            down, up = down.reshape(r, in_ch), up.reshape(out_ch, r)
        if w.dim() > 2 and kernel != tuple(w.shape[2:]):
            continue  # a 1x1 LoRA on a k x k conv is not a LoCon layout
        key = "lora_unet_" + name.replace(".", "_")
        sd[key + ".lora_down.weight"] = down.contiguous()
        sd[key + ".lora_up.weight"] = up.contiguous()
        sd[key + ".alpha"] = torch.tensor(float(r))
    return sd


def merge_lora(patcher, lora: dict, strength: float) -> None:
    """Write ``W + strength * up @ down * alpha / rank`` into the layers of
    ``patcher``'s own model, in place (for an independent copy of a model:
    the reference a forward-time path is compared with)."""
    mods = dict(lora_layers(patcher))
    with torch.no_grad():
        for name, mod in mods.items():
            key = "lora_unet_" + name.replace(".", "_")
            if key + ".lora_down.weight" not in lora:
                continue
            down, up = lora[key + ".lora_down.weight"], lora[key + ".lora_up.weight"]
            r = down.shape[0]
            diff = (up.flatten(1).double() @ down.flatten(1).double()).reshape(mod.weight.shape)
            mod.weight += (strength * float(lora[key + ".alpha"]) / r * diff).to(mod.weight.dtype)


def build_tiny_controlnet(patcher, seed: int = 0):
    """A ComfyUI CONTROL_NET (``comfy.controlnet.ControlNet`` around ComfyUI's
    own ``cldm.ControlNet``) with the UNet config of ``patcher``'s tiny model,
    an RGB hint input and seeded weights (zero convolutions included, so the
    control has an effect)."""
    import comfy.cldm.cldm
    import comfy.controlnet
    import comfy.ops

    uc = dict(patcher.model.model_config.unet_config)
    net = comfy.cldm.cldm.ControlNet(hint_channels=3, device=torch.device("cpu"),
                                     operations=comfy.ops.disable_weight_init, **uc)
    missing, unexpected = net.load_state_dict(seeded_state_dict(net, seed), strict=True)
    net.eval()
    return comfy.controlnet.ControlNet(net, load_device=torch.device("cpu"))


def build_tiny_flux(seed: int = 0, context_dim: int = 64, pooled_dim: int = 32):
    """A ``ModelPatcher`` of ComfyUI's own Flux transformer (``model_base.Flux``,
    ``supported_models.Flux``: patch size 2, 16 latent channels, guidance
    embedding) shrunk to one double and one single block of width 64, with
    seeded weights. Conditioning: ``make_conditioning(context_dim=...,
    pooled_dim=...)`` plus a ``guidance`` value."""
    import dataclasses

    import comfy.ldm.flux.model as flux
    import comfy.model_base
    import comfy.supported_models as sm

    uc = dict(image_model="flux", in_channels=16, out_channels=16, vec_in_dim=pooled_dim, context_in_dim=context_dim,
              hidden_size=64, mlp_ratio=2.0, num_heads=2, depth=1, depth_single_blocks=1, axes_dim=[8, 12, 12],
              theta=10000, patch_size=2, qkv_bias=True, guidance_embed=True, txt_ids_dims=[])
    names = {f.name for f in dataclasses.fields(flux.FluxParams)}
    uc = {k: v for k, v in uc.items() if k in names or k == "image_model"}
    cfg = sm.Flux(uc)
    cfg.set_inference_dtype(torch.float32, None)
    model = comfy.model_base.Flux(cfg, device=torch.device("cpu"))
    model.diffusion_model.load_state_dict(seeded_state_dict(model.diffusion_model, seed), strict=True)
    model.eval()
    return _patcher_class()(model, load_device=torch.device("cpu"), offload_device=torch.device("cpu"))


def tiny_vae_config(channels: int = 32) -> dict:
    """AutoencoderKL config: ComfyUI's (and SD's) VAE layout at reduced width,
    one res block per level, no attention; 8x downscale, 4 latent channels."""
    dd = {"double_z": True, "z_channels": 4, "resolution": 256, "in_channels": 3, "out_ch": 3, "ch": channels,
          "ch_mult": [1, 1, 1, 1], "num_res_blocks": 1, "attn_resolutions": [], "dropout": 0.0}
    return {"params": {"embed_dim": 4, "ddconfig": dd}}


def build_tiny_vae(seed: int = 0, channels: int = 32):
    """A ComfyUI ``VAE`` (comfy.sd.VAE) of a tiny seeded AutoencoderKL, loaded
    from its state dict as a VAE file would be."""
    import comfy.sd
    from comfy.ldm.models.autoencoder import AutoencoderKL

    cfg = tiny_vae_config(channels)
    sd = seeded_state_dict(AutoencoderKL(**cfg["params"]), seed)
    return comfy.sd.VAE(sd=sd, config=cfg)


# --------------------------------------------------------------------------- the family matrix
#
# One tiny seeded model per ComfyUI family, built from the family's own ``supported_models`` config and
# ``model_base`` class (the classes a checkpoint load picks) on a shrunken ``unet_config``, with the
# family's conditioning layout (context tokens, pooled output, guidance, frame rate) at reduced widths and
# its latent format (channels, 4-D image or 5-D [B, C, T, H, W] video latents).

TINY_CONTEXT = 64  # text-encoder width of every tiny family
TINY_POOLED = 32   # pooled-output width where the family has one


# name -> (supported_models class, model_base class, tiny unet_config, latent channels, video, conditioning extras)
# Widths: context 64 (the text encoders' real widths are 768-4096), pooled 32, one block of each kind.
FAMILY_CONFIGS = {
    "sd3": ("SD3", "SD3", dict(
        in_channels=16, out_channels=16, patch_size=2, depth=1, input_size=None, adm_in_channels=TINY_POOLED,
        context_embedder_config={"target": "torch.nn.Linear",
                                 "params": {"in_features": TINY_CONTEXT, "out_features": 64}},
        num_patches=32 * 32, pos_embed_max_size=32, pos_embed_scaling_factor=None, qk_norm="rms"),
        16, False, {"pooled": TINY_POOLED}),
    "lumina2": ("Lumina2", "Lumina2", dict(
        image_model="lumina2", patch_size=2, in_channels=16, dim=64, cap_feat_dim=TINY_CONTEXT, n_layers=1,
        n_refiner_layers=1, n_heads=2, n_kv_heads=2, multiple_of=16, ffn_dim_multiplier=2.0, norm_eps=1e-5,
        qk_norm=True, axes_dims=[8, 12, 12], axes_lens=[300, 512, 512]),
        16, False, {}),
    "qwen_image": ("QwenImage", "QwenImage", dict(
        image_model="qwen_image", patch_size=2, in_channels=64, out_channels=16, num_layers=1,
        attention_head_dim=32, num_attention_heads=2, joint_attention_dim=TINY_CONTEXT, axes_dims_rope=[8, 12, 12]),
        16, False, {}),
    "wan21": ("WAN21_T2V", "WAN21", dict(
        image_model="wan2.1", model_type="t2v", patch_size=(1, 2, 2), text_len=512, in_dim=16, dim=64, ffn_dim=128,
        freq_dim=256, text_dim=TINY_CONTEXT, out_dim=16, num_heads=2, num_layers=1, window_size=(-1, -1),
        qk_norm=True, cross_attn_norm=True, eps=1e-6),
        16, True, {}),
    "chroma": ("Chroma", "Chroma", dict(
        image_model="chroma", in_channels=64, out_channels=64, context_in_dim=TINY_CONTEXT, hidden_size=64,
        mlp_ratio=2.0, num_heads=2, depth=1, depth_single_blocks=1, axes_dim=[8, 12, 12], theta=10000, patch_size=2,
        qkv_bias=True, in_dim=64, out_dim=64, hidden_dim=64, n_layers=1, txt_ids_dims=[], vec_in_dim=None),
        16, False, {"pooled_output": None}),  # Chroma's T5-only encoder has no pooled output
    "hunyuan_video": ("HunyuanVideo", "HunyuanVideo", dict(
        image_model="hunyuan_video", in_channels=16, out_channels=16, vec_in_dim=768, context_in_dim=TINY_CONTEXT,
        hidden_size=128, mlp_ratio=2.0, num_heads=1, depth=1, depth_single_blocks=1, axes_dim=[16, 56, 56],
        theta=256, patch_size=[1, 2, 2], qkv_bias=True, guidance_embed=True, byt5=False, meanflow=False,
        use_cond_type_embedding=False, vision_in_dim=None, meanflow_sum=False),
        16, True, {"pooled": 768, "guidance": 6.0}),
    "ltxv": ("LTXV", "LTXV", dict(
        image_model="ltxv", in_channels=128, cross_attention_dim=64, attention_head_dim=32, num_attention_heads=2,
        caption_channels=TINY_CONTEXT, num_layers=1),
        128, True, {"frame_rate": 25.0}),
}


def build_tiny_family(name: str, seed: int = 0, load_device: str | None = None):
    """A ``ModelPatcher`` of a tiny seeded model of a ComfyUI family in ``FAMILY_CONFIGS`` (SD3 MMDiT,
    Chroma, Lumina 2, Qwen-Image, Wan 2.1 text-to-video, LTXV, HunyuanVideo): ComfyUI's ``supported_models.<config>`` on the tiny
    unet_config (HunyuanVideo: the fields its params class has), fp32, built as ``model_base.<class>`` (its own default model type: flow / FLUX-style
    flow with the family's shift) and loaded with ``seeded_state_dict`` (strict)."""
    import comfy.model_base
    import comfy.supported_models as sm

    sm_name, mb_name, uc, _ch, _video, _extra = FAMILY_CONFIGS[name]
    uc = dict(uc)
    if name in ("hunyuan_video", "chroma"):  # only the fields this ComfyUI's params class has
        import dataclasses

        import comfy.ldm.chroma.model as chroma
        import comfy.ldm.hunyuan_video.model as hv
        params = hv.HunyuanVideoParams if name == "hunyuan_video" else chroma.ChromaParams
        names = {f.name for f in dataclasses.fields(params)}
        uc = {k: v for k, v in uc.items() if k in names or k == "image_model"}
    cfg = getattr(sm, sm_name)(uc)
    cfg.set_inference_dtype(torch.float32, None)
    cpu = torch.device("cpu")
    model = getattr(comfy.model_base, mb_name)(cfg, device=cpu)
    net = model.diffusion_model
    sd = seeded_state_dict(net, seed)
    # persistent buffers a checkpoint carries (SD3's pos_embed) are created empty too: seeded as well
    gen = torch.Generator().manual_seed(int(seed) + 7919)
    for k, v in sorted(net.state_dict().items()):
        if k not in sd:
            sd[k] = (0.5 * torch.randn(tuple(v.shape), generator=gen)).to(v.dtype)
    net.load_state_dict(sd, strict=True)
    model.eval()
    return _patcher_class()(model, load_device=torch.device(load_device or "cpu"), offload_device=cpu)


def build_tiny_sd2(seed: int = 0, load_device: str | None = None):
    """A tiny SD2.x 768-v model: ComfyUI's ``supported_models.SD20`` (linear transformer in/out, OpenCLIP-H
    context at width 64) as ``model_base.BaseModel`` with ModelType.V_PREDICTION, seeded weights."""
    import comfy.model_base
    import comfy.supported_models as sm

    uc = tiny_unet_config("sd15")
    uc["use_linear_in_transformer"] = True
    cfg = sm.SD20(uc)
    cfg.unet_config["num_heads"], cfg.unet_config["num_head_channels"] = 4, -1
    cfg.set_inference_dtype(torch.float32, None)
    cpu = torch.device("cpu")
    model = comfy.model_base.BaseModel(cfg, model_type=comfy.model_base.ModelType.V_PREDICTION, device=cpu)
    model.diffusion_model.load_state_dict(seeded_state_dict(model.diffusion_model, seed), strict=True)
    model.eval()
    return _patcher_class()(model, load_device=torch.device(load_device or "cpu"), offload_device=cpu)


def family_latent(name: str, batch: int = 1, height: int = 16, width: int = 16, frames: int = 2,
                  seed: int | None = None) -> dict:
    """A LATENT of the family's format: 4 channels (SD1.5 / SD2 / SDXL), 16 (SD3 / Flux / Lumina 2 /
    Qwen-Image), [B, 16, T, H, W] (Wan 2.1) or [B, 128, T, H, W] (LTXV); zeros unless ``seed``."""
    if name in FAMILY_CONFIGS:
        ch, video = FAMILY_CONFIGS[name][3], FAMILY_CONFIGS[name][4]
    else:
        ch, video = (16, False) if name == "flux" else (4, False)
    shape = (batch, ch, frames, height, width) if video else (batch, ch, height, width)
    if seed is None:
        return {"samples": torch.zeros(shape)}
    return {"samples": torch.randn(shape, generator=torch.Generator().manual_seed(int(seed)))}


def family_conditioning(name: str, seed: int = 0, batch: int = 1, tokens: int = 77) -> list:
    """A seeded CONDITIONING with the family's layout: cross-attention context of width 64, plus a
    pooled output where the family reads one (SD3, Flux: width 32; SD1.5 / SD2: width 64, unused as in
    ComfyUI) and the family's extra keys (Flux: guidance 3.5; LTXV: frame_rate 25; LTXV and Lumina 2: the
    text encoder's attention_mask)."""
    if name in ("sd15", "sd2_v"):
        return make_conditioning("sd15", seed=seed, batch=batch, tokens=tokens, context_dim=TINY_CONTEXT)
    if name == "sdxl":
        return make_conditioning("sdxl", seed=seed, batch=batch, tokens=tokens, context_dim=TINY_CONTEXT,
                                 pooled_dim=TINY_POOLED, width=128, height=128)
    gen = torch.Generator().manual_seed(int(seed))
    extra = {}
    cond = torch.randn((batch, tokens, TINY_CONTEXT), generator=gen)
    if name == "flux":
        extra.update(pooled_output=torch.randn((batch, TINY_POOLED), generator=gen), guidance=3.5)
    else:
        fam = FAMILY_CONFIGS[name][5]
        if "pooled" in fam:
            extra["pooled_output"] = torch.randn((batch, fam["pooled"]), generator=gen)
        extra.update({k: v for k, v in fam.items() if k != "pooled"})
    if name in ("ltxv", "lumina2"):  # the text encoder's token mask (T5 / Gemma), which their forwards read
        extra["attention_mask"] = torch.ones((batch, tokens), dtype=torch.long)
    return [[cond, extra]]


def build_tiny_family_vae(family: str = "sd15", seed: int = 0):
    """A ComfyUI ``VAE`` for a family's latents: ``build_tiny_vae`` (sd15 / sdxl: 4 channels); flux: the
    same AutoencoderKL layout with 16 latent channels (Flux's ae); wan21: ComfyUI's own Wan 2.1 video VAE
    (``comfy.ldm.wan.vae.WanVAE``, 8x spatial / 4x temporal, 16 channels) loaded through ComfyUI's VAE
    detection from a seeded state dict, at width 8 where ComfyUI reads the width off the weights (0.4+),
    else at ComfyUI's fixed width 96."""
    import inspect

    import comfy.sd

    if family in ("sd15", "sdxl"):
        return build_tiny_vae(seed=seed)
    if family == "flux":
        from comfy.ldm.models.autoencoder import AutoencoderKL

        cfg = tiny_vae_config()
        cfg["params"]["embed_dim"] = cfg["params"]["ddconfig"]["z_channels"] = 16
        vae = comfy.sd.VAE(sd=seeded_state_dict(AutoencoderKL(**cfg["params"]), seed), config=cfg)
        vae.latent_channels = 16
        return vae
    if family == "wan21":
        import comfy.ldm.wan.vae as wan_vae

        dim = 8 if "decoder.head.0.gamma" in inspect.getsource(comfy.sd.VAE.__init__) else 96
        net = wan_vae.WanVAE(dim=dim, z_dim=16, dim_mult=[1, 2, 4, 4], num_res_blocks=2, attn_scales=[],
                             temperal_downsample=[False, True, True], dropout=0.0)
        sd = seeded_state_dict(net, seed)
        for k, v in net.state_dict().items():
            sd.setdefault(k, v)
        return comfy.sd.VAE(sd=sd)
    raise ValueError(f"no tiny VAE for family {family!r}")


FAMILY_OF_CLASS = {"Flux": "flux", "SD3": "sd3", "Lumina2": "lumina2", "QwenImage": "qwen_image", "WAN21": "wan21",
                   "LTXV": "ltxv", "HunyuanVideo": "hunyuan_video", "Chroma": "chroma"}
ALL_FAMILIES = ("sd15", "sd2_v", "sdxl", "sd3", "flux", "chroma", "lumina2", "qwen_image", "wan21", "ltxv",
                "hunyuan_video")


def build_family_model(family: str, seed: int = 0):
    """The tiny MODEL of any family in ``ALL_FAMILIES`` (sd15 / sdxl as eps models)."""
    if family in ("sd15", "sdxl"):
        return build_tiny_model(family, "eps", seed)
    if family == "sd2_v":
        return build_tiny_sd2(seed)
    if family == "flux":
        return build_tiny_flux(seed)
    return build_tiny_family(family, seed)


def family_of(patcher) -> str | None:
    """The transformer family of a tiny MODEL built here (None for the SD1.5 / SD2 / SDXL UNets)."""
    return FAMILY_OF_CLASS.get(type(patcher.model).__name__)
