"""ComfyUI nodes for W2SD (samplers/w2sd.py): weak-to-strong reflection.

* ``WeakStrongGuider``: a GUIDER from three GUIDERs (strong, weak, main; e.g.
  CFGGuider nodes), for SamplerCustomAdvanced with any k-diffusion SAMPLER as
  the base sampler of the denoising steps.
* ``WeakStrongReflection``: all in one, inputs like KSampler with a strong and a
  weak side (model, conditionings, cfg) next to the main one.
* ``WeakStrongReflectionLoRA``: the paper's main use, one MODEL and one LoRA
  file at three strengths.

How the sides run. Every side is evaluated in its own guider context, exactly
as ComfyUI would sample with it alone (its conditionings processed on their own,
ControlNets and hooks loaded, its model_options and wrappers): the contexts are
opened one inside the other (strong, weak, then main, which runs the sampler).
Sides whose MODELs are different checkpoints are loaded together (each one's
patcher lists the others as additional models, so loading one never evicts
another). Sides whose MODELs are patches of one checkpoint (LoRA loaders at
different strengths) cannot be loaded side by side in ComfyUI (they share the
weights in memory), so the main side's weights are loaded as usual and the other
sides add their weight difference at forward time (``samplers.w2sd.WeightSwitch``):
switching costs nothing, and memory grows by the LoRA's own weights only.
"""

from __future__ import annotations

import contextlib
import copy
import os

import torch

import comfy.samplers
import folder_paths
from comfy_api.latest import io

from ..samplers import w2sd
from ..samplers import zigzag as zz
from . import compat as glue
from .zigzag import CATEGORY, INVERSION_TOOLTIP, REFERENCE_SCHEDULER, ZigzagSampler, model_calls, schedule

SIDES = ("strong", "weak", "main")
SIDE_KEY = "w2sd_side"  # model_options entry naming the side of an evaluation


# ---------------------------------------------------------------------------
# Weight differences between patches of one checkpoint
# ---------------------------------------------------------------------------

def _lora_weights(adapter):
    """(up, down, alpha, mid, dora_scale, reshape) of a LoRA patch, or None."""
    if getattr(adapter, "name", None) == "lora" and hasattr(adapter, "weights"):
        return adapter.weights
    if isinstance(adapter, tuple) and len(adapter) == 2 and adapter[0] == "lora":
        return adapter[1]
    return None


def _diff_weights(adapter):
    if isinstance(adapter, tuple) and len(adapter) == 2 and adapter[0] == "diff":
        return adapter[1][0]
    return None


def _same_tensor(a, b) -> bool:
    if a is b:
        return True
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
        return a == b
    return a.shape == b.shape and a.dtype == b.dtype and torch.equal(a, b)


def _same_adapter(a, b) -> bool:
    if a is b:
        return True
    wa, wb = _lora_weights(a), _lora_weights(b)
    if wa is not None and wb is not None:
        return all(_same_tensor(x, y) for x, y in zip(wa, wb))
    da, db = _diff_weights(a), _diff_weights(b)
    if da is not None and db is not None:
        return _same_tensor(da, db)
    return False


