"""The model-family matrix: every node of the pack on a tiny model of each ComfyUI family (COMFYUI_PATH).

Families (hostlib.MODEL_FAMILIES, built from ComfyUI's own supported_models / model_base classes with seeded
weights): SD1.5 (eps), SD2 (v-prediction), SDXL, SD3 (MMDiT), Flux, Chroma, Lumina 2, Qwen-Image, Wan 2.1 text-to-video
(latent [B, 16, T, H, W]), LTXV (latent [B, 128, T, H, W]) and HunyuanVideo ([B, 16, T, H, W]), each with its conditioning layout (context,
pooled output, Flux guidance, LTXV frame rate and token mask).

Nodes: ZigzagKSampler, SamplerZigzag + SamplerCustomAdvanced, WeakStrongReflection (two differently seeded
models of the family), SlidingWindowGuidance (+ KSampler). Each cell checks: a finite output of KSampler's
shape; with nothing reflected / SWG scale 0 the output bit-identical to ComfyUI's own sampling; the batch items
the diffusion model sees equal to the node's own count (samplers/zigzag.py and samplers/w2sd.py evaluations(),
SWG's branches + crops per guided step) and the progress bar's length equal to the node's model calls;
determinism per seed (and a different seed gives a different result). Flow families: with gamma_1 = gamma_2
and one reflected step on a model whose velocity is constant in x (output projection zeroed, a bias), zig then
zag returns to the start latent, so the run equals KSampler within float tolerance.
"""

import pytest
import torch

import hostlib

FAMILIES = hostlib.MODEL_FAMILIES
FLOW = hostlib.FLOW_FAMILIES
STEPS, CFG, BATCH = 3, 3.0, 2
# the output projection of each flow family's network (its final Linear, before unpatchify)
OUTPUT_LAYER = {"sd3": "final_layer.linear", "flux": "final_layer.linear", "chroma": "final_layer.linear",
                "lumina2": "final_layer.linear",
                "qwen_image": "proj_out", "wan21": "head.head", "ltxv": "proj_out", "hunyuan_video": "final_layer.linear"}


def scheduler_of(family):
    """What a user of the family runs: 'simple' for flow models, 'normal' for SD1.5 / SD2 / SDXL."""
    return "simple" if family in FLOW else "normal"


@pytest.fixture(scope="module")
def pack(reflect_pack):
    return reflect_pack


_MODELS = {}


def family_model(family, seed=0):
    if (family, seed) not in _MODELS:
        _MODELS[(family, seed)] = hostlib.build_family(family, seed)
    return _MODELS[(family, seed)]


def cell(family, model=None):
    """A family's model (seed 0 unless given), positive / negative conditionings and empty latent."""
    return {"family": family, "model": model or family_model(family, 0), "pos": hostlib.family_conditioning(family, 1),
            "neg": hostlib.family_conditioning(family, 2), "latent": hostlib.family_latent(family, batch=BATCH)}


@pytest.fixture(scope="module", params=FAMILIES)
def fam(request, comfy_env):
    return cell(request.param)


class CountItems:
    """Batch items through the family's diffusion model (its forward wrapped; restored on exit)."""

    def __init__(self, *models):
        self.nets = [m.model.diffusion_model for m in models]
        self.items = 0

    def __enter__(self):
        for net in self.nets:
            orig = net.forward

            def forward(x, *a, _orig=orig, **k):
                self.items += x.shape[0]
                return _orig(x, *a, **k)
            net.forward = forward
        return self

    def __exit__(self, *exc):
        for net in self.nets:
            del net.forward  # back to the class's method


def ksampler(f, model=None, seed=0, **kw):
    return hostlib.ksampler(model or f["model"], f["pos"], f["neg"], f["latent"], seed=seed, steps=STEPS, cfg=CFG,
                            sampler_name="euler", scheduler=scheduler_of(f["family"]), **kw)["samples"]


def zigzag_ksampler(Z, f, lam, seed=0, model=None, g2=0.0, inversion="published", rounds=1, cfg=CFG):
    return hostlib.run_node(Z.ZigzagKSampler, model=model or f["model"], seed=seed, steps=STEPS, cfg=cfg,
                            sampler_name="euler", scheduler=scheduler_of(f["family"]), positive=f["pos"],
                            negative=f["neg"], latent_image=f["latent"], denoise=1.0, inversion_cfg=g2,
                            zigzag_steps=lam, rounds=rounds, inversion=inversion)[0]["samples"]


