"""What every node of the pack needs from ComfyUI: one place that knows
ComfyUI's internals (guided evaluation with an overridden guidance, branch
skipping, progress and previews over model evaluations), shared by the
reflection samplers.
"""

from __future__ import annotations

import contextlib
import copy
import inspect
import math
import os

import torch

import comfy.model_management
import comfy.sample
import comfy.samplers
import comfy.utils
import folder_paths
import latent_preview

from ..samplers.calls import OFF_SCHEDULE, STATE_NOT_INPUT


def check_reflectable(sampler_name, reflected) -> str | bool:
    """True, or why ``sampler_name`` cannot run reflected steps (``reflected`` > 0 or -1: some are)."""
    if sampler_name in OFF_SCHEDULE and reflected is not None and reflected != 0:
        return (f"sampler_name: '{sampler_name}' does not step along the scheduler's sigmas (it picks its own "
                f"noise levels), so its steps cannot be reflected; pick another sampler or set no reflected steps")
    if sampler_name in STATE_NOT_INPUT and reflected is not None and reflected != 0:
        return (f"sampler_name: '{sampler_name}' evaluates the model on a copy of its latent (or corrects from the "
                f"previous one), so a reflection cannot reach the latent it steps; pick another sampler (euler, "
                f"dpmpp_2m, ...) or set no reflected steps")
    return True


def named_inputs(node_cls, **values):
    """ComfyUI's own type conversion, range and dropdown checks for the inputs a
    node's ``validate_inputs`` names: execution.py skips them for exactly those
    inputs (checked on 0.3.64 and 0.17.0), so the node makes them here, worded
    as ComfyUI words them. Values that are None (linked, or not given) are left
    to the run. Returns (None, the values converted) or (the first message,
    starting with the input name, None)."""
    out = dict(values)
    for spec in node_cls.define_schema().inputs:
        v = values.get(spec.id)
        if v is None:
            continue
        options = getattr(spec, "options", None)
        if options is not None and isinstance(options, (list, tuple)):
            if v not in options:
                shown = list(options) if len(options) <= 20 else f"(list of length {len(options)})"
                return f"{spec.id}: '{v}' not in {shown}", None
            continue
        kind = getattr(spec, "io_type", None)
        convert = {"INT": int, "FLOAT": float}.get(kind)
        if convert is not None:
            try:
                v = out[spec.id] = convert(v)
            except (TypeError, ValueError, OverflowError):
                return f"{spec.id}: Failed to convert an input value to a {kind} value: {v!r}", None
        lo, hi = getattr(spec, "min", None), getattr(spec, "max", None)
        if lo is not None and v < lo:
            return f"{spec.id}: value {v} smaller than min of {lo}", None
        if hi is not None and v > hi:
            return f"{spec.id}: value {v} bigger than max of {hi}", None
    return None, out


def combos_checked(node_cls, **values) -> str | bool:
    """validate_inputs of a node's dropdowns: ComfyUI 0.3.64 does not check a V3 node's Combo inputs at /prompt
    (0.17.0 does), so every pack node names its dropdowns in its validate_inputs and has them checked here, in
    ComfyUI's wording, on every version. True, or the message naming the input."""
    return named_inputs(node_cls, **values)[0] or True


def fix_empty_latent_channels(model, latent: dict) -> torch.Tensor:
    """comfy.sample.fix_empty_latent_channels across ComfyUI versions."""
    fn = comfy.sample.fix_empty_latent_channels
    if "downscale_ratio_spacial" in inspect.signature(fn).parameters:
        return fn(model, latent["samples"], latent.get("downscale_ratio_spacial", None))
    return fn(model, latent["samples"])


def input_scale_fn(model_sampling):
    """c_in(sigma) of a ComfyUI model_sampling object, as a scalar tensor."""
    def c_in(sigma):
        sigma = torch.as_tensor(sigma).reshape(1)
        return model_sampling.calculate_input(sigma, torch.ones_like(sigma)).reshape(())
    return c_in


