"""WeakStrongReflection / WeakStrongReflectionLoRA / WeakStrongGuider inside a real ComfyUI (COMFYUI_PATH)."""

import os
import random

import pytest
import torch

import hostlib
from ddim_reference import reflection_loop
from test_zigzag_host import NOT_REFLECTABLE, CountItems, zigzag

PAPER = {"strong": 1.5, "weak": -1.5, "main": 0.8}


@pytest.fixture(scope="module")
def base(tiny_model):
    m = tiny_model("sd15", "eps", seed=0)
    return m, hostlib.conditioning(m, seed=1), hostlib.conditioning(m, seed=2)


@pytest.fixture(scope="module")
def lora_file(base, comfy_env):
    """A LoCon on every attention and conv layer of the base model, saved in ComfyUI's loras folder."""
    import comfy.utils
    import folder_paths
    model = base[0]
    lora = hostlib.make_lora(model, rank=4, seed=3)
    folder = folder_paths.get_folder_paths("loras")[0]
    os.makedirs(folder, exist_ok=True)
    name = "reflect_test_locon.safetensors"
    comfy.utils.save_torch_file(lora, os.path.join(folder, name))
    return name, lora


def reflection(W, model, pos, neg, latent, *, strong_model=None, weak_model=None, cfg=5.5, strong_cfg=5.5,
               weak_cfg=1.0, seed=0, steps=10, sampler="ddim", scheduler="ddim_reference", denoise=1.0,
               reflect_steps=-1, inversion="published", **conds):
    return hostlib.run_node(W.WeakStrongReflection, model=model, positive=pos, negative=neg, cfg=cfg,
                            strong_cfg=strong_cfg, weak_cfg=weak_cfg, seed=seed, steps=steps, sampler_name=sampler,
                            scheduler=scheduler, latent_image=latent, denoise=denoise, reflect_steps=reflect_steps,
                            inversion=inversion, strong_model=strong_model, weak_model=weak_model,
                            **conds)[0]["samples"]


def reflection_lora(W, model, lora_name, pos, neg, latent, *, strengths=PAPER, cfg=5.5, weak_cfg=1.0, seed=0,
                    steps=10, sampler="ddim", scheduler="ddim_reference", denoise=1.0, reflect_steps=-1,
                    inversion="published"):
    return hostlib.run_node(W.WeakStrongReflectionLoRA, model=model, lora_name=lora_name,
                            strong_strength=strengths["strong"], weak_strength=strengths["weak"],
                            main_strength=strengths["main"], positive=pos, negative=neg, cfg=cfg, weak_cfg=weak_cfg,
                            seed=seed, steps=steps, sampler_name=sampler, scheduler=scheduler, latent_image=latent,
                            denoise=denoise, reflect_steps=reflect_steps, inversion=inversion)[0]["samples"]


def merged_models(lora, seed=0, strengths=PAPER):
    """Independent models (not clones) with the LoRA merged into their weights."""
    out = {}
    for side, s in strengths.items():
        m = hostlib.build_model("sd15", "eps", seed=seed)
        hostlib.merge_lora(m, lora, s)
        out[side] = m
    return out


def rel(a, b):
    return ((a - b).norm() / b.norm()).item()


@pytest.mark.parametrize("inversion", ["published", "paper"])
def test_lora_path_equals_independent_merged_models(W, base, lora_file, inversion):
    """The LoRA convenience path (one checkpoint, strengths switched at forward
    time) equals W2SD with three separately loaded models whose weights have the
    LoRA merged (the different-checkpoint path)."""
    model, pos, neg = base
    name, lora = lora_file
    latent = hostlib.empty_latent(batch=2, height=8, width=8)
    got = reflection_lora(W, model, name, pos, neg, latent, steps=12, inversion=inversion)
    ms = merged_models(lora)
    ref = reflection(W, ms["main"], pos, neg, latent, strong_model=ms["strong"], weak_model=ms["weak"], steps=12,
                     inversion=inversion)
    assert rel(got, ref) < 1e-5
    # and the sides matter: the weak side at the main strength gives something else
    other = reflection(W, ms["main"], pos, neg, latent, strong_model=ms["strong"], weak_model=ms["main"], steps=12,
                       inversion=inversion)
    assert rel(other, ref) > 1e-3


