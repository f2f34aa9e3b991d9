"""Train every network of the lab, deterministically, on the CPU.

    python3 -m lab.train                  # all five, in order (about 9 minutes: 539 s measured, 1 thread)
    python3 -m lab.train --only strong    # one of: classifier scorer strong weak student

Fixed seeds, ``torch.use_deterministic_algorithms(True)`` and a fixed thread
count (1 by default: one thread also keeps its speed when the CPU is shared,
where two OpenMP threads stall each other): a re-run on the same machine and
torch version reproduces the shipped files bit for bit (checked here: torch
2.13.0 CPU, every tensor of all five files, twice); other CPUs or thread
counts may differ in the last bits (floating-point summation order), not in
the results' meaning.

* classifier: CNN, measures alignment (accuracy) and fidelity (Frechet distance
  in its 64-d feature space); trained with 1-pixel shifts and noise.
* scorer: a separate MLP classifier, the adaptive scheme's quality estimator
  (ImageReward's role), so the gate is not the metric.
* strong: the main diffusion model and the teacher (96 k parameters, 1,500
  steps, 144 s), class dropout 10 % for classifier-free guidance. Small and
  briefly trained on purpose: it leaves a visible gap to the data (FD 0.45 at
  cfg 1 against the real digits' 0.06) for the methods to close.
* weak: the same kind of model, 3x fewer parameters and 3x fewer steps (the
  W2SD / SWG papers' weak model: smaller and less trained).
* student: a 3-step student distilled from the strong model's 10-step CFG 1.5
  DDIM sampler (the teacher): regression of the teacher's output from points of
  its trajectories, initialised from the strong model.
"""

from __future__ import annotations

import argparse
import copy
import math
import time

import torch
import torch.nn.functional as F

from . import data, models
from .models import NULL_CLASS, SIGMA_TABLE, eps_of

THREADS = 1
STUDENT = {"teacher_cfg": 1.5, "teacher_steps": 10, "levels": (0, 3, 6), "trajectories": 3000}
SETTINGS = {
    "classifier": dict(steps=2000, batch=128, lr=2e-3, seed=1),
    "scorer": dict(steps=2000, batch=128, lr=2e-3, seed=2),
    "strong": dict(steps=1500, batch=128, lr=2e-3, seed=4, p_uncond=0.1, ema=0.995),
    "weak": dict(steps=500, batch=128, lr=2e-3, seed=6, p_uncond=0.1, ema=0.99),
    "student": dict(steps=2000, batch=128, lr=5e-4, seed=5, ema=0.99),
}


def setup(threads: int = THREADS) -> None:
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)


def lr_at(step: int, total: int, lr: float, warmup: int = 200) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    return lr * 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, total - warmup)))


def augment(x: torch.Tensor, g: torch.Generator, noise: float = 0.1) -> torch.Tensor:
    """Random shifts of up to one pixel (background -1) and a little Gaussian noise."""
    b = x.shape[0]
    pad = F.pad(x, (1, 1, 1, 1), value=-1.0)
    dy = torch.randint(0, 3, (b,), generator=g)
    dx = torch.randint(0, 3, (b,), generator=g)
    out = torch.stack([pad[i, :, dy[i]:dy[i] + 16, dx[i]:dx[i] + 16] for i in range(b)])
    return out + noise * torch.randn(out.shape, generator=g)


def _log(name, step, total, loss, t0):
    print(f"  {name}: step {step}/{total} loss {loss:.4f} ({time.time() - t0:.0f} s)", flush=True)


