"""The lab's main job: every method side by side on the shipped models.

    python3 -m lab [--n 500] [--out lab/out] [--threads 2] [--only KEY ...] [--no-plots]

Writes ``results.md`` (tables and verdicts), ``results.json``, ``metrics_vs_evals.png``
(accuracy, margin and Frechet distance against model evaluations per sample),
``claims.png`` (each claim's paired difference in standard errors) and ``grids.png``
(samples of every method, one row per digit) to the output folder.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import torch

from tools.reflect_pack import module
ad = module("samplers.adaptive")
w2sd = module("samplers.w2sd")
zz = module("samplers.zigzag")

from . import OUT_DIR, data, methods, models, train
from .metrics import Reference, bootstrap_fds, bootstrap_indices, classify, mean_se

SETTINGS = {
    "n": 500,                     # samples per method (50 per digit); the same noise and digits for every method
    "seed": 0,
    "steps": 10,                  # DDIM steps (papers: 50)
    "cfg": 1.5,                   # guidance of the standard sampler, the teacher, the Z-Sampling zig
    "matched_steps": 24,          # standard sampling (cfg) with about the evaluations of Z-Sampling
    "matched_steps_cfg1": 30,     # standard sampling (cfg 1) with about the evaluations of W2SD and SWG
    "zigzag": {"gamma1": 1.5, "gamma2": 0.0, "lambda_steps": 9, "rounds": 1},      # paper: 5.5, 0, 49 of 50, 1
    "w2sd": {"strong_cfg": 1.0, "weak_cfg": 1.0, "main_cfg": 1.0},                  # model difference only
    "swg": {"scale": 0.5, "crop": 12, "crops": 2, "cfg": 1.0},                      # paper: crop 40 of 64, 2x2
    "adaptive": {"teacher_steps": 5, "sigma": 0.7, "k": 50},                        # paper: 12 (4), 0.7 (0.3), 50
}


class Progress:
    """One status line on stderr, advanced on every model evaluation."""

    def __init__(self, total_items: float, stream=sys.stderr):
        self.total, self.done, self.stream, self.t0, self.label = total_items, 0, stream, time.time(), ""
        self.tty = stream is not None and stream.isatty()
        self._last = 0.0

    def advance(self, n: int) -> None:
        self.done += n
        now = time.time()
        if self.tty and now - self._last > 0.2:
            self._last = now
            self.draw()

    def draw(self, end: str = "") -> None:
        if self.stream is None:
            return
        frac = min(1.0, self.done / max(1.0, self.total))
        bar = "#" * int(30 * frac) + "-" * (30 - int(30 * frac))
        line = f"[{bar}] {100 * frac:5.1f}%  {time.time() - self.t0:5.1f} s  {self.label}"
        if self.tty:
            self.stream.write("\r" + line[:118].ljust(118) + end)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def method_plan(s: dict) -> list[dict]:
    """The methods, in order: name, group, evaluations per sample expected (for the progress bar)."""
    steps, cfg = s["steps"], s["cfg"]
    z, wd, sw, a = s["zigzag"], s["w2sd"], s["swg"], s["adaptive"]
    b = lambda g: 1 if g in (0.0, 1.0) else 2  # noqa: E731
    zev = zz.evaluations(steps, z["lambda_steps"], z["rounds"], z["gamma1"], z["gamma2"])["minimal"]
    wev = w2sd.evaluations(steps, wd["strong_cfg"], wd["weak_cfg"], wd["main_cfg"])["minimal"]
    crop_items = sw["crops"] ** 2
    _, executed, _ = ad.rollback_steps(a["teacher_steps"], a["sigma"])
    st = len(train.STUDENT["levels"])
    wc = wd["strong_cfg"]
    plan = [
        ("standard", "baseline", f"strong, cfg {cfg}, {steps} steps", steps * b(cfg)),
        ("standard_matched", "baseline", f"strong, cfg {cfg}, {s['matched_steps']} steps",
         s["matched_steps"] * b(cfg)),
        ("zigzag_published", "Z-Sampling", f"gamma1 {z['gamma1']}, gamma2 {z['gamma2']}, lambda {z['lambda_steps']}, "
         "inversion published", zev),
        ("zigzag_paper", "Z-Sampling", "same, inversion paper", zev),
        ("zigzag_nogap_published", "control", f"Z-Sampling with gamma2 = gamma1 = {z['gamma1']}, inversion published",
         zz.evaluations(steps, z["lambda_steps"], z["rounds"], z["gamma1"], z["gamma1"])["minimal"]),
        ("zigzag_nogap_paper", "control", "same, inversion paper",
         zz.evaluations(steps, z["lambda_steps"], z["rounds"], z["gamma1"], z["gamma1"])["minimal"]),
        ("cond_only", "baseline", f"strong, cfg 1, {steps} steps", steps),
        ("cond_only_matched", "baseline", f"strong, cfg 1, {s['matched_steps_cfg1']} steps",
         s["matched_steps_cfg1"]),
        ("weak", "baseline", f"weak, cfg {wc}, {steps} steps", steps * b(wc)),
        ("w2sd_published", "W2SD", f"strong / weak / strong, cfg {wc}, inversion published", wev),
        ("w2sd_paper", "W2SD", "same, inversion paper", wev),
        ("w2sd_self_published", "control", "W2SD with weak = strong, inversion published",
         w2sd.evaluations(steps, wc, wc, wc)["minimal"]),
        ("w2sd_self_paper", "control", "same, inversion paper", w2sd.evaluations(steps, wc, wc, wc)["minimal"]),
        ("swg", "SWG", f"cfg 1, scale {sw['scale']}, {sw['crops']}x{sw['crops']} crops of {sw['crop']}",
         steps * (1 + crop_items)),
        ("mswg", "M-SWG", "same, masked", steps * (1 + crop_items)),
        ("student", "baseline", f"{st}-step student distilled from the teacher", st),
        ("adaptive", "adaptive", f"k {a['k']}, sigma {a['sigma']}, teacher {a['teacher_steps']} steps",
         2 * st + 0.5 * executed * b(cfg)),
    ]
    return [dict(key=k, group=g, setting=d, expected=e) for k, g, d, e in plan]


LABELS = {
    "standard": "standard (teacher)", "standard_matched": "standard, matched evals", "weak": "weak model",
    "cond_only": "no guidance (cfg 1)", "cond_only_matched": "no guidance, matched evals",
    "zigzag_published": "Z-Sampling (published)",
    "zigzag_paper": "Z-Sampling (paper)", "zigzag_nogap_published": "Z-Sampling without gap (published)",
    "zigzag_nogap_paper": "Z-Sampling without gap (paper)", "w2sd_self_published": "W2SD weak = strong (published)",
    "w2sd_self_paper": "W2SD weak = strong (paper)", "w2sd_published": "W2SD (published)", "w2sd_paper": "W2SD (paper)",
    "swg": "SWG", "mswg": "M-SWG", "student": "student", "adaptive": "adaptive student-teacher",
}


class Lab:
    def __init__(self, settings: dict, weights_dir: str | None = None):
        self.s = settings
        wd = weights_dir or models.WEIGHTS_DIR
        self.counter = models.Counter()
        self.strong = models.Model(models.load("strong", wd), "strong", self.counter)
        self.weak = models.Model(models.load("weak", wd), "weak", self.counter)
        self.student = models.Model(models.load("student", wd), "student", self.counter)
        self.classifier = models.load("classifier", wd)
        self.scorer = models.load("scorer", wd)
        n, g = settings["n"], torch.Generator().manual_seed(settings["seed"])
        self.labels = torch.arange(n) % 10
        self.noise = torch.randn(n, 1, 16, 16, generator=g)
        self.calib_noise = torch.randn(n, 1, 16, 16, generator=g)
        self.rollback_noise = torch.randn(n, 1, 16, 16, generator=g)
        real, _ = data.load("train")
        self.n_train = len(real)
        _, real_f = classify(self.classifier, real)
        self.ref = Reference(real_f)
        self.boot = bootstrap_indices(n, reps=100, seed=settings["seed"])
        test, test_labels = data.load("test")
        self.test = (test, test_labels)

    def sample(self, key: str):
        s, c = self.s, self.s["cfg"]
        noise, labels = self.noise, self.labels
        if key == "standard":
            return methods.standard(self.strong, noise, labels, s["steps"], c), {}
        if key == "standard_matched":
            return methods.standard(self.strong, noise, labels, s["matched_steps"], c), {}
        if key == "weak":
            return methods.standard(self.weak, noise, labels, s["steps"], s["w2sd"]["strong_cfg"]), {}
        if key == "cond_only":
            return methods.standard(self.strong, noise, labels, s["steps"], 1.0), {}
        if key == "cond_only_matched":
            return methods.standard(self.strong, noise, labels, s["matched_steps_cfg1"], 1.0), {}
        if key.startswith("zigzag_"):
            z = s["zigzag"]
            g2 = z["gamma1"] if "_nogap_" in key else z["gamma2"]
            return methods.zigzag(self.strong, noise, labels, s["steps"], z["gamma1"], g2,
                                  z["lambda_steps"], z["rounds"], inversion=key.split("_")[-1]), {}
        if key.startswith("w2sd_"):
            w = s["w2sd"]
            weak = self.strong if "_self_" in key else self.weak
            return methods.w2sd_sample(self.strong, weak, self.strong, noise, labels, s["steps"],
                                       w["strong_cfg"], w["weak_cfg"], w["main_cfg"],
                                       inversion=key.split("_")[-1]), {}
        if key in ("swg", "mswg"):
            w = s["swg"]
            return methods.swg_sample(self.strong, noise, labels, s["steps"], w["scale"], w["crop"], w["crops"],
                                      masked=key == "mswg", cfg=w["cfg"]), {}
        st_sig = methods.student_sigmas(train.STUDENT["teacher_steps"], train.STUDENT["levels"])
        if key == "student":
            return methods.student_sample(self.student, noise, labels, st_sig), {}
        if key == "adaptive":
            a = s["adaptive"]
            return methods.adaptive_sample(self.student, self.strong, self.scorer, noise, labels, st_sig,
                                           self.calib_noise, a["teacher_steps"], a["sigma"], a["k"], c,
                                           self.rollback_noise)
        raise KeyError(key)

    def measure(self, x: torch.Tensor) -> dict:
        logits, feats = classify(self.classifier, x)
        correct = (logits.argmax(1) == self.labels).double()
        acc, acc_se = mean_se(correct)
        margin_i = margins(logits, self.labels)
        margin, margin_se = mean_se(margin_i)
        score, score_se = mean_se(self.scorer.score(x, self.labels))
        boot = bootstrap_fds(feats, self.ref, self.boot)
        return {"accuracy": acc, "accuracy_se": acc_se, "margin": margin, "margin_se": margin_se,
                "fd": self.ref.fd(feats), "fd_se": float(boot.std()), "score": score, "score_se": score_se,
                "_correct": correct, "_margin": margin_i, "_boot": boot}


def margins(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per sample: the prompted digit's logit minus the largest other logit (> 0: classified as prompted)."""
    own = logits.gather(1, labels.reshape(-1, 1)).flatten()
    other = logits.scatter(1, labels.reshape(-1, 1), float("-inf")).max(1).values
    return (own - other).double()


