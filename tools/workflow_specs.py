"""Specifications of the shipped workflows (the papers' settings), turned into
UI-format JSON by ``tools/workflows.py build``. Node inputs not given here
take their /object_info defaults; ``(key, slot)`` is a link."""

SDXL = "sd_xl_base_1.0.safetensors"
SDXL_REFINER = "sd_xl_refiner_1.0.safetensors"
SDXL_TURBO = "sd_xl_turbo_1.0_fp16.safetensors"
SD15 = "v1-5-pruned-emaonly.safetensors"
SSD1B = "SSD-1B.safetensors"
LCM_SDXL = "lcm-sdxl.safetensors"
XLMOREART = "xl_more_art-full_v1.safetensors"
YOSO = "yoso_sd1.5_lora.safetensors"
CONTROLNET = "controlnet-canny-sdxl-1.0.safetensors"

MODELS_SDXL = (f"- ComfyUI/models/checkpoints/{SDXL} (stabilityai/stable-diffusion-xl-base-1.0)")
PROMPT = "a photo of an astronaut riding a horse on the moon, highly detailed"
NEGATIVE = ""


def note(key, text, pos, size=(420, 360)):
    return {"id": key, "type": "Note", "text": text.strip(), "pos": pos, "size": size}


def checkpoint(key, name, pos):
    return {"id": key, "type": "CheckpointLoaderSimple", "pos": pos, "inputs": {"ckpt_name": name}}


def text(key, clip, value, pos, title=None):
    return {"id": key, "type": "CLIPTextEncode", "pos": pos, "inputs": {"text": value, "clip": clip}, "title": title}


def latent(key, size, pos, batch=1):
    return {"id": key, "type": "EmptyLatentImage", "pos": pos,
            "inputs": {"width": size, "height": size, "batch_size": batch}}


def decode_save(key, samples, vae, prefix, pos):
    return [{"id": key + "_dec", "type": "VAEDecode", "pos": pos, "inputs": {"samples": samples, "vae": vae}},
            {"id": key + "_save", "type": "SaveImage", "pos": [pos[0] + 260, pos[1]],
             "inputs": {"images": (key + "_dec", 0), "filename_prefix": prefix}}]


def ksampler(key, model, pos_c, neg_c, lat, pos, title=None, **kw):
    inputs = {"model": model, "positive": pos_c, "negative": neg_c, "latent_image": lat, "seed": 42}
    inputs.update(kw)
    return {"id": key, "type": "KSampler", "pos": pos, "inputs": inputs, "title": title}


# --------------------------------------------------------------------------- Z-Sampling

ZSAMPLING = {"nodes": [
    note("note", f"""
Z-Sampling (Bai et al., "Zigzag Diffusion Sampling: Diffusion Models Can Self-Improve via Self-Reflection",
ICLR 2025; code xie-lab-ml/Zigzag-Diffusion-Sampling).

Paper setting on SDXL base: 50 DDIM steps (sampler ddim, scheduler ddim_reference = the reference's DDIM
schedule), guidance gamma_1 = cfg 5.5, inversion guidance gamma_2 = inversion_cfg 0, lambda = zigzag_steps 49
(every step but the last is reflected: denoise, invert, denoise again), T_max = rounds 1, inversion 'published'
(what the reference code computes). Beside it: KSampler with the same seed, steps and cfg, for comparison.
Cost: 247 model evaluations per image against 100 for the KSampler (shown on the node).

Models: {MODELS_SDXL}
""", [-480, 0]),
    checkpoint("ckpt", SDXL, [0, 0]),
    text("pos", ("ckpt", 1), PROMPT, [360, 0], "positive"),
    text("neg", ("ckpt", 1), NEGATIVE, [360, 240], "negative"),
    latent("lat", 1024, [360, 480]),
    {"id": "zz", "type": "ZigzagKSampler", "pos": [760, 0], "title": "Z-Sampling (paper)",
     "inputs": {"model": ("ckpt", 0), "positive": ("pos", 0), "negative": ("neg", 0), "latent_image": ("lat", 0),
                "seed": 42, "steps": 50, "cfg": 5.5, "sampler_name": "ddim", "scheduler": "ddim_reference",
                "inversion_cfg": 0.0, "zigzag_steps": 49, "rounds": 1, "inversion": "published"}},
    ksampler("ks", ("ckpt", 0), ("pos", 0), ("neg", 0), ("lat", 0), [760, 420], "standard sampling (same seed)",
             steps=50, cfg=5.5, sampler_name="ddim", scheduler="ddim_uniform"),
    *decode_save("zz", ("zz", 0), ("ckpt", 2), "zsampling", [1140, 0]),
    *decode_save("ks", ("ks", 0), ("ckpt", 2), "standard", [1140, 420]),
]}



