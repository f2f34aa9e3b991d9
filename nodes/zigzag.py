"""ComfyUI nodes for Z-Sampling (samplers/zigzag.py).

* ``ZigzagKSampler``: all in one, inputs like KSampler plus gamma_2, lambda, T_max.
* ``SamplerZigzag``: a SAMPLER for SamplerCustomAdvanced; gamma_1 is the
  guider's cfg, so it composes with CFGGuider, model patches, ControlNet and
  hooks on the conditionings.
* ``ZigzagReferenceScheduler``: the paper's DDIM schedule as SIGMAS.
"""

from __future__ import annotations

import torch

import comfy.samplers
from comfy_api.latest import io

from ..samplers import calls, zigzag as zz
from . import compat as glue

REFERENCE_SCHEDULER = "ddim_reference"
CATEGORY = "sampling/reflect"

SAMPLER_RULE = ("Any sampler: it runs once over the whole schedule, with its own noise and multistep history; "
                "before each reflected step a DDIM zig at cfg and a zag at inversion_cfg reflect its latent, and its "
                "own step is the kept zig (refused: dpm_fast and dpm_adaptive, which pick their own noise levels, and "
                "uni_pc, uni_pc_bh2, sa_solver and sa_solver_pece, which evaluate the model on a copy of their latent).")

INVERSION_TOOLTIP = (
    "How the zag (inversion) step maps noise levels. 'published': what the reference code computes under the "
    "diffusers it pins (0.22.3) and what produced the paper's results: the latent is read one step lower than it "
    "is and returned at the lower level, then re-read at the higher one. 'paper': the inversion as the paper "
    "writes it, from the lower level back to the higher one. In 'published' mode a cfg <= 1 turns guidance off "
    "altogether, as in the reference, and inversion_cfg is then ignored.")


def model_calls(sampler_name: str, sigmas, reflected_steps: int, rounds: int = 1) -> int:
    """Model evaluations of a reflection run over ``sigmas`` (the length of its progress bar)."""
    n = len(sigmas) - 1
    plain = calls.run_calls(sampler_name, n, ends_at_zero=bool(sigmas[-1] == 0))
    return zz.evaluations(n, reflected_steps, rounds, 2.0, 2.0, sampler_calls=plain)["model_calls"]


class ZigzagSampler(comfy.samplers.KSAMPLER):
    """A ComfyUI SAMPLER running Z-Sampling around a base sampler.

    The first ``lambda_steps`` steps are reflected (zig with the base sampler
    at the guider's cfg, zag with ``gamma2``); the rest run with the base
    sampler in one call, so with ``lambda_steps = 0`` this is exactly the base
    sampler.
    """

    def __init__(self, sampler_name, gamma2: float, lambda_steps: int, rounds: int, inversion: str,
                 reference_scaling: bool = False):
        zz.check_args(None, lambda_steps, rounds, inversion)
        self.base, self.sampler_name = glue.base_sampler(sampler_name)
        self.refuse_unreflectable(lambda_steps)
        super().__init__(self._sample, inpaint_options=self.base.inpaint_options)
        self.gamma2, self.lambda_steps, self.rounds = float(gamma2), int(lambda_steps), int(rounds)
        self.inversion, self.reference_scaling = inversion, bool(reference_scaling)
        self._unit_start, self._callback, self._guider, self._total = False, None, None, 1

    def refuse_unreflectable(self, reflected: int) -> None:
        refused = glue.check_reflectable(self.sampler_name, reflected)
        if refused is not True:
            raise ValueError(refused)

    def max_denoise(self, model_wrap, sigmas):
        # reference start of text-to-image: a unit Gaussian in DDIM space, noise * sqrt(1 + sigma^2).
        # (img2img keeps ComfyUI's x0 + sigma * noise, which is the reference's add_noise.)
        return True if self._unit_start else super().max_denoise(model_wrap, sigmas)

    def reflected_steps(self, n_steps: int) -> int:
        return zz.resolve_steps(self.lambda_steps, n_steps)

    def total_calls(self, sigmas) -> int:
        return model_calls(self.sampler_name, sigmas, self.reflected_steps(len(sigmas) - 1), self.rounds)

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        n = len(sigmas) - 1
        zz.check_args(n, self.reflected_steps(n), self.rounds, self.inversion)
        glue.check_samples(latent_image if latent_image is not None else noise, "latent_image")
        self._callback, self._total = callback, self.total_calls(sigmas)
        self._guider = model_wrap
        self._unit_start = self.reference_scaling and (latent_image is None or not torch.count_nonzero(latent_image))
        try:
            # KSAMPLER.sample passes our callback through its own k_callback; ours reports per evaluation
            return glue.run_naming("latent_image", noise.shape, lambda: super(ZigzagSampler, self).sample(
                model_wrap, sigmas, extra_args, None, noise, latent_image, denoise_mask, disable_pbar))
        finally:
            self._callback = self._guider = None
            self._unit_start = False

    def role_args(self, extra_args: dict) -> dict:
        """extra_args of the model evaluations of each role: "zig" (what the base sampler is run with: its kept
        steps), "zag" (the inversion) and "first" (the first zig of a reflected step; None: as the sampler's
        own call). For a role's evaluation, its model_options entries that differ from "zig"'s are laid over
        what the sampler passes in that call (so a sampler's own per-call hooks stay)."""
        zag_args = dict(extra_args)
        zag_args["model_options"] = {**extra_args.get("model_options", {}), glue.ZAG_KEY: True}
        return {"zig": extra_args, "zag": zag_args, "first": None}

    def evaluator(self, model_k):
        """What the sampler evaluates: model_k, with zag evaluations at gamma_2 without CFG patches."""
        gamma1 = glue.guider_cfg(self._guider)
        return glue.ZagDispatch(model_k, self._guider, zz.zag_guidance(gamma1, self.gamma2, self.inversion))

    def _sample(self, model_k, x, sigmas, extra_args=None, callback=None, disable=None):
        extra_args = {} if extra_args is None else extra_args
        model = glue.EvalProgress(self.evaluator(model_k), self._callback, self._total)
        c_in = glue.input_scale_fn(model_k.inner_model.inner_model.model_sampling)
        args = self.role_args(extra_args)
        lam = zz.resolve_steps(self.reflected_steps(len(sigmas) - 1), len(sigmas) - 1)
        reflecting = Reflector(model, sigmas, lam, self.rounds, self.inversion, c_in, args, self.sampler_name)
        out = glue.run_sampler(self.base, reflecting, x, sigmas, args["zig"], reflecting.step_done)
        if self.reference_scaling and sigmas[-1] > 0:
            # the reference returns the DDIM-space latent at alpha_bar[0]
            out = out * (c_in(sigmas[-1]) / c_in(sigmas.new_zeros(())))
        return out