def compare(a: dict, b: dict) -> dict:
    """a - b with paired standard errors (same noise and digits)."""
    d = a["_correct"] - b["_correct"]
    dacc, dacc_se = mean_se(d)
    dmargin, dmargin_se = mean_se(a["_margin"] - b["_margin"])
    dfd = a["fd"] - b["fd"]
    dfd_se = float((a["_boot"] - b["_boot"]).std())
    return {"d_accuracy": dacc, "d_accuracy_se": dacc_se, "d_margin": dmargin, "d_margin_se": dmargin_se,
            "d_fd": dfd, "d_fd_se": dfd_se}


def verdict(delta: float, se: float, better: str) -> str:
    """Direction of effect: 'holds' (right direction, > 2 SE), 'within noise', 'opposite' (wrong, > 2 SE)."""
    sign = 1 if better == "up" else -1
    if se <= 0:
        return "within noise" if delta == 0 else ("holds" if sign * delta > 0 else "opposite")
    z = sign * delta / se
    if z > 2:
        return "holds"
    if z < -2:
        return "opposite"
    return "within noise"


# (method, baseline, metric, better, claim)
CLAIMS = [
    ("zigzag_published", "standard", "accuracy", "up", "Z-Sampling raises alignment"),
    ("zigzag_paper", "standard", "accuracy", "up", "Z-Sampling raises alignment"),
    ("zigzag_published", "standard", "margin", "up", "Z-Sampling raises alignment"),
    ("zigzag_paper", "standard", "margin", "up", "Z-Sampling raises alignment"),
    ("zigzag_published", "standard_matched", "accuracy", "up", "... also against matched evaluations"),
    ("zigzag_paper", "standard_matched", "accuracy", "up", "... also against matched evaluations"),
    ("zigzag_published", "zigzag_nogap_published", "margin", "up", "the guidance gap carries Z-Sampling's effect"),
    ("zigzag_paper", "zigzag_nogap_paper", "margin", "up", "the guidance gap carries Z-Sampling's effect"),
    ("w2sd_published", "cond_only", "fd", "down", "W2SD moves the strong model's samples toward the data"),
    ("w2sd_paper", "cond_only", "fd", "down", "W2SD moves the strong model's samples toward the data"),
    ("w2sd_published", "cond_only_matched", "fd", "down", "... also against matched evaluations"),
    ("w2sd_paper", "cond_only_matched", "fd", "down", "... also against matched evaluations"),
    ("w2sd_published", "w2sd_self_published", "fd", "down", "the weak model carries W2SD's effect"),
    ("w2sd_paper", "w2sd_self_paper", "fd", "down", "the weak model carries W2SD's effect"),
    ("w2sd_published", "w2sd_self_published", "margin", "up", "the weak model carries W2SD's effect"),
    ("w2sd_paper", "w2sd_self_paper", "margin", "up", "the weak model carries W2SD's effect"),
    ("swg", "cond_only", "fd", "down", "SWG improves fidelity"),
    ("mswg", "cond_only", "fd", "down", "M-SWG improves fidelity"),
    ("mswg", "cond_only_matched", "fd", "down", "... also against matched evaluations"),
    ("mswg", "cond_only", "accuracy", "up", "M-SWG raises class agreement (the paper's IS gain)"),
    ("mswg", "swg", "fd", "down", "M-SWG improves on SWG"),
    ("adaptive", "student", "accuracy", "up", "adaptive beats the student (alignment)"),
    ("adaptive", "student", "fd", "down", "adaptive beats the student (fidelity)"),
    ("adaptive", "standard", "accuracy", "match", "adaptive matches the teacher (alignment)"),
    ("adaptive", "standard", "fd", "match", "adaptive matches the teacher (fidelity)"),
]


