"""ComfyUI nodes for W2SD (samplers/w2sd.py): weak-to-strong reflection.

* ``WeakStrongGuider``: a GUIDER from three GUIDERs (strong, weak, main; e.g.
  CFGGuider nodes), for SamplerCustomAdvanced with any k-diffusion SAMPLER as
  the base sampler of the denoising steps.
* ``WeakStrongReflection``: all in one, inputs like KSampler with a strong and a
  weak side (model, conditionings, cfg) next to the main one.
* ``WeakStrongReflectionLoRA``: the paper's main use, one MODEL and one LoRA
  file at three strengths.

How the sides run. ``WeakStrongGuider`` is one CFGGuider (as ComfyUI's
DualCFGGuider): it holds every side's conditionings under a prefix, so ComfyUI
processes them as a guider's conds (hooks, areas, ControlNets loaded, pre_run and
cleanup), and its ``predict_noise`` evaluates the side that the W2SD sampler
names in the evaluation's model_options, with that side's guider logic, conds,
cfg and model_options. Sides whose MODELs are different checkpoints are loaded
together (the main one lists the others as additional models, so loading one
never evicts another) and their conds are processed with their own model. Sides
whose MODELs are patches of one checkpoint (LoRA loaders at different strengths)
cannot be loaded side by side in ComfyUI (they share the weights in memory), so
the main side's weights are loaded as usual and the other sides add their weight
difference at forward time (``weights.switch.WeightSwitch``): switching costs two
thin layers per patched layer, and memory grows by the LoRA's own weights only.
"""

from __future__ import annotations

import contextlib
import copy
import os

import torch

import comfy.samplers
import folder_paths
from comfy_api.latest import io

from ..samplers import zigzag as zz
from ..weights.switch import WeightSwitch
from . import compat as glue
from .zigzag import (CATEGORY, INVERSION_TOOLTIP, REFERENCE_SCHEDULER, ZigzagSampler, model_calls, schedule,
                     validate_reflection)

SIDES = ("strong", "weak", "main")
SIDE_KEY = "w2sd_side"  # model_options entry naming the side of an evaluation
GUIDER_INPUTS = {"strong": "strong", "weak": "weak", "main": "main"}  # input names of the sides on each node
MODEL_INPUTS = {"strong": "strong_model", "weak": "weak_model", "main": "model"}


# ---------------------------------------------------------------------------
# Weight differences between patches of one checkpoint
# ---------------------------------------------------------------------------

def _same_tensor(a, b) -> bool:
    if a is b:
        return True
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
        return a == b
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)


def _same_adapter(a, b) -> bool:
    if a is b:
        return True
    wa, wb = glue.lora_weights(a), glue.lora_weights(b)
    if wa is not None and wb is not None:
        return all(_same_tensor(x, y) for x, y in zip(wa, wb))
    da, db = glue.diff_weights(a), glue.diff_weights(b)
    if da is not None and db is not None:
        return _same_tensor(da, db)
    return False