def guidance_options(model_options: dict, scale: float) -> dict:
    """model_options that make a CFG guider (anything built on ComfyUI's
    ``sampling_function``: CFGGuider, KSampler, ControlNet and hooks on the
    conditionings included) evaluate with guidance ``scale`` instead of its own
    cfg, and evaluate only the branch that guidance needs: the unconditional
    one for 0, the conditional one for 1. Existing ``sampler_cfg_function`` and
    ``sampler_calc_cond_batch_function`` patches are kept and called.
    """
    opts = model_options.copy()
    opts["disable_cfg1_optimization"] = True  # we decide which branch is needed, not the guider's cfg
    orig_cfg = model_options.get("sampler_cfg_function")
    orig_calc = model_options.get("sampler_calc_cond_batch_function")

    def cfg_function(args):
        args = dict(args)
        args["cond_scale"] = scale
        if orig_cfg is not None:
            return orig_cfg(args)
        return args["uncond"] + (args["cond"] - args["uncond"]) * scale

    def calc(args, conds):
        if orig_calc is not None:
            return orig_calc({**args, "conds": conds})
        return comfy.samplers.calc_cond_batch(args["model"], conds, args["input"], args["sigma"], args["model_options"])

    def calc_cond_batch(args):
        cond, uncond = args["conds"][0], args["conds"][1]
        if scale == 0.0 and uncond is not None:
            out = calc(args, [uncond])[0]
            return [out, out]
        if math.isclose(scale, 1.0) or uncond is None:
            out = calc(args, [cond])[0]
            return [out, out]
        return calc(args, [cond, uncond])

    opts["sampler_cfg_function"] = cfg_function
    opts["sampler_calc_cond_batch_function"] = calc_cond_batch
    return opts


# --------------------------------------------------------------------------- Z-Sampling
# The zag (inversion) evaluation and the guidance it reads off a guider; checked on ComfyUI 0.3.64 and 0.17.0.

ZAG_KEY = "reflect_zag"  # in an evaluation's model_options: this evaluation is a zag
CFG_PATCH_KEYS = ("sampler_cfg_function", "sampler_pre_cfg_function", "sampler_post_cfg_function")


def guider_cfg(guider, input_name: str = "guider") -> float:
    """gamma_1 of a guider: ``cfg`` of CFGGuider / PerpNegGuider (BasicGuider: 1.0), the larger of
    DualCFGGuider's ``cfg1`` / ``cfg2`` (its guidance is off only when both are <= 1); a clear error for a
    guider whose conditionings the zag cannot read. Checked on 0.3.64, 0.17.0 (attributes cfg, cfg1, cfg2,
    original_conds)."""
    if not isinstance(guider, comfy.samplers.CFGGuider) or "positive" not in getattr(guider, "original_conds", {}):
        raise ValueError(f"{input_name}: Z-Sampling's inversion cannot read the guidance of a "
                         f"{type(guider).__name__} (it needs a guider with a 'positive' conditioning: CFGGuider, "
                         "DualCFGGuider, PerpNegGuider or BasicGuider)")
    if hasattr(guider, "cfg1") and hasattr(guider, "cfg2"):
        return max(float(guider.cfg1), float(guider.cfg2))
    return float(guider.cfg)


class _ZagGuidance:
    """The zag's prediction: plain CFG at ``scale`` between the guider's positive and negative conditionings
    (the reference's inversion), with the model's patches (LoRA, ControlNet, hooks, FreeU) but without pre-/
    post-CFG functions and sampler_cfg_function (PAG, SAG, APG, CFG-Zero*, SWG, CFG++'s hook): those see the
    zig evaluations only, exactly as in KSampler. Checked on 0.3.64, 0.17.0 (sampling_function, guider.conds)."""

    def __init__(self, guider, scale: float):
        self.guider, self.scale = guider, float(scale)
        self.inner_model = guider.inner_model

    def __call__(self, x, sigma, model_options={}, seed=None):
        opts = {k: v for k, v in model_options.items() if k not in CFG_PATCH_KEYS and k != ZAG_KEY}
        conds = self.guider.conds
        return comfy.samplers.sampling_function(self.inner_model, x, sigma, conds.get("negative", None),
                                                conds.get("positive", None), self.scale,
                                                model_options=guidance_options(opts, self.scale), seed=seed)


class ZagDispatch:
    """``model_k`` (ComfyUI's KSamplerX0Inpaint) for every evaluation, except those whose model_options carry
    ZAG_KEY: those go through a copy of it (same mask, latent and noise) around _ZagGuidance. Attribute access
    falls through to ``model_k``. Checked on 0.3.64, 0.17.0 (KSamplerX0Inpaint.inner_model)."""

    def __init__(self, model_k, guider, scale: float):
        self._model = model_k
        self._zag = copy.copy(model_k)
        self._zag.inner_model = _ZagGuidance(guider, scale)

    def __getattr__(self, name):
        return getattr(self._model, name)

    def __call__(self, x, sigma, **kwargs):
        zag = kwargs.get("model_options", {}).get(ZAG_KEY, False)
        return (self._zag if zag else self._model)(x, sigma, **kwargs)


