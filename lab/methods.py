"""Every method of the pack on the lab's models, through the same ``samplers/``
code the ComfyUI nodes use. Each sampler takes start noise (N, 1, 16, 16) and the
prompted digits (N,) and returns images in [-1, 1]-ish (N, 1, 16, 16).

Schedules are the paper's DDIM ones in k-diffusion sigma space
(``zigzag.ddim_reference_sigmas`` on the SD / SDXL scaled-linear table; the
start latent is the reference's unit Gaussian in DDIM space,
``zigzag.unit_noise_start``).
"""

from __future__ import annotations

import torch

from tools.reflect_pack import module
ad = module("samplers.adaptive")
qg = module("samplers.quality_gate")
swg = module("samplers.swg")
w2sd = module("samplers.w2sd")
zz = module("samplers.zigzag")

from .models import SIGMA_TABLE, Model


def ddim_sigmas(steps: int) -> torch.Tensor:
    return zz.ddim_reference_sigmas(SIGMA_TABLE, steps)


def start(noise: torch.Tensor, sigmas: torch.Tensor) -> torch.Tensor:
    return zz.unit_noise_start(noise, sigmas[0])


def standard(model: Model, noise, labels, steps: int, cfg: float):
    """Plain DDIM with CFG (``sample_zigzag`` with lambda 0 is exactly that)."""
    sig = ddim_sigmas(steps)
    d = model.denoiser(labels, cfg)
    return zz.sample_zigzag(d, d, start(noise, sig), sig, lambda_steps=0)


def zigzag(model: Model, noise, labels, steps: int, gamma1: float, gamma2: float, lambda_steps: int,
           rounds: int = 1, inversion: str = "published"):
    """Z-Sampling: zig with gamma_1, zag (inversion) with gamma_2 as ``zag_guidance`` rules."""
    sig = ddim_sigmas(steps)
    g2 = zz.zag_guidance(gamma1, gamma2, inversion)
    return zz.sample_zigzag(model.denoiser(labels, gamma1), model.denoiser(labels, g2), start(noise, sig), sig,
                            lambda_steps=lambda_steps, rounds=rounds, inversion=inversion)


def w2sd_sample(strong: Model, weak: Model, main: Model, noise, labels, steps: int, strong_cfg: float,
                weak_cfg: float, main_cfg: float, inversion: str = "published", reflect_steps=None):
    sig = ddim_sigmas(steps)
    return w2sd.sample_w2sd(strong.denoiser(labels, strong_cfg), weak.denoiser(labels, weak_cfg),
                            main.denoiser(labels, main_cfg), start(noise, sig), sig, inversion=inversion,
                            reflect_steps=reflect_steps)


def swg_denoiser(model: Model, labels, scale: float, crop: int, crops: int, masked: bool, cfg: float = 1.0,
                 size: int = 16):
    """The SlidingWindowGuidance node's patch: ``D_guided + scale * mask * (D_cond - D_crops)``,
    crops conditional at cfg 1 (the paper's SWG / M-SWG), unconditional and unmasked with CFG."""
    wins = swg.windows(size, size, crop, crop, crops, crops)
    with_cfg = cfg != 1.0
    crop_labels = labels if not with_cfg else torch.full_like(labels, 10)
    guided = model.denoiser(labels, cfg)

    def denoise(x, sigma):
        if with_cfg:
            both = model.raw(torch.cat([x, x]), sigma, torch.cat([labels, torch.full_like(labels, 10)]))
            d_cond, d_unc = both.chunk(2)
            d_guided = d_unc + cfg * (d_cond - d_unc)
        else:
            d_cond = d_guided = guided(x, sigma)
        d_crops, weight = swg.crop_prediction(
            lambda xc: model.raw(xc, sigma, crop_labels.repeat(len(wins))), x, wins)
        return d_guided + swg.guidance_term(d_cond, d_crops, scale, weight, masked and not with_cfg)
    return denoise


def swg_sample(model: Model, noise, labels, steps: int, scale: float, crop: int, crops: int, masked: bool,
               cfg: float = 1.0):
    sig = ddim_sigmas(steps)
    d = swg_denoiser(model, labels, scale, crop, crops, masked, cfg)
    return zz.sample_zigzag(d, d, start(noise, sig), sig, lambda_steps=0)


def student_sigmas(teacher_steps: int, levels) -> torch.Tensor:
    """The student's schedule: levels of the teacher's DDIM schedule it was distilled on, then the end."""
    full = ddim_sigmas(teacher_steps)
    return torch.cat([full[list(levels)], full[-1:]])


def student_sample(student: Model, noise, labels, sigmas):
    d = student.denoiser(labels, 1.0)  # guidance is distilled into the student: one evaluation per step
    return zz.sample_zigzag(d, d, start(noise, sigmas), sigmas, lambda_steps=0)


def adaptive_sample(student: Model, teacher: Model, scorer, noise, labels, student_sig, calib_noise,
                    teacher_steps: int, sigma: float, k: int, cfg: float, rollback_noise: torch.Tensor):
    """The adaptive student-teacher scheme (Starodubcev et al. 2023) with the
    scorer as ImageReward: calibrate tau on the student's own samples (k-th
    percentile), sample with the student, refine the samples scoring below tau
    with the teacher from the rollback level (the reference's schedule), keep the rest."""
    cal = student_sample(student, calib_noise, labels, student_sig)
    table = qg.percentile_table(scorer.score(cal, labels).tolist())
    tau = ad.threshold(table, k)
    x = student_sample(student, noise, labels, student_sig)
    scores = scorer.score(x, labels)
    refine, keep = ad.select(scores, tau)
    sig = ad.reference_rollback_sigmas(teacher_steps, sigma, SIGMA_TABLE).float()
    out = x
    if refine:
        idx = torch.tensor(refine)
        xr = ad.rollback_noise(x[idx], rollback_noise[idx], sig[0])
        d = teacher.denoiser(labels[idx], cfg)
        refined = zz.sample_zigzag(d, d, xr, sig, lambda_steps=0)
        out = ad.scatter_back(x[torch.tensor(keep, dtype=torch.long)] if keep else None, refined, keep, refine)
    refined_set = set(refine)
    decisions = [i in refined_set for i in range(len(x))]
    _, executed, _ = ad.rollback_steps(teacher_steps, sigma)
    student_steps = len(student_sig) - 1
    info = {
        "tau": tau, "percentile_table": table, "refined_share": ad.share_refined(decisions),
        "student": x, "scores": scores,
        "measured_evaluations": ad.measured_evaluations(decisions, student_steps, executed, 1, 2 if cfg not in (0, 1) else 1),
        "paper_formula": ad.expected_evaluations(student_steps, executed, k / 100, 1, 2 if cfg not in (0, 1) else 1),
        "rollback_sigmas": [round(float(s), 4) for s in sig],
        "calibration_evaluations": student_steps,
    }
    return out, info
