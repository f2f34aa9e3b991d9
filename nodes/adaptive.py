"""ComfyUI node for the adaptive student-teacher scheme (samplers/adaptive.py).

``AdaptiveStudentTeacher`` takes the student's samples as a LATENT (from any
KSampler / SamplerCustom graph of a few-step model: LCM, Turbo, SDXS, a YOSO
LoRA, ...), decodes them with the student's VAE, scores them with ImageReward
against their prompts, and sends only the samples below the threshold to the
teacher, as one sub-batch:

* ``refine`` (the reference's algorithm): a ComfyUI img2img of the teacher from
  the student's sample, noised back to the rollback level of strength ``sigma``.
  The reference asks the teacher for ``int(teacher_steps / sigma + 1)`` steps and
  runs the last ``int(N * sigma)`` of them (``rollback_schedule`` = ``reference``);
  ComfyUI's own KSampler denoise schedules ``int(steps / denoise)`` (``comfy``).
  Either way it is ComfyUI's KSampler path (same seed, noise, sampler,
  scheduler, previews) on the sub-batch, with the noise each sample would get
  at its position in the full batch.
* ``regenerate``: the teacher samples those positions again from pure noise
  (text-to-image, ``teacher_steps`` steps).

The other samples are returned bit for bit, and every output is in the
original batch order. Student and teacher sharing a latent format stay in latent
space; when ``teacher_vae`` is connected (another format, e.g. an SD1.5 student
and an SDXL teacher), the teacher works on its VAE's encoding of the student's
images and the returned LATENT is in the teacher's format for every sample.
"""

from __future__ import annotations

import json

import torch

import comfy.samplers
import nodes as comfy_nodes
from comfy_api.latest import io

from ..samplers import adaptive as ad
from . import compat as glue
from . import quality_gate as qgn
from .quality_gate import GateType, QualityModelType, split_prompts

STRATEGIES = ("refine", "regenerate")
ROLLBACK_SCHEDULES = ("reference", "comfy")
MAX_SEED = 0xFFFFFFFFFFFFFFFF


class _CountCalls:
    """A model_function_wrapper counting diffusion-model calls (chaining any existing wrapper)."""

    def __init__(self, inner=None):
        self.inner, self.calls = inner, 0

    def __call__(self, apply_model, args):
        self.calls += 1
        if self.inner is not None:
            return self.inner(apply_model, args)
        return apply_model(args["input"], args["timestep"], **args["c"])


def counted(model):
    """A clone of ``model`` whose diffusion-model calls are counted (the user's MODEL is untouched)."""
    m = model.clone()
    counter = _CountCalls(m.model_options.get("model_function_wrapper"))
    m.set_model_unet_function_wrapper(counter)
    return m, counter


def rollback_plan(teacher_steps: int, sigma: float, schedule: str) -> tuple[int, float, int]:
    """(steps, denoise, scheduled) for ComfyUI's KSampler so that it runs the
    rollback: ``reference``: the last ``int(N*sigma)`` of ``N = int(T/sigma + 1)``
    steps (as the reference's img2img); ``comfy``: KSampler(T, denoise=sigma)."""
    if schedule == "reference":
        scheduled, executed, _ = ad.rollback_steps(teacher_steps, sigma)
        return executed, ad.comfy_denoise_for(scheduled, executed), scheduled
    if schedule == "comfy":
        scheduled, executed = ad.comfy_denoise_steps(teacher_steps, sigma)
        return executed, float(sigma), scheduled
    raise ValueError(f"rollback_schedule must be one of {ROLLBACK_SCHEDULES} (got {schedule!r})")


def _latent_channels(model) -> int:
    return int(getattr(model.get_model_object("latent_format"), "latent_channels", 4))