def evaluate_claims(results: dict) -> list[dict]:
    out = []
    for m, base, metric, better, claim in CLAIMS:
        if m not in results or base not in results:
            continue
        c = compare(results[m], results[base])
        key = "d_" + metric
        delta, se = c[key], c[key + "_se"]
        if better == "match":
            worse = delta if metric == "fd" else -delta  # > 0: worse than the teacher
            v = "holds" if worse <= 2 * se else "does not hold"
            v = f"{v} (at {results[m]['evals']:.1f} vs {results[base]['evals']:.1f} evals)"
        else:
            v = verdict(delta, se, better)
        out.append({"method": m, "baseline": base, "metric": metric, "claim": claim, "delta": delta, "se": se,
                    "verdict": v})
    return out


def fmt(v, se=None, digits=3):
    return f"{v:.{digits}f}" if se is None else f"{v:.{digits}f} ± {se:.{digits}f}"


def write_markdown(path: str, s: dict, rows: list[dict], claims: list[dict], extra: dict, real: dict,
                   wall: float, threads: int) -> None:
    L = ["# ComfyUI-Reflect lab results\n"]
    L.append(f"{s['n']} samples per method ({s['n'] // 10} per digit, the same start noise and digits for every "
             f"method), DDIM {s['steps']} steps on the SD/SDXL scaled-linear schedule (the paper's "
             f"`ddim_reference` schedule). Alignment: the measuring classifier's **accuracy** on the prompted "
             f"digit and its logit **margin** (prompted digit minus the best other digit; more sensitive where "
             f"accuracy saturates). Fidelity: **FD**, the Frechet distance in the classifier's 64-d feature "
             f"space to the {real['n_train']} real training digits (lower is better). **Score**: the gate's "
             f"log p(digit) (the adaptive scheme's ImageReward stand-in, a separate network). **Evals**: batch "
             f"items through a network per sample (CFG = 2 per step, each SWG crop = 1; the weak model is 3x "
             f"smaller). ± is one standard error (FD: bootstrap).\n")
    L.append(f"Real held-out digits ({real['n_test']}): accuracy {real['accuracy']:.3f}, margin "
             f"{real['margin']:.2f}, FD {real['fd']:.3f} "
             f"(a floor: real against real at a smaller sample size).\n")
    L.append("| method | setting | accuracy | margin | FD | score | evals | seconds |")
    L.append("|---|---|---|---|---|---|---|---|")
    for r in rows:
        L.append(f"| {LABELS[r['key']]} | {r['setting']} | {fmt(r['accuracy'], r['accuracy_se'])} | "
                 f"{fmt(r['margin'], r['margin_se'], 2)} | {fmt(r['fd'], r['fd_se'])} | "
                 f"{fmt(r['score'], r['score_se'], 2)} | {r['evals']:.1f} | {r['seconds']:.1f} |")
    L.append("\n## Does the paper's direction of effect hold here?\n")
    L.append("Paired differences, method − baseline on the same noise and digits. **holds**: the claimed "
             "direction by more than 2 standard errors; **within noise**: not distinguishable; **opposite**: "
             "the other direction by more than 2 SE. For 'matches the teacher': not worse by more than 2 SE.\n")
    L.append("| claim | method | baseline | metric | difference | verdict |")
    L.append("|---|---|---|---|---|---|")
    for c in claims:
        L.append(f"| {c['claim']} | {LABELS[c['method']]} | {LABELS[c['baseline']]} | {c['metric']} | "
                 f"{c['delta']:+.3f} ± {c['se']:.3f} | {c['verdict']} |")
    if "adaptive" in extra:
        a = extra["adaptive"]
        L.append(f"\nAdaptive scheme: tau = {a['tau']:.3f}, the {s['adaptive']['k']}th percentile of the "
                 f"student's scores on a separate calibration run (not counted); refined share "
                 f"{a['refined_share']:.3f}; average evaluations per sample measured "
                 f"**{a['measured_evaluations']:.2f}**, the paper's formula at k/100 {a['paper_formula']:.2f}, "
                 f"the teacher alone {2 * s['steps'] if s['cfg'] not in (0, 1) else s['steps']}; the teacher "
                 f"refines from sigma {a['rollback_sigmas'][0]} over {a['rollback_sigmas']} (the reference's "
                 f"rollback schedule, `adaptive.reference_rollback_sigmas`).\n")
    if extra.get("modes"):
        L.append("\n## Inversion modes: `paper` against `published`\n")
        L.append("| method | metric | published | paper | paper − published |")
        L.append("|---|---|---|---|---|")
        for m in extra["modes"]:
            L.append(f"| {m['method']} | {m['metric']} | {m['published']:.3f} | {m['paper']:.3f} | "
                     f"{m['delta']:+.3f} ± {m['se']:.3f} |")
    L.append("\n## Settings\n")
    L.append("```json\n" + json.dumps(s, indent=1) + "\n```\n")
    L.append(f"Wall time of the whole run: {wall:.1f} s ({threads} threads, torch {torch.__version__}).\n")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(L))