def custom_advanced(M, f, sampler, seed=0):
    model = f["model"]
    guider = hostlib.run_node(M["CFGGuider"], model=model, positive=f["pos"], negative=f["neg"], cfg=CFG)[0]
    sigmas = hostlib.run_node(M["BasicScheduler"], model=model, scheduler=scheduler_of(f["family"]), steps=STEPS,
                              denoise=1.0)[0]
    noise = hostlib.run_node(M["RandomNoise"], noise_seed=seed)[0]
    return hostlib.run_node(M["SamplerCustomAdvanced"], noise=noise, guider=guider, sampler=sampler, sigmas=sigmas,
                            latent_image=f["latent"])[0]["samples"]


def sampler_zigzag(pack, lam):
    return hostlib.run_node(pack.nodes.zigzag.SamplerZigzag, sampler_name="euler", inversion_cfg=0.0,
                            zigzag_steps=lam, rounds=1, inversion="published", reference_scaling=False)[0]


def reflection(pack, f, reflect_steps, seed=0, weak_seed=1, strong_cfg=CFG, weak_cfg=1.0):
    W = pack.nodes.w2sd
    return hostlib.run_node(W.WeakStrongReflection, model=f["model"], positive=f["pos"], negative=f["neg"], cfg=CFG,
                            strong_cfg=strong_cfg, weak_cfg=weak_cfg, seed=seed, steps=STEPS, sampler_name="euler",
                            scheduler=scheduler_of(f["family"]), latent_image=f["latent"], denoise=1.0,
                            reflect_steps=reflect_steps, inversion="published", strong_model=f["model"],
                            weak_model=family_model(f["family"], weak_seed))[0]["samples"]


def swg_model(pack, f, scale, crops=2, crops_t=1):
    crop = 8  # of a 16 x 16 latent: a multiple of every family's patch size (2 or 1)
    return hostlib.run_node(pack.nodes.swg.SlidingWindowGuidance, model=f["model"], scale=scale, crop_width=crop,
                            crop_height=0, crop_units="latent", crops_x=crops, crops_y=0, masked=False,
                            mask_with_cfg=False, crop_conditioning="auto", start_percent=0.0, end_percent=1.0,
                            crops_t=crops_t, crop_frames=0)[0]


def check_result(f, out, ref_shape):
    assert tuple(out.shape) == tuple(ref_shape), (f["family"], out.shape, ref_shape)
    assert torch.isfinite(out).all(), f["family"]
    assert out.abs().sum() > 0


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


def zz_items(pack, lam, g1=CFG, g2=0.0):
    zz = pack.samplers.zigzag
    return BATCH * zz.evaluations(STEPS, lam, 1, g1, g2, "published")["minimal"]


# --------------------------------------------------------------------------- ZigzagKSampler

def test_zigzag_ksampler(Z, pack, fam, monkeypatch):
    f = fam
    plain = ksampler(f, seed=4)
    assert torch.equal(zigzag_ksampler(Z, f, 0, seed=4), plain)  # nothing reflected: KSampler exactly
    lam = STEPS - 1
    prog = hostlib.ProgressProbe(monkeypatch)
    with CountItems(f["model"]) as c:
        out = zigzag_ksampler(Z, f, lam, seed=4)
    prog.close()
    check_result(f, out, plain.shape)
    assert c.items == zz_items(pack, lam), (f["family"], c.items)
    calls = STEPS + 2 * lam  # the node's progress bar: one tick per model evaluation (euler: one per step)
    assert prog.totals() == {calls} and prog.values()[-1] == calls, prog.seen
    assert torch.equal(zigzag_ksampler(Z, f, lam, seed=4), out)  # deterministic per seed
    assert rel(zigzag_ksampler(Z, f, lam, seed=5), out) > 1e-3
    assert rel(out, plain) > 1e-4  # the reflection changed the result


# --------------------------------------------------------------------------- SamplerZigzag + SamplerCustomAdvanced

def test_sampler_zigzag(M, pack, fam, monkeypatch):
    f = fam
    plain = custom_advanced(M, f, hostlib.run_node(M["KSamplerSelect"], sampler_name="euler")[0], seed=6)
    assert torch.equal(custom_advanced(M, f, sampler_zigzag(pack, 0), seed=6), plain)
    lam = STEPS - 1
    prog = hostlib.ProgressProbe(monkeypatch)
    with CountItems(f["model"]) as c:
        out = custom_advanced(M, f, sampler_zigzag(pack, lam), seed=6)
    prog.close()
    check_result(f, out, plain.shape)
    assert c.items == zz_items(pack, lam), (f["family"], c.items)
    calls = STEPS + 2 * lam
    assert prog.totals() == {calls} and prog.values()[-1] == calls, prog.seen
    assert torch.equal(custom_advanced(M, f, sampler_zigzag(pack, lam), seed=6), out)
    assert rel(custom_advanced(M, f, sampler_zigzag(pack, lam), seed=7), out) > 1e-3
    assert rel(out, plain) > 1e-4


