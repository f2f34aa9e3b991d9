"""Seconds per model evaluation: ComfyUI's KSampler vs ZigzagKSampler.

Runs both side by side in one process, on the same SD1.5-sized UNet (ComfyUI's
own SD15 class with its real unet_config, random but explicitly initialised
weights) and the same 64x64 latent, alternating the two several times, and
prints seconds per model call and per batch item (image evaluation through the
UNet) with their ratios.

    COMFYUI_PATH=/path/to/ComfyUI python bench/bench_zigzag.py [--steps 6] [--repeats 2] [--device cpu]
        [--family sd15|flux|wan21]

``--family flux`` / ``wan21``: the tiny Flux- and Wan 2.1-shaped transformers of the family host tests
(ComfyUI's own Flux and WanModel classes, seeded weights, 5-D [B, 16, T, H, W] latent for Wan) with the
family's usual sampling: euler / simple, cfg 1 for Flux (guidance embedding, one branch), cfg 5 for Wan.

Two Zigzag settings are measured: inversion_cfg 2.0 (every call evaluates both
CFG branches, like KSampler: the like-for-like overhead) and the paper's
inversion_cfg 0 (the inversion evaluates one branch only).
"""

import argparse

from common import Counter, print_table, sd15_inputs, setup, time_runs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--size", type=int, default=64, help="latent size")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--family", default="sd15", choices=["sd15", "flux", "wan21"])
    ap.add_argument("--frames", type=int, default=4, help="latent frames (wan21)")
    a = ap.parse_args()

    comfy, hostlib = setup(a.device)
    import torch
    import nodes

    if a.family == "sd15":
        mp, pos, neg, latent = sd15_inputs(hostlib, a.device, a.size)
        sampler, scheduler, cfg, what = "ddim", "ddim_uniform", 5.5, "SD1.5-sized UNet"
    else:
        mp = hostlib.build_family(a.family, seed=0)
        pos, neg = hostlib.family_conditioning(a.family, seed=1), hostlib.family_conditioning(a.family, seed=2)
        latent = hostlib.family_latent(a.family, height=a.size, width=a.size, frames=a.frames)
        sampler, scheduler, cfg = "euler", "simple", 1.0 if a.family == "flux" else 5.0
        what = f"tiny {a.family} transformer (latent {tuple(latent['samples'].shape)})"
    counter = Counter(mp.model.diffusion_model)
    reflect = hostlib.load_pack()
    Z = reflect.nodes.zigzag.ZigzagKSampler
    steps = a.steps

    def ksampler():
        return nodes.common_ksampler(mp, 0, steps, cfg, sampler, scheduler, pos, neg, latent)[0]

    def zigzag(g2):
        return lambda: Z.execute(mp, 0, steps, cfg, sampler, scheduler, pos, neg, latent, 1.0, g2, steps - 1, 1,
                                 "published").args[0]

    runs = {"KSampler": ksampler, "Zigzag (inversion_cfg 2.0)": zigzag(2.0), "Zigzag (inversion_cfg 0, paper)": zigzag(0.0)}
    with torch.inference_mode():
        ksampler()  # warm-up (model load, allocator)
    res = time_runs(runs, counter, a.repeats, a.device, warmup=False)
    print(f"ComfyUI {comfy['version']} at {comfy['path']}; device {a.device}; torch {torch.__version__}; "
          f"threads {torch.get_num_threads()}; {what}, latent {a.size}x{a.size}, {sampler} / {scheduler}, {steps} "
          f"steps, cfg {cfg}, lambda {steps - 1}, T_max 1, {a.repeats} alternating repeats (median)")
    print_table(res, "KSampler")


if __name__ == "__main__":
    main()
