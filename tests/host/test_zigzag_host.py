"""ZigzagKSampler / SamplerZigzag inside a real ComfyUI (COMFYUI_PATH)."""

import random

import pytest
import torch

import hostlib

# samplers that do not step along the given sigmas, and those whose model input is not the latent they step
NOT_REFLECTABLE = ("dpm_fast", "dpm_adaptive", "uni_pc", "uni_pc_bh2", "sa_solver", "sa_solver_pece")
from ddim_reference import reflection_loop  # the reference loop (SD1.5 and SDXL share the scheduler config)


@pytest.fixture(scope="module")
def sd15(tiny_model):
    m = tiny_model("sd15", "eps", seed=0)
    return m, hostlib.conditioning(m, seed=1), hostlib.conditioning(m, seed=2)


def zigzag(Z, model, pos, neg, latent, *, seed=0, steps=10, cfg=5.5, sampler="ddim", scheduler="ddim_reference",
           denoise=1.0, g2=0.0, lam=None, rounds=1, inversion="published"):
    lam = steps - 1 if lam is None else lam
    return hostlib.run_node(Z.ZigzagKSampler, model=model, seed=seed, steps=steps, cfg=cfg, sampler_name=sampler,
                            scheduler=scheduler, positive=pos, negative=neg, latent_image=latent, denoise=denoise,
                            inversion_cfg=g2, zigzag_steps=lam, rounds=rounds, inversion=inversion)[0]["samples"]


class CountItems:
    """Counts batch items through the diffusion model (restored on exit)."""

    def __init__(self, model):
        self.unet = model.model.diffusion_model
        self.items = 0

    def __enter__(self):
        self.orig = self.unet.forward

        def forward(x, *a, **k):
            self.items += x.shape[0]
            return self.orig(x, *a, **k)
        self.unet.forward = forward
        return self

    def __exit__(self, *exc):
        del self.unet.forward  # back to the class's method


@pytest.mark.parametrize("sampler,scheduler", [("ddim", "ddim_uniform"), ("euler", "normal"), ("dpmpp_2m", "karras"),
                                               ("euler_ancestral", "normal"), ("uni_pc", "simple"), ("heun", "beta")])
def test_lambda_zero_is_ksampler(Z, sd15, sampler, scheduler):
    model, pos, neg = sd15
    latent = hostlib.empty_latent(batch=2, height=16, width=16)
    got = zigzag(Z, model, pos, neg, latent, seed=5, steps=8, cfg=4.0, sampler=sampler, scheduler=scheduler, lam=0)
    ref = hostlib.ksampler(model, pos, neg, latent, seed=5, steps=8, cfg=4.0, sampler_name=sampler,
                           scheduler=scheduler)["samples"]
    assert torch.equal(got, ref)


def reference_loop_on_unet(model, pos, neg, noise, steps, g1, g2, lam, t_max, mode):
    """The reference z_sampling_call loop (diffusers DDIM / DDIMInverse, see
    tests/ddim_reference.py) run on the ComfyUI model's own UNet, gamma_1 > 1."""
    diffusers = pytest.importorskip("diffusers")
    unet = model.model.diffusion_model
    ctx = torch.cat([neg[0][0], pos[0][0]]).repeat_interleave(noise.shape[0], 0)

    def cfg(g):
        @torch.no_grad()
        def eps(x, t):
            x = x.float()
            u, c = unet(torch.cat([x, x]), torch.full((2 * x.shape[0],), float(t)), context=ctx).float().chunk(2)
            return u + g * (c - u)
        return eps

    return reflection_loop(diffusers, cfg(g1), cfg(g2), cfg(g1), noise, steps, lam, t_max, mode)


@pytest.mark.parametrize("mode", ["published", "paper"])
@pytest.mark.parametrize("lam,t_max,g2", [(49, 1, 0.0), (20, 2, 1.0)])
def test_node_reproduces_reference(Z, sd15, mode, lam, t_max, g2):
    """ZigzagKSampler with ddim + ddim_reference equals the diffusers reference
    loop on the same UNet (float32), from the same seed."""
    import comfy.sample
    model, pos, neg = sd15
    latent = hostlib.empty_latent(batch=1, height=8, width=8)
    noise = comfy.sample.prepare_noise(latent["samples"], 11)
    ref = reference_loop_on_unet(model, pos, neg, noise, 50, 5.5, g2, lam, t_max, mode)
    got = zigzag(Z, model, pos, neg, latent, seed=11, steps=50, cfg=5.5, g2=g2, lam=lam, rounds=t_max, inversion=mode)
    got = model.model.process_latent_in(got)  # LATENT is in VAE space: undo the latent format's scale factor
    rel = ((got - ref.float()).norm() / ref.norm()).item()
    assert rel < 1e-4, rel
    plain = model.model.process_latent_in(zigzag(Z, model, pos, neg, latent, seed=11, steps=50, cfg=5.5, lam=0))
    assert ((plain - ref).norm() / ref.norm()).item() > 1e-3