def zigzag_and_ksampler(model, positive, negative, title, steps, cfg, sampler_name, scheduler, zigzag_steps,
                        inversion):
    """ZigzagKSampler "zz" (inversion_cfg 0, 1 round) and KSampler "ks" beside it with the same seed and settings."""
    kw = dict(steps=steps, cfg=cfg, sampler_name=sampler_name, scheduler=scheduler)
    return [{"id": "zz", "type": "ZigzagKSampler", "pos": [760, 0], "title": title,
             "inputs": {"model": model, "positive": positive, "negative": negative, "latent_image": ("lat", 0),
                        "seed": 42, **kw, "inversion_cfg": 0.0, "zigzag_steps": zigzag_steps, "rounds": 1,
                        "inversion": inversion}},
            ksampler("ks", model, positive, negative, ("lat", 0), [760, 420], "standard sampling (same seed)", **kw)]

FLUX_DEV, FLUX_CLIP_L, FLUX_T5, FLUX_VAE = ("flux1-dev.safetensors", "clip_l.safetensors", "t5xxl_fp16.safetensors",
                                          "ae.safetensors")
WAN_T2V, WAN_TE, WAN_VAE = ("wan2.1_t2v_1.3B_fp16.safetensors", "umt5_xxl_fp8_e4m3fn_scaled.safetensors",
                            "wan_2.1_vae.safetensors")
WAN_PROMPT = "a red fox running through fresh snow in a pine forest, morning light, cinematic"
WAN_NEGATIVE = "blurry, low quality, static, distorted, watermark, text"

ZSAMPLING_FLUX = {"nodes": [
    note("note", f"""
Z-Sampling (Bai et al., "Zigzag Diffusion Sampling", ICLR 2025) on Flux.1 dev, with Flux's usual settings: 20
steps, euler, simple, cfg 1 with FluxGuidance 3.5 on the prompt. Flux dev is guidance-distilled: at cfg 1 the
zig is the conditional prediction alone, so the zag needs a guidance gap of its own: inversion 'paper' with
inversion_cfg 0 inverts on the negative (empty) prompt, one branch per zag ('published' at cfg <= 1 would
invert on the prompt itself, as the reference does, and gain nothing). zigzag_steps 19 = every step but the
last. Cost: 58 model evaluations per image against 20 for the KSampler beside it (same seed). The paper ran
SDXL; these Flux settings are verified on tiny Flux models in the host tests, not tuned on the real one.

Models:
- ComfyUI/models/diffusion_models/{FLUX_DEV} (black-forest-labs/FLUX.1-dev)
- ComfyUI/models/text_encoders/{FLUX_CLIP_L} and {FLUX_T5} (comfyanonymous/flux_text_encoders)
- ComfyUI/models/vae/{FLUX_VAE} (black-forest-labs/FLUX.1-dev)
""", [-480, 0]),
    {"id": "unet", "type": "UNETLoader", "pos": [0, 0], "inputs": {"unet_name": FLUX_DEV}},
    {"id": "clip", "type": "DualCLIPLoader", "pos": [0, 160],
     "inputs": {"clip_name1": FLUX_CLIP_L, "clip_name2": FLUX_T5, "type": "flux"}},
    {"id": "vae", "type": "VAELoader", "pos": [0, 340], "inputs": {"vae_name": FLUX_VAE}},
    text("pos", ("clip", 0), PROMPT, [360, 0], "positive"),
    {"id": "fg", "type": "FluxGuidance", "pos": [360, 220], "inputs": {"conditioning": ("pos", 0), "guidance": 3.5}},
    text("neg", ("clip", 0), NEGATIVE, [360, 340], "negative (the zag's)"),
    {"id": "lat", "type": "EmptySD3LatentImage", "pos": [360, 560],
     "inputs": {"width": 1024, "height": 1024, "batch_size": 1}},
    *zigzag_and_ksampler(("unet", 0), ("fg", 0), ("neg", 0), "Z-Sampling (Flux dev)", 20, 1.0, "euler", "simple",
                         19, "paper"),
    *decode_save("zz", ("zz", 0), ("vae", 0), "zsampling_flux", [1140, 0]),
    *decode_save("ks", ("ks", 0), ("vae", 0), "standard_flux", [1140, 420]),
]}


def decode_video(key, samples, vae, prefix, pos):
    return [{"id": key + "_dec", "type": "VAEDecode", "pos": pos, "inputs": {"samples": samples, "vae": vae}},
            {"id": key + "_save", "type": "SaveAnimatedWEBP", "pos": [pos[0] + 260, pos[1]],
             "inputs": {"images": (key + "_dec", 0), "filename_prefix": prefix, "fps": 16.0}}]


