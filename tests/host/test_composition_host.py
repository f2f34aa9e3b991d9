"""Reflection in company (issue 16), inside a real ComfyUI (COMFYUI_PATH): the sampler's own noise and
multistep history, ComfyUI's guidance patches, its guiders, the reflected-steps default, and the model calls of
every ComfyUI sampler against the pack's table (samplers/calls.py)."""

import warnings

import pytest
import torch

import hostlib

OFF_SCHEDULE = ("dpm_fast", "dpm_adaptive")


@pytest.fixture(scope="module")
def sd15(tiny_model):
    m = tiny_model("sd15", "eps", seed=0)
    return m, hostlib.conditioning(m, seed=1), hostlib.conditioning(m, seed=2)


def zigzag(Z, model, pos, neg, latent, *, seed=0, steps=6, cfg=4.0, sampler="euler", scheduler="normal",
           g2=0.0, lam=-1, inversion="published"):
    return hostlib.run_node(Z.ZigzagKSampler, model=model, seed=seed, steps=steps, cfg=cfg, sampler_name=sampler,
                            scheduler=scheduler, positive=pos, negative=neg, latent_image=latent, denoise=1.0,
                            inversion_cfg=g2, zigzag_steps=lam, rounds=1, inversion=inversion)[0]["samples"]


def custom(M, guider, sampler, sigmas, latent, seed=0):
    noise = hostlib.run_node(M["RandomNoise"], noise_seed=seed)[0]
    return hostlib.run_node(M["SamplerCustomAdvanced"], noise=noise, guider=guider, sampler=sampler, sigmas=sigmas,
                            latent_image=latent)[0]["samples"]


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


# --------------------------------------------------------------------------- 1. noise drawn once per run

class NoiseDraws:
    """Records every noise tensor ComfyUI's ancestral / SDE samplers draw (default_noise_sampler and the
    Brownian tree), and every torchsde warning."""

    def __init__(self, monkeypatch):
        import comfy.k_diffusion.sampling as ks
        self.draws = []
        orig_default, orig_tree = ks.default_noise_sampler, ks.BrownianTreeNoiseSampler
        draws = self.draws

        def default_noise_sampler(x, *a, **k):
            f = orig_default(x, *a, **k)

            def sample(sigma, sigma_next):
                n = f(sigma, sigma_next)
                draws.append(n.clone())
                return n
            return sample

        class BrownianTreeNoiseSampler(orig_tree):
            def __call__(self, sigma, sigma_next):
                n = super().__call__(sigma, sigma_next)
                draws.append(n.clone())
                return n

        monkeypatch.setattr(ks, "default_noise_sampler", default_noise_sampler)
        monkeypatch.setattr(ks, "BrownianTreeNoiseSampler", BrownianTreeNoiseSampler)

    def run(self, fn):
        self.draws.clear()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            out = fn()
        tb = [str(w.message) for w in caught if "tb" in str(w.message) and "t1" in str(w.message)]
        return out, list(self.draws), tb


@pytest.mark.parametrize("sampler", ["euler_ancestral", "dpmpp_2m_sde"])
def test_noise_independent_across_reflected_steps(Z, W, sd15, monkeypatch, sampler):
    """Ancestral and SDE noise is the sampler's own, drawn once over the whole schedule: the reflected run draws
    exactly KSampler's noise (one independent tensor per step, no torchsde warning beyond KSampler's own) and is bit-identical per seed,
    for ZigzagKSampler and WeakStrongReflection."""
    model, pos, neg = sd15
    strong, weak = hostlib.tiny_model("sd15", "eps", seed=3), hostlib.tiny_model("sd15", "eps", seed=4)
    latent = hostlib.empty_latent(batch=1, height=16, width=16)
    rec = NoiseDraws(monkeypatch)
    steps = 6
    _, ref_draws, ref_tb = rec.run(lambda: hostlib.ksampler(model, pos, neg, latent, seed=3, steps=steps, cfg=4.0,
                                                            sampler_name=sampler, scheduler="karras"))
    # KSampler itself may get one torchsde "Should have tb<=t1" (float rounding at sigma_max); no more than that
    assert len(ref_draws) >= steps - 1 and len(ref_tb) <= 1
    runs = {
        "ZigzagKSampler": lambda: zigzag(Z, model, pos, neg, latent, seed=3, steps=steps, sampler=sampler,
                                         scheduler="karras"),
        "WeakStrongReflection": lambda: hostlib.run_node(
            W.WeakStrongReflection, model=model, positive=pos, negative=neg, cfg=4.0, strong_cfg=5.5, weak_cfg=1.0,
            seed=3, steps=steps, sampler_name=sampler, scheduler="karras", latent_image=latent, denoise=1.0,
            reflect_steps=-1, inversion="published", strong_model=strong, weak_model=weak)[0]["samples"],
    }
    for name, run in runs.items():
        a, draws, tb = rec.run(run)
        b, draws_b, _ = rec.run(run)
        assert tb == ref_tb, (name, tb)
        assert torch.equal(a, b), name
        assert len(draws) == len(ref_draws), name
        assert all(torch.equal(d, r) for d, r in zip(draws, ref_draws)), name
        flat = torch.stack([d.flatten() for d in draws])
        cos = torch.nn.functional.cosine_similarity(flat[:, None], flat[None], dim=-1)
        off = cos[~torch.eye(len(draws), dtype=torch.bool)]
        assert off.abs().max().item() < 0.3, (name, off.abs().max().item())
        assert all(torch.equal(d, e) for d, e in zip(draws, draws_b)), name


