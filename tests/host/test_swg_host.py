"""SlidingWindowGuidance inside a real ComfyUI (COMFYUI_PATH): the patched
model's denoised output against the formula computed by hand from separate
model calls on the full latent and on each crop."""

import pytest
import torch

import hostlib
from test_zigzag_host import zigzag


class _Swg:
    """The pack's samplers/swg.py as ComfyUI imported it (the name `samplers`
    is ComfyUI's own on its sys.path)."""

    def __getattr__(self, name):
        if name.startswith("_") or name.startswith("pytest"):  # what pytest's collection looks up
            raise AttributeError(name)
        return getattr(hostlib.load_pack().samplers.swg, name)


swg = _Swg()


@pytest.fixture(scope="module")
def S(reflect_pack):
    return reflect_pack.nodes.swg


@pytest.fixture(scope="module")
def sd15(tiny_model):
    m = tiny_model("sd15", "eps", seed=12)
    return m, hostlib.conditioning(m, seed=1), hostlib.conditioning(m, seed=2)


def patch(S, model, scale=1.5, crop_width=6, crop_height=0, crop_units="latent", crops_x=2, crops_y=0, masked=False,
          mask_with_cfg=False, crop_conditioning="auto", start_percent=0.0, end_percent=1.0):
    return hostlib.run_node(S.SlidingWindowGuidance, model=model, scale=scale, crop_width=crop_width,
                            crop_height=crop_height, crop_units=crop_units, crops_x=crops_x, crops_y=crops_y,
                            masked=masked, mask_with_cfg=mask_with_cfg, crop_conditioning=crop_conditioning,
                            start_percent=start_percent, end_percent=end_percent)[0]


def denoise_once(model, positive, negative, cfg, x, sigma):
    """ComfyUI's guided prediction D(x, sigma) of a MODEL (CFGGuider, the
    model's patches included), evaluated once through the real sampling path."""
    import comfy.samplers
    got = {}

    def evaluate(model_k, _x, sigmas, extra_args=None, callback=None, disable=None):
        got["d"] = model_k(x.to(_x), sigmas[0] * _x.new_ones([_x.shape[0]]), **(extra_args or {}))
        return _x

    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    guider.sample(torch.zeros_like(x), torch.zeros_like(x), comfy.samplers.KSAMPLER(evaluate),
                  torch.tensor([sigma, 0.0]), seed=0)
    return got["d"].float()


def by_hand(model, pos, neg, x, sigma, *, cfg, scale, wins, masked, crops_from):
    d_c = denoise_once(model, pos, neg, 1.0, x, sigma)
    d = d_c
    if cfg != 1.0:
        d_u = denoise_once(model, neg, pos, 1.0, x, sigma)
        d = d_u + cfg * (d_c - d_u)
    crops = [denoise_once(model, crops_from(win), neg, 1.0, x[..., t:b, l:r].contiguous(), sigma)
             for win in wins for t, b, l, r in [win]]
    weight = swg.overlap(x.shape[-2], x.shape[-1], wins)
    d_crops = swg.assemble(crops, wins, x.shape, weight)
    mask = (weight > 1).float() if masked else 1.0
    return d + scale * mask * (d_c - d_crops)


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("cfg,masked,mask_with_cfg,shape,crop,crops,batch", [
    (1.0, False, False, (10, 10), (6, 6), (2, 2), 1),    # SWG (the paper's 64 / 40 / 2, scaled down)
    (1.0, True, False, (10, 10), (6, 6), (2, 2), 2),     # M-SWG, batch of 2
    (4.0, True, False, (10, 10), (6, 6), (2, 2), 1),     # CFG+SWG: the reference never masks
    (4.0, True, True, (10, 14), (6, 8), (2, 3), 1),      # masked combined option, non-square latent and crops
    (1.0, False, False, (12, 9), (7, 5), (3, 2), 1),     # non-square, 3 x 2 crops
])
def test_patched_prediction_equals_formula(S, sd15, cfg, masked, mask_with_cfg, shape, crop, crops, batch):
    model, pos, neg = sd15
    h, w = shape
    x = torch.randn(batch, 4, h, w, generator=torch.Generator().manual_seed(3)) * 3.0
    sigma = 3.0
    patched = patch(S, model, scale=1.5, crop_width=crop[1], crop_height=crop[0], crops_x=crops[1],
                    crops_y=crops[0], masked=masked, mask_with_cfg=mask_with_cfg)
    got = denoise_once(patched, pos, neg, cfg, x, sigma)
    wins = swg.windows(h, w, crop[0], crop[1], crops[0], crops[1])
    crops_from = (lambda win: neg) if cfg != 1.0 else (lambda win: pos)  # the reference's choice per mode
    want = by_hand(model, pos, neg, x, sigma, cfg=cfg, scale=1.5, wins=wins,
                   masked=masked and (cfg == 1.0 or mask_with_cfg), crops_from=crops_from)
    assert rel(got, want) < 1e-5
    plain = denoise_once(model, pos, neg, cfg, x, sigma)
    assert rel(got, plain) > 1e-3


