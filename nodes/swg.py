"""ComfyUI node for Sliding Window Guidance (samplers/swg.py).

``SlidingWindowGuidance`` patches a MODEL, like ComfyUI's PAG / SAG / APG
nodes, with a post-CFG function: after the guider's own result (CFG or not),
it adds ``scale * mask * (D_pos - D_crops)`` where ``D_crops`` is the model's
prediction assembled from crops of the input, and, with a weak model, the
weak-model term ``weak_scale * (D_pos - D_weak)`` (the reference's ``wmg-swg``).
So it works wherever the MODEL is sampled through ComfyUI's CFG function:
KSampler, SamplerCustomAdvanced with CFGGuider, ZigzagKSampler, WeakStrongReflection.

The crops are evaluated through ComfyUI's own ``calc_cond_batch`` with each
window expressed as an area of the conditioning (with a flat mask, so ComfyUI's
area feathering does not apply): all crops of all images go through the model
in one batched call, the overlap average is ComfyUI's own area composition,
and whatever the conditioning carries is cropped with the latent the way
ComfyUI crops area conditionings (masks, inpainting concat latents, existing
areas, intersected). A ControlNet on the conditioning is replaced, for the
window entries, by one ``WindowControl`` shared by all windows (so ComfyUI
still batches them) that hands each window its part of the hint.

Video latents [B, C, T, H, W]: windows slide over height and width of every
frame; time stays whole unless ``crops_t`` > 1 or ``crop_frames`` > 0 ask for
temporal windows too.
"""

from __future__ import annotations

import math
import uuid as _uuid

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
    """Spatial patch size of transformer models (crops must be multiples of
    it: Flux/SD3 2, Wan's (1, 2, 2) -> 2); 1 for UNets and 1x1-patch models (LTXV)."""
    p = glue.model_patch_size(model)
    return max(p[-2:]) if p else 1


def temporal_multiple(model) -> int:
    """Temporal patch size of video transformers (Wan (1, 2, 2) -> 1); 1 otherwise."""
    p = glue.model_patch_size(model)
    return p[0] if len(p) == 3 else 1