# --------------------------------------------------------------------------- 2. the sampler's own multistep step

def test_multistep_samplers_keep_their_order(Z, sd15):
    """Reflected, a multistep sampler still runs its own steps: dpmpp_2m, lms, deis, ipndm and res_multistep each
    differ from euler reflected the same way, and from their own run with nothing reflected."""
    model, pos, neg = sd15
    latent = hostlib.empty_latent(batch=1, height=8, width=8)
    euler = zigzag(Z, model, pos, neg, latent, steps=8, sampler="euler")
    for name in ("dpmpp_2m", "lms", "deis", "ipndm", "res_multistep"):
        out = zigzag(Z, model, pos, neg, latent, steps=8, sampler=name)
        assert torch.isfinite(out).all() and rel(out, euler) > 1e-3, name
        assert rel(out, zigzag(Z, model, pos, neg, latent, steps=8, sampler=name, lam=0)) > 1e-3, name


def test_dpmpp_2m_reflected_matches_hand_loop(Z, M, sd15, reflect_pack):
    """The kept zig of a reflected step is dpmpp_2m's own step, with the history of the previous kept zig:
    SamplerZigzag(dpmpp_2m) equals a hand-written loop (reflection, then k-diffusion's DPM-Solver++(2M) update
    on the reflected latent) in SamplerCustomAdvanced, to float rounding (1e-5 of the norm), and not the same loop
    with its history reset at every reflected step (which the old per-step calls amounted to)."""
    import comfy.samplers
    zz = reflect_pack.samplers.zigzag
    model, pos, neg = sd15
    latent = hostlib.empty_latent(batch=1, height=8, width=8)
    cfg, steps, lam = 4.0, 8, 5
    guider = hostlib.run_node(M["CFGGuider"], model=model, positive=pos, negative=neg, cfg=cfg)[0]
    sigmas = hostlib.run_node(M["BasicScheduler"], model=model, scheduler="karras", steps=steps, denoise=1.0)[0]

    def hand_loop(reset):
        return comfy.samplers.KSAMPLER(lambda *a, **k: hand(*a, reset=reset, **k))

    @torch.no_grad()
    def hand(model_k, x, sigmas, extra_args=None, callback=None, disable=None, reset=False):
        s_in = x.new_ones([x.shape[0]])
        D = lambda x_, s: model_k(x_, s * s_in, **extra_args)  # noqa: E731
        t = lambda s: s.log().neg()  # noqa: E731
        old = None
        for i in range(len(sigmas) - 1):
            if i < lam:  # inversion_cfg = cfg and paper inversion: the zag is the zig's own model, read upwards
                x = zz.reflect(D, D, x, sigmas, i, 1, "paper")
            den = D(x, sigmas[i])
            if sigmas[i + 1] == 0:
                x = den
            else:
                h = t(sigmas[i + 1]) - t(sigmas[i])
                if old is not None and not (reset and i < lam):
                    r = (t(sigmas[i]) - t(sigmas[i - 1])) / h
                    den_d = (1 + 1 / (2 * r)) * den - (1 / (2 * r)) * old
                else:
                    den_d = den
                x = (sigmas[i + 1] / sigmas[i]) * x - (-h).expm1() * den_d
            old = den
        return x

    ref = custom(M, guider, hand_loop(False), sigmas, latent, seed=4)
    sampler = hostlib.run_node(Z.SamplerZigzag, sampler_name="dpmpp_2m", inversion_cfg=cfg, zigzag_steps=lam,
                               rounds=1, inversion="paper", reference_scaling=False)[0]
    out = custom(M, guider, sampler, sigmas, latent, seed=4)
    assert rel(out, ref) < 1e-5
    assert rel(out, custom(M, guider, hand_loop(True), sigmas, latent, seed=4)) > 1e-2
    euler = hostlib.run_node(Z.SamplerZigzag, sampler_name="euler", inversion_cfg=cfg, zigzag_steps=lam,
                             rounds=1, inversion="paper", reference_scaling=False)[0]
    assert rel(out, custom(M, guider, euler, sigmas, latent, seed=4)) > 1e-3