def _fit(net, opt, s, loss_at, name, log_every, t0, ema=None, warmup=200):
    """The loop every network here is trained with: warm-up/cosine learning
    rate, one optimiser step on ``loss_at(step)``, and for the diffusion models
    gradient clipping and the EMA; logs a running loss every ``log_every``."""
    run = 0.0
    for step in range(s["steps"]):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, s["steps"], s["lr"], warmup=warmup)
        loss = loss_at(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if ema is not None:
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step()
        if ema is not None:
            ema.update(net, step)
        run = 0.98 * run + 0.02 * loss.item() if step else loss.item()
        if (step + 1) % log_every == 0:
            _log(name, step + 1, s["steps"], run, t0)


def _start(name: str, steps: int | None):
    """Settings (``steps`` overriding), seeded generator, training data and a
    fresh network of ``name``, made in that order from its seed."""
    s = dict(SETTINGS[name], **({"steps": steps} if steps else {}))
    torch.manual_seed(s["seed"])
    g = torch.Generator().manual_seed(s["seed"])
    x, y = data.load("train")
    return s, g, x, y, models.build(name).train()


def train_classifier(name: str, log_every: int = 500, steps: int | None = None, save: bool = True):
    s, g, x, y, net = _start(name, steps)
    opt = torch.optim.AdamW(net.parameters(), lr=s["lr"], weight_decay=1e-4)

    def loss_at(step):
        idx = torch.randint(0, len(x), (s["batch"],), generator=g)
        return F.cross_entropy(net(augment(x[idx], g)), y[idx], label_smoothing=0.05)

    _fit(net, opt, s, loss_at, name, log_every, time.time())
    net.eval()
    xt, yt = data.load("test")
    with torch.no_grad():
        acc = (net(xt).argmax(1) == yt).float().mean().item()
    print(f"  {name}: held-out accuracy {acc:.4f}", flush=True)
    if save:
        models.save(net, name, metadata={"held_out_accuracy": f"{acc:.4f}", **s})
    return net


class EMA:
    def __init__(self, net, decay):
        self.net, self.decay = copy.deepcopy(net).eval(), decay
        for p in self.net.parameters():
            p.requires_grad_(False)

    @torch.no_grad()
    def update(self, net, step):
        d = min(self.decay, (1 + step) / (10 + step))
        for pe, p in zip(self.net.parameters(), net.parameters()):
            pe.mul_(d).add_(p.detach(), alpha=1 - d)


def train_diffusion(name: str, log_every: int = 500, steps: int | None = None, save: bool = True):
    """Epsilon-prediction DDPM training on the scaled-linear table, class dropout for CFG."""
    s, g, x, y, net = _start(name, steps)
    ema = EMA(net, s["ema"])
    opt = torch.optim.AdamW(net.parameters(), lr=s["lr"], weight_decay=0.0)

    def loss_at(step):
        idx = torch.randint(0, len(x), (s["batch"],), generator=g)
        x0, labels = x[idx], y[idx].clone()
        labels[torch.rand(len(idx), generator=g) < s["p_uncond"]] = NULL_CLASS
        t = torch.randint(0, len(SIGMA_TABLE), (len(idx),), generator=g)
        sigma = SIGMA_TABLE[t]
        noise = torch.randn(x0.shape, generator=g)
        return F.mse_loss(eps_of(net, x0 + sigma.reshape(-1, 1, 1, 1) * noise, sigma, labels), noise)

    _fit(net, opt, s, loss_at, name, log_every, time.time(), ema=ema)
    if save:
        models.save(ema.net, name, metadata={**s, "params": models.n_params(net)})
    return ema.net


def teacher_sigmas(steps: int):
    from tools.reflect_pack import module
    ddim_reference_sigmas = module("samplers.zigzag").ddim_reference_sigmas
    return ddim_reference_sigmas(SIGMA_TABLE, steps)


@torch.no_grad()
def teacher_trajectories(teacher: torch.nn.Module, n: int, cfg: float, steps: int, seed: int, batch: int = 500):
    """(points (steps+1, n, 1, 16, 16) along the teacher's CFG DDIM trajectories, labels (n,))."""
    from tools.reflect_pack import module
    euler_step = module("samplers.zigzag").euler_step
    sig = teacher_sigmas(steps)
    model = models.Model(teacher, "teacher")
    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 10
    noise = torch.randn(n, 1, 16, 16, generator=g)
    pts = torch.empty(steps + 1, n, 1, 16, 16)
    for b in range(0, n, batch):
        lab = labels[b:b + batch]
        d = model.denoiser(lab, cfg)
        xx = noise[b:b + batch] * sig[0]
        pts[0, b:b + batch] = xx
        for i in range(steps):
            xx = euler_step(d, xx, sig[i], sig[i + 1])
            pts[i + 1, b:b + batch] = xx
    return pts, labels


def train_student(log_every: int = 500) -> torch.nn.Module:
    s, cfg = SETTINGS["student"], STUDENT
    teacher = models.load("strong")
    t0 = time.time()
    pts, labels = teacher_trajectories(teacher, cfg["trajectories"], cfg["teacher_cfg"], cfg["teacher_steps"],
                                       seed=s["seed"])
    print(f"  student: {cfg['trajectories']} teacher trajectories in {time.time() - t0:.0f} s", flush=True)
    sig = teacher_sigmas(cfg["teacher_steps"])
    target = pts[-1]
    torch.manual_seed(s["seed"])
    g = torch.Generator().manual_seed(s["seed"] + 100)
    net = copy.deepcopy(teacher).train()
    for p in net.parameters():
        p.requires_grad_(True)
    ema = EMA(net, s["ema"])
    opt = torch.optim.AdamW(net.parameters(), lr=s["lr"], weight_decay=0.0)
    levels = torch.tensor(cfg["levels"])

    def loss_at(step):
        idx = torch.randint(0, cfg["trajectories"], (s["batch"],), generator=g)
        lev = levels[torch.randint(0, len(levels), (s["batch"],), generator=g)]
        xx, sigma = pts[lev, idx], sig[lev]
        pred = xx - sigma.reshape(-1, 1, 1, 1) * eps_of(net, xx, sigma, labels[idx])
        return F.mse_loss(pred, target[idx])

    _fit(net, opt, s, loss_at, "student", log_every, t0, ema=ema, warmup=100)
    models.save(ema.net, "student", metadata={**s, **{k: str(v) for k, v in cfg.items()}})
    return ema.net


ORDER = ("classifier", "scorer", "strong", "weak", "student")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--only", nargs="*", choices=ORDER, help="train only these (default: all)")
    p.add_argument("--threads", type=int, default=THREADS)
    args = p.parse_args(argv)
    setup(args.threads)
    t_all = time.time()
    for name in args.only or ORDER:
        t0 = time.time()
        print(f"training {name} ...", flush=True)
        if name in ("classifier", "scorer"):
            train_classifier(name)
        elif name == "student":
            train_student()
        else:
            train_diffusion(name)
        print(f"  {name}: {time.time() - t0:.0f} s -> {models.weights_path(name)}", flush=True)
    print(f"done in {time.time() - t_all:.0f} s")


if __name__ == "__main__":
    main()