MARKERS = ("o", "s", "^", "v", "D", "P", "X", "*", "<", ">", "h", "p", "d", "H")


def write_plots(out: str, rows: list[dict], samples: dict, labels: torch.Tensor, real: dict,
                real_images=None, claims: list[dict] | None = None) -> list[str]:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plots (pip install matplotlib)", file=sys.stderr)
        return []
    files = []
    fig, axes = plt.subplots(1, 3, figsize=(18, 5))
    cmap = plt.get_cmap("tab20")
    for ax, metric, title in ((axes[0], "accuracy", "alignment: accuracy on the prompted digit (higher is better)"),
                              (axes[1], "margin", "alignment: logit margin of the prompted digit (higher is better)"),
                              (axes[2], "fd", "fidelity: Frechet distance to real digits (lower is better)")):
        for j, r in enumerate(rows):
            ax.errorbar(r["evals"], r[metric], yerr=r[metric + "_se"], fmt=MARKERS[j % len(MARKERS)], capsize=3,
                        label=LABELS[r["key"]], color=cmap(j % 20), alpha=0.9, markersize=7)
        if metric in real:
            ax.axhline(real[metric], color="k", ls="--", lw=0.8, label="real held-out digits")
        ax.set_xlabel("model evaluations per sample")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3, which="both")
    axes[2].set_yscale("log")
    axes[2].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    p = os.path.join(out, "metrics_vs_evals.png")
    fig.savefig(p, dpi=110)
    plt.close(fig)
    files.append(p)

    samples = dict(samples)
    if real_images is not None:
        samples = {"real": real_images[0], **samples}
        labels_of = {"real": real_images[1]}
    else:
        labels_of = {}
    keys = list(samples)
    cols = 6
    nrows = math.ceil(len(keys) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(2.6 * cols, 3.2 * nrows))
    for ax in axes.flat:
        ax.axis("off")
    for ax, k in zip(axes.flat, keys):
        ax.imshow(grid(samples[k], labels_of.get(k, labels)), cmap="gray", vmin=-1, vmax=1)
        ax.set_title(LABELS.get(k, "real held-out digits"), fontsize=8)
    fig.tight_layout()
    p = os.path.join(out, "grids.png")
    fig.savefig(p, dpi=110)
    plt.close(fig)
    files.append(p)

    if claims:
        fig, ax = plt.subplots(figsize=(13, 0.32 * len(claims) + 1.4))
        ys = list(range(len(claims)))[::-1]
        for y, c in zip(ys, claims):
            sign = 1 if c["metric"] != "fd" else -1  # plotted so that right = the claimed direction
            z = sign * c["delta"] / c["se"] if c["se"] > 0 else 0.0
            color = "tab:green" if c["verdict"].startswith("holds") else (
                "tab:red" if c["verdict"].startswith(("opposite", "does not")) else "tab:gray")
            ax.barh(y, z, color=color, alpha=0.8)
        ax.set_yticks(ys)
        ax.set_yticklabels([f"{c['claim']}: {LABELS[c['method']]} vs {LABELS[c['baseline']]} ({c['metric']})"
                            for c in claims], fontsize=7)
        for v in (-2, 2):
            ax.axvline(v, color="k", ls="--", lw=0.8)
        ax.axvline(0, color="k", lw=0.8)
        ax.set_xlabel("paired difference / its standard error, right = the claimed direction\n"
                      "green: holds ('matches': not worse by 2 SE), grey: within noise, red: against", fontsize=8)
        fig.subplots_adjust(left=0.5, right=0.98, top=0.98, bottom=1.0 / (0.32 * len(claims) + 1.4))
        p = os.path.join(out, "claims.png")
        fig.savefig(p, dpi=110)
        plt.close(fig)
        files.append(p)
    return files