class Reflector:
    """The model the base sampler runs on, once over the whole schedule (its noise sampler, Brownian tree and
    multistep history are its own). A step starts with the sampler's first model call after its callback for
    the previous step; at the start of a reflected step i the reflection (zig down, zag back up, ``rounds``
    times) is made from the sampler's x_i, written into the sampler's own x in place, and the model's
    prediction there returned: the sampler's own step is the kept zig."""

    def __init__(self, model, sigmas, lam, rounds, inversion, c_in, roles, sampler_name):
        self._model, self.sigmas, self.lam, self.rounds, self.inversion = model, sigmas, lam, rounds, inversion
        self.c_in, self.roles, self.sampler_name = c_in, roles, sampler_name
        self.next_step, self.fresh, self.skip = 0, True, 0

    def __getattr__(self, name):
        return getattr(self._model, name)

    def step_done(self, info):
        # a multi-evaluation step (heun, dpm_2, dpmpp_sde, ...) reports itself after its first call: its
        # other calls come after the callback and before the next step's first call
        i = int(info["i"])
        self.next_step = i + 1
        if self.next_step >= self.lam:  # nothing left to reflect (nor a step to follow: dpm_adaptive at lambda 0)
            self.fresh, self.skip = False, 0
            return
        self.fresh, self.skip = True, calls.calls_in_step(self.sampler_name, self.sigmas, i) - 1

    def _role(self, name, kwargs, s_in):
        role = self.roles[name]
        base = self.roles["zig"].get("model_options", {})
        k = {**kwargs, **{a: v for a, v in role.items() if a != "model_options"}}
        k["model_options"] = {**kwargs.get("model_options", {}),
                              **{a: v for a, v in role.get("model_options", {}).items() if base.get(a) is not v}}
        return lambda x, sigma: self._model(x, sigma * s_in, **k)

    def __call__(self, x, sigma, **kwargs):
        if self.fresh and self.skip:
            self.skip -= 1
        elif self.fresh:
            self.fresh = False
            i = self.next_step
            if i < self.lam:
                s = self.sigmas[i]
                # (to 1e-3: on flow models some samplers start at sigma_0 offset by ~1e-4, offset_first_sigma_for_snr)
                if not bool(torch.isclose(sigma.flatten().float(), s.float().to(sigma.device), rtol=1e-3).all()):
                    raise ValueError(f"sampler_name: {self.sampler_name!r} does not start step {i} with a model "
                                     f"call at sigma_{i} = {float(s):.4g} (got {float(sigma.flatten()[0]):.4g}); "
                                     f"Z-Sampling cannot reflect its steps")
                s_in = x.new_ones([x.shape[0]])
                first = None if self.roles["first"] is None else self._role("first", kwargs, s_in)
                x_tilde = zz.reflect(lambda x_, sig: self._model(x_, sig * s_in, **kwargs),
                                     self._role("zag", kwargs, s_in), x, self.sigmas, i, self.rounds,
                                     self.inversion, self.c_in, first)
                x.copy_(x_tilde)
        return self._model(x, sigma, **kwargs)


