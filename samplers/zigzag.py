"""Z-Sampling (Bai et al., "Zigzag Diffusion Sampling", ICLR 2025), in k-diffusion form.

Conventions (those of k-diffusion and ComfyUI):

* ``x`` is the sampler's latent at noise level ``sigma``; ``sigmas`` is the
  descending schedule ``sigma_0 > ... > sigma_N``.
* ``denoise(x, sigma)`` returns the guided prediction of the clean latent (the
  "denoised" of k-diffusion). Z-Sampling needs two of them: ``denoise_zig`` with
  the denoising guidance gamma_1 and ``denoise_zag`` with the inversion guidance
  gamma_2.
* ``input_scale(sigma)`` is the factor the model applies to its input at
  ``sigma`` (``c_in``): ``1/sqrt(1 + sigma^2)`` for epsilon and v models,
  ``1/sqrt(sigma^2 + sigma_data^2)`` for EDM, ``1`` for flow models. For
  epsilon models ``c_in(sigma) * x`` is the latent as a DDIM loop holds it
  (``sqrt(alpha_bar) x0 + sqrt(1 - alpha_bar) eps``); we call this the
  *network space*.

The algorithm (paper, Alg. 1), for each of the first ``lambda_steps`` steps i:

1. zig: one denoising step sigma_i -> sigma_{i+1} with gamma_1;
2. ``rounds`` times: zag, an inversion step back up with gamma_2, where the
   model is evaluated at the higher level sigma_i on the latent exactly as the
   DDIM loop holds it (same network input, higher timestep); then zig again;

and the remaining steps are plain denoising steps.

The inversion is the DDIM step run upwards: with ``d = (x_in - D(x_in, s)) / s``
(epsilon for epsilon models, the velocity for flow models), a latent in
network space ``u`` read at level ``a`` and written at level ``b`` is

    u_b = c_in(b) * (u / c_in(a) + (b - a) * d).

Two inversion modes:

``"paper"``      a = sigma_{i+1}, b = sigma_i: the inversion as the paper
                 writes it (what ``DDIMInverseScheduler.step(eps, t_{i+1}, x)``
                 computed in diffusers <= 0.21.4).
``"published"``  a = sigma_{i+2}, b = sigma_{i+1}: what the reference code
                 computes under the diffusers it pins (0.22.3), where
                 ``DDIMInverseScheduler.step(eps, s, x)`` maps level s-ratio -> s,
                 so the call ``step(eps, t_{i+1}, x)`` reads the latent as one
                 step lower than it is and returns it at t_{i+1}; the next zig
                 then reads it as level t_i. This is what produced the published
                 results and is the default.

In both modes the following zig reads the latent in network space at level
sigma_i: ``x = u_b / c_in(sigma_i)``.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
ScaleFn = Callable[[torch.Tensor], torch.Tensor]

INVERSION_MODES = ("published", "paper")


def eps_input_scale(sigma: torch.Tensor) -> torch.Tensor:
    """c_in of epsilon / v-prediction models (sigma_data = 1)."""
    return 1.0 / torch.sqrt(1.0 + sigma * sigma)


def zag_guidance(gamma1: float, gamma2: float, inversion: str) -> float:
    """Guidance the inversion actually uses.

    The reference turns classifier-free guidance off altogether when
    gamma_1 <= 1 (``do_classifier_free_guidance = guidance_scale > 1``); the
    inversion then runs on the conditional branch and gamma_2 is ignored. The
    ``published`` mode reproduces that; the ``paper`` mode uses gamma_2 as given.
    """
    if inversion == "published" and gamma1 <= 1.0:
        return 1.0
    return gamma2


def cfg_branches(g: float) -> int:
    """CFG branches KSampler's CFG evaluates at guidance ``g``: one only at 1."""
    return 1 if g == 1.0 else 2


def guidance_branches(g: float) -> int:
    """Branches an evaluation at a guidance the pack sets needs: only the
    unconditional one at 0, only the conditional one at 1."""
    return 1 if g in (0.0, 1.0) else 2


