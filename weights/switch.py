"""Switching weights per call: forward-time weight differences (pure torch).

W2SD's main setting runs one model with a LoRA at three strengths. Re-patching
every weight per evaluation costs a full pass over the weights each time;
instead the main side's weights stay merged (as any LoRA loader leaves them) and
the other sides add their difference at forward time: for a layer y = F(x, W)
that is linear in W (Linear, ConvNd), F(x, W + c dW) = F(x, W) + c F(x, dW), and
with dW = up @ down the second term is two thin layers, F_down then F_up.
Cost: rank * (in + out) multiply-adds per output position instead of in * out,
nothing for a side whose coefficient is 0; memory: the LoRA's own weights, once,
on the compute device. The coefficient and the LoRA's alpha / rank are folded
into the device copy of ``up`` once per side and run, and the difference is added
in place, so an evaluation pays the two thin layers and one addition.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

_Conv = torch.nn.modules.conv._ConvNd  # the public base of Conv1d/2d/3d (isinstance only)


def _conv(m: torch.nn.Module, x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """``m``'s convolution (its stride, padding, dilation, padding mode) with weight ``w``, no bias."""
    nd = x.dim() - 2
    fn = getattr(F, f"conv{nd}d")
    if m.padding_mode != "zeros":
        pad = [p for p in reversed(m.padding) for _ in range(2)]
        return fn(F.pad(x, pad, mode=m.padding_mode), w, None, m.stride, 0, m.dilation)
    return fn(x, w, None, m.stride, m.padding, m.dilation)


def _pointwise(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """A 1 x 1 convolution over the channels of ``x`` with the (out, in) matrix ``w``."""
    nd = x.dim() - 2
    return getattr(F, f"conv{nd}d")(x, w.reshape(w.shape[0], -1, *((1,) * nd)))


class _Term:
    """One weight difference on one layer, with a coefficient per side."""

    def __init__(self, module: torch.nn.Module, coefs: dict, up=None, down=None, mid=None, scale: float = 1.0,
                 dense=None, bias=None, offset=None):
        self.module, self.coefs = module, dict(coefs)
        self.up, self.down, self.mid, self.scale = up, down, mid, float(scale)
        self.dense, self.bias, self.offset = dense, bias, offset
        self.conv = isinstance(module, _Conv)
        self._cache = {}

    def _w(self, name: str, ref: torch.Tensor, factor: float = 1.0):
        """Device copy of weight ``name`` times ``factor``, made once per run."""
        key = (name, ref.device, ref.dtype, factor)
        w = self._cache.get(key)
        if w is None:
            w = getattr(self, name).to(device=ref.device, dtype=torch.float32) * factor
            if name == "down" and self.conv:
                r = w.shape[0]
                w = w.reshape(r, -1, *(self.module.kernel_size if self.mid is None else (1,) * (ref.dim() - 2)))
            elif name == "down" or name == "up":
                w = w.flatten(1)
            w = self._cache[key] = w.to(ref.dtype)
        return w

    def delta(self, x: torch.Tensor, c: float) -> torch.Tensor:
        """c * F(x, dW) (and c * the bias difference)."""
        m = self.module
        if self.dense is not None or self.bias is not None:
            out = 0
            if self.dense is not None:
                w = self._w("dense", x, c)
                out = _conv(m, x, w) if self.conv else F.linear(x, w)
            if self.bias is not None:
                b = self._w("bias", x, c)
                out = out + (b.reshape(1, -1, *([1] * (x.dim() - 2))) if self.conv else b)
            return out
        up = self._w("up", x, c * self.scale)
        if not self.conv:
            return F.linear(F.linear(x, self._w("down", x)), up)
        if self.mid is None:
            h = _conv(m, x, self._w("down", x))
        else:
            h = _conv(m, _pointwise(x, self._w("down", x)), self._w("mid", x))
        return _pointwise(h, up)

    def apply(self, output: torch.Tensor, x: torch.Tensor, c: float) -> torch.Tensor:
        d = self.delta(x, c)
        if self.offset is None:
            if torch.is_grad_enabled() and output.requires_grad:
                return output + d
            return output.add_(d)
        start, length = self.offset
        dim = 1 if self.conv else output.dim() - 1
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
        if not isinstance(module, (torch.nn.Linear, _Conv)):
            raise TypeError(f"forward-time LoRA needs a Linear or Conv layer, got {type(module).__name__}")
        if isinstance(module, _Conv) and (module.groups != 1 or isinstance(module.padding, str)
                                          and module.padding_mode != "zeros"):
            raise ValueError("forward-time LoRA on a grouped convolution (or 'same' padding with a padding mode) "
                             "is not supported")
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