def weight_difference(side_patches: dict, primary_patches: dict, side: str) -> list:
    """The weight patches of a side minus those of the primary patcher of the
    same checkpoint (``compat.weight_patches``), as ``[(key, adapter,
    coefficient, offset)]``.

    Patches present on both with the same parameters cancel; LoRA and 'diff'
    patches that differ only in strength become forward-time terms. Anything
    else (DoRA, LoKr, LoHa, 'set', a strength_model or function) cannot be
    switched at forward time and raises ValueError naming the side and key.
    """
    out = []
    for key in sorted(set(side_patches) | set(primary_patches)):
        sp, pp = list(side_patches.get(key, [])), list(primary_patches.get(key, []))
        for e in list(sp):  # cancel identical entries
            for f in pp:
                if e is f or (e[0] == f[0] and e[2:] == f[2:] and _same_adapter(e[1], f[1])):
                    sp.remove(e)
                    pp.remove(f)
                    break
        terms = []  # [adapter, coef, offset]
        for sign, entries in ((1.0, sp), (-1.0, pp)):
            for strength, adapter, strength_model, offset, function in entries:
                lw, dw = glue.lora_weights(adapter), glue.diff_weights(adapter)
                if strength_model != 1.0 or function is not None or (lw is None and dw is None) \
                        or (lw is not None and (lw[4] is not None or lw[5] is not None)):
                    raise ValueError(
                        f"{side}_model differs from the model it shares its checkpoint with by a "
                        f"'{glue.patch_kind(adapter)}' patch on {key} that cannot be switched per evaluation (only "
                        f"plain LoRA/LoCon and diff patches can). Load the {side} side from its own checkpoint, "
                        f"or use a plain LoRA.")
                if offset is not None and offset[0] != 0:
                    raise ValueError(f"{side}_model: patch on {key} has an offset on dimension {offset[0]}; "
                                     f"only output-channel offsets can be switched per evaluation")
                off = None if offset is None else (offset[1], offset[2])
                for t in terms:
                    if t[2] == off and _same_adapter(t[0], adapter):
                        t[1] += sign * strength
                        break
                else:
                    terms.append([adapter, sign * strength, off])
        out += [(key, a, c, off) for a, c, off in terms if c != 0.0]
    return out


def add_terms(switch: WeightSwitch, model: torch.nn.Module, terms: list, side: str) -> None:
    """Register ``weight_difference`` terms of a side on the modules of ``model``."""
    for key, adapter, coef, off in terms:
        path, _, param = key.rpartition(".")
        try:
            module = model.get_submodule(path)
        except AttributeError:
            raise ValueError(f"{side}_model: patched weight {key} is not in the model") from None
        lw = glue.lora_weights(adapter)
        if lw is not None:
            up, down, alpha, mid = lw[:4]
            if param != "weight":
                raise ValueError(f"{side}_model: LoRA patch on {key}, which is not a weight")
            switch.add_lora(module, {side: coef}, up, down, alpha=alpha, mid=mid, offset=off)
        elif param == "weight":
            switch.add_dense(module, {side: coef}, weight=glue.diff_weights(adapter), offset=off)
        else:
            switch.add_dense(module, {side: coef}, bias=glue.diff_weights(adapter), offset=off)


# ---------------------------------------------------------------------------
# Sampler and guider
# ---------------------------------------------------------------------------

POST_CFG = "sampler_post_cfg_function"
CFG1_OFF = "disable_cfg1_optimization"


def side_options(side_opts: dict, main_opts: dict, call_opts: dict) -> dict:
    """A side's model_options for one evaluation: its own, plus the post-CFG
    functions the sampler added for this call on top of the main side's
    (CFG++ samplers read the unconditional prediction through one), and the
    sampler's request for both branches at cfg 1 (which CFG++ makes with it)."""
    added = [f for f in call_opts.get(POST_CFG, []) if f not in main_opts.get(POST_CFG, [])]
    both = call_opts.get(CFG1_OFF, False) and not main_opts.get(CFG1_OFF, False)
    if not added and not both:
        return side_opts
    opts = side_opts.copy()
    if added:
        opts[POST_CFG] = list(side_opts.get(POST_CFG, [])) + added
    if both:
        opts[CFG1_OFF] = True
    return opts


class W2SDSampler(ZigzagSampler):
    """The reflection of W2SD around a base sampler (Z-Sampling's, through its
    hooks ``role_args``, ``evaluator`` and ``reflected_steps``): each evaluation's
    model_options name its side, the first denoising of each reflected step
    the strong side, the inversion the weak one, the denoising step the main one."""

    def __init__(self, base, reflect_steps: int, inversion: str, reference_scaling: bool):
        super().__init__(base, 0.0, max(reflect_steps, 0), 1, inversion, reference_scaling)
        self.reflect = int(reflect_steps)
        self.refuse_unreflectable(self.reflect)

    def reflected_steps(self, n_steps: int) -> int:
        return reflected_steps(n_steps, self.reflect)

    def evaluator(self, model_k):
        return model_k  # the WeakStrongGuider inside it picks the side named in the options (no zag dispatch)

    def role_args(self, extra_args: dict) -> dict:
        def side(name):
            return {**extra_args, "model_options": {**extra_args.get("model_options", {}), SIDE_KEY: name}}
        return {"zig": side("main"), "zag": side("weak"), "first": side("strong")}