ZSAMPLING_WAN = {"nodes": [
    note("note", f"""
Z-Sampling (Bai et al., "Zigzag Diffusion Sampling", ICLR 2025) on Wan 2.1 text-to-video 1.3B, with Wan's usual
settings: 832 x 480, 33 frames, ModelSamplingSD3 shift 8, 30 steps, simple, cfg 6, with euler for both samplers
(Wan's other usual sampler, uni_pc, evaluates a rescaled copy of its latent, which a reflection cannot reach, so
the reflecting nodes refuse it). Every step but the last is reflected (zigzag_steps 29; inversion_cfg 0: the zag on the negative prompt, 'published' as in the
reference). The reflection runs on the whole clip (latent [1, 16, 9, 60, 104]). Cost: 147 model evaluations
against 60 for the KSampler beside it (same seed). The paper ran SDXL; these settings are verified on tiny Wan
2.1 models in the host tests, not tuned on the real one.

Models:
- ComfyUI/models/diffusion_models/{WAN_T2V} (Comfy-Org/Wan_2.1_ComfyUI_repackaged)
- ComfyUI/models/text_encoders/{WAN_TE} (same repository)
- ComfyUI/models/vae/{WAN_VAE} (same repository)
""", [-480, 0]),
    {"id": "unet", "type": "UNETLoader", "pos": [0, 0], "inputs": {"unet_name": WAN_T2V}},
    {"id": "ms", "type": "ModelSamplingSD3", "pos": [0, 160], "inputs": {"model": ("unet", 0), "shift": 8.0}},
    {"id": "clip", "type": "CLIPLoader", "pos": [0, 300], "inputs": {"clip_name": WAN_TE, "type": "wan"}},
    {"id": "vae", "type": "VAELoader", "pos": [0, 460], "inputs": {"vae_name": WAN_VAE}},
    text("pos", ("clip", 0), WAN_PROMPT, [360, 0], "positive"),
    text("neg", ("clip", 0), WAN_NEGATIVE, [360, 240], "negative"),
    {"id": "lat", "type": "EmptyHunyuanLatentVideo", "pos": [360, 480],
     "inputs": {"width": 832, "height": 480, "length": 33, "batch_size": 1}},
    *zigzag_and_ksampler(("ms", 0), ("pos", 0), ("neg", 0), "Z-Sampling (Wan 2.1 T2V)", 30, 6.0, "euler", "simple",
                         29, "published"),
    *decode_video("zz", ("zz", 0), ("vae", 0), "zsampling_wan", [1140, 0]),
    *decode_video("ks", ("ks", 0), ("vae", 0), "standard_wan", [1140, 420]),
]}


# --------------------------------------------------------------------------- W2SD

W2SD_LORA = {"nodes": [
    note("note", f"""
W2SD (Bai, Sugiyama, Xie, "Weak-to-Strong Diffusion with Reflection", 2025; code
xie-lab-ml/Weak-to-Strong-Diffusion-with-Reflection), weight difference: one SDXL model and the xlMoreArt LoRA
at three strengths. On every reflected step the strong side (LoRA +1.5, cfg 5.5) denoises, the weak side
(LoRA -1.5, cfg 1.0) inverts, and the main side (LoRA 0.8, cfg 5.5) denoises. 50 DDIM steps, reflect_steps -1
(every step but the last). Beside it: the strong and the weak model alone with a KSampler, same seed.

Models:
{MODELS_SDXL}
- ComfyUI/models/loras/{XLMOREART} (xlMoreArt-full, civitai.com/models/124347)
""", [-480, 0]),
    checkpoint("ckpt", SDXL, [0, 0]),
    text("pos", ("ckpt", 1), PROMPT, [360, 0], "positive"),
    text("neg", ("ckpt", 1), NEGATIVE, [360, 240], "negative"),
    latent("lat", 1024, [360, 480]),
    {"id": "w2sd", "type": "WeakStrongReflectionLoRA", "pos": [760, 0], "title": "W2SD (paper)",
     "inputs": {"model": ("ckpt", 0), "lora_name": XLMOREART, "strong_strength": 1.5, "weak_strength": -1.5,
                "main_strength": 0.8, "positive": ("pos", 0), "negative": ("neg", 0), "cfg": 5.5, "weak_cfg": 1.0,
                "seed": 42, "steps": 50, "sampler_name": "ddim", "scheduler": "ddim_reference", "reflect_steps": -1,
                "latent_image": ("lat", 0)}},
    {"id": "strong", "type": "LoraLoaderModelOnly", "pos": [360, 720], "title": "strong model (LoRA +1.5)",
     "inputs": {"model": ("ckpt", 0), "lora_name": XLMOREART, "strength_model": 1.5}},
    {"id": "weak", "type": "LoraLoaderModelOnly", "pos": [360, 900], "title": "weak model (LoRA -1.5)",
     "inputs": {"model": ("ckpt", 0), "lora_name": XLMOREART, "strength_model": -1.5}},
    ksampler("ks_strong", ("strong", 0), ("pos", 0), ("neg", 0), ("lat", 0), [760, 520], "strong alone",
             steps=50, cfg=5.5, sampler_name="ddim", scheduler="ddim_uniform"),
    ksampler("ks_weak", ("weak", 0), ("pos", 0), ("neg", 0), ("lat", 0), [760, 900], "weak alone",
             steps=50, cfg=5.5, sampler_name="ddim", scheduler="ddim_uniform"),
    *decode_save("w2sd", ("w2sd", 0), ("ckpt", 2), "w2sd", [1140, 0]),
    *decode_save("strong", ("ks_strong", 0), ("ckpt", 2), "strong", [1140, 520]),
    *decode_save("weak", ("ks_weak", 0), ("ckpt", 2), "weak", [1140, 900]),
]}