def test_crop_conditioning_choice_and_pixel_units(S, sd15):
    model, pos, neg = sd15
    x = torch.randn(1, 4, 10, 10, generator=torch.Generator().manual_seed(4)) * 3.0
    wins = swg.windows(10, 10, 6, 6, 2, 2)
    got = denoise_once(patch(S, model, crop_width=48, crop_units="pixels", crop_conditioning="conditional"),
                       pos, neg, 4.0, x, 3.0)
    want = by_hand(model, pos, neg, x, 3.0, cfg=4.0, scale=1.5, wins=wins, masked=False, crops_from=lambda w: pos)
    assert rel(got, want) < 1e-5
    got = denoise_once(patch(S, model, crop_conditioning="unconditional"), pos, neg, 1.0, x, 3.0)
    want = by_hand(model, pos, neg, x, 3.0, cfg=1.0, scale=1.5, wins=wins, masked=False, crops_from=lambda w: neg)
    assert rel(got, want) < 1e-5


def test_masked_conditioning_is_cropped_with_the_latent(S, sd15, comfy_env):
    """A conditioning with a mask (ConditioningSetMask): each crop sees the
    window's part of the mask, as a separate call on the crop with the cropped
    mask does."""
    hostlib.init_builtin_nodes()
    import nodes
    model, pos, neg = sd15
    other = hostlib.conditioning(model, seed=5)
    mask = torch.zeros(1, 10, 10)
    mask[:, 2:7, 3:9] = 1.0
    setmask = nodes.NODE_CLASS_MAPPINGS["ConditioningSetMask"]
    combine = nodes.NODE_CLASS_MAPPINGS["ConditioningCombine"]

    def with_mask(m):
        masked = hostlib.run_node(setmask, conditioning=other, mask=m, set_cond_area="default", strength=1.0)[0]
        return hostlib.run_node(combine, conditioning_1=pos, conditioning_2=masked)[0]

    x = torch.randn(1, 4, 10, 10, generator=torch.Generator().manual_seed(6)) * 3.0
    wins = swg.windows(10, 10, 6, 6, 2, 2)
    got = denoise_once(patch(S, model), with_mask(mask), neg, 1.0, x, 3.0)
    want = by_hand(model, with_mask(mask), neg, x, 3.0, cfg=1.0, scale=1.5, wins=wins, masked=False,
                   crops_from=lambda win: with_mask(mask[:, win[0]:win[1], win[2]:win[3]]))
    assert rel(got, want) < 1e-5


def test_all_crops_in_one_batched_call(S, sd15):
    model, pos, neg = sd15
    latent = hostlib.empty_latent(batch=2, height=10, width=10)
    patched = patch(S, model, crops_x=3)
    unet = model.model.diffusion_model
    sizes = []

    def forward(x, *a, **k):
        sizes.append(tuple(x.shape))
        return type(unet).forward(unet, x, *a, **k)

    unet.forward = forward
    try:
        hostlib.ksampler(patched, pos, neg, latent, steps=2, cfg=4.0)
    finally:
        del unet.forward
    # per step: one call for cond + uncond of 2 images, one call for the 9 crops of both images
    assert sizes == [(4, 4, 10, 10), (18, 4, 6, 6)] * 2


