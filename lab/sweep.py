"""The lab's investigation job: the settings around the main job's, to see where
each effect comes from (a few minutes on 2 CPU cores; the main job is ``python3 -m lab``).

    python3 -m lab.sweep [--n 300] [--out lab/out] [--only guidance steps w2sd swg adaptive]

Writes ``sweep.md`` and ``sweep.json``. Every row is compared, paired (same
noise and digits), with the baseline named in its table.

* guidance: standard sampling and Z-Sampling (gamma2 0) over gamma1, both
  inversion modes: where does Z-Sampling raise alignment, and at what cost in
  fidelity compared with simply raising cfg?
* steps: the inversion modes at the paper's 50 steps against the lab's 10.
* w2sd: W2SD at higher guidance, with the weak model and with weak = strong.
* swg: SWG / M-SWG over the guidance scale and the crop size (10 is the
  paper's 40/64 of the side, 12 the main job's).
* adaptive: the percentile k and the rollback sigma.
* se: are the standard errors right? Eight independent seeds of two methods:
  the spread of FD and of the paired FD difference across seeds against the
  bootstrap standard errors the main job reports.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see lab/__main__.py; must precede the torch import

import torch  # noqa: E402

from . import OUT_DIR, methods, train  # noqa: E402
from .run import SETTINGS, Lab, compare  # noqa: E402

SECTIONS = ("guidance", "steps", "w2sd", "swg", "adaptive", "se")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--out", default=OUT_DIR)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", nargs="*", choices=SECTIONS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    t_all = time.time()
    s = json.loads(json.dumps(SETTINGS))
    s["n"] = args.n
    lab = Lab(s)
    S, n = s["steps"], s["n"]
    noise, labels = lab.noise, lab.labels
    cache: dict = {}
    tables: dict = {}

    def measure(key, fn):
        if key not in cache:
            before, t0 = lab.counter.items, time.time()
            x = fn()
            m = lab.measure(x)
            m.update(evals=(lab.counter.items - before) / n, seconds=time.time() - t0)
            cache[key] = m
            print(f"  {key:<44} acc {m['accuracy']:.3f}  margin {m['margin']:.2f}  FD {m['fd']:.3f}  "
                  f"evals {m['evals']:5.1f}  {m['seconds']:5.1f} s", flush=True)
        return cache[key]

    def row(table, key, fn, base=None, note=""):
        m = measure(key, fn)
        r = {"row": key, "accuracy": m["accuracy"], "margin": m["margin"], "fd": m["fd"], "evals": m["evals"],
             "baseline": base, "note": note}
        if base is not None:
            r.update(compare(m, cache[base]))
        tables.setdefault(table, []).append(r)

    std = lambda model, steps, cfg: (lambda: methods.standard(model, noise, labels, steps, cfg))  # noqa: E731
    only = args.only or SECTIONS

    if "guidance" in only:
        print("guidance: standard and Z-Sampling (gamma2 0) over gamma1", flush=True)
        for g in (1.0, 1.25, 1.5, 2.0, 3.0, 5.5):
            row("guidance", f"standard cfg {g}", std(lab.strong, S, g))
            for mode in ("published", "paper"):
                row("guidance", f"Z-Sampling gamma1 {g} {mode}",
                    lambda: methods.zigzag(lab.strong, noise, labels, S, g, 0.0, S - 1, 1, mode),
                    base=f"standard cfg {g}")
    if "steps" in only:
        print("steps: the inversion modes at 50 steps", flush=True)
        g = s["zigzag"]["gamma1"]
        row("steps", f"standard cfg {g} 50 steps", std(lab.strong, 50, g))
        for mode in ("published", "paper"):
            row("steps", f"Z-Sampling gamma1 {g} {mode} 50 steps",
                lambda: methods.zigzag(lab.strong, noise, labels, 50, g, 0.0, 49, 1, mode),
                base=f"standard cfg {g} 50 steps")
        row("steps", "standard cfg 1.0 50 steps", std(lab.strong, 50, 1.0))
        for mode in ("published", "paper"):
            row("steps", f"W2SD cfg 1 {mode} 50 steps",
                lambda: methods.w2sd_sample(lab.strong, lab.weak, lab.strong, noise, labels, 50, 1.0, 1.0, 1.0, mode),
                base="standard cfg 1.0 50 steps")
    if "w2sd" in only:
        print("w2sd: guidance, and weak = strong", flush=True)
        for g in (1.0, 1.5, 3.0):
            row("w2sd", f"standard cfg {g}", std(lab.strong, S, g))
            for mode in ("published", "paper"):
                for weak, name in ((lab.weak, "weak"), (lab.strong, "weak = strong")):
                    row("w2sd", f"W2SD cfg {g} {mode}, {name}",
                        lambda: methods.w2sd_sample(lab.strong, weak, lab.strong, noise, labels, S, g, g, g, mode),
                        base=f"standard cfg {g}")
    if "swg" in only:
        print("swg: scale and crop size (cfg 1)", flush=True)
        row("swg", "standard cfg 1.0", std(lab.strong, S, 1.0))
        for crop in (10, 12):
            for scale in (0.25, 0.5, 1.0, 2.0):
                for masked in (False, True):
                    row("swg", f"{'M-SWG' if masked else 'SWG'} crop {crop} scale {scale}",
                        lambda: methods.swg_sample(lab.strong, noise, labels, S, scale, crop, 2, masked),
                        base="standard cfg 1.0")
    if "adaptive" in only:
        print("adaptive: k and sigma", flush=True)
        st_sig = methods.student_sigmas(train.STUDENT["teacher_steps"], train.STUDENT["levels"])
        row("adaptive", "student", lambda: methods.student_sample(lab.student, noise, labels, st_sig))
        row("adaptive", f"teacher (standard cfg {s['cfg']})", std(lab.strong, S, s["cfg"]))
        for sigma in (0.5, 0.7):
            for k in (30, 50, 70):
                info = {}

                def go():
                    x, i = methods.adaptive_sample(lab.student, lab.strong, lab.scorer, noise, labels, st_sig,
                                                   lab.calib_noise, s["adaptive"]["teacher_steps"], sigma, k,
                                                   s["cfg"], lab.rollback_noise)
                    info.update(i)
                    lab.counter.items -= i["calibration_evaluations"] * n  # calibration not counted
                    return x
                row("adaptive", f"adaptive k {k} sigma {sigma}", go, base=f"teacher (standard cfg {s['cfg']})")
                tables["adaptive"][-1]["note"] = (f"refined {info['refined_share']:.2f}; the paper's formula "
                                                  f"{info['paper_formula']:.1f}")
    if "se" in only:
        print("se: bootstrap standard errors against the spread over 8 independent seeds", flush=True)
        from .metrics import bootstrap_fds, classify
        fd_a, fd_d, se_a, se_d = [], [], [], []
        for seed in range(8):
            z = torch.randn(n, 1, 16, 16, generator=torch.Generator().manual_seed(1000 + seed))
            _, fa = classify(lab.classifier, methods.standard(lab.strong, z, labels, S, 1.0))
            _, fb = classify(lab.classifier, methods.standard(lab.strong, z, labels, S, s["cfg"]))
            ba, bb = bootstrap_fds(fa, lab.ref, lab.boot), bootstrap_fds(fb, lab.ref, lab.boot)
            fd_a.append(lab.ref.fd(fa))
            fd_d.append(lab.ref.fd(fa) - lab.ref.fd(fb))
            se_a.append(float(ba.std()))
            se_d.append(float((ba - bb).std()))
        t = lambda v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
        tables["se"] = [
            {"row": "FD of standard cfg 1", "spread over seeds": float(t(fd_a).std()),
             "bootstrap SE (mean)": float(t(se_a).mean())},
            {"row": f"FD(cfg 1) - FD(cfg {s['cfg']}), paired", "spread over seeds": float(t(fd_d).std()),
             "bootstrap SE (mean)": float(t(se_d).mean())}]
        for r in tables["se"]:
            print(f"  {r['row']:<40} spread {r['spread over seeds']:.3f}  bootstrap SE {r['bootstrap SE (mean)']:.3f}")
    write(args.out, s, tables, time.time() - t_all, args.threads)


def write(out, s, tables, wall, threads):
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "sweep.json"), "w", encoding="utf-8") as f:
        json.dump({"settings": s, "tables": tables, "wall_seconds": wall}, f, indent=1, default=float)
    L = ["# ComfyUI-Reflect lab: investigation sweep\n",
         f"{s['n']} samples per row (the same noise and digits everywhere), DDIM {s['steps']} steps unless "
         f"the row says otherwise. Differences are the row minus its baseline, paired, ± one standard error. "
         f"Written by `python3 -m lab.sweep` in {wall:.0f} s ({threads} threads).\n"]
    for name, rows in tables.items():
        L.append(f"\n## {name}\n")
        if name == "se":
            L.append("| quantity | spread over 8 seeds (std) | bootstrap SE (mean over seeds) |")
            L.append("|---|---|---|")
            for r in rows:
                L.append(f"| {r['row']} | {r['spread over seeds']:.3f} | {r['bootstrap SE (mean)']:.3f} |")
            continue
        L.append("| row | accuracy | margin | FD | evals | baseline | Δ accuracy | Δ margin | Δ FD | note |")
        L.append("|---|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            d = ("| | | |" if r["baseline"] is None else
                 f"| {r['d_accuracy']:+.3f} ± {r['d_accuracy_se']:.3f} | {r['d_margin']:+.2f} ± "
                 f"{r['d_margin_se']:.2f} | {r['d_fd']:+.3f} ± {r['d_fd_se']:.3f} |")
            L.append(f"| {r['row']} | {r['accuracy']:.3f} | {r['margin']:.2f} | {r['fd']:.3f} | {r['evals']:.1f} "
                     f"| {r['baseline'] or ''} {d} {r['note']} |")
    with open(os.path.join(out, "sweep.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(L) + "\n")
    print(f"wrote {os.path.join(out, 'sweep.md')} in {wall:.0f} s")


if __name__ == "__main__":
    main()
