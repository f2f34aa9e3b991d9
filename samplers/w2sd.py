"""W2SD (Bai, Sugiyama, Xie 2025, "Weak-to-Strong Diffusion with Reflection").

Each reflected step (every step but the last): denoise with the strong side at
sigma_i, invert with the weak side (the model evaluated at sigma_i on the latent
as the DDIM loop holds it, the inversion modes of ``samplers.zigzag``), then the
normal denoising step with the main side. The last step is a plain main step.
A "side" is a guided denoiser ``denoise(x, sigma) -> x0``: a model with its
conditionings and guidance, so weight differences (two models, e.g. a LoRA at
+1.5 / -1.5), pipeline differences (with / without ControlNet) and guidance
differences (Z-Sampling is the case of equal models) are all the same call.
"""

from __future__ import annotations

from typing import Callable, Optional

import torch

from .zigzag import Denoiser, ScaleFn, cfg_branches, eps_input_scale, euler_step, guidance_branches, sample_zigzag


def evaluations(steps: int, strong_cfg: float, weak_cfg: float, main_cfg: float,
                reflect_steps: Optional[int] = None) -> dict:
    """Batch items through the diffusion model per image with DDIM: ours and
    the reference's (both branches everywhere). Ours: the strong and weak
    sides need one branch at a guidance of 0 or 1; the main side is KSampler's
    CFG, one branch only at 1. ``reflect_steps`` defaults to every step but the
    last."""
    reflected = steps - 1 if reflect_steps is None else reflect_steps
    minimal = reflected * (guidance_branches(strong_cfg) + guidance_branches(weak_cfg)) + steps * cfg_branches(main_cfg)
    reference = reflected * 4 + steps * 2
    return {"minimal": minimal, "reference": reference}


@torch.no_grad()
def sample_w2sd(
    denoise_strong: Denoiser,
    denoise_weak: Denoiser,
    denoise_main: Denoiser,
    x: torch.Tensor,
    sigmas: torch.Tensor,
    inversion: str = "published",
    input_scale: ScaleFn = eps_input_scale,
    reflect_steps: Optional[int] = None,
    callback: Optional[Callable[[dict], None]] = None,
) -> torch.Tensor:
    """W2SD over ``sigmas`` with DDIM (Euler) steps; ``reflect_steps`` defaults
    to every step but the last."""
    n = len(sigmas) - 1
    lam = n - 1 if reflect_steps is None else reflect_steps

    def strong_step(x, i):
        return euler_step(denoise_strong, x, sigmas[i], sigmas[i + 1])

    return sample_zigzag(denoise_main, denoise_weak, x, sigmas, lambda_steps=lam, rounds=1, inversion=inversion,
                         input_scale=input_scale, first_step=strong_step, callback=callback)


# ---------------------------------------------------------------------------
# Switching weights per call: forward-time weight differences.
#
# The strong, weak and main sides of the paper's main setting are one model with
# a LoRA at three strengths. Re-patching every weight three times per step costs
# a full pass over the weights each time; instead the main side's weights stay
# merged (as any LoRA loader leaves them) and the other sides add their
# difference at forward time: for a layer y = F(x, W) that is linear in W (Linear,
# ConvNd), F(x, W + c * dW) = F(x, W) + c * F(x, dW), and with dW = up @ down the
# second term is two thin layers, F_down then F_up. Cost: rank * (in + out)
# multiply-adds per output position instead of in * out, nothing when the side's
# coefficient is 0; memory: the LoRA's own weights, once, on the compute device.
# ---------------------------------------------------------------------------