def weight_difference(side_patches: dict, primary_patches: dict, side: str) -> list:
    """The weight patches of a side minus those of the primary patcher of the
    same checkpoint, as ``[(key, adapter, coefficient, offset)]``.

    Patches present on both with the same parameters cancel; LoRA and 'diff'
    patches that differ only in strength become forward-time terms. Anything
    else (DoRA, LoKr, LoHa, 'set', a strength_model or function) cannot be
    switched at forward time and raises ValueError naming the side and key.
    """
    out = []
    for key in sorted(set(side_patches) | set(primary_patches)):
        sp, pp = list(side_patches.get(key, [])), list(primary_patches.get(key, []))
        # cancel identical entries
        for e in list(sp):
            for f in pp:
                if e is f or (e[0] == f[0] and e[2:] == f[2:] and _same_adapter(e[1], f[1])):
                    sp.remove(e)
                    pp.remove(f)
                    break
        terms = []  # [adapter, coef, offset]
        for sign, entries in ((1.0, sp), (-1.0, pp)):
            for strength, adapter, strength_model, offset, function in entries:
                lw = _lora_weights(adapter)
                dw = _diff_weights(adapter)
                if strength_model != 1.0 or function is not None or (lw is None and dw is None) \
                        or (lw is not None and (lw[4] is not None or lw[5] is not None)):
                    kind = getattr(adapter, "name", None) or (adapter[0] if isinstance(adapter, tuple) else type(adapter).__name__)
                    raise ValueError(
                        f"{side}_model differs from the model it shares its checkpoint with by a '{kind}' patch on "
                        f"{key} that cannot be switched per evaluation (only plain LoRA/LoCon and diff patches "
                        f"can). Load the {side} side from its own checkpoint, or use a plain LoRA.")
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


def add_terms(switch: w2sd.WeightSwitch, model: torch.nn.Module, terms: list, side: str) -> None:
    """Register ``weight_difference`` terms of a side on the modules of ``model``."""
    for key, adapter, coef, off in terms:
        path, _, param = key.rpartition(".")
        try:
            module = model.get_submodule(path)
        except AttributeError:
            raise ValueError(f"{side}_model: patched weight {key} is not in the model") from None
        lw = _lora_weights(adapter)
        if lw is not None:
            up, down, alpha, mid = lw[:4]
            if param != "weight":
                raise ValueError(f"{side}_model: LoRA patch on {key}, which is not a weight")
            switch.add_lora(module, {side: coef}, up, down, alpha=alpha, mid=mid, offset=off)
        elif param == "weight":
            switch.add_dense(module, {side: coef}, weight=_diff_weights(adapter), offset=off)
        else:
            switch.add_dense(module, {side: coef}, bias=_diff_weights(adapter), offset=off)


# ---------------------------------------------------------------------------
# Sampler and guider
# ---------------------------------------------------------------------------

class _SideEval:
    """Evaluates one side's guider (open in its own context) with the
    model_options given (that context's, see ``side_options``); quacks like
    the guider for samplers that look inside ``model.inner_model``."""

    def __init__(self, guider):
        self.guider = guider

    def __getattr__(self, name):
        return getattr(self.guider, name)

    def __call__(self, x, sigma, model_options=None, seed=None):
        return self.guider.outer_predict_noise(x, sigma, model_options=model_options, seed=seed)


POST_CFG = "sampler_post_cfg_function"
CFG1_OFF = "disable_cfg1_optimization"


def side_options(side_opts: dict, main_opts: dict, call_opts: dict) -> dict:
    """A side's model_options for one evaluation: its own, plus the post-CFG
    functions the sampler added for this call on top of the main context's
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


class _Dispatch:
    """The sampler's model: routes each evaluation to the side named in its
    model_options, with that side's weight differences switched on."""

    def __init__(self, sides: dict, switches: list, side_opts: dict, owner):
        self.sides, self.switches, self.side_opts, self.owner = sides, switches, side_opts, owner

    def __getattr__(self, name):
        return getattr(self.sides["main"], name)

    def __call__(self, x, sigma, **kwargs):
        call_opts = kwargs.get("model_options", {})
        side = call_opts.get(SIDE_KEY, "main")
        if side != "main":  # the side's own context, plus what the sampler added for this call
            kwargs["model_options"] = side_options(self.side_opts[side], self.owner.base_options, call_opts)
        with contextlib.ExitStack() as stack:
            for s in self.switches:
                stack.enter_context(s.active(side))
            return self.sides[side](x, sigma, **kwargs)


