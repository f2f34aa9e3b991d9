"""SlidingWindowGuidance inside a real ComfyUI (COMFYUI_PATH): the patched
model's denoised output against the formula computed by hand from separate
model calls on the full latent and on each crop."""

import contextlib

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
def sd15(tiny_model):
    m = tiny_model("sd15", "eps", seed=12)
    return m, hostlib.conditioning(m, seed=1), hostlib.conditioning(m, seed=2)


def patch(S, model, scale=1.5, crop_width=6, crop_height=0, crop_units="latent", crops_x=2, crops_y=0, masked=False,
          mask_with_cfg=False, crop_conditioning="auto", start_percent=0.0, end_percent=1.0, **optional):
    return hostlib.run_node(S.SlidingWindowGuidance, model=model, scale=scale, crop_width=crop_width,
                            crop_height=crop_height, crop_units=crop_units, crops_x=crops_x, crops_y=crops_y,
                            masked=masked, mask_with_cfg=mask_with_cfg, crop_conditioning=crop_conditioning,
                            start_percent=start_percent, end_percent=end_percent, **optional)[0]


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


@contextlib.contextmanager
def unet_input_shapes(model):
    """The shapes of the inputs the model's UNet sees, in order, while the block runs."""
    unet, sizes = model.model.diffusion_model, []

    def forward(x, *a, **k):
        sizes.append(tuple(x.shape))
        return type(unet).forward(unet, x, *a, **k)

    unet.forward = forward
    try:
        yield sizes
    finally:
        del unet.forward


def test_all_crops_in_one_batched_call(S, sd15):
    model, pos, neg = sd15
    latent = hostlib.empty_latent(batch=2, height=10, width=10)
    patched = patch(S, model, crops_x=3)
    with unet_input_shapes(model) as sizes:
        hostlib.ksampler(patched, pos, neg, latent, steps=2, cfg=4.0)
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
    with pytest.raises(ValueError, match=r"^crop_width: crop size 12 is larger than the latent's width 10"):
        hostlib.ksampler(patch(S, model, crop_width=12, crop_height=6), pos, neg, latent, steps=2)
    # crop_height 0 means "same as width": the message names crop_width, the input the user set
    with pytest.raises(ValueError, match=r"^crop_width \(crop_height 0: same as width\): crop size 12 is larger "
                                         r"than the latent's height 10"):
        hostlib.ksampler(patch(S, model, crop_width=12, crop_height=0), pos, neg, latent, steps=2)
    with pytest.raises(ValueError, match=r"^crop_width \(crop_height 0: same as width\) / crops_x \(crops_y 0: "
                                         r"same as crops_x\): 2 crops of the full height 10"):
        hostlib.ksampler(patch(S, model, crop_width=10, crop_height=0), pos, neg, latent, steps=2)
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


# --------------------------------------------------------------------------- weak-model mode (WMG-SWG / WMG)

@pytest.fixture(scope="module")
def weak15(tiny_model):
    return tiny_model("sd15", "eps", seed=13)  # a second seeded tiny model of the same family: the weak one