def test_lambda_zero_is_ksampler_for_every_sampler(Z, sd15):
    """Nothing reflected, ZigzagKSampler is KSampler, bit for bit, for every sampler ComfyUI offers."""
    import comfy.samplers
    model, pos, neg = sd15
    latent = hostlib.empty_latent(batch=1, height=8, width=8)
    differ = []
    for name in comfy.samplers.SAMPLER_NAMES:
        got = zigzag(Z, model, pos, neg, latent, seed=2, steps=4, sampler=name, lam=0)
        ref = hostlib.ksampler(model, pos, neg, latent, seed=2, steps=4, cfg=4.0, sampler_name=name)["samples"]
        if not torch.equal(got, ref):
            differ.append(name)
    assert not differ


def test_samplers_a_reflection_cannot_reach_are_refused(Z, W, M, sd15):
    """uni_pc and uni_pc_bh2 evaluate a rescaled copy of their latent, sa_solver(_pece) corrects from the previous
    latent after evaluating its prediction: a reflection would be lost, so every reflecting node refuses them,
    naming sampler_name, at graph time and when run (SamplerZigzag by name, WeakStrongGuider with the SAMPLER of
    KSamplerSelect); with nothing reflected they run as KSampler."""
    import comfy.samplers
    model, pos, neg = sd15
    latent = hostlib.empty_latent(batch=1, height=8, width=8)
    for name in ("uni_pc", "uni_pc_bh2", "sa_solver", "sa_solver_pece"):
        if name not in comfy.samplers.SAMPLER_NAMES:
            continue
        for node, lam in ((Z.ZigzagKSampler, "zigzag_steps"), (W.WeakStrongReflection, "reflect_steps")):
            msg = node.validate_inputs(steps=4, sampler_name=name, **{lam: -1})
            assert isinstance(msg, str) and msg.startswith(f"sampler_name: '{name}' evaluates"), (node, msg)
            assert node.validate_inputs(steps=4, sampler_name=name, **{lam: 0}) is True
        with pytest.raises(ValueError, match=f"^sampler_name: '{name}'"):
            zigzag(Z, model, pos, neg, latent, steps=4, sampler=name)
        with pytest.raises(ValueError, match=f"^sampler_name: '{name}'"):
            hostlib.run_node(Z.SamplerZigzag, sampler_name=name, inversion_cfg=0.0, zigzag_steps=-1, rounds=1,
                             inversion="published", reference_scaling=False)
        guider = hostlib.run_node(M["CFGGuider"], model=model, positive=pos, negative=neg, cfg=4.0)[0]
        wsg = hostlib.run_node(W.WeakStrongGuiderNode, strong=guider, weak=guider, main=guider, reflect_steps=-1,
                               inversion="published", reference_scaling=False)[0]
        sigmas = hostlib.run_node(M["BasicScheduler"], model=model, scheduler="normal", steps=4, denoise=1.0)[0]
        with pytest.raises(ValueError, match=f"^sampler_name: '{name}'"):
            custom(M, wsg, hostlib.run_node(M["KSamplerSelect"], sampler_name=name)[0], sigmas, latent)
        torch.testing.assert_close(zigzag(Z, model, pos, neg, latent, steps=4, sampler=name, lam=0, seed=3),
                                   hostlib.ksampler(model, pos, neg, latent, seed=3, steps=4, cfg=4.0,
                                                    sampler_name=name)["samples"], rtol=0, atol=0)