class WeakStrongGuider(comfy.samplers.CFGGuider):
    """GUIDER running W2SD with three guiders (strong, weak, main) around the
    SAMPLER it is given (e.g. 'ddim' from KSamplerSelect). ``names``: the
    input name of each side on the node that made it (for messages)."""

    def __init__(self, strong, weak, main, inversion: str = "published", reflect_steps: int = -1,
                 reference_scaling: bool = False, names: dict = GUIDER_INPUTS):
        sides = {"strong": strong, "weak": weak, "main": main}
        for name, g in sides.items():
            if not isinstance(g, comfy.samplers.CFGGuider):
                raise ValueError(f"{names[name]}: expected a GUIDER built on ComfyUI's CFGGuider (CFGGuider, "
                                 f"BasicGuider, DualCFGGuider, ...), got {type(g).__name__}")
        formats = {n: glue.latent_format_name(g.model_patcher) for n, g in sides.items()}
        if len(set(formats.values())) > 1:
            raise ValueError(" / ".join(names[n] for n in SIDES) + ": strong, weak and main models must share one "
                             "latent format, got " + ", ".join(f"{n}: {f}" for n, f in formats.items()))
        if inversion not in zz.INVERSION_MODES:
            raise ValueError(f"inversion must be one of {zz.INVERSION_MODES} (got {inversion!r})")
        super().__init__(main.model_patcher)
        self.sides, self.model_options, self.cfg = sides, main.model_options, getattr(main, "cfg", 1.0)
        self.inversion, self.reflect_steps, self.reference_scaling = inversion, int(reflect_steps), reference_scaling
        # every side's conds under its prefix (already converted by the side's own guider)
        self.original_conds = {f"{n}:{k}": c for n, g in sides.items() for k, c in g.original_conds.items()}
        self.primaries, self.terms = self._plan()  # at graph time: fails early on unswitchable differences
        self._run = None

    def _plan(self):
        """The first side on each checkpoint (its patcher is loaded), and the
        weight-difference terms of the other sides on that checkpoint."""
        primaries = {}  # id(BaseModel) -> (side, patcher)
        for name in ("main", "strong", "weak"):
            p = self.sides[name].model_patcher
            primaries.setdefault(id(glue.base_model(p)), (name, p))
        terms = {}
        for name, g in self.sides.items():
            owner, primary = primaries[id(glue.base_model(g.model_patcher))]
            if g.model_patcher is primary or owner == name:
                continue
            p, q = glue.object_patches(g.model_patcher), glue.object_patches(primary)
            if p.keys() != q.keys() or any(p[k] is not q[k] for k in p):
                raise ValueError(f"{name}_model and {owner}_model are the same checkpoint with different object "
                                 f"patches (e.g. a different ModelSampling node); apply the same ones to both")
            terms[name] = weight_difference(glue.weight_patches(g.model_patcher), glue.weight_patches(primary), name)
        return primaries, terms

    def sample(self, noise, latent_image, sampler, sigmas, denoise_mask=None, callback=None, disable_pbar=False,
               seed=None):
        glue.check_samples(latent_image, "latent_image")
        if sigmas.shape[-1] == 0:
            return latent_image
        reflected_steps(sigmas.shape[-1] - 1, self.reflect_steps)
        w2sd = W2SDSampler(sampler, self.reflect_steps, self.inversion, self.reference_scaling)
        main = self.model_patcher
        self.model_patcher = glue.with_models_loaded_together(
            main, [p for k, (_, p) in self.primaries.items() if k != id(glue.base_model(main))])
        switches = {}
        for name, ts in self.terms.items():
            model = glue.base_model(self.sides[name].model_patcher)
            add_terms(switches.setdefault(id(model), WeightSwitch()), model, ts, name)
        self._run = {"switches": list(switches.values())}
        try:
            for sw in self._run["switches"]:
                sw.attach()
            return glue.run_naming("latent_image", latent_image.shape, lambda: super(WeakStrongGuider, self).sample(
                noise, latent_image, w2sd, sigmas, denoise_mask, callback, disable_pbar, seed))
        finally:
            for sw in switches.values():
                sw.detach()
            self.model_patcher, self._run = main, None

    def inner_sample(self, noise, latent_image, device, sampler, sigmas, denoise_mask, callback, disable_pbar, seed,
                     **kwargs):
        # conds of sides on other checkpoints: processed with their own model (the rest by CFGGuider, with ours)
        apart, stack = {}, contextlib.ExitStack()
        for k, (_, p) in self.primaries.items():
            if glue.base_model(p) is not self.inner_model:
                stack.enter_context(glue.run_patcher(p))
        for name, g in self.sides.items():
            model = glue.base_model(g.model_patcher)
            if model is not self.inner_model:
                own = {k: self.conds.pop(k) for k in [k for k in self.conds if k.startswith(name + ":")]}
                apart.update(glue.process_conds_with(model, self.inner_model, noise, own, device, latent_image,
                                                     denoise_mask, seed, **kwargs))
        self._run.update(apart=apart, sigmas=sigmas, device=device, evals=None)
        try:
            return super().inner_sample(noise, latent_image, device, sampler, sigmas, denoise_mask, callback,
                                        disable_pbar, seed, **kwargs)
        finally:
            self.conds.update(apart)  # cleaned up with the others (ControlNets)
            self._run["evals"] = None
            stack.close()

    def _evaluators(self) -> dict:
        """{side: (its guider, ready to evaluate, and its model_options)}, made
        once per run after ComfyUI processed the conds."""
        run = self._run
        if run["evals"] is None:
            conds = {**self.conds, **run["apart"]}
            run["evals"] = {}
            for name, g in self.sides.items():
                e = copy.copy(g)
                e.inner_model = glue.base_model(g.model_patcher)
                if e.inner_model is glue.base_model(self.model_patcher):
                    e.inner_model = self.inner_model
                e.conds = {k.split(":", 1)[1]: c for k, c in conds.items() if k.startswith(name + ":")}
                opts = None
                if name != "main":
                    opts = glue.side_sampling_options(g.model_options, run["sigmas"], run["device"],
                                                      g.model_patcher.model_dtype())
                    if type(g) is comfy.samplers.CFGGuider and float(g.cfg) == 0.0:
                        # a reflection side at guidance 0 is the unconditional prediction: evaluate only that
                        # branch, as Z-Sampling's inversion does (ComfyUI's CFG skips a branch only at cfg 1;
                        # the main side stays KSampler's, so reflect_steps 0 is KSampler at any cfg)
                        opts = glue.guidance_options(opts, 0.0)
                run["evals"][name] = (e, opts)
        return run["evals"]

    def predict_noise(self, x, timestep, model_options={}, seed=None):
        side = model_options.get(SIDE_KEY, "main")
        guider, opts = self._evaluators()[side]
        # the main side evaluates with the sampler's options; another side with its own plus the sampler's additions
        opts = model_options if opts is None else side_options(opts, self.model_options, model_options)
        with contextlib.ExitStack() as stack:
            for sw in self._run["switches"]:
                stack.enter_context(sw.active(side))
            return guider.predict_noise(x, timestep, model_options=opts, seed=seed)


