"""What every node of the pack needs from ComfyUI: one place that knows
ComfyUI's internals (guided evaluation with an overridden guidance, branch
skipping, progress and previews over model evaluations), shared by the
reflection samplers.
"""

from __future__ import annotations

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

# Model evaluations per step of ComfyUI's samplers that are not single-evaluation
# (used only to size the progress bar; the bar is clamped to what really ran).
EVALS_PER_STEP = {
    "heun": 2, "heunpp2": 2, "dpm_2": 2, "dpm_2_ancestral": 2, "dpmpp_2s_ancestral": 2,
    "dpmpp_2s_ancestral_cfg_pp": 2, "dpmpp_sde": 2, "dpmpp_sde_gpu": 2, "exp_heun_2_x0": 2,
    "exp_heun_2_x0_sde": 2, "seeds_2": 2, "seeds_3": 3, "sa_solver_pece": 2,
}


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


def unload_model(patcher) -> None:
    """Offload one ModelPatcher from its compute device now (what ComfyUI's
    ``free_memory`` does to a model it evicts), leaving the others loaded."""
    loaded = comfy.model_management.current_loaded_models
    for i in range(len(loaded) - 1, -1, -1):
        if loaded[i].model is patcher and loaded[i].model_unload():
            loaded.pop(i)


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
    return sampler, name


def run_sampler_segment(sampler, model, x, sigmas, extra_args):
    """Run a ComfyUI sampler function over a piece of a schedule (its own
    noise scaling is not applied: ``x`` is already at ``sigmas[0]``)."""
    return sampler.sampler_function(model, x, sigmas, extra_args=extra_args, callback=None, disable=True,
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
    """``fn()``, with a model failure that is not an interrupt or out-of-memory
    re-raised naming the latent input it was sampling (e.g. a latent too small
    for the network)."""
    try:
        return fn()
    except comfy.model_management.InterruptProcessingException:
        raise
    except errors as e:
        if is_oom(e):
            raise
        raise RuntimeError(f"{name}: processing a latent of shape {tuple(shape)} failed: {e}") from e


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