def test_every_sampler_reflects_on_a_flow_model(Z, tiny_model):
    """On a flow model (ModelSamplingSD3: ComfyUI's CONST sampling, where dpmpp_sde, seeds_*, exp_heun_2_x0 start
    at a sigma_0 offset by ~1e-4) every reflectable sampler runs reflected steps, finite, and differs from its run
    with nothing reflected."""
    import comfy.samplers
    from test_zigzag_host import NOT_REFLECTABLE
    model = tiny_model("sd15", "flow", seed=0)
    pos, neg = hostlib.conditioning(model, seed=1), hostlib.conditioning(model, seed=2)
    latent = hostlib.empty_latent(batch=1, height=8, width=8)
    failures = {}
    for name in comfy.samplers.SAMPLER_NAMES:
        if name in NOT_REFLECTABLE:
            continue
        try:
            out = zigzag(Z, model, pos, neg, latent, steps=4, sampler=name, scheduler="simple")
            plain = zigzag(Z, model, pos, neg, latent, steps=4, sampler=name, scheduler="simple", lam=0)
            if not torch.isfinite(out).all() or rel(out, plain) < 1e-4:
                failures[name] = "non-finite or nothing reflected"
        except Exception as e:  # collect all, report together
            failures[name] = repr(e)
    assert not failures, failures


# --------------------------------------------------------------------------- 3. guidance patches see the zigs only

def _patched(M, pack_swg, name, model):
    """model with one guidance patch, made by the node a user would use."""
    if name == "PerturbedAttentionGuidance":
        return hostlib.run_node(M[name], model=model, scale=3.0)[0]
    if name == "APG":
        return hostlib.run_node(M[name], model=model, eta=0.5, norm_threshold=5.0, momentum=-0.5)[0]
    if name == "CFGZeroStar":
        return hostlib.run_node(M[name], model=model)[0]
    if name == "SelfAttentionGuidance":
        return hostlib.run_node(M[name], model=model, scale=0.5, blur_sigma=2.0)[0]
    return hostlib.run_node(pack_swg.SlidingWindowGuidance, model=model, scale=0.5, crop_width=6, crop_height=0,
                            crop_units="latent", crops_x=2, crops_y=0, masked=False, mask_with_cfg=False,
                            crop_conditioning="auto", start_percent=0.0, end_percent=1.0)[0]


class PatchCalls:
    """Wraps every pre-/post-CFG function and sampler_cfg_function of a model's options, recording the sigma
    and cond_scale each call is given."""

    KEYS = ("sampler_pre_cfg_function", "sampler_post_cfg_function")

    def __init__(self, model, monkeypatch, reflect_pack):
        self.model = model.clone()
        self.calls = []
        swg_cls = reflect_pack.nodes.swg.SWGPatch
        opts = self.model.model_options
        for key in self.KEYS:
            fns = []
            for f in opts.get(key, []):
                if isinstance(f, swg_cls):
                    fns.append(f)  # the pack looks its patch up by type: record through the class instead
                else:
                    fns.append(self._wrap(key, f))
            if key in opts:
                opts[key] = fns
        if "sampler_cfg_function" in opts:
            opts["sampler_cfg_function"] = self._wrap("sampler_cfg_function", opts["sampler_cfg_function"])
        if any(isinstance(f, swg_cls) for f in opts.get("sampler_post_cfg_function", [])):
            orig = swg_cls.__call__
            calls = self.calls

            def call(patch, args):
                calls.append(("swg", float(args["sigma"].flatten()[0]), float(args["cond_scale"])))
                return orig(patch, args)
            monkeypatch.setattr(swg_cls, "__call__", call)

    def _wrap(self, key, f):
        calls = self.calls

        def wrapped(args):
            calls.append((key, float(args["sigma"].flatten()[0]), float(args["cond_scale"])))
            return f(args)
        return wrapped


@pytest.mark.parametrize("patch", ["PerturbedAttentionGuidance", "APG", "CFGZeroStar", "SelfAttentionGuidance",
                                   "SlidingWindowGuidance"])
