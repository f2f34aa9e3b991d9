"""The reference loops of Z-Sampling and W2SD written with diffusers'
DDIMScheduler / DDIMInverseScheduler (SDXL scheduler config, no download), and
small float64 epsilon models to run them on."""

import torch

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


def cfg(model, scale):
    """eps(x, t) of ``model`` with classifier-free guidance ``scale`` (both branches, as the reference)."""
    def eps(x, t):
        u, c = model(x, t, 0), model(x, t, 1)
        return u + scale * (c - u)
    return eps


def reflection_loop(diffusers, eps_first, eps_weak, eps_main, noise, steps, lambda_steps, t_max, mode):
    """The reference loop: per reflected step, DDIM with ``eps_first``, then
    ``t_max`` times DDIM inversion with ``eps_weak`` and DDIM with ``eps_main``;
    plain DDIM with ``eps_main`` elsewhere. Z-Sampling: first = main = cfg(gamma_1),
    weak = cfg(gamma_2). W2SD: strong, weak, main models."""
    sched = diffusers.DDIMScheduler.from_config(SDXL_SCHEDULER_CONFIG)
    inv = diffusers.DDIMInverseScheduler.from_config(SDXL_SCHEDULER_CONFIG)
    sched.set_timesteps(steps)
    inv.set_timesteps(steps)
    ts = sched.timesteps
    ac = sched.alphas_cumprod.double()
    latents = noise.clone()
    for i, t in enumerate(ts):
        reflect = i < lambda_steps
        nxt = sched.step((eps_first if reflect else eps_main)(latents, t), t, latents).prev_sample
        if reflect:
            for _ in range(t_max):
                eps = eps_weak(nxt, t)
                if mode == "published":
                    # diffusers >= 0.22: step(eps, s, x) maps level s - ratio -> s
                    inv._step_index = None
                    latents = inv.step(eps, ts[i + 1], nxt).prev_sample
                else:
                    # textbook DDIM inversion from t_{i+1} up to t_i
                    a_lo, a_hi = ac[ts[i + 1]], ac[t]
                    x0 = (nxt - (1 - a_lo).sqrt() * eps) / a_lo.sqrt()
                    latents = a_hi.sqrt() * x0 + (1 - a_hi).sqrt() * eps
                sched._step_index = None
                nxt = sched.step(eps_main(latents, t), t, latents).prev_sample
        latents = nxt
    return latents


def sigma_space(diffusers, steps):
    """(sigma table, reference sigmas) in float64 for the SDXL scheduler."""
    from tools.reflect_pack import module
    zz = module("samplers.zigzag")
    sched = diffusers.DDIMScheduler.from_config(SDXL_SCHEDULER_CONFIG)
    ac = sched.alphas_cumprod.double()
    table = ((1 - ac) / ac).sqrt()
    ts = zz.timestep_of(table, zz.ddim_reference_sigmas(table, steps)[:-1])
    return table, torch.cat([table[ts], table[:1]])


def denoiser(table, eps_fn):
    """ComfyUI-style denoiser D(x, sigma) of an epsilon function eps(x_ddim, t)."""
    from tools.reflect_pack import module
    zz = module("samplers.zigzag")

    def denoise(x, sigma):
        return x - sigma * eps_fn(x * zz.eps_input_scale(sigma), zz.timestep_of(table, sigma))
    return denoise
