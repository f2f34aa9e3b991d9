"""Smoke tests of the host harness itself: ComfyUI imports in-process on CPU,
the pack loads through ComfyUI's loader, the tiny SD1.5 / SDXL models build
from ComfyUI's classes and ComfyUI's KSampler path samples them."""

import pytest

import hostlib


def test_comfy_in_process(comfy_env):
    import comfy.model_management
    import folder_paths
    import nodes
    from comfy_api.latest import ComfyExtension, io  # noqa: F401

    assert comfy_env.device == "cpu"
    assert str(comfy.model_management.get_torch_device()) == "cpu"
    assert nodes.__file__.startswith(str(comfy_env.path))
    # isolated base dir, not the checkout
    assert folder_paths.get_output_directory().startswith(str(comfy_env.base_dir))
    assert "KSampler" in nodes.NODE_CLASS_MAPPINGS


def test_pack_loads_like_comfyui(reflect_pack, reflect_nodes):
    import nodes

    declared = hostlib.discover_node_ids(reflect_pack)
    assert declared, "the pack declares no nodes"
    assert sorted(reflect_nodes) == sorted(declared)
    for node_id, cls in reflect_nodes.items():
        assert nodes.NODE_CLASS_MAPPINGS[node_id] is cls
        assert cls.RELATIVE_PYTHON_MODULE == f"custom_nodes.{hostlib.PACK_DIRNAME}"
        assert hostlib.node_input_names(cls)["required"], node_id


def test_testnodes_load(testnodes):
    import nodes

    for node_id in ("ReflectTestTinyModel", "ReflectTestConditioning", "ReflectTestLatentStats"):
        assert node_id in nodes.NODE_CLASS_MAPPINGS


@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_tiny_model_is_deterministic_and_nontrivial(tiny_model, family):
    import torch

    a = hostlib.build_model(family, seed=3)
    b = hostlib.build_model(family, seed=3)
    c = hostlib.build_model(family, seed=4)
    sa, sb, sc = (m.model.diffusion_model.state_dict() for m in (a, b, c))
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert any(not torch.equal(sa[k], sc[k]) for k in sa)
    n = sum(p.numel() for p in a.model.diffusion_model.parameters())
    assert n < 5_000_000, n
    # the denoiser output depends on the conditioning and is finite
    m = a.model
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([2.0])
    outs = []
    for seed in (1, 2):
        cond = hostlib.conditioning(a, seed=seed, width=64, height=64)
        kw = m.extra_conds(pooled_output=cond[0][1]["pooled_output"], width=64, height=64, device="cpu",
                           noise=x, cross_attn=cond[0][0])
        ctx = kw.pop("c_crossattn").cond
        extra = {k: v.cond for k, v in kw.items()}
        with torch.no_grad():
            outs.append(m.apply_model(x, sigma, c_crossattn=ctx, **extra))
    assert all(torch.isfinite(o).all() for o in outs)
    assert outs[0].abs().mean() > 1e-3
    assert not torch.allclose(outs[0], outs[1])


@pytest.mark.parametrize("family,prediction", [
    ("sd15", "eps"), ("sd15", "v_prediction"), ("sd15", "flow"), ("sd15", "flow_native"),
    ("sdxl", "eps"), ("sdxl", "v_prediction"), ("sdxl", "flow"),
])
def test_ksampler_finite(tiny_model, family, prediction):
    import comfy.model_sampling
    import torch

    model = tiny_model(family, prediction)
    ms = model.get_model_object("model_sampling")
    expect = {"eps": comfy.model_sampling.EPS, "v_prediction": comfy.model_sampling.V_PREDICTION,
              "flow": comfy.model_sampling.CONST, "flow_native": comfy.model_sampling.CONST}[prediction]
    assert isinstance(ms, expect)
    pos = hostlib.conditioning(model, seed=1, width=256, height=256)
    neg = hostlib.conditioning(model, seed=2, width=256, height=256)
    latent = hostlib.empty_latent(1, 32, 32)
    out = hostlib.ksampler(model, pos, neg, latent, seed=0, steps=20, cfg=5.0, sampler_name="euler",
                           scheduler="normal")
    s = out["samples"]
    assert s.shape == (1, 4, 32, 32)
    assert torch.isfinite(s).all()
    assert s.std() > 1e-3
    # same seed -> same result (the harness is deterministic)
    again = hostlib.ksampler(model, pos, neg, latent, seed=0, steps=20, cfg=5.0, sampler_name="euler",
                             scheduler="normal")["samples"]
    torch.testing.assert_close(s, again)


def test_comfy_sample_direct(tiny_model):
    """comfy.sample.sample (the function KSampler calls) on the tiny SDXL model, batch 2, ddim."""
    import comfy.sample
    import torch

    model = tiny_model("sdxl")
    latent = torch.zeros(2, 4, 16, 16)
    noise = comfy.sample.prepare_noise(latent, 7)
    pos = hostlib.conditioning(model, seed=1, batch=1, width=128, height=128)
    neg = hostlib.conditioning(model, seed=2, batch=1, width=128, height=128)
    out = comfy.sample.sample(model, noise, 10, 4.0, "ddim", "ddim_uniform", pos, neg, latent, seed=7,
                              disable_pbar=True)
    assert out.shape == (2, 4, 16, 16) and torch.isfinite(out).all()