@pytest.mark.parametrize("g1,g2,mode,per_image", [(5.5, 0.0, "published", 247), (5.5, 1.0, "published", 247),
                                                  (5.5, 2.0, "published", 296), (1.0, 0.0, "published", 148),
                                                  (1.0, 0.0, "paper", 148)])
def test_minimal_batch_items(Z, tiny_model, g1, g2, mode, per_image):
    model = tiny_model("sd15", "eps", seed=3)
    pos, neg = hostlib.conditioning(model, seed=1), hostlib.conditioning(model, seed=2)
    latent = hostlib.empty_latent(batch=2, height=8, width=8)
    with CountItems(model) as c:
        zigzag(Z, model, pos, neg, latent, steps=50, cfg=g1, g2=g2, lam=49, inversion=mode)
    assert c.items == 2 * per_image


@pytest.mark.parametrize("family,prediction", [("sd15", "v_prediction"), ("sd15", "flow"), ("sd15", "flow_native"),
                                               ("sdxl", "eps")])
def test_model_types(Z, tiny_model, family, prediction):
    model = tiny_model(family, prediction, seed=4)
    pos = hostlib.conditioning(model, seed=1, width=128, height=128)
    neg = hostlib.conditioning(model, seed=2, width=128, height=128)
    latent = hostlib.empty_latent(batch=2, height=16, width=16)
    kw = dict(steps=8, cfg=4.0, sampler="euler", scheduler="simple")
    a = zigzag(Z, model, pos, neg, latent, lam=7, **kw)
    b = zigzag(Z, model, pos, neg, latent, lam=7, **kw)
    plain = zigzag(Z, model, pos, neg, latent, lam=0, **kw)
    assert torch.isfinite(a).all()
    assert torch.equal(a, b)
    assert ((a - plain).norm() / plain.norm()).item() > 1e-3
    assert torch.equal(plain, hostlib.ksampler(model, pos, neg, latent, steps=8, cfg=4.0, sampler_name="euler",
                                               scheduler="simple")["samples"])


def test_sampler_custom_advanced_composition(Z, sd15, comfy_env):
    """SamplerZigzag + CFGGuider + ZigzagReferenceScheduler in SamplerCustomAdvanced
    give exactly the all-in-one node's result."""
    hostlib.init_builtin_nodes()
    import nodes
    model, pos, neg = sd15
    latent = hostlib.empty_latent(batch=2, height=8, width=8)
    M = nodes.NODE_CLASS_MAPPINGS
    noise = hostlib.run_node(M["RandomNoise"], noise_seed=9)[0]
    guider = hostlib.run_node(M["CFGGuider"], model=model, positive=pos, negative=neg, cfg=5.5)[0]
    sampler = hostlib.run_node(Z.SamplerZigzag, sampler_name="ddim", inversion_cfg=0.0, zigzag_steps=11, rounds=1,
                               inversion="published", reference_scaling=True)[0]
    sigmas = hostlib.run_node(Z.ZigzagReferenceScheduler, model=model, steps=12, denoise=1.0)[0]
    out = hostlib.run_node(M["SamplerCustomAdvanced"], noise=noise, guider=guider, sampler=sampler, sigmas=sigmas,
                           latent_image=latent)[0]["samples"]
    ref = zigzag(Z, model, pos, neg, latent, seed=9, steps=12, lam=11)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)


def test_denoise_and_mask(Z, sd15):
    model, pos, neg = sd15
    latent = hostlib.empty_latent(batch=1, height=16, width=16, seed=3)
    mask = torch.zeros(1, 16, 16)
    mask[:, :, :8] = 1.0
    out = zigzag(Z, model, pos, neg, {**latent, "noise_mask": mask}, steps=10, denoise=0.6, lam=9,
                 sampler="euler", scheduler="normal")
    assert torch.isfinite(out).all()
    # the masked-out half keeps the input latent
    torch.testing.assert_close(out[..., 8:], latent["samples"][..., 8:])
    assert (out[..., :8] - latent["samples"][..., :8]).abs().max() > 1e-2