def _broadcast(hint: torch.Tensor, batch: int) -> torch.Tensor:
    """A hint batch matched to ``batch`` images the way ComfyUI's ControlNet
    broadcasts it (comfy.controlnet.broadcast_image_to, per conditioning entry)."""
    if hint.shape[0] == 1:
        return hint.expand(batch, *hint.shape[1:])
    hint = hint[:batch]
    if batch > hint.shape[0]:
        hint = torch.cat([hint] * (batch // hint.shape[0]) + [hint[:batch % hint.shape[0]]])
    return hint


class WindowControl:
    """The ControlNet of a conditioning entry, for all of its crop windows at
    once: one object shared by every window entry (so calc_cond_batch batches
    the windows in one call), which builds, per batch composition, a copy of
    the ControlNet chain whose hint stacks each window's part of the original
    hint in the batch's order (read from the entries' uuids); ComfyUI's
    ControlNet then rescales (and VAE-encodes) that hint once and caches it."""

    def __init__(self, control, wins_by_uuid: dict, dims: list):
        self.control, self.wins_by_uuid, self.dims = control, wins_by_uuid, dims
        self.copies = {}

    def _hint(self, hint, wins, batch):
        parts = []
        for win in wins:
            win = win[-(hint.ndim - 2):]  # an image hint of a video latent: the spatial ranges
            sl = [slice(None)] * hint.ndim
            for d, (lo, hi) in zip(range(hint.ndim - len(win), hint.ndim), win):
                scale = hint.shape[d] / self.dims[d - hint.ndim]
                sl[d] = slice(round(lo * scale), round(hi * scale))
            parts.append(_broadcast(hint[tuple(sl)], batch))
        return torch.cat(parts)

    def get_control(self, x_noisy, t, cond, batched_number, transformer_options):
        uuids = glue.batch_uuids(transformer_options)
        wins = [self.wins_by_uuid[u] for u in uuids]
        batch = x_noisy.shape[0] // max(batched_number, 1)
        key = (tuple(uuids), tuple(x_noisy.shape))
        c = self.copies.get(key)
        if c is None:
            c = self.copies[key] = glue.control_with_hints(self.control, lambda h: self._hint(h, wins, batch))
        return c.get_control(x_noisy, t, cond, batched_number, transformer_options)


def _area(c: dict, dims: list):
    """(size, offset) per latent dimension of a conditioning entry's area."""
    nd = len(dims)
    if "area" not in c:
        return dims[:], [0] * nd
    area = list(c["area"])
    if len(area) != 2 * nd:  # (h, w, y, x) on a latent with more dims: the leading dims are whole
        extra = nd - len(area) // 2
        area = dims[:extra] + area[:len(area) // 2] + [0] * extra + area[len(area) // 2:]
    return area[:nd], area[nd:]


def window_conds(conds: list, wins: list, x: torch.Tensor) -> list:
    """Conditioning entries (as the sampler holds them) for a set of crop
    windows of ``x`` (each window: (lo, hi) for the last len(window) dims, or
    the 2-D (top, bottom, left, right)): one copy per entry and window,
    restricted to the window's area; a ControlNet becomes one WindowControl per entry."""
    dims = list(x.shape[2:])
    nd = len(dims)
    wins = [swg.as_ranges(w) for w in wins]
    flat = torch.ones([1] + dims, device=x.device)  # ComfyUI only reads cond masks: one serves every window
    out = []
    for c in conds:
        size, off = _area(c, dims)
        base_uuid = c.get("uuid") or _uuid.uuid4()
        by_uuid = {}
        entries = []
        for i, win in enumerate(wins):
            lo, hi = [], []
            for d in range(nd):
                a_lo, a_hi = off[d], off[d] + size[d]
                k = d - (nd - len(win))
                if k >= 0:
                    a_lo, a_hi = max(a_lo, win[k][0]), min(a_hi, win[k][1])
                lo.append(a_lo)
                hi.append(a_hi)
            if any(h <= l for l, h in zip(lo, hi)):
                continue
            w = c.copy()
            w["area"] = tuple([h - l for l, h in zip(lo, hi)] + lo)
            w["uuid"] = _uuid.uuid5(_uuid.NAMESPACE_OID, f"{base_uuid}/swg/{i}")
            if "mask" not in w:  # a flat mask: no feathering at the window's edges
                w["mask"] = flat
            by_uuid[w["uuid"]] = win
            entries.append(w)
        if c.get("control") is not None and entries:
            shared = WindowControl(c["control"], by_uuid, dims)
            for w in entries:
                w["control"] = shared
        out += entries
    return out


class SWGPatch:
    """The post-CFG function of the patch (kept as an object so a test or a
    user can read its settings). ``names`` maps 'h', 'w', 't', 'ny', 'nx', 'nt'
    to the input the user set for that value (for error messages)."""

    def __init__(self, scale, crop_h, crop_w, crops_y, crops_x, masked, mask_with_cfg, crop_conditioning,
                 sigma_start, sigma_end, multiple, weak=None, weak_scale=0.0, crop_t=0, crops_t=1, t_multiple=1,
                 names=None):
        self.scale, self.masked, self.mask_with_cfg = float(scale), bool(masked), bool(mask_with_cfg)
        self.crop_h, self.crop_w, self.crops_y, self.crops_x = int(crop_h), int(crop_w), int(crops_y), int(crops_x)
        self.crop_t, self.crops_t, self.t_multiple = int(crop_t), int(crops_t), int(t_multiple)
        self.crop_conditioning, self.multiple = crop_conditioning, int(multiple)
        self.sigma_start, self.sigma_end = float(sigma_start), float(sigma_end)
        self.weak, self.weak_scale = weak, float(weak_scale)
        self.names = {"h": "crop_height", "w": "crop_width", "t": "crop_frames", "ny": "crops_y", "nx": "crops_x",
                      "nt": "crops_t", **(names or {})}
        self._layouts, self._run, self._run_cache = {}, None, {}

    def temporal(self, ndim: int) -> bool:
        return ndim == 5 and (self.crops_t > 1 or self.crop_t > 0)

    def _check(self, size, k, n, dim, size_key, count_key):
        try:
            swg.check_layout(size, k, n, dim)
        except ValueError as e:
            msg = str(e)
            who = self.names[count_key] if "crops per" in msg else self.names[size_key]
            if "would all be the same crop" in msg:
                who = f"{self.names[size_key]} / {self.names[count_key]}"
            raise ValueError(f"{who}: {msg}") from None

    def layout(self, height: int, width: int, frames: int | None = None) -> list:
        """The crop windows of a latent of this size: 2-D (top, bottom, left,
        right) windows, or, with temporal windows on a video latent, ((t0, t1),
        (top, bottom), (left, right)). Cached per size."""
        key = (height, width, frames)
        if key not in self._layouts:
            kh = swg.round_crop(self.crop_h, height, self.multiple)
            kw = swg.round_crop(self.crop_w, width, self.multiple)
            self._check(height, kh, self.crops_y, "height", "h", "ny")
            self._check(width, kw, self.crops_x, "width", "w", "nx")
            if frames is None:
                self._layouts[key] = swg.windows(height, width, kh, kw, self.crops_y, self.crops_x)
            else:
                kt = swg.round_crop(self.crop_t or max(1, frames // self.crops_t + (frames % self.crops_t > 0)),
                                    frames, self.t_multiple)
                self._check(frames, kt, self.crops_t, "frames", "t", "nt")
                self._layouts[key] = swg.windows_nd((frames, height, width), (kt, kh, kw),
                                                    (self.crops_t, self.crops_y, self.crops_x))
        return self._layouts[key]

    def evaluations(self, guider_branches: int) -> int:
        """Model evaluations of one guided evaluation inside [start, end]: the
        guider's branches, + crops_t * crops_y * crops_x crop evaluations when
        scale != 0, + 1 evaluation of the weak model when one is connected and
        weak_scale != 0 (the crops and the weak model run on the images' batch)."""
        crops = self.crops_x * self.crops_y * max(self.crops_t, 1) if self.scale != 0.0 else 0
        return guider_branches + crops + (1 if self.weak is not None and self.weak_scale != 0.0 else 0)

    def _cache(self, args) -> dict:
        """Per sampling run: window conditionings and overlap weights."""
        run = glue.run_sample_sigmas(args["model_options"])
        if run is None or run is not self._run:
            self._run, self._run_cache = run, {}
        return self._run_cache

    def __call__(self, args):
        denoised = args["denoised"]
        sigma = float(args["sigma"].reshape(-1)[0])
        use_weak = self.weak is not None and self.weak_scale != 0.0
        if (self.scale == 0.0 and not use_weak) or not (self.sigma_end <= sigma <= self.sigma_start):
            return denoised
        x, cond, uncond = args["input"], args["cond"], args["uncond"]
        d_pos = args["cond_denoised"]
        out = denoised
        if use_weak:
            # the reference's wmg: the weak model with the labels (the positive conditioning)
            d_weak = glue.run_naming("weak_model", x.shape, lambda: glue.weak_prediction(self.weak, cond, x, args["sigma"]),
                                     (RuntimeError, ValueError))
            out = out + self.weak_scale * (d_pos - d_weak.to(d_pos))
        if self.scale == 0.0:
            return out
        with_cfg = uncond is not None and not math.isclose(args["cond_scale"], 1.0)
        use_uncond = self.crop_conditioning == "unconditional" or (
            self.crop_conditioning == "auto" and with_cfg and self.weak is None)
        crop_from = uncond if (use_uncond and uncond is not None) else cond
        temporal = self.temporal(x.ndim)
        wins = self.layout(x.shape[-2], x.shape[-1], x.shape[-3] if temporal else None)
        cache = self._cache(args)
        key = (id(crop_from), tuple(x.shape), x.device, x.dtype)
        if key not in cache:
            cropped = x.shape[-3:] if temporal else x.shape[-2:]
            cache[key] = (crop_from, window_conds(crop_from, wins, x), swg.overlap_nd(cropped, wins, like=x))
        _, conds, weight = cache[key]
        d_crops = glue.run_naming(
            f"{self.names['w']} / {self.names['h']} (crops of {swg.window_size(wins[0])} latent pixels)", x.shape,
            lambda: comfy.samplers.calc_cond_batch(args["model"], [conds], x, args["sigma"],
                                                        args["model_options"])[0],
            (RuntimeError, ValueError))
        combined = with_cfg or self.weak is not None
        masked = self.masked and (not combined or self.mask_with_cfg)
        return out + swg.guidance_term(d_pos, d_crops, self.scale, weight, masked)


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
                        "(its CFG weight w is ComfyUI's cfg - 1; crops unconditional, never masked). With a "
                        "weak_model it is the paper's WMG-SWG: D = D_guided + weak_scale * (D_cond - D_weak) + "
                        "scale * (D_cond - D_crops), the weak model and the crops on the positive conditioning, "
                        "never masked (the reference returns before its mask); scale 0 gives WMG alone. Cost per "
                        "guided evaluation: the guider's branches + crops_x * crops_y (* crops_t) crop evaluations "
                        "when scale != 0 + 1 weak-model evaluation when one is connected and weak_scale != 0. "
                        "Video latents: windows per frame over height and width (time whole unless crops_t > 1 "
                        "or crop_frames > 0). Paper (EDM2, latent 64): crop 40, 2 crops per side; RT+M-SWG "
                        "(1.2, 0.25).",
            inputs=[
                io.Model.Input("model", tooltip="The model to patch (any type ComfyUI runs)."),
                io.Float.Input("scale", default=1.0, min=-100.0, max=100.0, step=0.01, round=0.01,
                               tooltip="SWG scale (the paper's omega for SWG; w2 of WMG-SWG)."),
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
                                 tooltip="Also mask when cfg > 1 or with a weak model. The reference's combined "
                                         "CFG+SWG and WMG-SWG never mask (they return before the mask); on: a "
                                         "masked combined mode it lacks."),
                io.Combo.Input("crop_conditioning", options=list(CROP_CONDITIONINGS), default="auto",
                               tooltip="Conditioning of the crops. auto: as the reference, conditional for SWG "
                                       "alone (cfg 1) and with a weak model, unconditional with CFG (cfg > 1). "
                                       "'unconditional' at cfg 1 makes ComfyUI evaluate the negative branch too."),
                io.Float.Input("start_percent", default=0.0, min=0.0, max=1.0, step=0.001,
                               tooltip="Where in the sampling the guidance starts (0 = first step)."),
                io.Float.Input("end_percent", default=1.0, min=0.0, max=1.0, step=0.001,
                               tooltip="Where it ends (1 = last step)."),
                io.Model.Input("weak_model", optional=True,
                               tooltip="Optional weak model (smaller or less trained, same latent format): adds "
                                       "weak_scale * (D_cond - D_weak), the weak model evaluated on the positive "
                                       "conditioning, loaded together with the main model. One more evaluation "
                                       "per step."),
                io.Float.Input("weak_scale", default=1.2, min=-100.0, max=100.0, step=0.01, round=0.01,
                               optional=True,
                               tooltip="Weak-model guidance weight (w1 of the reference's wmg-swg; paper RT+M-SWG "
                                       "1.2 with scale 0.25). Ignored without a weak_model."),
                io.Int.Input("crops_t", default=1, min=1, max=16, optional=True,
                             tooltip="Video latents only: windows along time (1: the whole clip in every window)."),
                io.Int.Input("crop_frames", default=0, min=0, max=4096, optional=True,
                             tooltip="Video latents only: latent frames per temporal window (0: the clip split "
                                     "into crops_t windows)."),
            ],
            outputs=[io.Model.Output()],
        )

    @classmethod
    def validate_inputs(cls, start_percent=None, end_percent=None, crop_units=None, crop_conditioning=None):
        # start/end are cross-checked here, so ComfyUI skips its own range check for them: done here too, and
        # for the dropdowns (glue.combos_checked)
        error, v = glue.named_inputs(cls, start_percent=start_percent, end_percent=end_percent,
                                     crop_units=crop_units, crop_conditioning=crop_conditioning)
        if error:
            return error
        start_percent, end_percent = v["start_percent"], v["end_percent"]
        if start_percent is not None and end_percent is not None and start_percent > end_percent:
            return f"start_percent ({start_percent}) must not be after end_percent ({end_percent})"
        return True

    @classmethod
    def execute(cls, model, scale, crop_width, crop_height, crop_units, crops_x, crops_y, masked, mask_with_cfg,
                crop_conditioning, start_percent, end_percent, weak_model=None, weak_scale=1.2, crops_t=1,
                crop_frames=0) -> io.NodeOutput:
        if crop_conditioning not in CROP_CONDITIONINGS:
            raise ValueError(f"crop_conditioning must be one of {CROP_CONDITIONINGS} (got {crop_conditioning!r})")
        if crop_width <= 0 or crop_height < 0 or crops_x <= 0 or crops_y < 0 or crops_t <= 0 or crop_frames < 0:
            raise ValueError(f"crop sizes and counts must be positive (crop_width {crop_width}, crop_height "
                             f"{crop_height}, crops_x {crops_x}, crops_y {crops_y}, crops_t {crops_t}, "
                             f"crop_frames {crop_frames})")
        if start_percent > end_percent:
            raise ValueError(f"start_percent ({start_percent}) must not be after end_percent ({end_percent})")
        names = {"h": "crop_height" if crop_height else "crop_width (crop_height 0: same as width)",
                 "ny": "crops_y" if crops_y else "crops_x (crops_y 0: same as crops_x)"}
        crop_height = crop_height or crop_width
        if crop_units == "pixels":
            f = latent_downscale(model)
            crop_width, crop_height = max(1, round(crop_width / f)), max(1, round(crop_height / f))
        if weak_model is not None:
            fmt, wfmt = model.get_model_object("latent_format"), weak_model.get_model_object("latent_format")
            if type(fmt) is not type(wfmt) or getattr(fmt, "latent_channels", None) != getattr(wfmt, "latent_channels", None):
                raise ValueError(f"weak_model: its latent format ({type(wfmt).__name__}) is not the model's "
                                 f"({type(fmt).__name__}); the weak model must take the same latents")
        ms = model.get_model_object("model_sampling")
        patch = SWGPatch(scale, crop_height, crop_width, crops_y or crops_x, crops_x, masked, mask_with_cfg,
                         crop_conditioning, ms.percent_to_sigma(start_percent), ms.percent_to_sigma(end_percent),
                         patch_multiple(model), weak=weak_model, weak_scale=weak_scale, crop_t=crop_frames,
                         crops_t=crops_t, t_multiple=temporal_multiple(model), names=names)
        m = model.clone()
        if weak_model is not None:
            glue.attach_weak_model(m, weak_model)
        # unconditional crops at cfg 1 need the negative conditioning, which ComfyUI drops at cfg 1 unless told
        # not to (its uncond branch is then evaluated too)
        m.set_model_sampler_post_cfg_function(patch, disable_cfg1_optimization=crop_conditioning == "unconditional")
        return io.NodeOutput(m)


NODES = [SlidingWindowGuidance]