class W2SDSampler(ZigzagSampler):
    """The reflection of W2SD around a base sampler, run inside the main side's
    guider context: the first denoising of each reflected step by the strong
    side, the inversion by the weak one, the denoising step by the main one."""

    def __init__(self, base, reflect_steps: int, inversion: str, reference_scaling: bool, side_contexts: dict,
                 switches: list):
        super().__init__(base, 0.0, max(reflect_steps, 0), 1, inversion, reference_scaling)
        self.reflect = int(reflect_steps)
        self.side_contexts, self.switches = side_contexts, switches

    def reflected_steps(self, n_steps: int) -> int:
        return reflected_steps(n_steps, self.reflect)

    def evaluator(self, model_k):
        sides, side_opts = {"main": model_k}, {}
        for name, (guider, opts) in self.side_contexts.items():
            k = copy.copy(model_k)  # KSamplerX0Inpaint: same noise, latent and mask, the side's guider
            k.inner_model = _SideEval(guider)
            sides[name], side_opts[name] = k, opts
        return _Dispatch(sides, self.switches, side_opts, self)

    def role_args(self, extra_args: dict) -> dict:
        # what the sampler function adds to these options for a call (CFG++'s post-CFG hook) reaches every side
        self.base_options = extra_args.get("model_options", {})

        def side(name):
            args = dict(extra_args)
            args["model_options"] = {**extra_args.get("model_options", {}), SIDE_KEY: name}
            return args
        return {"zig": side("main"), "zag": side("weak"), "first": side("strong")}


class _Continue:
    """A 'sampler' that, inside a side's guider context, records the context's
    model_options and opens the next context."""

    def __init__(self, then):
        self.then = then

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        self.then(model_wrap, extra_args)
        return torch.zeros_like(noise)


def _latent_format(patcher):
    return type(patcher.get_model_object("latent_format"))