class EvalProgress:
    """Wraps ComfyUI's k-diffusion model (``model_k``) to report progress and a
    preview after every model evaluation, and to honour interrupts between
    evaluations. Attribute access falls through to the wrapped model so the
    samplers that look inside it keep working."""

    def __init__(self, model_k, callback, total: int):
        self._model = model_k
        self._callback = callback
        self.total = max(int(total), 1)
        self.calls = 0

    def __getattr__(self, name):
        return getattr(self._model, name)

    def __call__(self, x, sigma, **kwargs):
        comfy.model_management.throw_exception_if_processing_interrupted()
        out = self._model(x, sigma, **kwargs)
        self.calls += 1
        if self._callback is not None:
            self._callback(min(self.calls, self.total) - 1, out, x, self.total)
        return out


def resolve_file(folder: str, name, input_name: str) -> str | None:
    """The path of file ``name`` in one of ComfyUI's ``folder`` folders, or None
    when it is in none of them. A name that is not a plain relative path
    (absolute, with ``..``, empty, with a NUL) and a file that resolves, through
    links, outside the folder it was found in are refused with a ValueError
    naming ``input_name``: a workflow from the network reads only ComfyUI's folders."""
    if (not isinstance(name, str) or not name.strip() or "\x00" in name or os.path.isabs(name)
            or os.path.splitdrive(name)[0] or ".." in name.replace("\\", "/").split("/")):
        raise ValueError(f"{input_name}: {name!r} is not a file name inside the '{folder}' folders")
    for base in folder_paths.get_folder_paths(folder):
        path = os.path.join(base, name)
        if os.path.isfile(path):
            root, real = os.path.realpath(base), os.path.realpath(path)
            if os.path.commonpath([root, real]) != root:
                raise ValueError(f"{input_name}: {name!r} links outside the '{folder}' folder {base}")
            return path
    return None


# --------------------------------------------------------------------------- quality / adaptive (QualityGate,
# AdaptiveStudentTeacher; owned with nodes/quality_gate.py and nodes/adaptive.py)

def skip_output():
    """An output value that makes ComfyUI skip the nodes it feeds, silently
    (comfy_execution.graph_utils.ExecutionBlocker(None), which a V3 node may
    return as one of its outputs). Checked on 0.3.64 and 0.17.0."""
    from comfy_execution.graph_utils import ExecutionBlocker
    return ExecutionBlocker(None)


def linked_inputs(node_cls):
    """Names of the inputs linked to another node's output in the running graph, for a V3 node whose schema
    lists io.Hidden.unique_id and io.Hidden.dynprompt (None where ComfyUI gave neither: a direct call).
    A lazy input that is not linked must not be requested (ComfyUI raises NodeInputError). Checked on 0.3.64
    and 0.17.0."""
    hidden = getattr(node_cls, "hidden", None)
    dynprompt, uid = getattr(hidden, "dynprompt", None), getattr(hidden, "unique_id", None)
    if dynprompt is None or uid is None:
        return None
    inputs = dynprompt.get_node(uid).get("inputs", {})
    return {k for k, v in inputs.items() if isinstance(v, (list, tuple)) and len(v) == 2 and isinstance(v[0], str)}


def base_sampler(sampler):
    """(KSAMPLER, name) for a sampler name or a KSAMPLER object (e.g. from
    KSamplerSelect), with clear errors for anything else."""
    if isinstance(sampler, str):
        if sampler not in comfy.samplers.SAMPLER_NAMES:
            raise ValueError(f"sampler_name {sampler!r} is not one of ComfyUI's samplers: "
                             f"{', '.join(comfy.samplers.SAMPLER_NAMES)}")
        return comfy.samplers.sampler_object(sampler), sampler
    if not isinstance(sampler, comfy.samplers.KSAMPLER) or type(sampler).sample is not comfy.samplers.KSAMPLER.sample:
        raise ValueError(f"sampler must be one of ComfyUI's k-diffusion samplers (e.g. from KSamplerSelect), "
                         f"got {type(sampler).__name__}")
    name = getattr(sampler.sampler_function, "__name__", "")
    name = name[len("sample_"):] if name.startswith("sample_") else name
    # the functions whose names are not the sampler's (comfy/samplers.py sampler_object / ksampler, 0.3.64, 0.17.0)
    name = {"unipc": "uni_pc", "unipc_bh2": "uni_pc_bh2", "dpm_fast_function": "dpm_fast",
            "dpm_adaptive_function": "dpm_adaptive"}.get(name, name)
    return sampler, name