def test_guidance_patches_see_only_the_zigs(Z, M, sd15, reflect_pack, monkeypatch, patch):
    """The contract: every zig (a reflected step's first denoising and every kept step) goes through the patches
    exactly as KSampler's steps do, at cond_scale = cfg; the zag is plain CFG at inversion_cfg without them.
    Counted per call on ComfyUI's own PAG, APG, CFG-Zero*, SAG and the pack's SWG; nothing reflected, the patched
    run is KSampler's bit for bit."""
    if patch not in M and patch != "SlidingWindowGuidance":
        pytest.skip(f"{patch} is not in this ComfyUI")
    model, pos, neg = sd15
    latent = hostlib.empty_latent(batch=1, height=16, width=16)
    patched = _patched(M, reflect_pack.nodes.swg, patch, model)
    steps, lam, cfg = 6, 4, 4.0
    rec = PatchCalls(patched, monkeypatch, reflect_pack)
    sigmas = Z.schedule(model, "euler", "normal", steps, 1.0)

    rec.calls.clear()
    plain = hostlib.ksampler(rec.model, pos, neg, latent, seed=1, steps=steps, cfg=cfg, sampler_name="euler")
    per_eval = len(rec.calls) // steps
    assert per_eval >= 1 and len(rec.calls) == per_eval * steps
    rec.calls.clear()
    assert torch.equal(zigzag(Z, rec.model, pos, neg, latent, seed=1, steps=steps, cfg=cfg, lam=0),
                       plain["samples"])
    rec.calls.clear()
    out = zigzag(Z, rec.model, pos, neg, latent, seed=1, steps=steps, cfg=cfg, lam=lam, g2=0.0)
    assert torch.isfinite(out).all()
    zig_sigmas = []
    for i in range(steps):
        zig_sigmas += [float(sigmas[i])] * (2 if i < lam else 1)
    seen = [s for k, (_, s, _) in enumerate(rec.calls) if k % per_eval == 0]
    assert len(rec.calls) == per_eval * len(zig_sigmas)
    assert seen == pytest.approx(zig_sigmas, rel=1e-6)
    assert {c for _, _, c in rec.calls} == {cfg}
    # and the patch changes the zigs: the reflected run differs from the unpatched one
    assert rel(out, zigzag(Z, model, pos, neg, latent, seed=1, steps=steps, cfg=cfg, lam=lam, g2=0.0)) > 1e-4


# --------------------------------------------------------------------------- 4. guidance read off every guider

def test_gamma1_from_every_guider(Z, M, sd15, reflect_pack):
    """SamplerZigzag reads gamma_1 from CFGGuider, DualCFGGuider (the larger of its two scales), PerpNegGuider
    and BasicGuider (1), and refuses a guider it cannot read, naming the input."""
    glue = reflect_pack.nodes.compat
    model, pos, neg = sd15
    latent = hostlib.empty_latent(batch=1, height=8, width=8)
    cfg_g = hostlib.run_node(M["CFGGuider"], model=model, positive=pos, negative=neg, cfg=5.0)[0]
    dual_inputs = dict(model=model, cond1=pos, cond2=neg, negative=neg, cfg_conds=5.0, cfg_cond2_negative=1.0)
    if "style" in hostlib.node_input_names(M["DualCFGGuider"])["required"]:
        dual_inputs["style"] = "regular"
    dual = hostlib.run_node(M["DualCFGGuider"], **dual_inputs)[0]
    basic = hostlib.run_node(M["BasicGuider"], model=model, conditioning=pos)[0]
    assert glue.guider_cfg(cfg_g) == 5.0 and glue.guider_cfg(dual) == 5.0 and glue.guider_cfg(basic) == 1.0
    if "PerpNegGuider" in M:
        perp = hostlib.run_node(M["PerpNegGuider"], model=model, positive=pos, negative=neg, empty_conditioning=neg,
                                cfg=6.5, neg_scale=1.0)[0]
        assert glue.guider_cfg(perp) == 6.5
    with pytest.raises(ValueError, match="^guider: .*cannot read"):
        glue.guider_cfg(object())

    sigmas = hostlib.run_node(M["BasicScheduler"], model=model, scheduler="normal", steps=6, denoise=1.0)[0]
    sampler = hostlib.run_node(Z.SamplerZigzag, sampler_name="euler", inversion_cfg=0.0, zigzag_steps=-1, rounds=1,
                               inversion="published", reference_scaling=False)[0]
    # DualCFGGuider with cond2 = negative and cfg_cond2_negative = 1 is CFG at cfg_conds: published mode must keep
    # the zag at inversion_cfg (0, the unconditional branch), as under CFGGuider at 5
    torch.testing.assert_close(custom(M, dual, sampler, sigmas, latent), custom(M, cfg_g, sampler, sigmas, latent),
                               rtol=1e-4, atol=1e-5)
    # BasicGuider: cfg 1, published mode runs the zag on the conditional branch, as ZigzagKSampler at cfg 1
    ref = zigzag(Z, model, pos, neg, latent, steps=6, cfg=1.0, scheduler="normal")
    torch.testing.assert_close(custom(M, basic, sampler, sigmas, latent), ref, rtol=1e-5, atol=1e-6)


# --------------------------------------------------------------------------- 5. defaults on a 20-step schedule

