"""ComfyUI node for Sliding Window Guidance (samplers/swg.py).

``SlidingWindowGuidance`` patches a MODEL, like ComfyUI's PAG / SAG / APG
nodes, with a post-CFG function: after the guider's own result (CFG or not),
it adds ``scale * mask * (D_pos - D_crops)`` where ``D_crops`` is the model's
prediction assembled from crops of the input. So it works wherever the MODEL is
sampled through ComfyUI's CFG function: KSampler, SamplerCustomAdvanced with
CFGGuider, ZigzagKSampler, WeakStrongReflection.

The crops are evaluated through ComfyUI's own ``calc_cond_batch`` with each
window expressed as an area of the conditioning (with a flat mask, so ComfyUI's
area feathering does not apply): all crops of all images go through the model
in one batched call, the overlap average is ComfyUI's own area composition,
and whatever the conditioning carries is cropped with the latent the way
ComfyUI crops area conditionings (masks, inpainting concat latents, existing
areas, intersected). ControlNet hints are cropped to the window too (each
window then needs its own ControlNet input, so such crops run window by window).
"""

from __future__ import annotations

import copy
import math

import torch

import comfy.samplers
from comfy_api.latest import io

from ..samplers import swg
from . import compat as glue
from .zigzag import CATEGORY

CROP_CONDITIONINGS = ("auto", "conditional", "unconditional")


def latent_downscale(model) -> int:
    fmt = model.get_model_object("latent_format")
    return int(getattr(fmt, "spacial_downscale_ratio", 8))


def patch_multiple(model) -> int:
    """Patch size of transformer models (crops must be multiples of it); 1 for UNets."""
    p = getattr(model.model.diffusion_model, "patch_size", None)
    if isinstance(p, (tuple, list)):
        p = max(int(v) for v in p[-2:])
    return int(p) if p else 1


def _crop_control(control, win, height, width):
    """A copy of a ControlNet (and the ones it chains to) whose hint is the
    window's part of the original hint."""
    if control is None:
        return None
    c = copy.copy(control)  # shares the loaded model and the sampling state set by pre_run
    hint = control.cond_hint_original
    if hint is not None:
        t, b, l, r = win
        sy, sx = hint.shape[-2] / height, hint.shape[-1] / width
        c.cond_hint_original = hint[..., round(t * sy):round(b * sy), round(l * sx):round(r * sx)]
    c.cond_hint = None
    c.previous_controlnet = _crop_control(getattr(control, "previous_controlnet", None), win, height, width)
    return c