def run_sampler(sampler, model, x, sigmas, extra_args, callback):
    """Run a ComfyUI KSAMPLER's sampler function once over ``sigmas`` on ``model`` (``x`` already noised to
    sigmas[0]), its per-step ``callback`` given, its progress bar off. Checked on 0.3.64, 0.17.0."""
    return sampler.sampler_function(model, x, sigmas, extra_args=extra_args, callback=callback, disable=True,
                                    **sampler.extra_options)


def check_samples(x: torch.Tensor, name: str = "latent_image") -> None:
    """A latent batch the samplers can take: not empty, all finite."""
    if x.ndim < 3 or x.shape[0] == 0 or x.numel() == 0:
        raise ValueError(f"{name}: empty batch (shape {tuple(x.shape)})")
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name}: contains NaN or infinite values")


def check_latent(model, latent: dict, name: str = "latent_image") -> torch.Tensor:
    """``latent['samples']`` checked for ``model``: not empty, finite, with the
    channels of the model's latent format (after ComfyUI's own fix for empty
    latents); returns the fixed tensor."""
    check_samples(latent["samples"], name)
    x = fix_empty_latent_channels(model, latent)
    fmt = model.get_model_object("latent_format")
    ch = getattr(fmt, "latent_channels", x.shape[1])
    if x.shape[1] != ch:
        raise ValueError(f"{name}: latents with {x.shape[1]} channels, the model takes {ch} "
                         f"({type(fmt).__name__} latent format)")
    return x


def is_oom(e: BaseException) -> bool:
    """Whether ``e`` is an out-of-memory error (ComfyUI's own test where it has
    one, 0.4+; before that its OOM_EXCEPTION or an 'out of memory' message)."""
    mm = comfy.model_management
    if hasattr(mm, "is_oom"):
        return mm.is_oom(e)
    oom = getattr(mm, "OOM_EXCEPTION", torch.cuda.OutOfMemoryError)
    return (oom is not Exception and isinstance(e, oom)) or "out of memory" in str(e).lower()


def run_naming(name: str, shape, fn, errors=(RuntimeError, IndexError)):
    """``fn()``; a failure in it (not an interrupt or out-of-memory) is re-raised as itself (its type, attributes
    and traceback), with the input it was sampling added to its message as context (e.g. a latent too small for
    the network); once, however deep the calls nest."""
    try:
        return fn()
    except comfy.model_management.InterruptProcessingException:
        raise
    except errors as e:
        if is_oom(e) or getattr(e, "_reflect_context", False):
            raise
        context = f"(while sampling {name} of shape {tuple(shape)})"
        e._reflect_context = True
        if len(e.args) == 1 and isinstance(e.args[0], str):  # the message ComfyUI shows (str(e)) gets the context
            e.args = (f"{e.args[0]} {context}",)
        elif hasattr(e, "add_note"):  # Python >= 3.11: in the traceback
            e.add_note(context)
        raise


def check_result(x: torch.Tensor, names: str) -> torch.Tensor:
    if not bool(torch.isfinite(x).all()):
        raise ValueError(f"{names}: sampling produced NaN or infinite values (a guidance scale or strength too "
                         "large for this model?)")
    return x


def sample_with_guider(guider, sampler, sigmas, latent: dict, seed: int, steps_for_bar: int,
                       guidance_names: str = "cfg") -> dict:
    """KSampler's path (seeds, batch_index, noise masks, previews) with any
    GUIDER and SAMPLER: what ``nodes.common_ksampler`` does, with a guider.
    The latent is checked first and a non-finite result is an error naming
    ``guidance_names``."""
    model = guider.model_patcher
    latent_image = check_latent(model, latent)
    noise = comfy.sample.prepare_noise(latent_image, seed, latent.get("batch_index", None))
    callback = latent_preview.prepare_callback(model, steps_for_bar)
    disable_pbar = not comfy.utils.PROGRESS_BAR_ENABLED
    samples = run_naming("latent_image", latent_image.shape, lambda: guider.sample(
        noise, latent_image, sampler, sigmas, denoise_mask=latent.get("noise_mask", None), callback=callback,
        disable_pbar=disable_pbar, seed=seed))
    check_result(samples, guidance_names)
    out = latent.copy()
    out.pop("downscale_ratio_spacial", None)
    mm = comfy.model_management
    dtype = mm.intermediate_dtype() if hasattr(mm, "intermediate_dtype") else None
    out["samples"] = samples.to(device=mm.intermediate_device(), dtype=dtype)
    return out