def test_two_lora_loader_models_equal_lora_node(W, base, lora_file, comfy_env):
    """Strong/weak/main MODELs from LoraLoaderModelOnly on one checkpoint (clones
    sharing the weights) give the LoRA node's result."""
    hostlib.init_builtin_nodes()
    import nodes
    model, pos, neg = base
    name, _ = lora_file
    latent = hostlib.empty_latent(batch=1, height=8, width=8)
    L = nodes.NODE_CLASS_MAPPINGS["LoraLoaderModelOnly"]
    ms = {k: hostlib.run_node(L, model=model, lora_name=name, strength_model=s)[0] for k, s in PAPER.items()}
    got = reflection(W, ms["main"], pos, neg, latent, strong_model=ms["strong"], weak_model=ms["weak"])
    ref = reflection_lora(W, model, name, pos, neg, latent)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("mode", ["published", "paper"])
def test_two_models_reproduce_reference(W, tiny_model, mode):
    """W2SD with two different models (strong = main = A at cfg 5.5, weak = B at
    cfg 1.0) equals the diffusers DDIM / DDIMInverse reference loop on their UNets."""
    import comfy.sample
    a, b = tiny_model("sd15", "eps", seed=10), tiny_model("sd15", "eps", seed=7)
    pos, neg = hostlib.conditioning(a, seed=1), hostlib.conditioning(a, seed=2)
    latent = hostlib.empty_latent(batch=1, height=8, width=8)
    noise = comfy.sample.prepare_noise(latent["samples"], 11)
    diffusers = pytest.importorskip("diffusers")
    ctx = torch.cat([neg[0][0], pos[0][0]])

    def eps(model, g):
        unet = model.model.diffusion_model

        @torch.no_grad()
        def f(x, t):
            x = x.float()
            u, c = unet(torch.cat([x, x]), torch.full((2,), float(t)), context=ctx).float().chunk(2)
            return u + g * (c - u)
        return f

    got = reflection(W, a, pos, neg, latent, weak_model=b, seed=11, steps=50, inversion=mode)
    got = a.model.process_latent_in(got)
    # (after the node: ComfyUI leaves a MODEL's weights patched by the last LoRA clone it ran until it loads
    # another patcher of them, so the raw UNet is read once ComfyUI has loaded the plain models)
    ref = reflection_loop(diffusers, eps(a, 5.5), eps(b, 1.0), eps(a, 5.5), noise, 50, 49, 1, mode)
    assert rel(got, ref) < 1e-4


def test_equal_sides_is_zigzag(W, Z, base):
    """Guidance difference only (one model): W2SD is Z-Sampling."""
    model, pos, neg = base
    latent = hostlib.empty_latent(batch=2, height=8, width=8)
    for mode in ("published", "paper"):
        got = reflection(W, model, pos, neg, latent, weak_cfg=0.0, steps=10, inversion=mode)
        ref = zigzag(Z, model, pos, neg, latent, steps=10, g2=0.0, lam=9, inversion=mode)
        torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)
    # a CFG++ sampler at cfg 1: the strong side's steps read both branches (the sampler asks for them)
    kw = dict(sampler="euler_cfg_pp", scheduler="normal", steps=8, inversion="paper")
    got = reflection(W, model, pos, neg, latent, cfg=1.0, strong_cfg=1.0, weak_cfg=0.0, **kw)
    ref = zigzag(Z, model, pos, neg, latent, cfg=1.0, g2=0.0, lam=7, **kw)
    torch.testing.assert_close(got, ref, rtol=0, atol=1e-5)