class WeakStrongGuider(comfy.samplers.CFGGuider):
    """GUIDER running W2SD with three guiders (strong, weak, main) around the
    SAMPLER it is given (e.g. 'ddim' from KSamplerSelect)."""

    def __init__(self, strong, weak, main, inversion: str = "published", reflect_steps: int = -1,
                 reference_scaling: bool = False):
        guiders = {"strong": strong, "weak": weak, "main": main}
        for name, g in guiders.items():
            if not isinstance(g, comfy.samplers.CFGGuider):
                raise ValueError(f"{name}: expected a GUIDER built on ComfyUI's CFGGuider (CFGGuider, BasicGuider, "
                                 f"DualCFGGuider, ...), got {type(g).__name__}")
        formats = {n: _latent_format(g.model_patcher) for n, g in guiders.items()}
        if len(set(formats.values())) > 1:
            raise ValueError("strong, weak and main models must share one latent format, got "
                             + ", ".join(f"{n}: {f.__name__}" for n, f in formats.items()))
        if inversion not in zz.INVERSION_MODES:
            raise ValueError(f"inversion must be one of {zz.INVERSION_MODES} (got {inversion!r})")
        super().__init__(main.model_patcher)
        self.guiders = guiders
        self.inversion, self.reflect_steps, self.reference_scaling = inversion, int(reflect_steps), reference_scaling
        self.cfg = getattr(main, "cfg", 1.0)
        self.original_conds = main.original_conds
        self._plan = self._make_plan()  # at graph time: fails early on unswitchable differences

    def _make_plan(self):
        """Side guider copies on shared patchers, and the weight terms per side."""
        primaries = {}  # id(model) -> (side, patcher)
        for name in ("main", "strong", "weak"):
            p = self.guiders[name].model_patcher
            primaries.setdefault(id(p.model), (name, p))
        terms = {}
        for name, g in self.guiders.items():
            owner, primary = primaries[id(g.model_patcher.model)]
            if g.model_patcher is primary or owner == name:
                continue
            p = g.model_patcher
            if set(p.object_patches) != set(primary.object_patches) or any(
                    p.object_patches[k] is not primary.object_patches[k] for k in p.object_patches):
                raise ValueError(f"{name}_model and {owner}_model are the same checkpoint with different object "
                                 f"patches (e.g. a different ModelSampling node); apply the same ones to both")
            terms[name] = weight_difference(p.patches, primary.patches, name)
        return primaries, terms

    def sample(self, noise, latent_image, sampler, sigmas, denoise_mask=None, callback=None, disable_pbar=False,
               seed=None):
        glue.check_samples(latent_image, "latent_image")
        if sigmas.shape[-1] == 0:
            return latent_image
        return glue.run_naming("latent_image", latent_image.shape, lambda: self._sample(
            noise, latent_image, sampler, sigmas, denoise_mask, callback, disable_pbar, seed))

    def _sample(self, noise, latent_image, sampler, sigmas, denoise_mask, callback, disable_pbar, seed):
        primaries, terms = self._plan
        clones = {k: (n, p.clone()) for k, (n, p) in primaries.items()}
        for k, (_, c) in clones.items():
            c.set_additional_models("w2sd", [o for kk, (_, o) in clones.items() if kk != k])
        switches = {}
        for name, ts in terms.items():
            model = self.guiders[name].model_patcher.model
            sw = switches.setdefault(id(model), w2sd.WeightSwitch())
            add_terms(sw, model, ts, name)
        sides = {}
        for name, g in self.guiders.items():
            c = copy.copy(g)
            c.model_patcher = clones[id(g.model_patcher.model)][1]
            if name != "main" and type(g) is comfy.samplers.CFGGuider and float(g.cfg) == 0.0:
                # a reflection side at guidance 0 is the unconditional prediction: evaluate only that branch,
                # as Z-Sampling's inversion does (ComfyUI's CFG skips a branch only at cfg 1; the main side
                # stays KSampler's, so reflect_steps 0 is KSampler at any cfg)
                c.model_options = glue.guidance_options(g.model_options, 0.0)
            sides[name] = c
        contexts, result = {}, []

        def open_side(k):
            name = SIDES[k]
            if name == "main":
                w = W2SDSampler(sampler, self.reflect_steps, self.inversion, self.reference_scaling, contexts,
                                list(switches.values()))
                result.append(sides[name].sample(noise, latent_image, w, sigmas, denoise_mask, callback,
                                                 disable_pbar, seed))
                return

            def then(guider, extra_args):
                contexts[name] = (guider, extra_args["model_options"])
                open_side(k + 1)
            sides[name].sample(noise, latent_image, _Continue(then), sigmas, denoise_mask, None, True, seed)

        for sw in switches.values():
            sw.attach()
        try:
            open_side(0)
        finally:
            for sw in switches.values():
                sw.detach()
            for _, c in clones.values():
                c.remove_additional_models("w2sd")
            contexts.clear()
        return result[0]


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
                              reference_scaling=scheduler == REFERENCE_SCHEDULER)
    sigmas = schedule(main_model, sampler_name, scheduler, steps, denoise)
    n = len(sigmas) - 1
    total = model_calls(sampler_name, n, reflected_steps(n, reflect_steps))
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
    def validate_inputs(cls, steps=None, reflect_steps=None, **kwargs):
        if steps is not None and reflect_steps is not None and reflect_steps >= steps:
            return f"reflect_steps ({reflect_steps}) must be smaller than steps ({steps})"
        return True

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
    import comfy.sd
    return {name: comfy.sd.load_lora_for_models(model, None, lora, s, 0)[0] for name, s in strengths.items()}


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
    def validate_inputs(cls, steps=None, reflect_steps=None, **kwargs):
        return WeakStrongReflection.validate_inputs(steps=steps, reflect_steps=reflect_steps)

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
    def execute(cls, strong, weak, main, reflect_steps, inversion, reference_scaling) -> io.NodeOutput:
        return io.NodeOutput(WeakStrongGuider(strong, weak, main, inversion, reflect_steps, reference_scaling))


NODES = [WeakStrongReflection, WeakStrongReflectionLoRA, WeakStrongGuiderNode]