def reflected_steps(steps: int, reflect_steps: int) -> int:
    """How many steps are reflected: ``reflect_steps``, or every step but the
    last for -1; ValueError naming the input when it does not fit ``steps``."""
    if reflect_steps < 0:
        return max(steps - 1, 0)
    if reflect_steps >= steps:
        raise ValueError(f"reflect_steps ({reflect_steps}) must be smaller than steps ({steps}); -1 reflects every "
                         f"step but the last, as the paper does")
    return reflect_steps


def _common_inputs():
    return [
        io.Int.Input("seed", default=0, min=0, max=0xffffffffffffffff, control_after_generate=True,
                     tooltip="Seed of the start noise, used exactly as KSampler uses it."),
        io.Int.Input("steps", default=50, min=1, max=10000, tooltip="Sampling steps (the paper uses 50)."),
        io.Combo.Input("sampler_name", options=comfy.samplers.SAMPLER_NAMES, default="ddim",
                       tooltip="Sampler of the denoising steps (the paper uses DDIM: 'ddim')."),
        io.Combo.Input("scheduler", options=comfy.samplers.SCHEDULER_NAMES + [REFERENCE_SCHEDULER],
                       default=REFERENCE_SCHEDULER,
                       tooltip="'ddim_reference' is the reference's DDIM schedule with its start noise and output "
                               "scaling; ComfyUI's schedulers also work."),
        io.Latent.Input("latent_image", tooltip="The latent to denoise (an empty latent for text-to-image)."),
        io.Float.Input("denoise", default=1.0, min=0.0, max=1.0, step=0.01,
                       tooltip="Share of the schedule to run, as in KSampler (img2img below 1)."),
        io.Int.Input("reflect_steps", default=-1, min=-1, max=10000,
                     tooltip="How many of the first steps are reflected (strong denoise, weak inversion, main "
                             "denoise). -1: every step but the last, as in the paper. 0: plain sampling with the "
                             "main side."),
        io.Combo.Input("inversion", options=list(zz.INVERSION_MODES), default="published", tooltip=INVERSION_TOOLTIP),
    ]