W2SD_CONTROLNET = {"nodes": [
    note("note", f"""
W2SD, pipeline difference (Bai, Sugiyama, Xie 2025): the strong side is SDXL with a ControlNet, the weak side
the same model without it. Strong (ControlNet conditionings, cfg 5.5) denoises, weak (plain conditionings,
cfg 1.0) inverts, main (ControlNet conditionings, cfg 5.5) denoises; 50 DDIM steps, every step but the last.
Put a canny edge map (or any control image of your ControlNet) in ComfyUI/input/ and pick it in Load Image.

Models:
{MODELS_SDXL}
- ComfyUI/models/controlnet/{CONTROLNET} (diffusers/controlnet-canny-sdxl-1.0)
""", [-480, 0]),
    checkpoint("ckpt", SDXL, [0, 0]),
    text("pos", ("ckpt", 1), PROMPT, [360, 0], "positive"),
    text("neg", ("ckpt", 1), NEGATIVE, [360, 240], "negative"),
    latent("lat", 1024, [360, 480]),
    {"id": "cn", "type": "ControlNetLoader", "pos": [0, 300], "inputs": {"control_net_name": CONTROLNET}},
    {"id": "img", "type": "LoadImage", "pos": [0, 460], "inputs": {"image": "example.png"}},
    {"id": "apply", "type": "ControlNetApplyAdvanced", "pos": [360, 700], "title": "strong side: with ControlNet",
     "inputs": {"positive": ("pos", 0), "negative": ("neg", 0), "control_net": ("cn", 0), "image": ("img", 0),
                "strength": 0.5}},
    {"id": "w2sd", "type": "WeakStrongReflection", "pos": [760, 0], "title": "W2SD (pipeline difference)",
     "inputs": {"model": ("ckpt", 0), "positive": ("apply", 0), "negative": ("apply", 1), "cfg": 5.5,
                "strong_cfg": 5.5, "weak_cfg": 1.0, "seed": 42, "steps": 50, "sampler_name": "ddim",
                "scheduler": "ddim_reference", "reflect_steps": -1, "latent_image": ("lat", 0),
                "weak_positive": ("pos", 0), "weak_negative": ("neg", 0)}},
    ksampler("ks", ("ckpt", 0), ("apply", 0), ("apply", 1), ("lat", 0), [760, 520], "ControlNet alone (same seed)",
             steps=50, cfg=5.5, sampler_name="ddim", scheduler="ddim_uniform"),
    *decode_save("w2sd", ("w2sd", 0), ("ckpt", 2), "w2sd_controlnet", [1140, 0]),
    *decode_save("ks", ("ks", 0), ("ckpt", 2), "controlnet", [1140, 520]),
]}


# --------------------------------------------------------------------------- SWG

