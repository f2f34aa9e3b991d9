"""Seconds per model evaluation: ComfyUI's KSampler vs ZigzagKSampler.

Runs both side by side in one process, on the same SD1.5-sized UNet (ComfyUI's
own SD15 class with its real unet_config, random but explicitly initialised
weights) and the same 64x64 latent, alternating the two several times, and
prints seconds per model call and per batch item (image evaluation through the
UNet) with their ratios.

    COMFYUI_PATH=/path/to/ComfyUI python bench/bench_zigzag.py [--steps 6] [--repeats 2] [--device cpu]

Two Zigzag settings are measured: inversion_cfg 2.0 (every call evaluates both
CFG branches, like KSampler: the like-for-like overhead) and the paper's
inversion_cfg 0 (the inversion evaluates one branch only).
"""

import argparse
import os
import statistics
import sys
import time


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--size", type=int, default=64, help="latent size")
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()

    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, os.path.join(here, "tests", "host"))
    import hostlib  # noqa: E402  (sets up ComfyUI from COMFYUI_PATH)

    comfy = hostlib.setup_comfy(cpu=a.device == "cpu")
    import torch
    import nodes

    torch.manual_seed(0)
    mp = hostlib.build_model("sd15", full_size=True, device=a.device)
    unet = mp.model.diffusion_model
    counter = {"calls": 0, "items": 0}
    orig = unet.forward

    def counting(x, *args, **kw):
        counter["calls"] += 1
        counter["items"] += x.shape[0]
        return orig(x, *args, **kw)

    unet.forward = counting
    pos, neg = hostlib.conditioning(mp, batch=1, seed=1), hostlib.conditioning(mp, batch=1, seed=2)
    latent = {"samples": torch.zeros(1, 4, a.size, a.size)}
    reflect = hostlib.load_pack()
    Z = reflect.nodes.zigzag.ZigzagKSampler
    steps = a.steps

    def ksampler():
        return nodes.common_ksampler(mp, 0, steps, 5.5, "ddim", "ddim_uniform", pos, neg, latent)[0]

    def zigzag(g2):
        return lambda: Z.execute(mp, 0, steps, 5.5, "ddim", "ddim_uniform", pos, neg, latent, 1.0, g2, steps - 1, 1,
                                 "published").args[0]

    runs = {"KSampler": ksampler, "Zigzag (inversion_cfg 2.0)": zigzag(2.0), "Zigzag (inversion_cfg 0, paper)": zigzag(0.0)}
    res = {k: {"per_call": [], "per_item": [], "calls": 0, "items": 0} for k in runs}
    with torch.inference_mode():
        ksampler()  # warm-up (model load, allocator)
        for _ in range(a.repeats):
            for name, fn in runs.items():
                counter.update(calls=0, items=0)
                if a.device != "cpu":
                    torch.cuda.synchronize()
                t = time.perf_counter()
                fn()
                if a.device != "cpu":
                    torch.cuda.synchronize()
                dt = time.perf_counter() - t
                r = res[name]
                r["per_call"].append(dt / counter["calls"])
                r["per_item"].append(dt / counter["items"])
                r["calls"], r["items"] = counter["calls"], counter["items"]

    print(f"ComfyUI {comfy['version']} at {comfy['path']}; device {a.device}; torch {torch.__version__}; "
          f"threads {torch.get_num_threads()}; SD1.5-sized UNet, latent {a.size}x{a.size}, {steps} steps, cfg 5.5, "
          f"lambda {steps - 1}, T_max 1, {a.repeats} alternating repeats (median)")
    base_call = statistics.median(res["KSampler"]["per_call"])
    base_item = statistics.median(res["KSampler"]["per_item"])
    print(f"{'run':34s} {'calls':>6s} {'items':>6s} {'s/call':>8s} {'ratio':>6s} {'s/item':>8s} {'ratio':>6s}")
    for name, r in res.items():
        pc, pi = statistics.median(r["per_call"]), statistics.median(r["per_item"])
        print(f"{name:34s} {r['calls']:6d} {r['items']:6d} {pc:8.4f} {pc / base_call:6.3f} {pi:8.4f} {pi / base_item:6.3f}")


if __name__ == "__main__":
    main()