# --------------------------------------------------------------------------- WeakStrongReflection

def test_weak_strong_reflection(pack, fam):
    f = fam
    plain = ksampler(f, seed=8)
    # nothing reflected: the main side alone, which is KSampler on the main model
    assert torch.equal(reflection(pack, f, 0, seed=8), plain)
    weak = family_model(f["family"], 1)
    with CountItems(f["model"], weak) as c:
        out = reflection(pack, f, -1, seed=8)
    check_result(f, out, plain.shape)
    expected = BATCH * hostlib.submodule(pack, "samplers.w2sd").evaluations(STEPS, CFG, 1.0, CFG, STEPS - 1)["minimal"]
    assert c.items == expected, (f["family"], c.items, expected)
    assert torch.equal(reflection(pack, f, -1, seed=8), out)
    assert rel(reflection(pack, f, -1, seed=9), out) > 1e-3
    assert rel(out, plain) > 1e-4
    # the weak side is the second, differently seeded model: another weak model, another result
    assert rel(reflection(pack, f, -1, seed=8, weak_seed=2), out) > 1e-4


# --------------------------------------------------------------------------- SlidingWindowGuidance

def test_sliding_window_guidance(pack, fam):
    f = fam
    plain = ksampler(f, seed=10)
    assert torch.equal(ksampler(f, model=swg_model(pack, f, 0.0), seed=10), plain)
    patched = swg_model(pack, f, 1.0, crops=2)
    with CountItems(f["model"]) as c:
        out = ksampler(f, model=patched, seed=10)
    check_result(f, out, plain.shape)
    # per guided step and image: the CFG branches + crops_x * crops_y windows (time kept whole for video)
    assert c.items == BATCH * STEPS * (2 + 2 * 2), (f["family"], c.items)
    assert torch.equal(ksampler(f, model=patched, seed=10), out)
    assert rel(ksampler(f, model=patched, seed=11), out) > 1e-3
    assert rel(out, plain) > 1e-4


@pytest.mark.parametrize("family", hostlib.VIDEO_FAMILIES)
def test_sliding_window_guidance_temporal_windows(pack, family):
    """Video: crops_t = 2 adds windows along time (here 1 latent frame each) to the 2 x 2 spatial ones."""
    f = cell(family)
    whole = ksampler(f, model=swg_model(pack, f, 1.0), seed=10)
    with CountItems(f["model"]) as c:
        out = ksampler(f, model=swg_model(pack, f, 1.0, crops_t=2), seed=10)
    check_result(f, out, whole.shape)
    assert c.items == BATCH * STEPS * (2 + 2 * 2 * 2), c.items
    assert rel(out, whole) > 1e-4


# the shipped workflows' settings (workflows/zsampling_flux.json, zsampling_wan21_t2v.json) at test size
SHIPPED = {"flux": dict(cfg=1.0, sampler="euler", inversion="paper"),
           "wan21": dict(cfg=6.0, sampler="euler", inversion="published")}


@pytest.mark.parametrize("family", sorted(SHIPPED))
def test_shipped_workflow_settings(Z, pack, family):
    s = SHIPPED[family]
    f = cell(family)

    def run(lam, seed=4):
        return hostlib.run_node(Z.ZigzagKSampler, model=f["model"], seed=seed, steps=STEPS, cfg=s["cfg"],
                                sampler_name=s["sampler"], scheduler="simple", positive=f["pos"], negative=f["neg"],
                                latent_image=f["latent"], denoise=1.0, inversion_cfg=0.0, zigzag_steps=lam,
                                rounds=1, inversion=s["inversion"])[0]["samples"]
    plain = hostlib.ksampler(f["model"], f["pos"], f["neg"], f["latent"], seed=4, steps=STEPS, cfg=s["cfg"],
                             sampler_name=s["sampler"], scheduler="simple")["samples"]
    assert torch.equal(run(0), plain)
    lam = STEPS - 1
    with CountItems(f["model"]) as c:
        out = run(lam)
    check_result(f, out, plain.shape)
    # Flux at cfg 1: one branch per zig, the zag on the negative prompt alone (inversion 'paper', inversion_cfg 0)
    per_image = hostlib.submodule(pack, "samplers.zigzag").evaluations(STEPS, lam, 1, s["cfg"], 0.0, s["inversion"])["minimal"]
    assert c.items == BATCH * per_image, (c.items, per_image)
    assert torch.equal(run(lam), out) and rel(out, plain) > 1e-4


