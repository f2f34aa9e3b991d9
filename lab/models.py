"""The lab's networks: a small class-conditional UNet (epsilon prediction in
k-diffusion sigma space, as SD / SDXL), its k-diffusion denoiser with
classifier-free guidance, and the digit classifiers.

Noise levels: the SD / SDXL "scaled_linear" table (1000 training timesteps,
sigma from 0.029 to 14.6), so the samplers run exactly the schedules the pack
uses for SDXL (``zigzag.ddim_reference_sigmas``, ``adaptive.reference_rollback_sigmas``).
The network sees ``c_in(sigma) * x`` with ``c_in = 1 / sqrt(1 + sigma^2)`` (the
DDIM latent) and ``log(sigma) / 4``; ``D(x, sigma) = x - sigma * eps``.
Class ``10`` is the null class of classifier-free guidance.
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

from tools.reflect_pack import module
scaled_linear_sigmas = module("samplers.adaptive").scaled_linear_sigmas
eps_input_scale = module("samplers.zigzag").eps_input_scale

from . import WEIGHTS_DIR

NULL_CLASS = 10
SIGMA_TABLE = scaled_linear_sigmas().float()  # sigma per training timestep, ascending

# name -> (constructor kwargs); the shipped weight files are WEIGHTS_DIR/<name>.safetensors
CONFIGS = {
    "strong": dict(kind="unet", channels=(8, 16, 32), emb_dim=32),
    "weak": dict(kind="unet", channels=(8, 8, 16), emb_dim=32),
    "student": dict(kind="unet", channels=(8, 16, 32), emb_dim=32),
    "classifier": dict(kind="classifier", width=32),
    "scorer": dict(kind="scorer", hidden=64),
}


def _groups(c: int) -> int:
    return min(8, c // 2)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, emb: int):
        super().__init__()
        self.norm1 = nn.GroupNorm(_groups(cin), cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.emb = nn.Linear(emb, 2 * cout)
        self.norm2 = nn.GroupNorm(_groups(cout), cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x, e):
        h = self.conv1(F.silu(self.norm1(x)))
        scale, shift = self.emb(e)[:, :, None, None].chunk(2, dim=1)
        h = self.norm2(h) * (1 + scale) + shift
        return self.conv2(F.silu(h)) + self.skip(x)


class UNet(nn.Module):
    """Epsilon network eps(u, c_noise, label) on 1-channel images of any size
    (16x16 in training; the sliding-window crops are smaller): one ResBlock per
    level, stride-2 downsampling, nearest upsampling to the skip's size."""

    def __init__(self, channels=(16, 32, 64), emb_dim=64, num_classes=10, freqs=8):
        super().__init__()
        self.register_buffer("freqs", torch.exp(torch.linspace(0.0, math.log(64.0), freqs)) * math.pi,
                             persistent=False)
        self.time = nn.Sequential(nn.Linear(2 * freqs, emb_dim), nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.label = nn.Embedding(num_classes + 1, emb_dim)
        self.emb_out = nn.Sequential(nn.SiLU(), nn.Linear(emb_dim, emb_dim))
        self.conv_in = nn.Conv2d(1, channels[0], 3, padding=1)
        self.enc, self.down = nn.ModuleList(), nn.ModuleList()
        c, skips = channels[0], []
        for i, co in enumerate(channels):
            self.enc.append(ResBlock(c, co, emb_dim))
            c = co
            skips.append(c)
            self.down.append(nn.Conv2d(c, c, 3, stride=2, padding=1) if i < len(channels) - 1 else nn.Identity())
        self.mid = ResBlock(c, c, emb_dim)
        self.dec = nn.ModuleList()
        for i in reversed(range(len(channels))):
            self.dec.append(ResBlock(c + skips[i], channels[i], emb_dim))
            c = channels[i]
        self.norm_out = nn.GroupNorm(_groups(c), c)
        self.conv_out = nn.Conv2d(c, 1, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, u, c_noise, labels):
        f = c_noise.reshape(-1, 1) * self.freqs
        e = self.time(torch.cat([f.sin(), f.cos()], dim=1)) + self.label(labels)
        e = self.emb_out(e)
        h = self.conv_in(u)
        hs = []
        for block, down in zip(self.enc, self.down):
            h = block(h, e)
            hs.append(h)
            h = down(h)
        h = self.mid(h, e)
        for block in self.dec:
            skip = hs.pop()
            if h.shape[-2:] != skip.shape[-2:]:
                h = F.interpolate(h, size=skip.shape[-2:], mode="nearest")
            h = block(torch.cat([h, skip], dim=1), e)
        return self.conv_out(F.silu(self.norm_out(h)))


def c_noise(sigma: torch.Tensor) -> torch.Tensor:
    return torch.log(sigma) / 4.0


def eps_of(net: UNet, x: torch.Tensor, sigma: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The network's epsilon for latents ``x`` at ``sigma`` (scalar or (B,))."""
    s = sigma.reshape(-1).to(x).expand(x.shape[0])
    return net(x * eps_input_scale(s).reshape(-1, 1, 1, 1), c_noise(s), labels)


class Counter:
    """Batch items through the networks (each image or crop through a network = 1)."""

    def __init__(self):
        self.items = 0
        self.by_model: dict = {}
        self.hook = None  # called with the number of items after every evaluation (progress)

    def add(self, name: str, n: int) -> None:
        self.items += n
        self.by_model[name] = self.by_model.get(name, 0) + n
        if self.hook is not None:
            self.hook(n)


class Model:
    """A UNet as a k-diffusion denoiser with classifier-free guidance.

    ``denoiser(labels, cfg)`` returns ``D(x, sigma) -> x0`` for the prompted
    ``labels`` (B,) at guidance ``cfg`` (ComfyUI's convention,
    ``D_u + cfg * (D_c - D_u)``): cfg 1 evaluates only the conditional branch,
    cfg 0 only the unconditional one, otherwise both in one batch.
    """

    def __init__(self, net: UNet, name: str, counter: Counter | None = None):
        self.net, self.name = net.eval(), name
        self.counter = counter if counter is not None else Counter()

    def raw(self, x: torch.Tensor, sigma: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        self.counter.add(self.name, x.shape[0])
        with torch.no_grad():
            return x - sigma.reshape(-1, 1, 1, 1).to(x) * eps_of(self.net, x, sigma, labels)

    def denoiser(self, labels: torch.Tensor, cfg: float):
        null = torch.full_like(labels, NULL_CLASS)

        def denoise(x, sigma):
            if cfg == 1.0:
                return self.raw(x, sigma, labels)
            if cfg == 0.0:
                return self.raw(x, sigma, null)
            both = self.raw(torch.cat([x, x]), sigma, torch.cat([labels, null]))
            cond, uncond = both.chunk(2)
            return uncond + cfg * (cond - uncond)
        return denoise


class Classifier(nn.Module):
    """Digit classifier on 16x16 images in [-1, 1]; ``features`` is the
    64-dimensional penultimate layer used for the Frechet distance."""

    def __init__(self, width=32, num_classes=10):
        super().__init__()
        w = width
        self.body = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1), nn.GroupNorm(8, w), nn.ReLU(),
            nn.Conv2d(w, w, 3, padding=1), nn.GroupNorm(8, w), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.GroupNorm(8, 2 * w), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.GroupNorm(8, 2 * w), nn.ReLU(),
            nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(2 * w, num_classes)

    def features(self, x):
        return self.body(x)

    def forward(self, x):
        return self.head(self.features(x))


class Scorer(nn.Module):
    """The quality estimator of the adaptive scheme (ImageReward's role): a
    small MLP digit classifier, trained separately from the measuring
    classifier; the score of an image for a prompted digit is
    ``log p(digit | image)``."""

    def __init__(self, hidden=64, num_classes=10, size=16):
        super().__init__()
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(size * size, 2 * hidden), nn.ReLU(),
                                 nn.Linear(2 * hidden, hidden), nn.ReLU(), nn.Linear(hidden, num_classes))

    def forward(self, x):
        return self.net(x)

    @torch.no_grad()
    def score(self, x, labels):
        return torch.log_softmax(self(x.clamp(-1, 1)), dim=1).gather(1, labels.reshape(-1, 1)).flatten()


def build(name: str) -> nn.Module:
    cfg = dict(CONFIGS[name])
    kind = cfg.pop("kind")
    return {"unet": UNet, "classifier": Classifier, "scorer": Scorer}[kind](**cfg)


def weights_path(name: str, weights_dir: str = WEIGHTS_DIR) -> str:
    return os.path.join(weights_dir, f"{name}.safetensors")


def load(name: str, weights_dir: str = WEIGHTS_DIR) -> nn.Module:
    from safetensors.torch import load_file

    net = build(name)
    net.load_state_dict(load_file(weights_path(name, weights_dir)))
    return net.eval()


def save(net: nn.Module, name: str, weights_dir: str = WEIGHTS_DIR, metadata: dict | None = None) -> str:
    """Write the state dict; the training settings go into one metadata entry ``lab``
    (JSON, sorted keys), so that equal tensors and settings give byte-identical files."""
    import json

    from safetensors.torch import save_file

    os.makedirs(weights_dir, exist_ok=True)
    path = weights_path(name, weights_dir)
    sd = {k: v.detach().contiguous().clone() for k, v in net.state_dict().items()}
    md = json.dumps({k: str(v) for k, v in (metadata or {}).items()}, sort_keys=True)
    save_file(sd, path, metadata={"lab": md})
    return path


def n_params(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
