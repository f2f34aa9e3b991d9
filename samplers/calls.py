"""Model calls of ComfyUI's samplers: the one table the pack counts with.

The reflecting nodes follow the sampler's calls step by step (to find where a
step starts), size their progress bars with them, and the frontend's cost lines
(js/cost.js ``samplerEvals``, checked against this module by
tests/test_sampler_calls.py) count them. Read off k_diffusion/sampling.py of
ComfyUI 0.3.64 and 0.17.0; tests/host/test_composition_host.py counts the
calls of every sampler of the running ComfyUI against it.
"""

from __future__ import annotations

from typing import Sequence

# Calls per step of the samplers that make more than one; every other sampler makes one.
CALLS_PER_STEP = {
    "heun": 2, "heunpp2": 3, "dpm_2": 2, "dpm_2_ancestral": 2, "dpmpp_2s_ancestral": 2,
    "dpmpp_2s_ancestral_cfg_pp": 2, "dpmpp_sde": 2, "dpmpp_sde_gpu": 2, "exp_heun_2_x0": 2,
    "exp_heun_2_x0_sde": 2, "seeds_2": 2, "seeds_3": 3, "sa_solver_pece": 2,
}

# Samplers that do not step along the sigmas they are given (DPM-Solver's own time grid, or adaptive
# step sizes): there is no step i at sigma_i (dpm_fast makes one call per step of its own grid, dpm_adaptive
# as many as its error control needs).
OFF_SCHEDULE = ("dpm_fast", "dpm_adaptive")

# Samplers whose model input at the start of a step is not the latent they step: uni_pc evaluates a rescaled
# copy of its own latent, sa_solver evaluates its prediction and then corrects from the previous latent. A
# reflection written into that input would be lost or mixed with the unreflected latent.
STATE_NOT_INPUT = ("uni_pc", "uni_pc_bh2", "sa_solver", "sa_solver_pece")


def calls_in_step(sampler_name: str, sigmas: Sequence, i: int) -> int:
    """Model calls ``sampler_name`` makes in step i of ``sigmas`` (sigma_i -> sigma_{i+1}).

    A multi-call step into sigma = 0 falls back to one call (an Euler step);
    heunpp2 compares with the schedule's last sigma instead, whatever it is: one
    call into it, two with one step left, three before; sa_solver_pece has no
    corrector call in its first step and keeps it for the step into 0."""
    if sampler_name == "sa_solver_pece":
        return 1 if i == 0 else 2
    if sampler_name == "heunpp2":
        return min(3, len(sigmas) - 1 - i)
    if sigmas[i + 1] == 0:
        return 1
    return CALLS_PER_STEP.get(sampler_name, 1)


def run_calls(sampler_name: str, steps: int, ends_at_zero: bool = True) -> int:
    """Model calls of one run of ``sampler_name`` over ``steps`` steps whose last sigma is 0 (every ComfyUI
    scheduler) or not (the ddim_reference schedule)."""
    sigmas = [float(steps - k + 1) for k in range(steps)] + [0.0 if ends_at_zero else 0.5]
    return sum(calls_in_step(sampler_name, sigmas, i) for i in range(steps))