@pytest.mark.parametrize("cfg", [5.5, 1.0])
def test_every_sampler_equal_sides_is_zigzag(W, Z, base, cfg):
    """For every sampler ComfyUI offers, W2SD with one model on every side
    gives Z-Sampling's result (each side's steps run the sampler as the zigs
    do; at cfg 1 CFG++ samplers ask for both branches), and with nothing
    reflected both give KSampler's."""
    import comfy.samplers
    model, pos, neg = base
    latent = hostlib.empty_latent(batch=1, height=8, width=8)
    bad = {}
    for name in comfy.samplers.SAMPLER_NAMES:
        if name in NOT_REFLECTABLE:  # refused at graph time (test_zigzag_host), as by ZigzagKSampler
            msg = W.WeakStrongReflection.validate_inputs(steps=4, reflect_steps=-1, sampler_name=name)
            if not (isinstance(msg, str) and msg.startswith(f"sampler_name: '{name}'")):
                bad[name] = f"not refused at graph time: {msg!r}"
            continue
        kw = dict(sampler=name, scheduler="normal", steps=4, seed=3, inversion="paper")
        try:
            got = reflection(W, model, pos, neg, latent, cfg=cfg, strong_cfg=cfg, weak_cfg=0.0, **kw)
            ref = zigzag(Z, model, pos, neg, latent, cfg=cfg, g2=0.0, lam=3, **kw)
            if not torch.allclose(got, ref, rtol=0, atol=1e-5):
                bad[name] = f"W2SD vs Z-Sampling: max difference {(got - ref).abs().max().item():.3g}"
            plain = hostlib.ksampler(model, pos, neg, latent, seed=3, steps=4, cfg=cfg, sampler_name=name,
                                     scheduler="normal")["samples"]
            for label, out in (("W2SD", reflection(W, model, pos, neg, latent, cfg=cfg, strong_cfg=cfg,
                                                   reflect_steps=0, **kw)),
                               ("Z-Sampling", zigzag(Z, model, pos, neg, latent, cfg=cfg, lam=0, **kw))):
                if not torch.equal(out, plain):
                    bad[f"{name} ({label}, nothing reflected)"] = "differs from KSampler"
        except Exception as e:  # collect all, report together
            bad[name] = repr(e)
    assert not bad, bad


def test_paper_setting_batch_items(W, base, lora_file):
    """50 steps, strong cfg 5.5, weak cfg 1.0, main cfg 5.5: 247 batch items per
    image through the UNet (the reference runs 296)."""
    model, pos, neg = base
    name, _ = lora_file
    latent = hostlib.empty_latent(batch=2, height=8, width=8)
    with CountItems(model) as c:
        reflection_lora(W, model, name, pos, neg, latent, steps=50)
    assert c.items == 2 * 247


def test_zero_guidance_side_runs_one_branch(W, Z, base, reflect_pack):
    """A side at guidance 0 is its unconditional prediction: one batch item per
    image and evaluation, as samplers.w2sd.evaluations counts it (ComfyUI's own
    CFG skips a branch only at 1), with the output of both branches evaluated."""
    hostlib.init_builtin_nodes()
    import comfy.samplers
    import nodes
    M = nodes.NODE_CLASS_MAPPINGS

    class BothBranches(comfy.samplers.CFGGuider):
        """ComfyUI's CFG as it is (a subclass, so W2SD leaves its branches alone)."""

    model, pos, neg = base
    latent = hostlib.empty_latent(batch=2, height=8, width=8)
    for kw, cfgs in ((dict(weak_cfg=0.0), (5.5, 0.0, 5.5)), (dict(strong_cfg=0.0, weak_cfg=1.0), (0.0, 1.0, 5.5))):
        with CountItems(model) as c:
            got = reflection(W, model, pos, neg, latent, steps=10, seed=4, **kw)
        assert c.items == 2 * hostlib.submodule(reflect_pack, "samplers.w2sd").evaluations(10, *cfgs)["minimal"]
        with CountItems(model) as c3:
            reflection(W, model, pos, neg, latent, steps=10, seed=4, reflect_steps=4, **kw)
        assert c3.items == 2 * hostlib.submodule(reflect_pack, "samplers.w2sd").evaluations(10, *cfgs, reflect_steps=4)["minimal"]
        g = {}
        for side, cfg in zip(("strong", "weak", "main"), cfgs):
            g[side] = BothBranches(model)
            g[side].set_conds(pos, neg)
            g[side].set_cfg(cfg)
        guider = hostlib.run_node(W.WeakStrongGuiderNode, strong=g["strong"], weak=g["weak"], main=g["main"],
                                  reflect_steps=-1, inversion="published", reference_scaling=True)[0]
        sigmas = hostlib.run_node(Z.ZigzagReferenceScheduler, model=model, steps=10, denoise=1.0)[0]
        with CountItems(model) as c2:
            ref = hostlib.run_node(M["SamplerCustomAdvanced"], noise=hostlib.run_node(M["RandomNoise"], noise_seed=4)[0],
                                   guider=guider, sampler=hostlib.run_node(M["KSamplerSelect"], sampler_name="ddim")[0],
                                   sigmas=sigmas, latent_image=latent)[0]["samples"]
        assert c2.items == c.items + 2 * 9  # the zero-guidance side's conditional branch, on each reflected step
        # equal up to float rounding (one branch alone vs both in one batch), amplified over the steps
        torch.testing.assert_close(got, ref, rtol=1e-3, atol=1e-3)
        assert rel(got, ref) < 1e-4