def sample_with(model, sampler, sigmas, positive, negative, cfg, latent: dict, seed: int, steps_for_bar: int,
                guidance_names: str = "cfg"):
    """``sample_with_guider`` with a CFGGuider (KSampler's guidance)."""
    guider = comfy.samplers.CFGGuider(model)
    guider.set_conds(positive, negative)
    guider.set_cfg(cfg)
    return sample_with_guider(guider, sampler, sigmas, latent, seed, steps_for_bar, guidance_names)


# --------------------------------------------------------------------------- SWG (SlidingWindowGuidance)
# ComfyUI internals that nodes/swg.py needs, each checked on ComfyUI 0.3.64 and 0.17.0.

def model_patch_size(model) -> tuple[int, ...]:
    """The diffusion model's patch size per latent dimension, as a tuple
    (``diffusion_model.patch_size``: an int for Flux/SD3/DiT, (t, h, w) for
    Wan/HunyuanVideo; absent on UNets and LTXV: ()). Checked on 0.3.64, 0.17.0."""
    p = getattr(model.model.diffusion_model, "patch_size", None)
    if p is None:
        return ()
    if isinstance(p, (tuple, list)):
        return tuple(int(v) for v in p)
    return (int(p),)


def control_hint(control):
    """The hint image (B, C, H, W) a ControlNet was applied with
    (``cond_hint_original``), or None. Checked on 0.3.64, 0.17.0."""
    return getattr(control, "cond_hint_original", None)


def control_with_hints(control, make_hint):
    """A shallow copy of a ControlNet chain (``previous_controlnet`` links
    included) where each link's hint is ``make_hint(its hint)``; each copy
    computes (upscales, VAE-encodes) and caches its own ``cond_hint`` the first
    time it runs, as ComfyUI's ControlNet does. The copies share the loaded
    control model and the state set by the sampler's ``pre_run``.
    Checked on 0.3.64, 0.17.0 (ControlBase.cond_hint / cond_hint_original / previous_controlnet)."""
    if control is None:
        return None
    import copy as _copy
    c = _copy.copy(control)
    hint = getattr(control, "cond_hint_original", None)
    if hint is not None:
        c.cond_hint_original = make_hint(hint)
    c.cond_hint = None
    c.previous_controlnet = control_with_hints(getattr(control, "previous_controlnet", None), make_hint)
    return c


def batch_uuids(transformer_options: dict):
    """The conditioning entries' uuids of the batch a ControlNet is asked for
    (``transformer_options['uuids']``, set by calc_cond_batch before
    ``get_control``). Checked on 0.3.64, 0.17.0."""
    return transformer_options.get("uuids")


def run_sample_sigmas(model_options: dict):
    """The schedule of the current sampling run (``transformer_options['sample_sigmas']``,
    set by the sampler per run), used to tell runs apart. Checked on 0.3.64, 0.17.0."""
    return model_options.get("transformer_options", {}).get("sample_sigmas")


WEAK_MODEL_KEY = "reflect_swg_weak_model"


def attach_weak_model(model, weak) -> None:
    """Load ``weak`` (a ModelPatcher) together with ``model`` under ComfyUI's
    model management: an additional model of the patcher, loaded and freed
    with it by prepare_sampling. Checked on 0.3.64, 0.17.0 (ModelPatcher.set_additional_models)."""
    model.set_additional_models(WEAK_MODEL_KEY, [weak])