def test_start_end_and_composition(S, sd15, reflect_pack, comfy_env):
    """Outside [start, end] nothing changes; the patch works in KSampler,
    ZigzagKSampler, WeakStrongReflection and SamplerCustomAdvanced."""
    hostlib.init_builtin_nodes()
    import nodes
    model, pos, neg = sd15
    latent = hostlib.empty_latent(batch=1, height=10, width=10)
    plain = hostlib.ksampler(model, pos, neg, latent, steps=6, cfg=4.0)["samples"]
    off = hostlib.ksampler(patch(S, model, start_percent=1.0, end_percent=1.0), pos, neg, latent, steps=6,
                           cfg=4.0)["samples"]
    assert torch.equal(off, plain)
    patched = patch(S, model)
    k = hostlib.ksampler(patched, pos, neg, latent, steps=6, cfg=4.0)["samples"]
    assert torch.isfinite(k).all() and rel(k, plain) > 1e-3
    late = hostlib.ksampler(patch(S, model, start_percent=0.5), pos, neg, latent, steps=6, cfg=4.0)["samples"]
    assert rel(late, plain) > 1e-4 and rel(late, k) > 1e-4
    Z = reflect_pack.nodes.zigzag
    z = zigzag(Z, patched, pos, neg, latent, steps=6, lam=5)
    assert torch.isfinite(z).all() and rel(z, zigzag(Z, model, pos, neg, latent, steps=6, lam=5)) > 1e-3
    W = reflect_pack.nodes.w2sd
    kw = dict(positive=pos, negative=neg, cfg=4.0, strong_cfg=4.0, weak_cfg=1.0, seed=0, steps=6, sampler_name="ddim",
              scheduler="normal", latent_image=latent, denoise=1.0, reflect_steps=-1, inversion="published")
    w = hostlib.run_node(W.WeakStrongReflection, model=patched, **kw)[0]["samples"]
    assert torch.isfinite(w).all() and rel(w, hostlib.run_node(W.WeakStrongReflection, model=model, **kw)[0]["samples"]) > 1e-3
    M = nodes.NODE_CLASS_MAPPINGS
    guider = hostlib.run_node(M["CFGGuider"], model=patched, positive=pos, negative=neg, cfg=4.0)[0]
    sampler = hostlib.run_node(M["KSamplerSelect"], sampler_name="euler")[0]
    sigmas = hostlib.run_node(M["BasicScheduler"], model=patched, scheduler="normal", steps=6, denoise=1.0)[0]
    noise = hostlib.run_node(M["RandomNoise"], noise_seed=0)[0]
    adv = hostlib.run_node(M["SamplerCustomAdvanced"], noise=noise, guider=guider, sampler=sampler, sigmas=sigmas,
                           latent_image=latent)[0]["samples"]
    torch.testing.assert_close(adv, k, rtol=0, atol=1e-5)


@pytest.mark.parametrize("family,prediction", [("sd15", "v_prediction"), ("sd15", "flow"), ("sdxl", "eps")])
def test_model_types(S, tiny_model, family, prediction):
    model = tiny_model(family, prediction, seed=4)
    pos = hostlib.conditioning(model, seed=1, width=128, height=128)
    neg = hostlib.conditioning(model, seed=2, width=128, height=128)
    latent = hostlib.empty_latent(batch=2, height=12, width=16)
    kw = dict(steps=5, cfg=4.0, sampler_name="euler", scheduler="simple")
    out = hostlib.ksampler(patch(S, model, crop_width=10, crop_height=8, masked=True), pos, neg, latent, **kw)["samples"]
    plain = hostlib.ksampler(model, pos, neg, latent, **kw)["samples"]
    assert torch.isfinite(out).all() and rel(out, plain) > 1e-3