def test_pipeline_difference_uses_each_sides_conditionings(W, base):
    model, pos, neg = base
    other = hostlib.conditioning(model, seed=9)
    latent = hostlib.empty_latent(batch=1, height=8, width=8)
    plain = reflection(W, model, pos, neg, latent)
    same = reflection(W, model, pos, neg, latent, strong_positive=pos, weak_negative=neg)
    assert torch.equal(plain, same)
    strong = reflection(W, model, pos, neg, latent, strong_positive=other)
    weak = reflection(W, model, pos, neg, latent, weak_positive=other)
    assert rel(strong, plain) > 1e-3 and rel(weak, plain) > 1e-3 and rel(strong, weak) > 1e-3


@pytest.mark.parametrize("family,prediction", [("sd15", "v_prediction"), ("sd15", "flow"), ("sdxl", "eps")])
def test_model_types(W, tiny_model, family, prediction):
    a = tiny_model(family, prediction, seed=4)
    b = tiny_model(family, prediction, seed=5)
    pos = hostlib.conditioning(a, seed=1, width=128, height=128)
    neg = hostlib.conditioning(a, seed=2, width=128, height=128)
    latent = hostlib.empty_latent(batch=2, height=16, width=16)
    kw = dict(steps=8, sampler="euler", scheduler="simple")
    out = reflection(W, a, pos, neg, latent, weak_model=b, **kw)
    again = reflection(W, a, pos, neg, latent, weak_model=b, **kw)
    plain = reflection(W, a, pos, neg, latent, weak_model=b, reflect_steps=0, **kw)
    assert torch.isfinite(out).all() and torch.equal(out, again)
    assert rel(out, plain) > 1e-3
    assert torch.equal(plain, hostlib.ksampler(a, pos, neg, latent, steps=8, cfg=5.5, sampler_name="euler",
                                               scheduler="simple")["samples"])


def test_sampler_custom_advanced_composition(W, Z, base, lora_file, comfy_env):
    """CFGGuider x3 -> WeakStrongGuider, KSamplerSelect(ddim), DDIM reference
    scheduler, SamplerCustomAdvanced: exactly the all-in-one node."""
    hostlib.init_builtin_nodes()
    import nodes
    M = nodes.NODE_CLASS_MAPPINGS
    model, pos, neg = base
    name, _ = lora_file
    latent = hostlib.empty_latent(batch=2, height=8, width=8)
    L = M["LoraLoaderModelOnly"]
    ms = {k: hostlib.run_node(L, model=model, lora_name=name, strength_model=s)[0] for k, s in PAPER.items()}
    g = {k: hostlib.run_node(M["CFGGuider"], model=ms[k], positive=pos, negative=neg,
                             cfg=1.0 if k == "weak" else 5.5)[0] for k in PAPER}
    guider = hostlib.run_node(W.WeakStrongGuiderNode, strong=g["strong"], weak=g["weak"], main=g["main"],
                              reflect_steps=-1, inversion="published", reference_scaling=True)[0]
    noise = hostlib.run_node(M["RandomNoise"], noise_seed=9)[0]
    sampler = hostlib.run_node(M["KSamplerSelect"], sampler_name="ddim")[0]
    sigmas = hostlib.run_node(Z.ZigzagReferenceScheduler, model=model, steps=12, denoise=1.0)[0]
    out = hostlib.run_node(M["SamplerCustomAdvanced"], noise=noise, guider=guider, sampler=sampler, sigmas=sigmas,
                           latent_image=latent)[0]["samples"]
    ref = reflection_lora(W, model, name, pos, neg, latent, seed=9, steps=12)
    torch.testing.assert_close(out, ref, rtol=0, atol=1e-6)


def test_denoise_and_mask(W, base, tiny_model):
    model, pos, neg = base
    weak = tiny_model("sd15", "eps", seed=8)
    latent = hostlib.empty_latent(batch=1, height=16, width=16, seed=3)
    mask = torch.zeros(1, 16, 16)
    mask[:, :, :8] = 1.0
    out = reflection(W, model, pos, neg, {**latent, "noise_mask": mask}, weak_model=weak, steps=10, denoise=0.6,
                     sampler="euler", scheduler="normal")
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[..., 8:], latent["samples"][..., 8:])
    assert (out[..., :8] - latent["samples"][..., :8]).abs().max() > 1e-2