@pytest.mark.parametrize("cfg,scale,masked", [
    (1.0, 0.25, True),    # the reference's wmg-swg (1.2, 0.25): never masked, crops conditional
    (1.0, 0.0, False),    # wmg alone (SWG scale 0): no crops
    (4.0, 0.5, False),    # with ComfyUI's CFG: D_cfg + w1 (D_c - D_weak) + w2 (D_c - D_crops), crops conditional
])
def test_weak_model_prediction_equals_hand_computation(S, sd15, weak15, cfg, scale, masked):
    model, pos, neg = sd15
    x = torch.randn(1, 4, 10, 10, generator=torch.Generator().manual_seed(31)) * 3.0
    sigma, w1 = 3.0, 1.2
    got = denoise_once(patch(S, model, scale=scale, masked=masked, weak_model=weak15, weak_scale=w1),
                       pos, neg, cfg, x, sigma)
    d_c = denoise_once(model, pos, neg, 1.0, x, sigma)
    d = d_c if cfg == 1.0 else denoise_once(model, neg, pos, 1.0, x, sigma) * (1 - cfg) + cfg * d_c
    d_weak = denoise_once(weak15, pos, neg, 1.0, x, sigma)
    want = d + w1 * (d_c - d_weak)
    if scale:
        wins = swg.windows(10, 10, 6, 6, 2, 2)
        crops = [denoise_once(model, pos, neg, 1.0, x[..., t:b, l:r].contiguous(), sigma) for t, b, l, r in wins]
        want = want + scale * (d_c - swg.assemble(crops, wins, x.shape, swg.overlap(10, 10, wins)))
    assert rel(got, want) < 1e-5
    assert rel(d_weak, d_c) > 1e-2  # the weak model really is another model
    # without the weak model (or at weak_scale 0) the weak term is gone
    assert rel(denoise_once(patch(S, model, scale=scale, masked=masked, weak_model=weak15, weak_scale=0.0),
                            pos, neg, cfg, x, sigma), want - w1 * (d_c - d_weak)) < 1e-5


def test_weak_model_is_loaded_with_the_model_and_counted(S, sd15, weak15):
    """In KSampler the weak model is loaded by ComfyUI's model management
    together with the main one and evaluated once per step on the image
    batch; the evaluations seen by the two networks equal the patch's count."""
    import comfy.model_management as mm
    model, pos, neg = sd15
    patched = patch(S, model, scale=0.25, weak_model=weak15, weak_scale=1.2)
    swg_patch = patched.model_options["sampler_post_cfg_function"][-1]
    seen = {"main": 0, "weak": 0, "loaded": []}
    nets = {"main": model.model.diffusion_model, "weak": weak15.model.diffusion_model}

    def spy(name):
        net = nets[name]

        def forward(x, *a, **k):
            seen[name] += x.shape[0]
            if name == "weak":
                seen["loaded"].append(any(lm.model.model is weak15.model for lm in mm.current_loaded_models))
            return type(net).forward(net, x, *a, **k)
        return forward

    for name, net in nets.items():
        net.forward = spy(name)
    try:
        out = hostlib.ksampler(patched, pos, neg, hostlib.empty_latent(batch=2, height=10, width=10), steps=3,
                               cfg=4.0)["samples"]
    finally:
        for net in nets.values():
            del net.forward
    assert torch.isfinite(out).all()
    assert seen["loaded"] == [True] * 3
    # per step and image: cond + uncond and 4 crops on the main model, 1 evaluation of the weak model
    assert seen["main"] == 3 * 2 * (2 + 4) and seen["weak"] == 3 * 2 * 1
    assert swg_patch.evaluations(2) == 2 + 4 + 1
    assert "reflect_swg_weak_model" not in model.additional_models  # the input model is untouched


def test_weak_model_must_share_the_latent_format(S, sd15, comfy_env):
    model, _, _ = sd15
    with pytest.raises(ValueError, match="^weak_model: its latent format"):
        patch(S, model, weak_model=hostlib.build_flux(seed=1))


# --------------------------------------------------------------------------- ControlNet windows batch

def test_controlnet_windows_batch_as_without_controlnet(S, sd15, comfy_env):
    """With a ControlNet on the conditioning the UNet sees the same batches as
    without it: all windows of all images in one call."""
    hostlib.init_builtin_nodes()
    import nodes
    model, pos, neg = sd15
    control = hostlib.build_controlnet(model, seed=21)
    image = torch.rand(2, 80, 80, 3, generator=torch.Generator().manual_seed(8))
    cpos, cneg = hostlib.run_node(nodes.NODE_CLASS_MAPPINGS["ControlNetApplyAdvanced"], positive=pos, negative=neg,
                                  control_net=control, image=image, strength=1.0, start_percent=0.0,
                                  end_percent=1.0)
    latent = hostlib.empty_latent(batch=2, height=10, width=10)
    patched = patch(S, model, crops_x=3)

    def run(p, n):
        with unet_input_shapes(model) as sizes:
            out = hostlib.ksampler(patched, p, n, latent, steps=2, cfg=4.0)["samples"]
        return sizes, out

    with_control, out_c = run(cpos, cneg)
    without, out = run(pos, neg)
    assert with_control == without == [(4, 4, 10, 10), (18, 4, 6, 6)] * 2
    assert rel(out_c, out) > 1e-3  # the control is applied