class _Term:
    """One weight difference on one layer, with a coefficient per side."""

    def __init__(self, module: torch.nn.Module, coefs: dict, up=None, down=None, mid=None, scale: float = 1.0,
                 dense=None, bias=None, offset=None):
        self.module, self.coefs = module, dict(coefs)
        self.up, self.down, self.mid, self.scale = up, down, mid, float(scale)
        self.dense, self.bias, self.offset = dense, bias, offset
        self._cache = {}

    def _w(self, name, ref: torch.Tensor):
        key = (name, ref.device, ref.dtype)
        if key not in self._cache:
            self._cache[key] = getattr(self, name).to(device=ref.device, dtype=ref.dtype)
        return self._cache[key]

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        m = self.module
        conv = isinstance(m, torch.nn.modules.conv._ConvNd)
        if self.dense is not None or self.bias is not None:
            out = 0
            if self.dense is not None:
                w = self._w("dense", x)
                out = m._conv_forward(x, w, None) if conv else torch.nn.functional.linear(x, w)
            if self.bias is not None:
                b = self._w("bias", x)
                out = out + (b.reshape(1, -1, *([1] * (x.dim() - 2))) if conv else b)
            return out
        down, up = self._w("down", x), self._w("up", x)
        if not conv:
            h = torch.nn.functional.linear(x, down.flatten(1))
            return torch.nn.functional.linear(h, up.flatten(1)) * self.scale
        nd = x.dim() - 2
        one = (1,) * nd
        conv_fn = getattr(torch.nn.functional, f"conv{nd}d")
        r = down.shape[0]
        if self.mid is None:
            h = m._conv_forward(x, down.reshape(r, -1, *m.kernel_size), None)
        else:
            h = conv_fn(x, down.reshape(r, -1, *one))
            h = m._conv_forward(h, self._w("mid", x), None)
        return conv_fn(h, up.reshape(up.shape[0], -1, *one)) * self.scale

    def apply(self, output: torch.Tensor, x: torch.Tensor, c: float) -> torch.Tensor:
        d = self.delta(x) * c
        if self.offset is None:
            return output + d
        start, length = self.offset
        dim = 1 if isinstance(self.module, torch.nn.modules.conv._ConvNd) else output.dim() - 1
        out = output.clone()
        out.narrow(dim, start, length).add_(d)
        return out


class WeightSwitch:
    """Per-call weight differences on the layers of a model, chosen by side.

    ``add_lora(module, coefs, up, down, alpha, mid)`` registers ``c * F(x, dW)``
    with ``dW = up @ down * alpha / rank`` (LoCon ``mid``: a k x k core between
    1 x 1 ``down`` and ``up``), ``add_dense`` a full difference ``dW`` (and/or a
    bias difference). ``coefs`` maps a side name to its coefficient. Within
    ``with switch.active(side):`` every forward of those modules adds the side's
    terms; outside it (or for a side with no terms) the model is untouched.
    ``attach()`` registers forward hooks, ``detach()`` removes them and drops
    the device copies: after ``detach`` the modules are exactly as before.
    """

    def __init__(self):
        self.terms: dict = {}
        self.side = None
        self._handles = []

    def add_lora(self, module, coefs: dict, up, down, alpha=None, mid=None, offset=None):
        if not isinstance(module, (torch.nn.Linear, torch.nn.modules.conv._ConvNd)):
            raise TypeError(f"forward-time LoRA needs a Linear or Conv layer, got {type(module).__name__}")
        if isinstance(module, torch.nn.modules.conv._ConvNd) and module.groups != 1:
            raise ValueError("forward-time LoRA on a grouped convolution is not supported")
        rank = down.shape[0]
        scale = 1.0 if alpha is None else float(alpha) / rank
        self._add(module, _Term(module, coefs, up=up, down=down, mid=mid, scale=scale, offset=offset))

    def add_dense(self, module, coefs: dict, weight=None, bias=None, offset=None):
        self._add(module, _Term(module, coefs, dense=weight, bias=bias, offset=offset))

    def _add(self, module, term):
        if any(c != 0 for c in term.coefs.values()):
            self.terms.setdefault(module, []).append(term)

    def sides(self) -> set:
        return {s for ts in self.terms.values() for t in ts for s, c in t.coefs.items() if c != 0}

    def nbytes(self) -> int:
        """Bytes of the difference weights (as stored, before device copies)."""
        seen, n = set(), 0
        for ts in self.terms.values():
            for t in ts:
                for w in (t.up, t.down, t.mid, t.dense, t.bias):
                    if w is not None and id(w) not in seen:
                        seen.add(id(w))
                        n += w.numel() * w.element_size()
        return n

    def _hook(self, module, inputs, output):
        side = self.side
        if side is None:
            return None
        x = inputs[0]
        for t in self.terms[module]:
            c = t.coefs.get(side, 0.0)
            if c != 0:
                output = t.apply(output, x, c)
        return output

    def attach(self):
        if not self._handles:
            self._handles = [m.register_forward_hook(self._hook) for m in self.terms]
        return self

    def detach(self):
        for h in self._handles:
            h.remove()
        self._handles = []
        self.side = None
        for ts in self.terms.values():
            for t in ts:
                t._cache.clear()

    class _Active:
        def __init__(self, switch, side):
            self.switch, self.side, self.prev = switch, side, None

        def __enter__(self):
            self.prev, self.switch.side = self.switch.side, self.side

        def __exit__(self, *exc):
            self.switch.side = self.prev

    def active(self, side):
        return WeightSwitch._Active(self, side)