def swg_spec(family):
    ckpt, size, crop = (SD15, 512, 320) if family == "sd15" else (SDXL, 1024, 640)
    name = "SD1.5 (runwayml/stable-diffusion-v1-5)" if family == "sd15" else "SDXL base"
    return {"nodes": [
        note("note", f"""
SWG and M-SWG (Kaiser, Adaloglou, Kollmann, "The Unreasonable Effectiveness of Guidance for Diffusion Models",
2024), on {name}. Sliding Window Guidance steers away from the model's own prediction assembled from crops:
2 x 2 overlapping crops of 5/8 of the latent ({crop} px = {crop // 8} latent pixels at {size} px), as the paper's
40-of-64 layout. Rows: SWG alone (cfg 1), M-SWG (masked: only where crops overlap), SWG combined with CFG (cfg 5).
scale is the guidance weight of the crops.

Models: ComfyUI/models/checkpoints/{ckpt}
""", [-480, 0]),
        checkpoint("ckpt", ckpt, [0, 0]),
        text("pos", ("ckpt", 1), PROMPT, [360, 0], "positive"),
        text("neg", ("ckpt", 1), NEGATIVE, [360, 240], "negative"),
        latent("lat", size, [360, 480]),
        {"id": "swg", "type": "SlidingWindowGuidance", "pos": [760, 0], "title": "SWG",
         "inputs": {"model": ("ckpt", 0), "scale": 1.0, "crop_width": crop, "crop_units": "pixels", "crops_x": 2}},
        {"id": "mswg", "type": "SlidingWindowGuidance", "pos": [760, 360], "title": "M-SWG",
         "inputs": {"model": ("ckpt", 0), "scale": 1.0, "crop_width": crop, "crop_units": "pixels", "crops_x": 2,
                    "masked": True}},
        ksampler("ks_swg", ("swg", 0), ("pos", 0), ("neg", 0), ("lat", 0), [1140, 0], "SWG (cfg 1)", steps=30,
                 cfg=1.0, sampler_name="euler", scheduler="normal"),
        ksampler("ks_mswg", ("mswg", 0), ("pos", 0), ("neg", 0), ("lat", 0), [1140, 360], "M-SWG (cfg 1)",
                 steps=30, cfg=1.0, sampler_name="euler", scheduler="normal"),
        ksampler("ks_cfg", ("swg", 0), ("pos", 0), ("neg", 0), ("lat", 0), [1140, 720], "CFG 5 + SWG", steps=30,
                 cfg=5.0, sampler_name="euler", scheduler="normal"),
        *decode_save("swg", ("ks_swg", 0), ("ckpt", 2), f"swg_{family}", [1520, 0]),
        *decode_save("mswg", ("ks_mswg", 0), ("ckpt", 2), f"mswg_{family}", [1520, 360]),
        *decode_save("cfg", ("ks_cfg", 0), ("ckpt", 2), f"cfg_swg_{family}", [1520, 720]),
    ]}


SWG_WEAK = {"nodes": [
    note("note", """
WMG-SWG (Kaiser, Adaloglou, Kollmann 2024): the paper's best results combine a weak model with SWG. On EDM2-S,
RT+M-SWG (weak-model weight 1.2, SWG scale 0.25) gives FID 3.35 and RCT+M-SWG 3.22. Here: SDXL base guided by
a weaker model of the same latent format (SSD-1B, distilled from SDXL: reduced capacity, as the paper's RCT) and
by its own crops (2 x 2 crops of 5/8 of the latent): D = D_cfg1 + 1.2 (D_cond - D_weak) + 0.25 (D_cond - D_crops),
cfg 1 as in the paper. The second row is the weak-model guidance alone (scale 0).

Models: ComfyUI/models/checkpoints/""" + SDXL + """ and """ + SSD1B + """ (segmind/SSD-1B)
""", [-480, 0]),
    checkpoint("ckpt", SDXL, [0, 0]),
    checkpoint("weak", SSD1B, [0, 240]),
    text("pos", ("ckpt", 1), PROMPT, [360, 0], "positive"),
    text("neg", ("ckpt", 1), NEGATIVE, [360, 240], "negative"),
    latent("lat", 1024, [360, 480]),
    {"id": "wswg", "type": "SlidingWindowGuidance", "pos": [760, 0], "title": "WMG-SWG (1.2, 0.25)",
     "inputs": {"model": ("ckpt", 0), "weak_model": ("weak", 0), "weak_scale": 1.2, "scale": 0.25,
                "crop_width": 640, "crop_units": "pixels", "crops_x": 2}},
    {"id": "wmg", "type": "SlidingWindowGuidance", "pos": [760, 360], "title": "WMG alone (1.2)",
     "inputs": {"model": ("ckpt", 0), "weak_model": ("weak", 0), "weak_scale": 1.2, "scale": 0.0,
                "crop_width": 640, "crop_units": "pixels", "crops_x": 2}},
    ksampler("ks_wswg", ("wswg", 0), ("pos", 0), ("neg", 0), ("lat", 0), [1140, 0], "WMG-SWG (cfg 1)", steps=30,
             cfg=1.0, sampler_name="euler", scheduler="normal"),
    ksampler("ks_wmg", ("wmg", 0), ("pos", 0), ("neg", 0), ("lat", 0), [1140, 360], "WMG (cfg 1)", steps=30,
             cfg=1.0, sampler_name="euler", scheduler="normal"),
    *decode_save("wswg", ("ks_wswg", 0), ("ckpt", 2), "wmg_swg_sdxl", [1520, 0]),
    *decode_save("wmg", ("ks_wmg", 0), ("ckpt", 2), "wmg_sdxl", [1520, 360]),
]}


# --------------------------------------------------------------------------- quality gate / adaptive

IR_FILES = """- ComfyUI/models/image_reward/ImageReward.pt and med_config.json (THUDM/ImageReward), vocab.txt
  (google-bert/bert-base-uncased); downloaded there on first use when online."""

PICKSCORE_FILES = """- ComfyUI/models/pickscore/model.safetensors (yuvalkirstain/PickScore_v1); downloaded there on first use when
  online. PickScore's scale is its own (logit_scale x cosine, about 18-24 on SDXL images)."""