# --------------------------------------------------------------------------- video latents (Wan 2.1)

def build_tiny_wan(seed: int):
    """ComfyUI's own Wan 2.1 text-to-video transformer (model_base.WAN21,
    supported_models.WAN21_T2V: patch (1, 2, 2), 16 channels, flow) shrunk to
    one block of width 32, seeded weights."""
    import comfy.model_base
    import comfy.model_patcher
    import comfy.supported_models as sm
    uc = dict(image_model="wan2.1", model_type="t2v", patch_size=(1, 2, 2), text_len=16, in_dim=16, dim=32,
              ffn_dim=64, freq_dim=32, text_dim=32, out_dim=16, num_heads=2, num_layers=1)
    cfg = sm.WAN21_T2V(uc)
    cfg.set_inference_dtype(torch.float32, None)
    m = comfy.model_base.WAN21(cfg, device=torch.device("cpu"))
    m.diffusion_model.load_state_dict(hostlib._tiny().seeded_state_dict(m.diffusion_model, seed), strict=True)
    m.eval()
    cpu = torch.device("cpu")
    return comfy.model_patcher.ModelPatcher(m, load_device=cpu, offload_device=cpu)


def wan_cond(seed):
    return [[torch.randn(1, 16, 32, generator=torch.Generator().manual_seed(seed)), {}]]


def assemble_nd(crops, wins, shape):
    out, weight = torch.zeros(shape), torch.zeros(shape)
    for y, win in zip(crops, wins):
        sl = (Ellipsis, *[slice(lo, hi) for lo, hi in swg.as_ranges(win)])
        out[sl] += y
        weight[sl] += 1
    return out / weight, weight


@pytest.mark.parametrize("temporal", [False, True])
def test_wan_video_windows_per_frame(S, comfy_env, temporal):
    """On a 5-D Wan latent the windows slide over height and width of every
    frame (time whole), or, with crops_t / crop_frames, over time too; crop
    sizes rounded to Wan's 2x2 spatial patches (5 -> 6); the prediction equals
    the formula by hand."""
    model = build_tiny_wan(seed=3)
    pos, neg = wan_cond(1), wan_cond(2)
    x = torch.randn(1, 16, 3, 8, 10, generator=torch.Generator().manual_seed(5))
    opts = dict(crops_t=2, crop_frames=2) if temporal else {}
    patched = patch(S, model, crop_width=5, crop_height=5, masked=True, **opts)
    p = patched.model_options["sampler_post_cfg_function"][-1]
    if temporal:
        wins = p.layout(8, 10, 3)
        assert wins == swg.windows_nd((3, 8, 10), (2, 6, 6), (2, 2, 2))
    else:
        wins = p.layout(8, 10)
        assert wins == swg.windows(8, 10, 6, 6, 2, 2)
    got = denoise_once(patched, pos, neg, 1.0, x, 0.7)
    d_c = denoise_once(model, pos, neg, 1.0, x, 0.7)
    crops = [denoise_once(model, pos, neg, 1.0, x[(Ellipsis, *[slice(lo, hi) for lo, hi in swg.as_ranges(w)])]
                          .contiguous(), 0.7) for w in wins]
    d_crops, weight = assemble_nd(crops, wins, x.shape)
    want = d_c + 1.5 * (weight > 1).float() * (d_c - d_crops)
    assert got.shape == x.shape and rel(got, want) < 1e-5
    out = hostlib.ksampler(patched, pos, neg, {"samples": torch.zeros(1, 16, 3, 8, 10)}, steps=2, cfg=1.0)["samples"]
    assert out.shape == (1, 16, 3, 8, 10) and torch.isfinite(out).all()