class AdaptiveStudentTeacher(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="AdaptiveStudentTeacher",
            display_name="Adaptive Student-Teacher",
            category="sampling/reflect",
            description="Starodubcev et al. 2023: the student's samples are scored with ImageReward; only those "
                        "below the threshold (paper: the 50th percentile of the student's scores) go to the teacher, "
                        "as one sub-batch: refined from the rollback level sigma (img2img) or regenerated. The rest "
                        "are returned unchanged, all in the original order. Paper: LCM-SDXL 4 steps -> SDXL base 12 "
                        "steps UniPC, sigma 0.7; SDXL-Turbo 2 steps -> SDXL refiner 4 steps, sigma 0.3; k 50.",
            inputs=[
                io.Latent.Input("samples", tooltip="The student's samples (e.g. a KSampler with LCM / Turbo)."),
                io.Vae.Input("student_vae", tooltip="VAE of the student's latent format (decodes for the scorer)."),
                io.Int.Input("student_steps", default=4, min=1, max=1000,
                             tooltip="Steps the student ran (for the cost report only; paper: 4 LCM, 2 Turbo)."),
                QualityModelType.Input("image_reward", display_name="quality_model",
                                       tooltip="From Load Quality Model (paper: ImageReward) or Load ImageReward."),
                io.String.Input("prompt", multiline=True, default="", tooltip="The prompt the samples were made from."),
                io.Boolean.Input("prompt_per_line", default=False,
                                 tooltip="One prompt per line, one line per sample (a single line serves all)."),
                io.Model.Input("teacher_model", tooltip="The teacher (paper: SDXL base, or SDXL refiner)."),
                io.Conditioning.Input("teacher_positive", tooltip="The teacher's positive conditioning."),
                io.Conditioning.Input("teacher_negative", tooltip="The teacher's negative conditioning."),
                io.Int.Input("seed", default=0, min=0, max=MAX_SEED, control_after_generate=True,
                             tooltip="Seed of the teacher's noise (each sample gets the noise of its batch position)."),
                io.Int.Input("teacher_steps", default=12, min=1, max=1000,
                             tooltip="Steps the teacher executes (paper: 12 with SDXL base, 4 with the refiner)."),
                io.Float.Input("teacher_cfg", default=8.0, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="The teacher's guidance (reference: 8)."),
                io.Combo.Input("teacher_sampler", options=comfy.samplers.KSampler.SAMPLERS, default="uni_pc",
                               tooltip="The teacher's sampler (reference: UniPC)."),
                io.Combo.Input("teacher_scheduler", options=comfy.samplers.KSampler.SCHEDULERS, default="normal",
                               tooltip="The teacher's scheduler."),
                io.Float.Input("sigma", default=0.7, min=0.0, max=1.0, step=0.01,
                               tooltip="Rollback strength in (0, 1]: how far back the teacher noises a sample "
                                       "(img2img denoise; paper: 0.7 SDXL base, 0.3 refiner). Ignored by regenerate."),
                io.Combo.Input("strategy", options=list(STRATEGIES), default="refine",
                               tooltip="refine: img2img of the teacher from the student's sample (the reference); "
                                       "regenerate: the teacher samples from pure noise."),
                io.Combo.Input("rollback_schedule", options=list(ROLLBACK_SCHEDULES), default="reference",
                               tooltip="reference: int(steps/sigma + 1) scheduled steps, the last int(N*sigma) run "
                                       "(as the reference's img2img); comfy: KSampler's denoise (int(steps/sigma))."),
                *qgn.threshold_inputs("Samples scoring below this go to the teacher",
                                      "; about k% of the student's samples go to the teacher"),
                io.Vae.Input("teacher_vae", optional=True,
                             tooltip="Only when the teacher uses another latent format than the student (e.g. SD1.5 "
                                     "student, SDXL teacher): its VAE encodes the student's images for it."),
                io.Model.Input("student_model", optional=True,
                               tooltip="Optional: the student model, to check the latent formats match."),
            ],
            outputs=[
                io.Image.Output("images", display_name="images", tooltip="Final images, in the original order."),
                io.Latent.Output("latent", display_name="latent",
                                 tooltip="Final latents (the teacher's format when teacher_vae is connected)."),
                GateType.Output("gate", display_name="gate",
                                tooltip="Scores, threshold, which samples were kept (passed) and refined (failed)."),
                io.String.Output("report", display_name="report",
                                 tooltip="JSON: scores, refined, model evaluations per image against the paper's "
                                         "formula."),
            ],
        )

    @classmethod
    def validate_inputs(cls, sigma=None, strategy=None, teacher_sampler=None, teacher_scheduler=None,
                        rollback_schedule=None):
        # Only the inputs cross-checked here and the dropdowns (glue.combos_checked) are named: ComfyUI's own
        # type, range and dropdown checks run on all the others, and skip these, so they are made here as
        # ComfyUI words them.
        error, v = glue.named_inputs(cls, sigma=sigma, strategy=strategy, teacher_sampler=teacher_sampler,
                                     teacher_scheduler=teacher_scheduler, rollback_schedule=rollback_schedule)
        if error:
            return error
        sigma = v["sigma"]
        if sigma is not None and strategy != "regenerate" and not (0.0 < sigma <= 1.0):
            return f"sigma ({sigma}) must be in (0, 1]"
        return True

    @classmethod
    def execute(cls, samples, student_vae, student_steps, image_reward, prompt, prompt_per_line, teacher_model,
                teacher_positive, teacher_negative, seed, teacher_steps, teacher_cfg, teacher_sampler,
                teacher_scheduler, sigma, strategy, rollback_schedule, threshold, k, percentiles=None,
                teacher_vae=None, student_model=None) -> io.NodeOutput:
        if strategy not in STRATEGIES:
            raise ValueError(f"strategy must be one of {STRATEGIES} (got {strategy!r})")
        x = samples["samples"]
        glue.check_samples(x, "samples")
        n = x.shape[0]
        if strategy == "refine":
            steps, denoise, scheduled = rollback_plan(teacher_steps, sigma, rollback_schedule)
        else:
            steps, denoise, scheduled = int(teacher_steps), 1.0, int(teacher_steps)
        _check_formats(x, student_vae, teacher_model, teacher_vae, student_model)
        tau = qgn.threshold_of(threshold, k, percentiles, image_reward)
        prompts = split_prompts(prompt, prompt_per_line, n)

        images = glue.run_naming("samples", x.shape, lambda: comfy_nodes.VAEDecode().decode(student_vae, samples)[0],
                                 (RuntimeError, ValueError))
        scores = image_reward.score(images, prompts)
        gate = qgn.make_gate(scores, tau, k, percentiles)
        refine_idx = gate["failed_indices"]

        # the teacher's view of the samples: the same latents, or its VAE's encoding of the images
        cross = teacher_vae is not None and teacher_vae is not student_vae
        t_latent = comfy_nodes.VAEEncode().encode(teacher_vae, images)[0]["samples"] if cross else x
        out_latent, out_images, teacher_calls = t_latent.clone(), images.clone(), 0
        if refine_idx:
            positions = samples.get("batch_index", list(range(n)))
            sub = {"samples": t_latent[refine_idx] if strategy == "refine" else torch.zeros_like(t_latent[refine_idx]),
                   "batch_index": [positions[i] for i in refine_idx]}
            if "noise_mask" in samples:
                mask = samples["noise_mask"]
                sub["noise_mask"] = mask[[i % mask.shape[0] for i in refine_idx]]
            model, counter = counted(teacher_model)
            refined = glue.run_naming("samples", sub["samples"].shape, lambda: comfy_nodes.common_ksampler(
                model, seed, steps, teacher_cfg, teacher_sampler, teacher_scheduler, teacher_positive,
                teacher_negative, sub, denoise=denoise)[0])
            glue.check_result(refined["samples"], "teacher_cfg / sigma")
            teacher_calls = counter.calls
            r = refined["samples"].to(out_latent)
            out_latent[refine_idx] = r
            out_images[refine_idx] = comfy_nodes.VAEDecode().decode(teacher_vae if cross else student_vae,
                                                                    {"samples": r})[0].to(out_images)

        refined_mask = [not ok for ok in gate["passed"].tolist()]
        per_image = student_steps + teacher_calls * len(refine_idx) / n
        share = len(refine_idx) / n
        report = {
            "scores": [round(float(s), 6) for s in scores], "threshold": tau, "refined": refined_mask,
            "estimator": image_reward.name,
            "strategy": strategy, "teacher_steps_executed": steps, "teacher_steps_scheduled": scheduled,
            "teacher_calls": teacher_calls, "share_refined": share,
            "evaluations_per_image": per_image,
            "paper_formula": ad.expected_evaluations(student_steps, steps, share),
            "expected_at_k": (ad.expected_evaluations(student_steps, steps, int(k) / 100)
                              if percentiles is not None and 0 <= k <= 100 else None),
        }
        out = {k_: v for k_, v in samples.items() if k_ not in ("samples", "noise_mask", "downscale_ratio_spacial")}
        out["samples"] = out_latent
        ui = {"reflect_scores": report["scores"], "reflect_threshold": [tau], "reflect_passed": gate["passed"].tolist(),
              "reflect_refined": refined_mask,
              "text": [f"{len(refine_idx)}/{n} refined, {per_image:.2f} evaluations per image "
                       f"(formula {report['paper_formula']:.2f})"]}
        return io.NodeOutput(out_images, out, gate, json.dumps(report), ui=ui)