def test_bad_input_errors(Z, sd15):
    model, pos, neg = sd15
    latent = hostlib.empty_latent(batch=1, height=8, width=8)
    with pytest.raises(ValueError, match="zigzag_steps"):
        zigzag(Z, model, pos, neg, latent, steps=10, lam=10)
    with pytest.raises(ValueError, match="rounds"):
        zigzag(Z, model, pos, neg, latent, steps=10, lam=5, rounds=0)
    with pytest.raises(ValueError, match="sampler_name"):
        zigzag(Z, model, pos, neg, latent, steps=10, lam=5, sampler="nope")
    msg = Z.ZigzagKSampler.validate_inputs(steps=10, zigzag_steps=10)
    assert isinstance(msg, str) and "zigzag_steps" in msg
    assert Z.ZigzagKSampler.validate_inputs(steps=50, zigzag_steps=49) is True
    # a SamplerZigzag whose lambda does not fit the sigmas it is given
    sampler = hostlib.run_node(Z.SamplerZigzag, sampler_name="euler", inversion_cfg=0.0, zigzag_steps=20, rounds=1,
                               inversion="paper", reference_scaling=False)[0]
    import comfy.sample
    sig = hostlib.run_node(Z.ZigzagReferenceScheduler, model=model, steps=5, denoise=1.0)[0]
    noise = torch.randn(1, 4, 8, 8)
    with pytest.raises(ValueError, match="zigzag_steps"):
        comfy.sample.sample_custom(model, noise, 5.0, sampler, sig, pos, neg, latent["samples"])


def test_progress_over_evaluations_and_interrupt(Z, tiny_model, monkeypatch):
    """The progress bar advances on every model evaluation up to the total, and an
    interrupt at a random evaluation leaves the model as it was."""
    import comfy.model_management
    import comfy.utils
    model = tiny_model("sd15", "eps", seed=6)
    pos, neg = hostlib.conditioning(model, seed=1), hostlib.conditioning(model, seed=2)
    latent = hostlib.empty_latent(batch=1, height=8, width=8)
    before = hostlib.ksampler(model, pos, neg, latent, seed=2, steps=6)["samples"]
    opts_before = dict(model.model_options)
    calls = 10 + 9 * 2
    probe = hostlib.ProgressProbe(monkeypatch)
    try:
        zigzag(Z, model, pos, neg, latent, steps=10, lam=9)
        assert probe.values() == list(range(1, calls + 1)) and probe.totals() == {calls}
        probe.reset()
        probe.stop_at = random.Random(0).randint(1, calls - 1)
        with pytest.raises(comfy.model_management.InterruptProcessingException):
            zigzag(Z, model, pos, neg, latent, steps=10, lam=9)
    finally:
        probe.close()
    assert dict(model.model_options).keys() == opts_before.keys()
    assert torch.equal(hostlib.ksampler(model, pos, neg, latent, seed=2, steps=6)["samples"], before)


def test_every_sampler_and_scheduler(Z, sd15):
    """Every sampler and scheduler ComfyUI offers runs with reflection and gives a finite result, except the
    samplers that pick their own noise levels (dpm_fast, dpm_adaptive) or evaluate a copy of their latent
    (uni_pc, uni_pc_bh2, sa_solver, sa_solver_pece), refused at graph time."""
    import comfy.samplers
    model, pos, neg = sd15
    latent = hostlib.empty_latent(batch=1, height=8, width=8)
    failures = {}
    for name in comfy.samplers.SAMPLER_NAMES:
        if name in NOT_REFLECTABLE:  # refused at graph time, naming the input
            msg = Z.ZigzagKSampler.validate_inputs(steps=4, zigzag_steps=3, sampler_name=name)
            if not (isinstance(msg, str) and msg.startswith(f"sampler_name: '{name}'")):
                failures[name] = f"not refused at graph time: {msg!r}"
            if Z.ZigzagKSampler.validate_inputs(steps=4, zigzag_steps=0, sampler_name=name) is not True:
                failures[name] = "refused with nothing reflected"
            continue
        try:
            out = zigzag(Z, model, pos, neg, latent, steps=4, lam=3, sampler=name, scheduler="normal")
            if not torch.isfinite(out).all():
                failures[name] = "non-finite"
        except Exception as e:  # collect all, report together
            failures[name] = repr(e)
    for sched in comfy.samplers.SCHEDULER_NAMES:
        try:
            out = zigzag(Z, model, pos, neg, latent, steps=4, lam=3, sampler="euler", scheduler=sched)
            if not torch.isfinite(out).all():
                failures[sched] = "non-finite"
        except Exception as e:
            failures[sched] = repr(e)
    assert not failures, failures