def best_of_batch(estimator=None):
    """4 SDXL images, scored by ImageReward (its own loader) or by ``estimator`` (Load Quality Model)."""
    name, files = ("ImageReward (Xu et al. 2023)", IR_FILES) if estimator is None else \
        ("PickScore (Kirstain et al. 2023)", PICKSCORE_FILES)
    loader = ({"id": "ir", "type": "ImageRewardLoader", "pos": [760, 420], "inputs": {"checkpoint": "ImageReward.pt"}}
              if estimator is None else
              {"id": "ir", "type": "QualityModelLoader", "pos": [760, 420], "inputs": {"estimator": estimator}})
    threshold = 0.0 if estimator is None else 21.0
    return {"nodes": [
        note("note", f"""
QualityGate picking the best of a batch: SDXL makes 4 images from one prompt, {name} scores
each against the prompt, and the best one is saved (the node shows every score). The threshold ({threshold}) splits
the batch into passed / failed images too.

Models:
{MODELS_SDXL}
{files}
""", [-480, 0]),
        checkpoint("ckpt", SDXL, [0, 0]),
        text("pos", ("ckpt", 1), PROMPT, [360, 0], "positive"),
        text("neg", ("ckpt", 1), NEGATIVE, [360, 240], "negative"),
        latent("lat", 1024, [360, 480], batch=4),
        ksampler("ks", ("ckpt", 0), ("pos", 0), ("neg", 0), ("lat", 0), [760, 0], steps=30, cfg=6.0,
                 sampler_name="dpmpp_2m", scheduler="karras"),
        {"id": "dec", "type": "VAEDecode", "pos": [1140, 0], "inputs": {"samples": ("ks", 0), "vae": ("ckpt", 2)}},
        loader,
        {"id": "gate", "type": "QualityGate", "pos": [1400, 0],
         "inputs": {"image_reward": ("ir", 0), "images": ("dec", 0), "prompt": PROMPT, "threshold": threshold}},
        {"id": "save", "type": "SaveImage", "pos": [1800, 0],
         "inputs": {"images": ("gate", 2), "filename_prefix": "best"}},
    ]}


BEST_OF_BATCH = best_of_batch()


HPS_FILES = """- ComfyUI/models/hpsv2/HPS_v2.1_compressed.pt (xswu/HPSv2); downloaded there on first use when online."""