def weak_prediction(weak, conds: list, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The weak model's denoised prediction of ``x`` with the sampler's
    processed conditioning entries ``conds``, through ComfyUI's calc_cond_batch
    on the weak model's BaseModel (its own patches and model_options). The
    weak patcher is made the BaseModel's current patcher for the call (the
    sampler pre-runs only the main one). Checked on 0.3.64, 0.17.0."""
    base = weak.model
    prev = getattr(base, "current_patcher", None)
    if hasattr(base, "current_patcher"):
        base.current_patcher = weak
    try:
        return comfy.samplers.calc_cond_batch(base, [conds], x, sigma, weak.model_options)[0]
    finally:
        if hasattr(base, "current_patcher"):
            base.current_patcher = prev


# ---------------------------------------------------------------------------
# W2SD (nodes/w2sd.py): weight patches, side models and per-side conds/options.
# Every function below was checked on ComfyUI 0.3.64 and 0.17.0.
# ---------------------------------------------------------------------------

def lora_weights(adapter):
    """(up, down, alpha, mid, dora_scale, reshape) of a LoRA weight patch, or None.
    Checked on 0.3.64 and 0.17.0: a WeightAdapter named 'lora' with .weights, or the old ('lora', weights) tuple."""
    if getattr(adapter, "name", None) == "lora" and hasattr(adapter, "weights"):
        return adapter.weights
    if isinstance(adapter, tuple) and len(adapter) == 2 and adapter[0] == "lora":
        return adapter[1]
    return None


def diff_weights(adapter):
    """The difference tensor of a 'diff' weight patch, or None. Checked on 0.3.64 and 0.17.0: ('diff', (tensor,))."""
    if isinstance(adapter, tuple) and len(adapter) == 2 and adapter[0] == "diff":
        return adapter[1][0]
    return None


def patch_kind(adapter) -> str:
    """A weight patch's kind for messages ('lora', 'diff', 'set', ...). Checked on 0.3.64 and 0.17.0."""
    return getattr(adapter, "name", None) or (adapter[0] if isinstance(adapter, tuple) else type(adapter).__name__)


def weight_patches(patcher) -> dict:
    """{key: [(strength, adapter, strength_model, offset, function)]} of a ModelPatcher.
    Checked on 0.3.64 and 0.17.0: ModelPatcher.patches holds those 5-tuples."""
    return {k: [tuple(e) for e in v] for k, v in patcher.patches.items()}


def object_patches(patcher) -> dict:
    """A ModelPatcher's object patches (ModelSampling nodes etc.). Checked on 0.3.64 and 0.17.0."""
    return dict(patcher.object_patches)


def latent_format_name(patcher) -> str:
    """The class name of a MODEL's latent format. Checked on 0.3.64 and 0.17.0."""
    return type(patcher.get_model_object("latent_format")).__name__


def base_model(patcher):
    """The BaseModel a ModelPatcher wraps (what a guider's inner_model is). Checked on 0.3.64 and 0.17.0."""
    return patcher.model


def with_models_loaded_together(patcher, others: list, key: str = "w2sd"):
    """A clone of ``patcher`` whose loading also loads ``others`` (set_additional_models), so that
    sampling with it never evicts one of them. Checked on 0.3.64 and 0.17.0."""
    clone = patcher.clone()
    if others:
        clone.set_additional_models(key, list(others))
    return clone


def load_lora(model, lora: dict, strength: float):
    """``model`` with a LoRA state dict at ``strength``, as LoraLoaderModelOnly makes it. Checked on 0.3.64 and 0.17.0."""
    import comfy.sd
    return comfy.sd.load_lora_for_models(model, None, lora, strength, 0)[0]


def side_sampling_options(model_options: dict, sigmas, device, dtype) -> dict:
    """A side's model_options for one run, made as CFGGuider.sample/inner_sample make the guider's
    (a clone, sample_sigmas in transformer_options, tensors cast to the load device). Checked on 0.3.64 and 0.17.0."""
    import comfy.model_patcher
    opts = comfy.model_patcher.create_model_options_clone(model_options)
    opts.setdefault("transformer_options", {})["sample_sigmas"] = sigmas
    comfy.samplers.cast_to_load_options(opts, device=device, dtype=dtype)
    return opts


def process_conds_with(model, guider_model, noise, conds: dict, device, latent_image, denoise_mask, seed,
                       **kwargs) -> dict:
    """``conds`` processed for sampling with BaseModel ``model`` (area, masks, the model's extra conds,
    ControlNet pre_run) as CFGGuider.inner_sample processes its own with ``guider_model``; ``kwargs``: what
    this ComfyUI version's inner_sample passes on (0.17: latent_shapes). Checked on 0.3.64 and 0.17.0."""
    if latent_image is not None and torch.count_nonzero(latent_image) > 0:
        latent_image = guider_model.process_latent_in(latent_image)
    return comfy.samplers.process_conds(model, noise, conds, device, latent_image, denoise_mask, seed, **kwargs)


@contextlib.contextmanager
def run_patcher(patcher):
    """Context of a ModelPatcher evaluated in a sampling run that another patcher leads (CFGGuider.outer_sample's
    pre_run / cleanup: current_patcher, ON_PRE_RUN / ON_CLEANUP callbacks). Checked on 0.3.64 and 0.17.0."""
    patcher.pre_run()
    try:
        yield
    finally:
        patcher.cleanup()
