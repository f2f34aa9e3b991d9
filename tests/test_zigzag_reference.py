"""Z-Sampling core against the reference loop written with diffusers' schedulers.

The reference (xie-lab-ml/Zigzag-Diffusion-Sampling, ``z_sampling_call``) runs
DDIMScheduler for the zig and DDIMInverseScheduler for the zag. Here the same
loop is written with the schedulers from PyPI, built from the SDXL scheduler
config (no download), around a small epsilon model, and compared with
``samplers.zigzag.sample_zigzag`` working in ComfyUI's sigma space.
"""

import pytest
import torch

from samplers import zigzag as zz

diffusers = pytest.importorskip("diffusers")

SDXL_SCHEDULER_CONFIG = {
    "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085, "clip_sample": False,
    "num_train_timesteps": 1000, "prediction_type": "epsilon", "sample_max_value": 1.0,
    "set_alpha_to_one": False, "steps_offset": 1, "timestep_spacing": "leading",
}


class TinyEps(torch.nn.Module):
    """A small non-linear epsilon model with a timestep embedding and a
    conditional / unconditional embedding, in float64."""

    def __init__(self, seed=0, ch=4, hidden=16):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.c1 = torch.nn.Conv2d(ch, hidden, 3, padding=1).double()
        self.c2 = torch.nn.Conv2d(hidden, ch, 3, padding=1).double()
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.2)
        self.t_proj = torch.randn(8, hidden, generator=g, dtype=torch.float64) * 0.5
        self.emb = torch.randn(2, hidden, generator=g, dtype=torch.float64) * 0.5  # 0: uncond, 1: cond

    def forward(self, x, t, branch):
        t = torch.as_tensor(t, dtype=torch.float64).reshape(-1)
        freqs = torch.arange(4, dtype=torch.float64)
        temb = torch.cat([torch.sin(t[:, None] / 1000 * 10 ** freqs), torch.cos(t[:, None] / 1000 * 10 ** freqs)], 1)
        h = self.c1(x) + (temb @ self.t_proj)[:, :, None, None] + self.emb[branch][None, :, None, None]
        return self.c2(torch.tanh(h))


def cfg_eps(model, x, t, scale):
    u = model(x, t, 0)
    c = model(x, t, 1)
    return u + scale * (c - u)


def reference_loop(model, noise, steps, gamma1, gamma2, lambda_steps, t_max, mode):
    """The reference z_sampling_call loop, with diffusers schedulers."""
    sched = diffusers.DDIMScheduler.from_config(SDXL_SCHEDULER_CONFIG)
    inv = diffusers.DDIMInverseScheduler.from_config(SDXL_SCHEDULER_CONFIG)
    sched.set_timesteps(steps)
    inv.set_timesteps(steps)
    ts = sched.timesteps
    ac = sched.alphas_cumprod.double()
    latents = noise.clone()
    for i, t in enumerate(ts):
        eps = cfg_eps(model, latents, t, gamma1)
        nxt = sched.step(eps, t, latents).prev_sample
        if i < lambda_steps:
            for _ in range(t_max):
                eps = cfg_eps(model, nxt, t, gamma2)
                if mode == "published":
                    # diffusers >= 0.22: step(eps, s, x) maps level s - ratio -> s
                    inv._step_index = None
                    latents = inv.step(eps, ts[i + 1], nxt).prev_sample
                else:
                    # textbook DDIM inversion from t_{i+1} up to t_i
                    a_lo, a_hi = ac[ts[i + 1]], ac[t]
                    x0 = (nxt - (1 - a_lo).sqrt() * eps) / a_lo.sqrt()
                    latents = a_hi.sqrt() * x0 + (1 - a_hi).sqrt() * eps
                eps = cfg_eps(model, latents, t, gamma1)
                sched._step_index = None
                nxt = sched.step(eps, t, latents).prev_sample
        latents = nxt
    return latents


def ours(model, noise, steps, gamma1, gamma2, lambda_steps, t_max, mode):
    sched = diffusers.DDIMScheduler.from_config(SDXL_SCHEDULER_CONFIG)
    ac = sched.alphas_cumprod.double()
    table = ((1 - ac) / ac).sqrt()
    sigmas = zz.ddim_reference_sigmas(table, steps).double()
    # ddim_reference_sigmas returns float32; take exact table values in float64
    ts = zz.timestep_of(table, sigmas[:-1])
    sigmas = torch.cat([table[ts], table[:1]])

    def make(scale):
        def denoise(x, sigma):
            t = zz.timestep_of(table, sigma)
            eps = cfg_eps(model, x * zz.eps_input_scale(sigma), t, scale)
            return x - sigma * eps
        return denoise

    x = zz.unit_noise_start(noise, sigmas[0])
    out = zz.sample_zigzag(make(gamma1), make(zz.zag_guidance(gamma1, gamma2, mode)), x, sigmas,
                           lambda_steps=lambda_steps, rounds=t_max, inversion=mode)
    return out * zz.eps_input_scale(sigmas[-1])  # back to DDIM space, as the reference returns


@pytest.mark.parametrize("mode", ["published", "paper"])
@pytest.mark.parametrize("lambda_steps", [49, 20])
@pytest.mark.parametrize("t_max", [1, 2])
@pytest.mark.parametrize("gamma2", [0.0, 1.0])
def test_matches_diffusers_reference(mode, lambda_steps, t_max, gamma2):
    model = TinyEps()
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    ref = reference_loop(model, noise, 50, 5.5, gamma2, lambda_steps, t_max, mode)
    got = ours(model, noise, 50, 5.5, gamma2, lambda_steps, t_max, mode)
    rel = ((got - ref).norm() / ref.norm()).item()
    assert rel < 1e-4, rel
    # and the reflection really changed the result compared with plain DDIM
    plain = reference_loop(model, noise, 50, 5.5, gamma2, 0, 1, mode)
    assert ((plain - ref).norm() / ref.norm()).item() > 1e-3


def test_modes_differ():
    model = TinyEps()
    noise = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    a = ours(model, noise, 50, 5.5, 0.0, 49, 1, "published")
    b = ours(model, noise, 50, 5.5, 0.0, 49, 1, "paper")
    assert ((a - b).norm() / a.norm()).item() > 1e-3


def test_reference_schedule_levels():
    sched = diffusers.DDIMScheduler.from_config(SDXL_SCHEDULER_CONFIG)
    sched.set_timesteps(50)
    ac = sched.alphas_cumprod.double()
    table = ((1 - ac) / ac).sqrt()
    sig = zz.ddim_reference_sigmas(table, 50)
    assert len(sig) == 51
    assert zz.timestep_of(table, sig[:-1]).tolist() == sched.timesteps.tolist()
    assert abs(sig[-1].item() - 0.0292) < 1e-3
    # a non-divisor step count keeps diffusers' leading spacing
    sched.set_timesteps(30)
    assert zz.timestep_of(table, zz.ddim_reference_sigmas(table, 30)[:-1]).tolist() == sched.timesteps.tolist()