def evaluations(steps: int, lambda_steps: int, rounds: int, gamma1: float, gamma2: float,
                inversion: str = "published", sampler_calls: Optional[int] = None) -> dict:
    """Batch items through the diffusion model per image (CFG branches counted).

    ``minimal``: ours. The zig is KSampler's CFG (one branch only at a
    guidance of 1); the zag needs only the unconditional branch at a guidance
    of 0 and only the conditional one at 1. ``reference``: the reference code,
    which runs both branches whenever gamma_1 > 1. ``sampler_calls``: model calls of
    the base sampler's run over the ``steps`` (samplers/calls.py run_calls; default
    one per step, as DDIM).
    """
    g2 = zag_guidance(gamma1, gamma2, inversion)
    plain = steps if sampler_calls is None else sampler_calls
    zig = cfg_branches(gamma1)  # a reflection's zig is one model call, whatever the sampler
    zag = guidance_branches(g2)
    minimal = plain * zig + lambda_steps * rounds * (zag + zig)
    ref_b = 2 if gamma1 > 1.0 else 1
    reference = plain * ref_b + lambda_steps * rounds * 2 * ref_b
    calls = plain + lambda_steps * rounds * 2
    return {"minimal": minimal, "reference": reference, "model_calls": calls, "plain_calls": plain}


def check_args(steps: Optional[int], lambda_steps: int, rounds: int, inversion: str) -> None:
    """Raise ValueError naming the bad input (``steps`` None: not known yet)."""
    if steps is not None and steps < 1:
        raise ValueError(f"steps must be >= 1 (got {steps})")
    if lambda_steps < -1:
        raise ValueError(f"zigzag_steps (lambda) must be >= 0, or -1 for every step but the last "
                         f"(got {lambda_steps})")
    if steps is not None:
        lambda_steps = resolve_steps(lambda_steps, steps)
    if steps is not None and lambda_steps >= steps and lambda_steps > 0:
        raise ValueError(f"zigzag_steps (lambda) must be smaller than the number of sampling steps "
                         f"(got lambda={lambda_steps}, steps={steps}); the paper uses steps - 1")
    if rounds < 1:
        raise ValueError(f"rounds (T_max) must be >= 1 (got {rounds})")
    if inversion not in INVERSION_MODES:
        raise ValueError(f"inversion must be one of {INVERSION_MODES} (got {inversion!r})")


