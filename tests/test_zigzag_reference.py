"""Z-Sampling core against the reference loop written with diffusers' schedulers.

The reference (xie-lab-ml/Zigzag-Diffusion-Sampling, ``z_sampling_call``) runs
DDIMScheduler for the zig and DDIMInverseScheduler for the zag. Here the same
loop is written with the schedulers from PyPI, built from the SDXL scheduler
config (no download), around a small epsilon model, and compared with
``samplers.zigzag.sample_zigzag`` working in ComfyUI's sigma space.
"""

import pytest
import torch

from ddim_reference import TinyEps, cfg, denoiser, reflection_loop, sigma_space
from tools.reflect_pack import module
zz = module("samplers.zigzag")

diffusers = pytest.importorskip("diffusers")


def reference(model, noise, steps, gamma1, gamma2, lambda_steps, t_max, mode):
    return reflection_loop(diffusers, cfg(model, gamma1), cfg(model, gamma2), cfg(model, gamma1), noise, steps,
                           lambda_steps, t_max, mode)


def ours(model, noise, steps, gamma1, gamma2, lambda_steps, t_max, mode):
    table, sigmas = sigma_space(diffusers, steps)
    x = zz.unit_noise_start(noise, sigmas[0])
    out = zz.sample_zigzag(denoiser(table, cfg(model, gamma1)),
                           denoiser(table, cfg(model, zz.zag_guidance(gamma1, gamma2, mode))), x, sigmas,
                           lambda_steps=lambda_steps, rounds=t_max, inversion=mode)
    return out * zz.eps_input_scale(sigmas[-1])  # back to DDIM space, as the reference returns


@pytest.mark.parametrize("mode", ["published", "paper"])
@pytest.mark.parametrize("lambda_steps", [49, 20])
@pytest.mark.parametrize("t_max", [1, 2])
@pytest.mark.parametrize("gamma2", [0.0, 1.0])
def test_matches_diffusers_reference(mode, lambda_steps, t_max, gamma2):
    model = TinyEps()
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    ref = reference(model, noise, 50, 5.5, gamma2, lambda_steps, t_max, mode)
    got = ours(model, noise, 50, 5.5, gamma2, lambda_steps, t_max, mode)
    rel = ((got - ref).norm() / ref.norm()).item()
    assert rel < 1e-4, rel
    # and the reflection really changed the result compared with plain DDIM
    plain = reference(model, noise, 50, 5.5, gamma2, 0, 1, mode)
    assert ((plain - ref).norm() / ref.norm()).item() > 1e-3


def test_modes_differ():
    model = TinyEps()
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    a = ours(model, noise, 50, 5.5, 0.0, 49, 1, "published")
    b = ours(model, noise, 50, 5.5, 0.0, 49, 1, "paper")
    assert ((a - b).norm() / a.norm()).item() > 1e-3


def test_reference_schedule_levels():
    from ddim_reference import SDXL_SCHEDULER_CONFIG
    sched = diffusers.DDIMScheduler.from_config(SDXL_SCHEDULER_CONFIG)
    sched.set_timesteps(50)
    table, _ = sigma_space(diffusers, 50)
    sig = zz.ddim_reference_sigmas(table, 50)
    assert len(sig) == 51
    assert zz.timestep_of(table, sig[:-1]).tolist() == sched.timesteps.tolist()
    assert abs(sig[-1].item() - 0.0292) < 1e-3
    # a non-divisor step count keeps diffusers' leading spacing
    sched.set_timesteps(30)
    assert zz.timestep_of(table, zz.ddim_reference_sigmas(table, 30)[:-1]).tolist() == sched.timesteps.tolist()