def window_conds(conds: list, wins: list, x: torch.Tensor) -> list:
    """Conditioning entries (as the sampler holds them) for a set of crop
    windows of ``x``: one copy per entry and window, restricted to the window's area."""
    dims = list(x.shape[2:])
    nd = len(dims)
    flat = torch.ones([1] + dims, device=x.device)  # ComfyUI only reads cond masks: one serves every window
    out = []
    for c in conds:
        if "area" in c:
            area = list(c["area"])
            if len(area) != 2 * nd:  # (h, w, y, x) on a latent with more dims: the leading dims are whole
                extra = nd - len(area) // 2
                area = dims[:extra] + area[:len(area) // 2] + [0] * extra + area[len(area) // 2:]
            size, off = area[:nd], area[nd:]
        else:
            size, off = dims[:], [0] * nd
        for win in wins:
            t, b, l, r = win
            lo = off[:-2] + [max(off[-2], t), max(off[-1], l)]
            hi = [o + s for o, s in zip(off[:-2], size[:-2])] + [min(off[-2] + size[-2], b), min(off[-1] + size[-1], r)]
            if any(h <= lo_ for lo_, h in zip(lo, hi)):
                continue
            w = c.copy()
            w["area"] = tuple([h - lo_ for lo_, h in zip(lo, hi)] + lo)
            if "mask" not in w:  # a flat mask: no feathering at the window's edges
                w["mask"] = flat
            if "control" in w:
                w["control"] = _crop_control(w["control"], win, dims[-2], dims[-1])
            out.append(w)
    return out


class SWGPatch:
    """The post-CFG function of the patch (kept as an object so a test or a
    user can read its settings)."""

    def __init__(self, scale, crop_h, crop_w, crops_y, crops_x, masked, mask_with_cfg, crop_conditioning,
                 sigma_start, sigma_end, multiple):
        self.scale, self.masked, self.mask_with_cfg = float(scale), bool(masked), bool(mask_with_cfg)
        self.crop_h, self.crop_w, self.crops_y, self.crops_x = int(crop_h), int(crop_w), int(crops_y), int(crops_x)
        self.crop_conditioning, self.multiple = crop_conditioning, int(multiple)
        self.sigma_start, self.sigma_end = float(sigma_start), float(sigma_end)

    def layout(self, height: int, width: int) -> list:
        kh = swg.round_crop(self.crop_h, height, self.multiple)
        kw = swg.round_crop(self.crop_w, width, self.multiple)
        for inputs, dim, size, k, n in (("crop_height / crops_y", "height", height, kh, self.crops_y),
                                        ("crop_width / crops_x", "width", width, kw, self.crops_x)):
            try:
                swg.check_layout(size, k, n, dim)
            except ValueError as e:
                raise ValueError(f"{inputs}: {e}") from None
        return swg.windows(height, width, kh, kw, self.crops_y, self.crops_x)

    def __call__(self, args):
        denoised = args["denoised"]
        sigma = float(args["sigma"].reshape(-1)[0])
        if self.scale == 0.0 or not (self.sigma_end <= sigma <= self.sigma_start):
            return denoised
        x, cond, uncond = args["input"], args["cond"], args["uncond"]
        with_cfg = uncond is not None and not math.isclose(args["cond_scale"], 1.0)
        use_uncond = self.crop_conditioning == "unconditional" or (self.crop_conditioning == "auto" and with_cfg)
        crop_from = uncond if (use_uncond and uncond is not None) else cond
        wins = self.layout(x.shape[-2], x.shape[-1])
        conds = window_conds(crop_from, wins, x)
        kh, kw = wins[0][1] - wins[0][0], wins[0][3] - wins[0][2]
        d_crops = glue.run_naming(
            f"crop_width / crop_height ({kh} x {kw} latent pixels)", x.shape,
            lambda: comfy.samplers.calc_cond_batch(args["model"], [conds], x, args["sigma"], args["model_options"])[0],
            (RuntimeError, ValueError))
        weight = swg.overlap(x.shape[-2], x.shape[-1], wins, like=x)
        masked = self.masked and (not with_cfg or self.mask_with_cfg)
        return denoised + swg.guidance_term(args["cond_denoised"], d_crops, self.scale, weight, masked)


class SlidingWindowGuidance(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="SlidingWindowGuidance",
            display_name="Sliding Window Guidance (SWG / M-SWG)",
            category=CATEGORY,
            description="SWG (Kaiser, Adaloglou, Kollmann 2024): guidance away from the model's own prediction "
                        "assembled from overlapping crops: D = D_guided + scale * (D_cond - D_crops). With cfg 1 "
                        "this is the paper's SWG (crops conditional); with cfg > 1 it is the paper's CFG+SWG "
                        "(its CFG weight w is ComfyUI's cfg - 1; crops unconditional, never masked). Paper (EDM2, "
                        "latent 64): crop 40, 2 crops per side.",
            inputs=[
                io.Model.Input("model", tooltip="The model to patch (any type ComfyUI runs)."),
                io.Float.Input("scale", default=1.0, min=-100.0, max=100.0, step=0.01, round=0.01,
                               tooltip="SWG scale (the paper's omega for SWG)."),
                io.Int.Input("crop_width", default=40, min=1, max=16384,
                             tooltip="Crop width, in the units of crop_units (paper: 40 latent pixels of 64). "
                                     "Transformer models round it to their patch size."),
                io.Int.Input("crop_height", default=0, min=0, max=16384,
                             tooltip="Crop height (0: same as crop_width)."),
                io.Combo.Input("crop_units", options=["latent", "pixels"], default="latent",
                               tooltip="Units of the crop sizes: latent pixels, or image pixels (divided by the "
                                       "model's VAE downscale, 8 for SD/SDXL/Flux)."),
                io.Int.Input("crops_x", default=2, min=1, max=16,
                             tooltip="Crops per row (the paper's N); the last crop ends at the edge."),
                io.Int.Input("crops_y", default=0, min=0, max=16, tooltip="Crops per column (0: same as crops_x)."),
                io.Boolean.Input("masked", default=False,
                                 tooltip="M-SWG: apply the guidance only where more than one crop overlaps."),
                io.Boolean.Input("mask_with_cfg", default=False,
                                 tooltip="Also mask when cfg > 1. The reference's combined CFG+SWG never masks "
                                         "(it returns before the mask); on: a masked combined mode it lacks."),
                io.Combo.Input("crop_conditioning", options=list(CROP_CONDITIONINGS), default="auto",
                               tooltip="Conditioning of the crops. auto: as the reference, conditional for SWG "
                                       "alone (cfg 1), unconditional with CFG (cfg > 1). 'unconditional' at cfg 1 "
                                       "makes ComfyUI evaluate the negative branch too (it needs its conditioning)."),
                io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.001,
                               tooltip="Where in the sampling the guidance starts (0 = first step)."),
                io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.001,
                               tooltip="Where it ends (1 = last step)."),
            ],
            outputs=[io.Model.Output()],
        )

    @classmethod
    def validate_inputs(cls, start_percent=None, end_percent=None, **kwargs):
        if start_percent is not None and end_percent is not None and start_percent > end_percent:
            return f"start_percent ({start_percent}) must not be after end_percent ({end_percent})"
        return True

    @classmethod
    def execute(cls, model, scale, crop_width, crop_height, crop_units, crops_x, crops_y, masked, mask_with_cfg,
                crop_conditioning, start_percent, end_percent) -> io.NodeOutput:
        if crop_conditioning not in CROP_CONDITIONINGS:
            raise ValueError(f"crop_conditioning must be one of {CROP_CONDITIONINGS} (got {crop_conditioning!r})")
        if crop_width <= 0 or crop_height < 0 or crops_x <= 0 or crops_y < 0:
            raise ValueError(f"crop sizes and counts must be positive (crop_width {crop_width}, crop_height "
                             f"{crop_height}, crops_x {crops_x}, crops_y {crops_y})")
        if start_percent > end_percent:
            raise ValueError(f"start_percent ({start_percent}) must not be after end_percent ({end_percent})")
        crop_height = crop_height or crop_width
        if crop_units == "pixels":
            f = latent_downscale(model)
            crop_width, crop_height = max(1, round(crop_width / f)), max(1, round(crop_height / f))
        ms = model.get_model_object("model_sampling")
        patch = SWGPatch(scale, crop_height, crop_width, crops_y or crops_x, crops_x, masked, mask_with_cfg,
                         crop_conditioning, ms.percent_to_sigma(start_percent), ms.percent_to_sigma(end_percent),
                         patch_multiple(model))
        m = model.clone()
        # unconditional crops at cfg 1 need the negative conditioning, which ComfyUI drops at cfg 1 unless told
        # not to (its uncond branch is then evaluated too)
        m.set_model_sampler_post_cfg_function(patch, disable_cfg1_optimization=crop_conditioning == "unconditional")
        return io.NodeOutput(m)


NODES = [SlidingWindowGuidance]