def grid(x: torch.Tensor, labels: torch.Tensor, per_digit: int = 8) -> torch.Tensor:
    """A (10 * 17, per_digit * 17) image: one row per digit, the first samples of each."""
    size = x.shape[-1] + 1
    g = torch.full((10 * size, per_digit * size), -1.0)
    for d in range(10):
        idx = (labels == d).nonzero().flatten()[:per_digit]
        for j, i in enumerate(idx.tolist()):
            g[d * size:d * size + size - 1, j * size:j * size + size - 1] = x[i, 0].clamp(-1, 1)
    return g


def run(settings: dict | None = None, out: str = OUT_DIR, only=None, weights_dir=None, plots: bool = True,
        threads: int = 2, quiet: bool = False) -> dict:
    """Run the methods (``only``: a subset of keys), measure, write the outputs; returns the summary."""
    old_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return _run(settings, out, only, weights_dir, plots, threads, quiet)
    finally:
        torch.set_num_threads(old_threads)


def _run(settings, out, only, weights_dir, plots, threads, quiet) -> dict:
    t_start = time.time()
    s = json.loads(json.dumps(settings or SETTINGS))
    os.makedirs(out, exist_ok=True)
    log = (lambda *a: None) if quiet else (lambda *a: print(*a, flush=True))
    lab = Lab(s, weights_dir)
    plan = [p for p in method_plan(s) if only is None or p["key"] in only]
    progress = Progress(sum(p["expected"] for p in plan) * s["n"], stream=None if quiet else sys.stderr)
    lab.counter.hook = progress.advance
    real_logits, real_feats = classify(lab.classifier, lab.test[0])
    real = {"n_test": len(lab.test[0]), "n_train": lab.n_train,
            "accuracy": float((real_logits.argmax(1) == lab.test[1]).double().mean()),
            "margin": float(margins(real_logits, lab.test[1]).mean()),
            "fd": lab.ref.fd(real_feats)}
    log(f"lab: {s['n']} samples per method, {len(plan)} methods; real held-out digits: accuracy "
        f"{real['accuracy']:.3f}, FD {real['fd']:.3f}")
    results, samples, extra, rows = {}, {}, {}, []
    for i, p in enumerate(plan):
        progress.label = f"{i + 1}/{len(plan)} {LABELS[p['key']]}"
        progress.draw()
        before, t0 = lab.counter.items, time.time()
        x, info = lab.sample(p["key"])
        seconds = time.time() - t0
        evals = (lab.counter.items - before) / s["n"]
        if p["key"] == "adaptive":
            # the calibration run is a one-off cost (the paper does not count it either)
            evals -= info["calibration_evaluations"]
            extra["adaptive"] = {k: v for k, v in info.items() if not isinstance(v, torch.Tensor)}
        m = lab.measure(x)
        m.update(key=p["key"], group=p["group"], setting=p["setting"], evals=evals, seconds=seconds)
        results[p["key"]], samples[p["key"]] = m, x
        rows.append(m)
        if progress.tty:
            progress.stream.write("\r" + " " * 118 + "\r")
        log(f"[{i + 1:2d}/{len(plan)}] {LABELS[p['key']]:<36} acc {m['accuracy']:.3f}  FD {m['fd']:6.3f}  "
            f"evals {evals:5.1f}  {seconds:5.1f} s")
    claims = evaluate_claims(results)
    modes = []
    for group in ("zigzag", "w2sd"):
        a, b = results.get(f"{group}_published"), results.get(f"{group}_paper")
        if a is None or b is None:
            continue
        c = compare(b, a)
        for metric, key in (("accuracy", "d_accuracy"), ("margin", "d_margin"), ("fd", "d_fd")):
            modes.append({"method": {"zigzag": "Z-Sampling", "w2sd": "W2SD"}[group], "metric": metric,
                          "published": a[metric], "paper": b[metric], "delta": c[key], "se": c[key + "_se"]})
    extra["modes"] = modes
    files = write_plots(out, rows, samples, lab.labels, real, lab.test, claims) if plots else []
    wall = time.time() - t_start
    public = [{k: v for k, v in r.items() if not k.startswith("_")} for r in rows]
    summary = {"settings": s, "real": real, "methods": public, "claims": claims, "extra": extra, "files": files,
               "wall_seconds": wall, "threads": threads, "torch": torch.__version__}
    with open(os.path.join(out, "results.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1, default=float)
    write_markdown(os.path.join(out, "results.md"), s, public, claims, extra, real, wall, threads)
    log("")
    for c in claims:
        log(f"  {c['claim']:<55} {LABELS[c['method']]:<26} {c['metric']:<8} {c['delta']:+.3f} ± {c['se']:.3f}  "
            f"{c['verdict']}")
    log(f"\nwrote {os.path.join(out, 'results.md')}, results.json" + "".join(f", {os.path.basename(f)}" for f in files)
        + f" in {wall:.1f} s")
    return summary


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=SETTINGS["n"], help="samples per method (default 300)")
    p.add_argument("--out", default=OUT_DIR)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", nargs="*", help="run only these methods: " + " ".join(LABELS))
    p.add_argument("--no-plots", action="store_true")
    args = p.parse_args(argv)
    s = json.loads(json.dumps(SETTINGS))
    s["n"] = args.n
    run(s, out=args.out, only=args.only, plots=not args.no_plots, threads=args.threads)


if __name__ == "__main__":
    main()