def validate_reflection(node_cls, steps, sampler_name, reflected_name: str, reflected, **dropdowns):
    """validate_inputs of a reflecting node: the inputs it names (ComfyUI then skips its own checks of them;
    ``dropdowns``: its other Combo inputs, glue.combos_checked) checked as ComfyUI would, the sampler able to
    reflect, and fewer reflected steps than steps (-1: all but the last). None: linked or not known yet."""
    error, v = glue.named_inputs(node_cls, steps=steps, sampler_name=sampler_name, **{reflected_name: reflected},
                                 **dropdowns)
    if error:
        return error
    steps, reflected = v["steps"], v[reflected_name]
    checked = glue.check_reflectable(sampler_name, reflected)
    if checked is True and steps is not None and reflected is not None and 0 < steps <= reflected:
        checked = f"{reflected_name} ({reflected}) must be smaller than steps ({steps}); -1 reflects all but the last"
    return checked


def reference_sigmas(model, steps: int, denoise: float = 1.0) -> torch.Tensor:
    model_sampling = model.get_model_object("model_sampling")
    return zz.ddim_reference_sigmas(model_sampling.sigmas.cpu(), steps, denoise)


def schedule(model, sampler_name: str, scheduler: str, steps: int, denoise: float) -> torch.Tensor:
    """KSampler's sigmas (same discard rules), or the reference DDIM schedule."""
    if scheduler == REFERENCE_SCHEDULER:
        return reference_sigmas(model, steps, denoise)
    if scheduler not in comfy.samplers.SCHEDULER_NAMES:
        raise ValueError(f"scheduler {scheduler!r} is not one of {comfy.samplers.SCHEDULER_NAMES + [REFERENCE_SCHEDULER]}")
    return comfy.samplers.KSampler(model, steps=steps, device=model.load_device, sampler=sampler_name,
                                   scheduler=scheduler, denoise=denoise).sigmas


def _inversion_inputs():
    return [
        io.Float.Input("inversion_cfg", default=0.0, min=-100.0, max=100.0, step=0.1, round=0.01,
                       tooltip="gamma_2: guidance of the zag (inversion) step. The paper uses 0, which needs only "
                               "the unconditional branch; 1 needs only the conditional one."),
        io.Int.Input("zigzag_steps", default=-1, min=-1, max=10000,
                     tooltip="lambda: how many of the first sampling steps are reflected (zig, zag, zig). -1 "
                             "(default): every step but the last, the paper's steps - 1 on any schedule. Otherwise "
                             "smaller than the number of steps; 0 = plain sampling."),
        io.Int.Input("rounds", default=1, min=1, max=100,
                     tooltip="T_max: zag/zig rounds per reflected step. Each round costs one inversion and one "
                             "denoising evaluation."),
        io.Combo.Input("inversion", options=list(zz.INVERSION_MODES), default="published", tooltip=INVERSION_TOOLTIP),
    ]


class ZigzagKSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ZigzagKSampler",
            display_name="Zigzag KSampler (Z-Sampling)",
            category=CATEGORY,
            description="Z-Sampling (Bai et al., ICLR 2025): for the first lambda steps, denoise with cfg, invert "
                        "back up with inversion_cfg, and denoise again (T_max rounds). Paper setting: cfg 5.5, "
                        "inversion_cfg 0, 50 steps, lambda 49, T_max 1, ddim with the ddim_reference schedule. "
                        + SAMPLER_RULE,
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model (any type: epsilon, v-prediction, flow, EDM)."),
                io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=True,
                             tooltip="Seed of the start noise, used exactly as KSampler uses it."),
                io.Int.Input("steps", default=50, min=1, max=10000, tooltip="Sampling steps (the paper uses 50)."),
                io.Float.Input("cfg", default=5.5, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="gamma_1: classifier-free guidance of the denoising (zig) steps."),
                io.Combo.Input("sampler_name", options=comfy.samplers.SAMPLER_NAMES, default="ddim",
                               tooltip="Sampler of the denoising steps. The paper uses DDIM ('ddim'); the reflected "
                                       "steps run the sampler one step at a time, the rest in one go."),
                io.Combo.Input("scheduler", options=comfy.samplers.SCHEDULER_NAMES + [REFERENCE_SCHEDULER],
                               default=REFERENCE_SCHEDULER,
                               tooltip="'ddim_reference' is the paper's DDIM schedule (diffusers' leading spacing, "
                                       "last step to alpha_bar[0]) with the reference's start noise and output "
                                       "scaling, reproducing it to float precision; ComfyUI's schedulers also work."),
                io.Conditioning.Input("positive", tooltip="Conditioning of the prompt."),
                io.Conditioning.Input("negative", tooltip="Conditioning of the negative prompt (the unconditional branch)."),
                io.Latent.Input("latent_image", tooltip="The latent to denoise (an empty latent for text-to-image)."),
                io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Share of the schedule to run, as in KSampler (img2img below 1)."),
                *_inversion_inputs(),
            ],
            outputs=[io.Latent.Output()],
        )

    @classmethod
    def validate_inputs(cls, steps=None, zigzag_steps=None, sampler_name=None, scheduler=None, inversion=None):
        return validate_reflection(cls, steps, sampler_name, "zigzag_steps", zigzag_steps, scheduler=scheduler,
                                   inversion=inversion)

    @classmethod
    def execute(cls, model, seed, steps, cfg, sampler_name, scheduler, positive, negative, latent_image, denoise,
                inversion_cfg, zigzag_steps, rounds, inversion) -> io.NodeOutput:
        zz.check_args(steps, zigzag_steps, rounds, inversion)
        sampler = ZigzagSampler(sampler_name, inversion_cfg, zigzag_steps, rounds, inversion,
                                reference_scaling=scheduler == REFERENCE_SCHEDULER)
        glue.check_latent(model, latent_image)
        if denoise <= 0.0:
            return io.NodeOutput(latent_image)
        sigmas = schedule(model, sampler_name, scheduler, steps, denoise)
        out = glue.sample_with(model, sampler, sigmas, positive, negative, cfg, latent_image, seed,
                               sampler.total_calls(sigmas), "cfg / inversion_cfg")
        return io.NodeOutput(out)


class SamplerZigzag(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SamplerZigzag",
            display_name="Sampler Zigzag (Z-Sampling)",
            category=CATEGORY,
            description="Z-Sampling as a SAMPLER for SamplerCustomAdvanced. The denoising guidance gamma_1 is the "
                        "guider's cfg (CFGGuider); the inversion guidance is set here. Guiders built on ComfyUI's "
                        "CFG function honour inversion_cfg and skip unneeded branches. "
                        + SAMPLER_RULE,
            inputs=[
                io.Combo.Input("sampler_name", options=comfy.samplers.SAMPLER_NAMES, default="ddim",
                               tooltip="Base sampler of the denoising steps (the paper uses DDIM: 'ddim')."),
                *_inversion_inputs(),
                io.Boolean.Input("reference_scaling", default=False,
                                 tooltip="Scale the start noise and the output as the reference DDIM loop does "
                                         "(unit Gaussian in DDIM space; output at alpha_bar[0] in DDIM space). Use "
                                         "with ZigzagReferenceScheduler to reproduce the paper exactly."),
            ],
            outputs=[io.Sampler.Output()],
        )

    @classmethod
    def validate_inputs(cls, sampler_name=None, zigzag_steps=None, inversion=None):
        # steps: the sigmas'
        return validate_reflection(cls, None, sampler_name, "zigzag_steps", zigzag_steps, inversion=inversion)

    @classmethod
    def execute(cls, sampler_name, inversion_cfg, zigzag_steps, rounds, inversion, reference_scaling) -> io.NodeOutput:
        return io.NodeOutput(ZigzagSampler(sampler_name, inversion_cfg, zigzag_steps, rounds, inversion,
                                           reference_scaling))


class ZigzagReferenceScheduler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="ZigzagReferenceScheduler",
            display_name="DDIM Reference Scheduler (Z-Sampling)",
            category=CATEGORY,
            description="The DDIM schedule of the Z-Sampling and W2SD reference code: diffusers' 'leading' timestep "
                        "spacing with steps_offset 1 (981, 961, ..., 1 for 50 steps), the last step going to "
                        "alpha_bar[0] (sigma ~ 0.029) instead of 0.",
            inputs=[
                io.Model.Input("model", tooltip="Model whose noise levels are used."),
                io.Int.Input("steps", default=50, min=1, max=1000, tooltip="Number of DDIM steps."),
                io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="Share of the schedule to run (img2img below 1), as BasicScheduler."),
            ],
            outputs=[io.Sigmas.Output()],
        )

    @classmethod
    def execute(cls, model, steps, denoise) -> io.NodeOutput:
        if denoise <= 0.0:
            return io.NodeOutput(torch.FloatTensor([]))
        return io.NodeOutput(reference_sigmas(model, steps, denoise))


NODES = [ZigzagKSampler, SamplerZigzag, ZigzagReferenceScheduler]