def test_errors_name_the_bad_input(S, sd15):
    model, pos, neg = sd15
    latent = hostlib.empty_latent(batch=1, height=10, width=10)
    with pytest.raises(ValueError, match="larger than the latent's width 10"):
        hostlib.ksampler(patch(S, model, crop_width=12, crop_height=6), pos, neg, latent, steps=2)
    with pytest.raises(ValueError, match="larger than the latent's height 10"):
        hostlib.ksampler(patch(S, model, crop_width=6, crop_height=11), pos, neg, latent, steps=2)
    with pytest.raises(ValueError, match="crop sizes and counts must be positive"):
        patch(S, model, crop_width=0)
    with pytest.raises(ValueError, match="start_percent"):
        patch(S, model, start_percent=0.8, end_percent=0.2)
    assert "start_percent" in S.SlidingWindowGuidance.validate_inputs(start_percent=0.8, end_percent=0.2)
    with pytest.raises(ValueError, match="crop_conditioning"):
        patch(S, model, crop_conditioning="both")
    # the model is untouched by the patch node
    assert "sampler_post_cfg_function" not in model.model_options


def test_controlnet_hint_is_cropped_with_the_latent(S, sd15, comfy_env):
    """With a ControlNet on the conditioning, each crop sees the window's part
    of the hint image, as a separate call on the crop with the cropped image does."""
    hostlib.init_builtin_nodes()
    import nodes
    model, pos, neg = sd15
    control = hostlib.build_controlnet(model, seed=21)
    apply = nodes.NODE_CLASS_MAPPINGS["ControlNetApplyAdvanced"]
    image = torch.rand(1, 80, 80, 3, generator=torch.Generator().manual_seed(8))  # IMAGE of the 10 x 10 latent

    def with_control(img):
        return hostlib.run_node(apply, positive=pos, negative=neg, control_net=control, image=img, strength=1.0,
                                start_percent=0.0, end_percent=1.0)[0]

    x = torch.randn(1, 4, 10, 10, generator=torch.Generator().manual_seed(9)) * 3.0
    wins = swg.windows(10, 10, 6, 6, 2, 2)
    got = denoise_once(patch(S, model), with_control(image), neg, 1.0, x, 3.0)
    want = by_hand(model, with_control(image), neg, x, 3.0, cfg=1.0, scale=1.5, wins=wins, masked=False,
                   crops_from=lambda w: with_control(image[:, w[0] * 8:w[1] * 8, w[2] * 8:w[3] * 8]))
    assert rel(got, want) < 1e-5
    # the control matters here: without it the prediction differs
    assert rel(denoise_once(patch(S, model), pos, neg, 1.0, x, 3.0), got) > 1e-3


def test_transformer_crops_are_rounded_to_the_patch_size(S, comfy_env):
    """On ComfyUI's Flux transformer (patch size 2) crop sizes are rounded to
    the nearest multiple of 2 (7 x 5 -> 8 x 6) and the prediction equals the
    formula by hand with those crops."""
    model = hostlib.build_flux(seed=3)
    pos, neg = hostlib.flux_conditioning(seed=1), hostlib.flux_conditioning(seed=2)
    patched = patch(S, model, crop_width=7, crop_height=5)
    assert patched.model_options["sampler_post_cfg_function"][-1].layout(10, 12) == swg.windows(10, 12, 6, 8, 2, 2)
    x = torch.randn(1, 16, 10, 12, generator=torch.Generator().manual_seed(2))
    got = denoise_once(patched, pos, neg, 1.0, x, 0.7)
    want = by_hand(model, pos, neg, x, 0.7, cfg=1.0, scale=1.5, wins=swg.windows(10, 12, 6, 8, 2, 2), masked=False,
                   crops_from=lambda w: pos)
    assert rel(got, want) < 1e-5
    with pytest.raises(ValueError, match="smaller than one patch"):
        denoise_once(patched, pos, neg, 1.0, torch.randn(1, 16, 1, 12), 0.7)