def adaptive_spec(kind, estimator=None):
    """The paper's two setups with ImageReward and its tables; ``estimator`` (e.g. "hpsv2.1"): the LCM-SDXL setup
    scored by that estimator through Load Quality Model, with a threshold to calibrate (no paper table)."""
    lcm = kind == "lcm"
    table = "IR_percentiles_lcm_sdxl.json" if lcm else "IR_percentiles_sdxl_turbo.json"
    if lcm:
        models = f"""{MODELS_SDXL} (the teacher, and the student's CLIP and VAE)
- ComfyUI/models/diffusion_models/{LCM_SDXL} (latent-consistency/lcm-sdxl: unet/diffusion_pytorch_model.fp16.safetensors)"""
        about = ("LCM-SDXL student, 4 steps (lcm sampler, LCM model sampling; the reference runs LCM-SDXL at "
                 "guidance 8 through diffusers), teacher SDXL base, 12 steps UniPC, cfg 8, rollback sigma 0.7, k 50")
    else:
        models = f"""- ComfyUI/models/checkpoints/{SDXL_TURBO} (stabilityai/sdxl-turbo)
- ComfyUI/models/checkpoints/{SDXL_REFINER} (stabilityai/stable-diffusion-xl-refiner-1.0)"""
        about = ("SDXL-Turbo student, 2 steps (euler_ancestral, cfg 1 = the reference's guidance 0), teacher SDXL "
                 "refiner, 4 steps UniPC, cfg 8, rollback sigma 0.3, k 50. Turbo makes 512 px images, the refiner "
                 "refines them at that size")
    if estimator is None:
        scoring = (f"The student's samples are scored with ImageReward; those below the 50th percentile of the "
                   f"student's scores (the paper's table, {table}) are refined")
    else:
        scoring = (f"The student's samples are scored with HPSv2.1 (Wu et al. 2023) instead of the paper's "
                   f"ImageReward; those below the threshold 0.27 (a starting value: replace it by the 50th "
                   f"percentile of your student's HPSv2.1 scores, made with tools/calibrate.py on "
                   f"calibrate_lcm_sdxl with Load Quality Model set to hpsv2.1, then connect that table) are refined")
    nodes = [note("note", f"""
Adaptive student-teacher (Starodubcev et al. 2023, "Your Student is Better Than Expected"; code
yandex-research/adaptive-diffusion): {about}. {scoring} by the teacher from the rollback level; the rest are
kept. Average cost per image: {"4 + 0.5 x 12 = 10" if lcm else "2 + 0.5 x 4 = 4"} steps (the node reports the
measured value).

Models:
{models}
{IR_FILES if estimator is None else HPS_FILES}
""", [-480, 0], (460, 420))]
    if lcm:
        nodes += [checkpoint("ckpt", SDXL, [0, 0]),
                  {"id": "unet", "type": "UNETLoader", "pos": [0, 200], "inputs": {"unet_name": LCM_SDXL}},
                  {"id": "msd", "type": "ModelSamplingDiscrete", "pos": [0, 360],
                   "inputs": {"model": ("unet", 0), "sampling": "lcm"}}]
        student, s_clip, t_model, t_clip, vae = ("msd", 0), ("ckpt", 1), ("ckpt", 0), ("ckpt", 1), ("ckpt", 2)
        size, s_kw = 1024, dict(steps=4, cfg=1.0, sampler_name="lcm", scheduler="sgm_uniform")
        t_pos = text("tpos", t_clip, PROMPT, [360, 720], "teacher positive")
        t_neg = text("tneg", t_clip, NEGATIVE, [360, 900], "teacher negative")
    else:
        nodes += [checkpoint("ckpt", SDXL_TURBO, [0, 0]), checkpoint("ref", SDXL_REFINER, [0, 600])]
        student, s_clip, t_model, vae = ("ckpt", 0), ("ckpt", 1), ("ref", 0), ("ckpt", 2)
        size, s_kw = 512, dict(steps=2, cfg=1.0, sampler_name="euler_ancestral", scheduler="sgm_uniform")
        t_pos = {"id": "tpos", "type": "CLIPTextEncodeSDXLRefiner", "pos": [360, 720], "title": "teacher positive",
                 "inputs": {"ascore": 6.0, "width": 512, "height": 512, "text": PROMPT, "clip": ("ref", 1)}}
        t_neg = {"id": "tneg", "type": "CLIPTextEncodeSDXLRefiner", "pos": [360, 900], "title": "teacher negative",
                 "inputs": {"ascore": 2.5, "width": 512, "height": 512, "text": NEGATIVE, "clip": ("ref", 1)}}
    nodes += [
        text("pos", s_clip, PROMPT, [360, 0], "student positive"),
        text("neg", s_clip, NEGATIVE, [360, 240], "student negative"),
        latent("lat", size, [360, 480], batch=4),
        t_pos, t_neg,
        ksampler("student", student, ("pos", 0), ("neg", 0), ("lat", 0), [760, 0], "student", **s_kw),
        *([{"id": "ir", "type": "ImageRewardLoader", "pos": [760, 420], "inputs": {"checkpoint": "ImageReward.pt"}},
           {"id": "table", "type": "QualityPercentiles", "pos": [760, 560], "inputs": {"table": table}}]
          if estimator is None else
          [{"id": "ir", "type": "QualityModelLoader", "pos": [760, 420], "inputs": {"estimator": estimator}}]),
        {"id": "ast", "type": "AdaptiveStudentTeacher", "pos": [1140, 0], "size": [360, 620],
         "inputs": {"samples": ("student", 0), "student_vae": vae, "student_steps": s_kw["steps"],
                    "image_reward": ("ir", 0), "prompt": PROMPT, "teacher_model": t_model,
                    "teacher_positive": ("tpos", 0), "teacher_negative": ("tneg", 0), "seed": 7,
                    "teacher_steps": 12 if lcm else 4, "teacher_cfg": 8.0, "teacher_sampler": "uni_pc",
                    "teacher_scheduler": "normal", "sigma": 0.7 if lcm else 0.3, "strategy": "refine",
                    "rollback_schedule": "reference", "k": 50,
                    **({"percentiles": ("table", 0)} if estimator is None else {"threshold": 0.27})}},
        {"id": "save", "type": "SaveImage", "pos": [1560, 0],
         "inputs": {"images": ("ast", 0), "filename_prefix": f"adaptive_{kind}"}},
    ]
    return {"nodes": nodes}