def test_errors_name_the_bad_input(W, base, tiny_model):
    model, pos, neg = base
    latent = hostlib.empty_latent(batch=1, height=8, width=8)
    xl = tiny_model("sdxl", "eps", seed=1)
    with pytest.raises(ValueError, match="latent format.*weak: SDXL"):
        reflection(W, model, pos, neg, latent, weak_model=xl)
    with pytest.raises(ValueError, match="reflect_steps"):
        reflection(W, model, pos, neg, latent, steps=5, reflect_steps=5)
    assert "reflect_steps" in W.WeakStrongReflection.validate_inputs(steps=5, reflect_steps=5)
    assert W.WeakStrongReflection.validate_inputs(steps=50, reflect_steps=-1) is True
    with pytest.raises(ValueError, match="lora_name"):
        reflection_lora(W, model, "no_such_lora.safetensors", pos, neg, latent)
    # a patch that cannot be switched per evaluation (a full replacement weight)
    key = "diffusion_model.out.2.weight"
    odd = model.clone()
    odd.add_patches({key: ("set", (torch.zeros_like(model.model.state_dict()[key]),))}, 1.0)
    with pytest.raises(ValueError, match="weak_model.*'set'.*out.2.weight"):
        reflection(W, model, pos, neg, latent, weak_model=odd)
    # a sampler object that is not one of ComfyUI's k-diffusion samplers
    import comfy.samplers
    g = {k: comfy.samplers.CFGGuider(model) for k in ("strong", "weak", "main")}
    for x in g.values():
        x.set_conds(pos, neg)
    guider = W.WeakStrongGuider(g["strong"], g["weak"], g["main"])
    zsampler = hostlib.run_node(hostlib.load_pack().nodes.zigzag.SamplerZigzag, sampler_name="ddim",
                                inversion_cfg=0.0, zigzag_steps=1, rounds=1, inversion="paper",
                                reference_scaling=False)[0]
    with pytest.raises(ValueError, match="sampler must be"):
        guider.sample(torch.randn(1, 4, 8, 8), torch.zeros(1, 4, 8, 8), zsampler, torch.linspace(10, 0, 5))
    # a guider whose reflect_steps does not fit the sigmas it is given
    long = W.WeakStrongGuider(g["strong"], g["weak"], g["main"], reflect_steps=4)
    with pytest.raises(ValueError, match=r"reflect_steps \(4\) must be smaller than steps \(4\)"):
        long.sample(torch.randn(1, 4, 8, 8), torch.zeros(1, 4, 8, 8), comfy.samplers.sampler_object("euler"),
                    torch.linspace(10, 0, 5))


def test_progress_interrupt_and_no_state_left(W, base, lora_file, monkeypatch):
    """Progress advances on every evaluation; an interrupt at a random
    evaluation leaves the base MODEL exactly as it was: KSampler on it is
    bit-identical to a run before, no forward hook stays on any layer."""
    import comfy.model_management
    import comfy.utils
    model, pos, neg = base
    name, _ = lora_file
    latent = hostlib.empty_latent(batch=1, height=8, width=8)
    before = hostlib.ksampler(model, pos, neg, latent, seed=2, steps=6)["samples"]
    patches_before = {k: list(v) for k, v in model.patches.items()}
    opts_before = dict(model.model_options)
    steps = 10
    calls = steps + (steps - 1) * 2
    probe = hostlib.ProgressProbe(monkeypatch)
    try:
        reflection_lora(W, model, name, pos, neg, latent, steps=steps)
        assert probe.values() == list(range(1, calls + 1)) and probe.totals() == {calls}
        for trial in range(3):
            probe.reset()
            probe.stop_at = random.Random(trial).randint(1, calls - 1)
            with pytest.raises(comfy.model_management.InterruptProcessingException):
                reflection_lora(W, model, name, pos, neg, latent, steps=steps)
            assert probe.values() == list(range(1, probe.stop_at + 1))
    finally:
        probe.close()
    assert not any(m._forward_hooks for m in model.model.modules())
    assert {k: list(v) for k, v in model.patches.items()} == patches_before
    assert dict(model.model_options).keys() == opts_before.keys() and not model.additional_models
    assert torch.equal(hostlib.ksampler(model, pos, neg, latent, seed=2, steps=6)["samples"], before)