# --------------------------------------------------------------------------- refusals across families

def test_models_of_another_family_are_refused_naming_the_latent_formats(Z, pack):
    """A weak model (W2SD, SWG) or a latent of another family is refused before sampling, naming both
    formats / channel counts, never run into a shape error or a silently wrong result."""
    flux, wan = cell("flux"), cell("wan21")
    with pytest.raises(ValueError, match=r"(?s)latent format.*Wan21|Wan21.*latent format"):
        hostlib.run_node(pack.nodes.w2sd.WeakStrongReflection, model=flux["model"], positive=flux["pos"],
                         negative=flux["neg"], cfg=CFG, strong_cfg=CFG, weak_cfg=1.0, seed=0, steps=STEPS,
                         sampler_name="euler", scheduler="simple", latent_image=flux["latent"], denoise=1.0,
                         reflect_steps=-1, inversion="published", strong_model=flux["model"],
                         weak_model=wan["model"])
    with pytest.raises(ValueError, match=r"weak_model.*Wan21.*Flux"):
        hostlib.run_node(pack.nodes.swg.SlidingWindowGuidance, model=flux["model"], scale=1.0, crop_width=8,
                         crop_height=0, crop_units="latent", crops_x=2, crops_y=0, masked=False, mask_with_cfg=False,
                         crop_conditioning="auto", start_percent=0.0, end_percent=1.0, weak_model=wan["model"])
    # a (non-empty) SD latent, 4 channels, on Flux (16)
    with pytest.raises(ValueError, match=r"latent_image.*4 channels.*16"):
        zigzag_ksampler(Z, dict(flux, latent=hostlib.family_latent("sd15", batch=BATCH, seed=1)), STEPS - 1)


# --------------------------------------------------------------------------- flow families: zig then zag

def constant_velocity_model(family, seed=0):
    """A fresh model of the family whose output projection is zero with a seeded bias: its prediction does
    not depend on x (nor on sigma), as the round-trip check needs."""
    model = hostlib.build_family(family, seed)
    layer = model.model.diffusion_model.get_submodule(OUTPUT_LAYER[family])
    gen = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        layer.weight.zero_()
        layer.bias.copy_(torch.randn(layer.bias.shape, generator=gen))
    return model


@pytest.mark.parametrize("inversion", ["paper", "published"])
@pytest.mark.parametrize("family", FLOW)
def test_flow_round_trip(Z, family, inversion):
    """'paper' (the inversion as the paper writes it, sigma_1 back to sigma_0): zig then zag returns to the start
    latent, so the run is KSampler's. 'published' (the reference's level shift, sigma_2 -> sigma_1): the zag goes
    up by sigma_1 - sigma_2 instead, so the start moves by (2 sigma_1 - sigma_0 - sigma_2) v, exactly."""
    import comfy.sample

    f = cell(family, constant_velocity_model(family))
    plain = ksampler(f, seed=12)
    # gamma_1 = gamma_2, one reflected step
    out = zigzag_ksampler(Z, f, 1, seed=12, g2=CFG, inversion=inversion)
    check_result(f, out, plain.shape)
    if inversion == "paper":
        torch.testing.assert_close(out, plain, rtol=1e-5, atol=1e-5)
    else:
        base = f["model"].model
        sig = Z.schedule(f["model"], "euler", scheduler_of(family), STEPS, 1.0).float()
        lat = base.process_latent_in(torch.zeros_like(plain))
        x0 = base.model_sampling.noise_scaling(sig[0], comfy.sample.prepare_noise(lat, 12), lat)
        p_in, o_in = base.process_latent_in(plain), base.process_latent_in(out)
        v = (x0 - p_in) / sig[0]  # the constant velocity (the schedule ends at 0)
        torch.testing.assert_close(o_in, p_in + (2 * sig[1] - sig[0] - sig[2]) * v, rtol=1e-4, atol=1e-4)
        assert rel(o_in, p_in) > 1e-3
    # the check can fail: on the family's ordinary model (velocity depends on x) the same run does not come back
    g = dict(f, model=family_model(family, 0))
    assert rel(zigzag_ksampler(Z, g, 1, seed=12, g2=CFG, inversion=inversion), ksampler(g, seed=12)) > 1e-4