def _check_formats(x, student_vae, teacher_model, teacher_vae, student_model):
    """Clear errors for a student / teacher / VAE combination that cannot work."""
    vae_ch = getattr(student_vae, "latent_channels", x.shape[1])
    if x.shape[1] != vae_ch:
        raise ValueError(f"student_vae: decodes {vae_ch}-channel latents, the samples have {x.shape[1]} channels")
    t_ch = _latent_channels(teacher_model)
    if teacher_vae is not None:
        tv = getattr(teacher_vae, "latent_channels", t_ch)
        if tv != t_ch:
            raise ValueError(f"teacher_vae: makes {tv}-channel latents, the teacher_model takes {t_ch}")
        return
    if t_ch != x.shape[1]:
        raise ValueError(f"teacher_model: takes {t_ch}-channel latents, the student's samples have {x.shape[1]}: "
                         "connect teacher_vae (the teacher's VAE) to encode the student's images for it")
    if student_model is not None:
        s_fmt = type(student_model.get_model_object("latent_format"))
        t_fmt = type(teacher_model.get_model_object("latent_format"))
        if s_fmt is not t_fmt:
            raise ValueError(f"teacher_model: its latent format ({t_fmt.__name__}) is not the student's "
                             f"({s_fmt.__name__}): connect teacher_vae (the teacher's VAE)")


NODES = [AdaptiveStudentTeacher]
