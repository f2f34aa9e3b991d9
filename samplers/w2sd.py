"""W2SD (Bai, Sugiyama, Xie 2025, "Weak-to-Strong Diffusion with Reflection").

Each reflected step (every step but the last): denoise with the strong side at
sigma_i, invert with the weak side (the model evaluated at sigma_i on the latent
as the DDIM loop holds it, the inversion modes of ``samplers.zigzag``), then the
normal denoising step with the main side. The last step is a plain main step.
A "side" is a guided denoiser ``denoise(x, sigma) -> x0``: a model with its
conditionings and guidance, so weight differences (two models, e.g. a LoRA at
+1.5 / -1.5), pipeline differences (with / without ControlNet) and guidance
differences (Z-Sampling is the case of equal models) are all the same call.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from .zigzag import Denoiser, ScaleFn, cfg_branches, eps_input_scale, euler_step, guidance_branches, sample_zigzag


def evaluations(steps: int, strong_cfg: float, weak_cfg: float, main_cfg: float,
                reflect_steps: Optional[int] = None) -> dict:
    """Batch items through the diffusion model per image with DDIM: ours and
    the reference's (both branches everywhere). Ours: the strong and weak
    sides need one branch at a guidance of 0 or 1; the main side is KSampler's
    CFG, one branch only at 1. ``reflect_steps`` defaults to every step but the
    last."""
    reflected = steps - 1 if reflect_steps is None else reflect_steps
    minimal = reflected * (guidance_branches(strong_cfg) + guidance_branches(weak_cfg)) + steps * cfg_branches(main_cfg)
    reference = reflected * 4 + steps * 2
    return {"minimal": minimal, "reference": reference}


@torch.no_grad()
def sample_w2sd(
    denoise_strong: Denoiser,
    denoise_weak: Denoiser,
    denoise_main: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    inversion: str = "published",
    input_scale: ScaleFn = eps_input_scale,
    reflect_steps: Optional[int] = None,
    callback: Optional[Callable[[dict], None]] = None,
) -> torch.Tensor:
    """W2SD over ``sigmas`` with DDIM (Euler) steps; ``reflect_steps`` defaults
    to every step but the last."""
    n = len(sigmas) - 1
    lam = n - 1 if reflect_steps is None else reflect_steps

    def strong_step(x, i):
        return euler_step(denoise_strong, x, sigmas[i], sigmas[i + 1])

    return sample_zigzag(denoise_main, denoise_weak, x, sigmas, lambda_steps=lam, rounds=1, inversion=inversion,
                         input_scale=input_scale, first_step=strong_step, callback=callback)