def test_defaults_on_basic_scheduler(Z, M, sd15):
    """SamplerZigzag with its node defaults on BasicScheduler's default 20 steps reflects every step but the
    last: 20 + 2 * 19 model calls, finite."""
    model, pos, neg = sd15
    latent = hostlib.empty_latent(batch=1, height=8, width=8)

    def defaults(cls):
        it = hostlib.node_input_types(cls)
        return {k: v[1]["default"] for k, v in it["required"].items() if len(v) > 1 and "default" in v[1]}
    sampler = hostlib.run_node(Z.SamplerZigzag, **defaults(Z.SamplerZigzag))[0]
    sched_in = defaults(M["BasicScheduler"])
    assert sched_in["steps"] == 20
    sigmas = hostlib.run_node(M["BasicScheduler"], model=model, scheduler="normal", **sched_in)[0]
    guider = hostlib.run_node(M["CFGGuider"], model=model, positive=pos, negative=neg, cfg=5.0)[0]
    unet = model.model.diffusion_model
    calls = []
    orig = unet.forward
    unet.forward = lambda *a, **k: calls.append(1) or orig(*a, **k)
    try:
        out = custom(M, guider, sampler, sigmas, latent)
    finally:
        del unet.forward
    assert torch.isfinite(out).all()
    assert len(calls) == 20 + 2 * 19


# --------------------------------------------------------------------------- the sampler-calls table

def test_every_sampler_calls_match_the_table(M, sd15, reflect_pack, monkeypatch):
    """Each ComfyUI sampler's model calls over a schedule ending at 0 (normal) and one ending above it
    (ddim_reference) are what samplers/calls.py says: the count the nodes' progress bars and the frontend use."""
    import comfy.samplers
    calls_mod = reflect_pack.samplers.calls
    Z = reflect_pack.nodes.zigzag
    model, pos, neg = sd15
    latent = hostlib.empty_latent(batch=1, height=8, width=8)
    guider = hostlib.run_node(M["CFGGuider"], model=model, positive=pos, negative=neg, cfg=4.0)[0]
    count = []
    orig = comfy.samplers.CFGGuider.predict_noise
    monkeypatch.setattr(comfy.samplers.CFGGuider, "predict_noise",
                        lambda self, *a, **k: count.append(1) or orig(self, *a, **k))
    wrong = {}
    for steps in (4, 5):
        schedules = {True: hostlib.run_node(M["BasicScheduler"], model=model, scheduler="normal", steps=steps,
                                            denoise=1.0)[0],
                     False: hostlib.run_node(Z.ZigzagReferenceScheduler, model=model, steps=steps, denoise=1.0)[0]}
        for name in comfy.samplers.SAMPLER_NAMES:
            if name in OFF_SCHEDULE:
                continue
            sampler = hostlib.run_node(M["KSamplerSelect"], sampler_name=name)[0]
            for ends_at_zero, sigmas in schedules.items():
                count.clear()
                custom(M, guider, sampler, sigmas, latent)
                want = calls_mod.run_calls(name, steps, ends_at_zero)
                if len(count) != want:
                    wrong[(name, steps, ends_at_zero)] = (len(count), want)
    assert not wrong


def test_foreign_failures_keep_their_type(reflect_pack):
    """A failure inside a sampling call is re-raised as itself (type, attributes, traceback); the input being
    sampled is added to the message ComfyUI shows once, however deep the calls nest; an exception whose arguments
    are not one message gets the context as a note."""
    import traceback
    glue = reflect_pack.nodes.compat

    def bug():
        return [][1]

    with pytest.raises(IndexError) as info:
        glue.run_naming("latent_image", (1, 4, 8, 8),
                        lambda: glue.run_naming("latent_image", (1, 4, 8, 8), bug))
    e = info.value
    assert type(e) is IndexError
    assert str(e) == "list index out of range (while sampling latent_image of shape (1, 4, 8, 8))"
    assert any(f.name == "bug" for f in traceback.extract_tb(e.__traceback__))

    class Coded(RuntimeError):
        def __init__(self, code, text):
            super().__init__(code, text)
            self.code = code

    def fails():
        raise Coded(7, "inside ComfyUI")

    with pytest.raises(Coded) as info:
        glue.run_naming("samples", (2, 4, 8, 8), fails)
    assert info.value.code == 7 and info.value.args == (7, "inside ComfyUI")
    assert info.value.__notes__ == ["(while sampling samples of shape (2, 4, 8, 8))"]