def euler_step(denoise: Denoiser, x: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
    """One DDIM (eta = 0) step written on the prediction: ``D + (x - D) sigma_next / sigma``."""
    denoised = denoise(x, sigma)
    return denoised + (x - denoised) * (sigma_next / sigma)


def zig(denoise: Denoiser, x: torch.Tensor, sigma: torch.Tensor, sigma_next: torch.Tensor) -> torch.Tensor:
    """Zig: one denoising step sigma -> sigma_next, DDIM (eta = 0), i.e. Euler in
    sigma space (k-diffusion's ``sample_euler`` step, operation for operation)."""
    d = (x - denoise(x, sigma)) / sigma  # epsilon (flow models: the velocity)
    return x + d * (sigma_next - sigma)


def zag(denoise: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, i: int, inversion: str = "published",
        input_scale: ScaleFn = eps_input_scale) -> torch.Tensor:
    """Zag: the inversion of step i, ``x`` at sigma_{i+1} back up to sigma_i.

    The model reads the latent as the DDIM loop holds it (u = c_in(s_{i+1}) x) at
    the higher level s_i; the DDIM step runs upwards from level a to level b:
    u_b = c_in(b) (u / c_in(a) + (b - a) d), returned in sigma space at s_i.
    """
    s, s_next = sigmas[i], sigmas[i + 1]
    a, b = (s_next, s) if inversion == "paper" else (sigmas[i + 2], s_next)
    c_s, c_next, c_a, c_b = input_scale(s), input_scale(s_next), input_scale(a), input_scale(b)
    x_in = x * (c_next / c_s)  # same network input, higher timestep
    d = (x_in - denoise(x_in, s)) / s
    u = x * c_next
    return (u / c_a + (b - a) * d) * (c_b / c_s)


def reflect(denoise_zig: Denoiser, denoise_zag: Denoiser, x: torch.Tensor, sigmas: torch.Tensor, i: int,
            rounds: int = 1, inversion: str = "published", input_scale: ScaleFn = eps_input_scale,
            denoise_first: Optional[Denoiser] = None) -> torch.Tensor:
    """The reflection of step i (paper, Alg. 1): zig down to sigma_{i+1}, zag back
    up to sigma_i, ``rounds`` times; returns x~_i at sigma_i, from which the
    step's kept zig is taken. ``denoise_first`` (default ``denoise_zig``) makes
    the first zig (W2SD: the strong side)."""
    x = zig(denoise_first or denoise_zig, x, sigmas[i], sigmas[i + 1])
    for r in range(rounds):
        x = zag(denoise_zag, x, sigmas, i, inversion, input_scale)
        if r + 1 < rounds:
            x = zig(denoise_zig, x, sigmas[i], sigmas[i + 1])
    return x


def resolve_steps(lambda_steps: int, n_steps: int) -> int:
    """zigzag_steps with the sentinel -1 ("every step but the last", the paper's setting) resolved."""
    return max(n_steps - 1, 0) if lambda_steps == -1 else lambda_steps


@torch.no_grad()
def sample_zigzag(
    denoise_zig: Denoiser,
    denoise_zag: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    lambda_steps: int = -1,
    rounds: int = 1,
    inversion: str = "published",
    input_scale: ScaleFn = eps_input_scale,
    callback: Optional[Callable[[dict], None]] = None,
    first_step: Optional[Callable[[torch.Tensor, int], torch.Tensor]] = None,
) -> torch.Tensor:
    """Z-Sampling over ``sigmas`` with DDIM steps: each of the first
    ``lambda_steps`` steps (-1: all but the last) is reflected, then its kept
    zig taken; ``callback({"i", "x", "sigma"})`` after every step.
    ``first_step(x, i)``, when given, makes the first zig of a reflected step
    (W2SD: the strong model)."""
    n = len(sigmas) - 1
    lam = resolve_steps(lambda_steps, n)
    for i in range(n):
        if i < lam:
            if first_step is None:
                x = reflect(denoise_zig, denoise_zag, x, sigmas, i, rounds, inversion, input_scale)
            else:
                x = first_step(x, i)
                for r in range(rounds):
                    x = zag(denoise_zag, x, sigmas, i, inversion, input_scale)
                    if r + 1 < rounds:
                        x = zig(denoise_zig, x, sigmas[i], sigmas[i + 1])
        x = zig(denoise_zig, x, sigmas[i], sigmas[i + 1])
        if callback is not None:
            callback({"i": i, "x": x, "sigma": sigmas[i]})
    return x


def ddim_reference_sigmas(model_sigmas: torch.Tensor, steps: int, denoise: float = 1.0,
                          steps_offset: int = 1) -> torch.Tensor:
    """The reference DDIM schedule in sigma space.

    ``model_sigmas`` is the model's table of sigma per training timestep
    (``sqrt((1 - alpha_bar_t) / alpha_bar_t)``, index = timestep). Timesteps are
    diffusers' "leading" spacing with ``steps_offset`` (981, 961, ..., 1 for 50
    of 1000), and the last step goes to alpha_bar[0] (``set_alpha_to_one``
    False), i.e. to ``model_sigmas[0]`` rather than 0. With ``denoise < 1`` the
    last ``steps`` of a ``int(steps / denoise)``-step schedule are used, as
    ComfyUI's KSampler does.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1 (got {steps})")
    total = steps if denoise >= 0.9999 else int(steps / denoise)
    num_train = len(model_sigmas)
    ratio = num_train // total
    if ratio < 1:
        raise ValueError(f"steps ({total}) exceeds the model's {num_train} training timesteps")
    ts = [k * ratio + steps_offset for k in range(total)][::-1]
    ts = [min(t, num_train - 1) for t in ts]
    sig = torch.cat([model_sigmas[ts].float(), model_sigmas[:1].float()])
    return sig[-(steps + 1):]


def timestep_of(model_sigmas: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Nearest training timestep of ``sigma`` (log-sigma distance)."""
    d = (torch.log(sigma.reshape(-1, 1).float()) - torch.log(model_sigmas.float()).reshape(1, -1)).abs()
    return d.argmin(dim=1)


def unit_noise_start(noise: torch.Tensor, sigma0: torch.Tensor, input_scale: ScaleFn = eps_input_scale):
    """The reference's start latent: a unit Gaussian in network (DDIM) space,
    i.e. ``noise / c_in(sigma_0)`` in sigma space."""
    return noise / input_scale(sigma0)


__all__ = [
    "INVERSION_MODES", "eps_input_scale", "zag_guidance", "evaluations", "check_args", "euler_step",
    "zig", "zag", "reflect", "resolve_steps", "sample_zigzag", "ddim_reference_sigmas", "timestep_of", "unit_noise_start",
]