# --------------------------------------------------------------------------- graph contracts through /prompt

def swg_graph(**swg_inputs):
    g = {
        "m": {"class_type": "ReflectTestTinyModel", "inputs": {"family": "sd15", "prediction": "eps", "seed": 0,
                                                               "flow_shift": 3.0}},
        "w": {"class_type": "ReflectTestTinyModel", "inputs": {"family": "sd15", "prediction": "eps", "seed": 9,
                                                               "flow_shift": 3.0}},
        "p": {"class_type": "ReflectTestConditioning", "inputs": {"model": ["m", 0], "seed": 1, "batch": 1,
                                                                  "tokens": 77, "scale": 1.0, "width": 0,
                                                                  "height": 0}},
        "n": {"class_type": "ReflectTestConditioning", "inputs": {"model": ["m", 0], "seed": 2, "batch": 1,
                                                                  "tokens": 77, "scale": 1.0, "width": 0,
                                                                  "height": 0}},
        "l": {"class_type": "ReflectTestLatent", "inputs": dict(batch=1, channels=4, height=10, width=10,
                                                                fill="zeros", seed=0)},
        "swg": {"class_type": "SlidingWindowGuidance", "inputs": {
            "model": ["m", 0], "scale": 0.25, "crop_width": 6, "crop_height": 0, "crop_units": "latent",
            "crops_x": 2, "crops_y": 0, "masked": False, "mask_with_cfg": False, "crop_conditioning": "auto",
            "start_percent": 0.0, "end_percent": 1.0, "weak_model": ["w", 0], "weak_scale": 1.2}},
        "x": {"class_type": "KSampler", "inputs": {
            "model": ["swg", 0], "positive": ["p", 0], "negative": ["n", 0], "latent_image": ["l", 0], "seed": 4,
            "steps": 2, "cfg": 1.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}},
        "s": {"class_type": "ReflectTestLatentStats", "inputs": {"samples": ["x", 0]}},
    }
    g["swg"]["inputs"].update(swg_inputs)
    return g


@pytest.mark.parametrize("inputs,named", [
    ({"crops_x": 0}, "crops_x"),                       # below ComfyUI's min
    ({"crop_width": "wide"}, "crop_width"),            # wrong type
    ({"crop_conditioning": "both"}, "crop_conditioning"),  # not in the dropdown
    ({"weak_scale": 1000.0}, "weak_scale"),            # above max
    ({"crops_t": 0}, "crops_t"),
    ({"start_percent": 1.5}, "start_percent"),         # cross-checked input: range checked by validate_inputs
    ({"start_percent": 0.8, "end_percent": 0.2}, "start_percent"),
])
def test_bad_inputs_refused_at_prompt(comfy_server, inputs, named):
    with pytest.raises(hostlib.ServerError) as e:
        comfy_server.queue_prompt(swg_graph(**inputs))
    text = str(e.value)
    assert "node errors" in text or "HTTP 400" in text
    assert named in text, text


def test_weak_model_graph_runs_through_the_server(comfy_server):
    entry = comfy_server.run_prompt(swg_graph())
    stats = entry["outputs"]["s"]["reflect_latent_stats"][0]
    assert stats["finite"] and stats["shape"] == [1, 4, 10, 10]
    # an error at execution names the input the user set
    entry = comfy_server.run_prompt(swg_graph(crop_width=12), check=False)
    err = hostlib.prompt_error(entry)
    assert err is not None and "crop_width (crop_height 0: same as width): crop size 12 is larger" in err, err