CALIBRATE = {"nodes": [
    note("note", f"""
Calibration of the adaptive student-teacher threshold (Starodubcev et al. 2023): the student (here LCM-SDXL,
4 steps, 1 image per prompt) generates from a prompt and QualityGate reports its ImageReward score. Run it over
a prompt set with tools/calibrate.py (the API twin, workflows/api/calibrate_lcm_sdxl.json): it puts each prompt
where the text says {{prompt}}, gives the student's KSampler the seed base_seed + prompt index, spreads the
prompts over one or more ComfyUI servers and writes the percentile table {{"10": ..., "90": ...}} to
ComfyUI/models/image_reward_percentiles/. The reference used the first 5,000 COCO captions.

Models: as adaptive_lcm_sdxl.json.
""", [-480, 0]),
    checkpoint("ckpt", SDXL, [0, 0]),
    {"id": "unet", "type": "UNETLoader", "pos": [0, 200], "inputs": {"unet_name": LCM_SDXL}},
    {"id": "msd", "type": "ModelSamplingDiscrete", "pos": [0, 360], "inputs": {"model": ("unet", 0), "sampling": "lcm"}},
    text("pos", ("ckpt", 1), "{prompt}", [360, 0], "positive ({prompt})"),
    text("neg", ("ckpt", 1), NEGATIVE, [360, 240], "negative"),
    latent("lat", 1024, [360, 480]),
    ksampler("student", ("msd", 0), ("pos", 0), ("neg", 0), ("lat", 0), [760, 0], "student", steps=4, cfg=1.0,
             sampler_name="lcm", scheduler="sgm_uniform"),
    {"id": "dec", "type": "VAEDecode", "pos": [1140, 0], "inputs": {"samples": ("student", 0), "vae": ("ckpt", 2)}},
    {"id": "ir", "type": "ImageRewardLoader", "pos": [1140, 200], "inputs": {"checkpoint": "ImageReward.pt"}},
    {"id": "gate", "type": "QualityGate", "pos": [1400, 0],
     "inputs": {"image_reward": ("ir", 0), "images": ("dec", 0), "prompt": "{prompt}"}},
]}

YOSO = {"nodes": [
    note("note", f"""
A few-step student of the adaptive method: YOSO ("You Only Sample Once", Luo et al. 2024) as a LoRA on SD1.5,
1 to 2 steps with LCM-style sampling (lcm sampler, LCM model sampling) and a small cfg; the paper of the adaptive
method pairs such students with their base model as the teacher (here SD1.5, 12 steps UniPC, sigma 0.7). No
percentile table ships for this student: make one with calibrate_lcm_sdxl.json's recipe (swap in this student)
or set a threshold by hand.

Models:
- ComfyUI/models/checkpoints/{SD15} (runwayml/stable-diffusion-v1-5)
- ComfyUI/models/loras/{YOSO} (Luo-Yihong/yoso_sd1.5_lora)
{IR_FILES}
""", [-480, 0]),
    checkpoint("ckpt", SD15, [0, 0]),
    {"id": "lora", "type": "LoraLoaderModelOnly", "pos": [0, 200], "inputs": {"model": ("ckpt", 0), "lora_name": YOSO,
                                                                             "strength_model": 1.0}},
    {"id": "msd", "type": "ModelSamplingDiscrete", "pos": [0, 360], "inputs": {"model": ("lora", 0), "sampling": "lcm"}},
    text("pos", ("ckpt", 1), PROMPT, [360, 0], "positive"),
    text("neg", ("ckpt", 1), NEGATIVE, [360, 240], "negative"),
    latent("lat", 512, [360, 480], batch=4),
    ksampler("student", ("msd", 0), ("pos", 0), ("neg", 0), ("lat", 0), [760, 0], "YOSO student", steps=2, cfg=1.5,
             sampler_name="lcm", scheduler="sgm_uniform"),
    {"id": "ir", "type": "ImageRewardLoader", "pos": [760, 420], "inputs": {"checkpoint": "ImageReward.pt"}},
    {"id": "ast", "type": "AdaptiveStudentTeacher", "pos": [1140, 0], "size": [360, 620],
     "inputs": {"samples": ("student", 0), "student_vae": ("ckpt", 2), "student_steps": 2, "image_reward": ("ir", 0),
                "prompt": PROMPT, "teacher_model": ("ckpt", 0), "teacher_positive": ("pos", 0),
                "teacher_negative": ("neg", 0), "seed": 7, "teacher_steps": 12, "teacher_cfg": 7.5,
                "teacher_sampler": "uni_pc", "teacher_scheduler": "normal", "sigma": 0.7, "threshold": 0.0}},
    {"id": "save", "type": "SaveImage", "pos": [1560, 0], "inputs": {"images": ("ast", 0), "filename_prefix": "yoso"}},
]}

SPECS = {
    "zsampling_sdxl": ZSAMPLING,
    "zsampling_flux": ZSAMPLING_FLUX,
    "zsampling_wan21_t2v": ZSAMPLING_WAN,
    "w2sd_lora_sdxl": W2SD_LORA,
    "w2sd_controlnet_sdxl": W2SD_CONTROLNET,
    "swg_sd15": swg_spec("sd15"),
    "swg_sdxl": swg_spec("sdxl"),
    "swg_weak_model_sdxl": SWG_WEAK,
    "quality_gate_best_of_batch": BEST_OF_BATCH,
    "quality_gate_pickscore_sdxl": best_of_batch("pickscore"),
    "adaptive_lcm_sdxl": adaptive_spec("lcm"),
    "adaptive_lcm_sdxl_hps": adaptive_spec("lcm", "hpsv2.1"),
    "adaptive_turbo_refiner": adaptive_spec("turbo"),
    "calibrate_lcm_sdxl": CALIBRATE,
    "adaptive_yoso_sd15": YOSO,
}