def _run(guiders: dict, seed, steps, sampler_name, scheduler, latent_image, denoise, reflect_steps, inversion):
    reflected_steps(steps, reflect_steps)  # fail before any model is loaded
    main_model = guiders["main"].model_patcher
    glue.check_latent(main_model, latent_image)
    if denoise <= 0.0:
        return io.NodeOutput(latent_image)
    guider = WeakStrongGuider(guiders["strong"], guiders["weak"], guiders["main"], inversion, reflect_steps,
                              reference_scaling=scheduler == REFERENCE_SCHEDULER, names=MODEL_INPUTS)
    sigmas = schedule(main_model, sampler_name, scheduler, steps, denoise)
    n = len(sigmas) - 1
    total = model_calls(sampler_name, sigmas, reflected_steps(n, reflect_steps))
    return io.NodeOutput(glue.sample_with_guider(guider, glue.base_sampler(sampler_name)[0], sigmas, latent_image,
                                                 seed, total, "cfg / strong_cfg / weak_cfg"))


def _cfg_guider(model, positive, negative, cfg):
    g = comfy.samplers.CFGGuider(model)
    g.set_conds(positive, negative)
    g.set_cfg(cfg)
    return g


class WeakStrongReflection(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="WeakStrongReflection",
            display_name="Weak-Strong Reflection (W2SD)",
            category=CATEGORY,
            description="W2SD (Bai, Sugiyama, Xie 2025): on every reflected step, denoise with the strong side, "
                        "invert with the weak side, then denoise with the main side. Each side is a model, its "
                        "conditionings and a cfg; unconnected strong/weak inputs fall back to the main ones. Weight "
                        "difference: two MODELs (e.g. a LoRA at +1.5 / -1.5, or two checkpoints); pipeline "
                        "difference: conditionings with / without ControlNet; guidance difference: cfgs.",
            inputs=[
                io.Model.Input("model", tooltip="Main model: the normal denoising step of every step."),
                io.Conditioning.Input("positive", tooltip="Main positive conditioning (default of the other sides)."),
                io.Conditioning.Input("negative", tooltip="Main negative conditioning (default of the other sides)."),
                io.Float.Input("cfg", default=5.5, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Guidance of the main side (paper: 5.5)."),
                io.Model.Input("strong_model", optional=True,
                               tooltip="Strong model (paper: LoRA +1.5). Default: the main model."),
                io.Float.Input("strong_cfg", default=5.5, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Guidance of the strong side (paper: 5.5)."),
                io.Model.Input("weak_model", optional=True,
                               tooltip="Weak model, used for the inversion (paper: LoRA -1.5). Default: the main "
                                       "model. Must have the latent format of the others."),
                io.Float.Input("weak_cfg", default=1.0, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Guidance of the weak side (paper: 1.0, which evaluates the conditional "
                                       "branch only)."),
                *_common_inputs(),
                io.Conditioning.Input("strong_positive", optional=True,
                                      tooltip="Positive conditioning of the strong side (e.g. with ControlNet)."),
                io.Conditioning.Input("strong_negative", optional=True,
                                      tooltip="Negative conditioning of the strong side."),
                io.Conditioning.Input("weak_positive", optional=True,
                                      tooltip="Positive conditioning of the weak side (e.g. without ControlNet)."),
                io.Conditioning.Input("weak_negative", optional=True,
                                      tooltip="Negative conditioning of the weak side."),
            ],
            outputs=[io.Latent.Output()],
        )

    @classmethod
    def validate_inputs(cls, steps=None, reflect_steps=None, sampler_name=None, scheduler=None, inversion=None):
        return validate_reflection(cls, steps, sampler_name, "reflect_steps", reflect_steps, scheduler=scheduler,
                                   inversion=inversion)

    @classmethod
    def execute(cls, model, positive, negative, cfg, strong_cfg, weak_cfg, seed, steps, sampler_name, scheduler,
                latent_image, denoise, reflect_steps, inversion, strong_model=None, weak_model=None,
                strong_positive=None, strong_negative=None, weak_positive=None, weak_negative=None) -> io.NodeOutput:
        guiders = {
            "strong": _cfg_guider(strong_model or model, strong_positive or positive, strong_negative or negative,
                                  strong_cfg),
            "weak": _cfg_guider(weak_model or model, weak_positive or positive, weak_negative or negative, weak_cfg),
            "main": _cfg_guider(model, positive, negative, cfg),
        }
        return _run(guiders, seed, steps, sampler_name, scheduler, latent_image, denoise, reflect_steps, inversion)


_LORA_CACHE: dict = {}


def load_lora_file(lora_name: str) -> dict:
    """A LoRA state dict from ComfyUI's loras folder (safe loading: no pickle),
    the last one kept in memory as LoraLoader does."""
    import comfy.utils
    path = glue.resolve_file("loras", lora_name, "lora_name")
    if path is None:
        raise ValueError(f"lora_name {lora_name!r} is not in the loras folders ({folder_paths.get_folder_paths('loras')})")
    key = (path, os.path.getmtime(path))
    if key not in _LORA_CACHE:
        _LORA_CACHE.clear()
        _LORA_CACHE[key] = comfy.utils.load_torch_file(path, safe_load=True)
    return _LORA_CACHE[key]


def lora_sides(model, lora: dict, strengths: dict) -> dict:
    """{side: MODEL} with the LoRA at each side's strength, as LoraLoaderModelOnly makes them."""
    return {name: glue.load_lora(model, lora, s) for name, s in strengths.items()}


class WeakStrongReflectionLoRA(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="WeakStrongReflectionLoRA",
            display_name="Weak-Strong Reflection LoRA (W2SD)",
            category=CATEGORY,
            description="W2SD's main setting: one model, one LoRA at three strengths (paper: xlMoreArt on SDXL, "
                        "strong +1.5 / cfg 5.5, weak -1.5 / cfg 1.0, main 0.8 / cfg 5.5, 50 DDIM steps). The main "
                        "strength is merged as a LoRA loader would; the strong and weak sides add their difference "
                        "at forward time, so switching costs nothing and memory grows by the LoRA's weights only.",
            inputs=[
                io.Model.Input("model", tooltip="The base model (without the LoRA)."),
                io.Combo.Input("lora_name", options=folder_paths.get_filename_list("loras"),
                               tooltip="LoRA file from ComfyUI's models/loras folder."),
                io.Float.Input("strong_strength", default=1.5, min=-100.0, max=100.0, step=0.01,
                               tooltip="LoRA strength of the strong side (paper: +1.5)."),
                io.Float.Input("weak_strength", default=-1.5, min=-100.0, max=100.0, step=0.01,
                               tooltip="LoRA strength of the weak side (paper: -1.5)."),
                io.Float.Input("main_strength", default=0.8, min=-100.0, max=100.0, step=0.01,
                               tooltip="LoRA strength of the main denoising step (paper: 0.8)."),
                io.Conditioning.Input("positive", tooltip="Positive conditioning (encoded once, LoRA off, as in the "
                                                          "reference)."),
                io.Conditioning.Input("negative", tooltip="Negative conditioning."),
                io.Float.Input("cfg", default=5.5, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Guidance of the strong and main sides (paper: 5.5)."),
                io.Float.Input("weak_cfg", default=1.0, min=0.0, max=100.0, step=0.1, round=0.01,
                               tooltip="Guidance of the weak side (paper: 1.0: the conditional branch only)."),
                *_common_inputs(),
            ],
            outputs=[io.Latent.Output()],
        )

    @classmethod
    def validate_inputs(cls, steps=None, reflect_steps=None, sampler_name=None, scheduler=None, inversion=None,
                        lora_name=None):
        return validate_reflection(cls, steps, sampler_name, "reflect_steps", reflect_steps, scheduler=scheduler,
                                   inversion=inversion, lora_name=lora_name)

    @classmethod
    def execute(cls, model, lora_name, strong_strength, weak_strength, main_strength, positive, negative, cfg,
                weak_cfg, seed, steps, sampler_name, scheduler, latent_image, denoise, reflect_steps,
                inversion) -> io.NodeOutput:
        lora = load_lora_file(lora_name)
        models = lora_sides(model, lora, {"strong": strong_strength, "weak": weak_strength, "main": main_strength})
        guiders = {"strong": _cfg_guider(models["strong"], positive, negative, cfg),
                   "weak": _cfg_guider(models["weak"], positive, negative, weak_cfg),
                   "main": _cfg_guider(models["main"], positive, negative, cfg)}
        return _run(guiders, seed, steps, sampler_name, scheduler, latent_image, denoise, reflect_steps, inversion)


class WeakStrongGuiderNode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="WeakStrongGuider",
            display_name="Weak-Strong Guider (W2SD)",
            category=CATEGORY,
            description="W2SD as a GUIDER for SamplerCustomAdvanced: three guiders (e.g. CFGGuider nodes) for the "
                        "strong, weak and main sides; the SAMPLER given to SamplerCustomAdvanced runs the denoising "
                        "steps (the paper: 'ddim' with the DDIM Reference Scheduler).",
            inputs=[
                io.Guider.Input("strong", tooltip="Guider of the strong side (first denoising of a reflected step)."),
                io.Guider.Input("weak", tooltip="Guider of the weak side (the inversion)."),
                io.Guider.Input("main", tooltip="Guider of the main side (every step's denoising)."),
                io.Int.Input("reflect_steps", default=-1, min=-1, max=10000,
                             tooltip="How many of the first steps are reflected; -1: every step but the last."),
                io.Combo.Input("inversion", options=list(zz.INVERSION_MODES), default="published",
                               tooltip=INVERSION_TOOLTIP),
                io.Boolean.Input("reference_scaling", default=False,
                                 tooltip="Start noise and output scaling of the reference DDIM loop (use with the "
                                         "DDIM Reference Scheduler to reproduce the paper exactly)."),
            ],
            outputs=[io.Guider.Output()],
        )

    @classmethod
    def validate_inputs(cls, inversion=None):
        return glue.combos_checked(cls, inversion=inversion)

    @classmethod
    def execute(cls, strong, weak, main, reflect_steps, inversion, reference_scaling) -> io.NodeOutput:
        return io.NodeOutput(WeakStrongGuider(strong, weak, main, inversion, reflect_steps, reference_scaling))


NODES = [WeakStrongReflection, WeakStrongReflectionLoRA, WeakStrongGuiderNode]
