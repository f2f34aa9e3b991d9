"""Seconds per model evaluation and peak memory: KSampler with a LoRA vs
WeakStrongReflectionLoRA (W2SD's LoRA path, strengths switched at forward time).

Both run side by side in one process, alternating, on the same SD1.5-sized UNet
(ComfyUI's own SD15 class with its real unet_config, seeded weights) with a
seeded LoCon of rank ``--rank`` on every attention and conv layer, saved as a
file and loaded by ComfyUI's LoRA loader. KSampler runs the model with the LoRA
at the main strength (0.8, what LoraLoaderModelOnly gives); W2SD runs the
paper's strengths (+1.5 strong, -1.5 weak, 0.8 main) and CFGs (5.5, 1.0, 5.5).
Seconds are per model call and per batch item through the UNet.

Memory is measured in two fresh child processes, one per sampler, each
building the same model and LoRA, sampling once to load and patch, then
sampling again while the resident set size is polled: printed are the size
before that run (model, LoRA file, ComfyUI's patched weights) and the peak
during it.

    COMFYUI_PATH=/path/to/ComfyUI python bench/bench_w2sd.py [--steps 6] [--repeats 2] [--rank 16] [--device cpu]
"""

import argparse
import json
import os
import subprocess
import sys

from common import Counter, PeakRSS, print_table, time_runs
import common

PAPER = {"strong": 1.5, "weak": -1.5, "main": 0.8}


def setup(a):
    env, hostlib = common.setup(a.device)
    import comfy.utils
    import folder_paths

    mp, pos, neg, latent = common.sd15_inputs(hostlib, a.device, a.size)
    lora = hostlib.make_lora(mp, rank=a.rank, seed=1)  # its own seeded generator
    folder = folder_paths.get_folder_paths("loras")[0]
    os.makedirs(folder, exist_ok=True)
    comfy.utils.save_torch_file(lora, os.path.join(folder, "bench_locon.safetensors"))
    return env, hostlib, mp, lora, pos, neg, latent


def runners(a, hostlib, mp, lora, pos, neg, latent):
    import comfy.sd
    import nodes

    W = hostlib.load_pack().nodes.w2sd
    with_lora = comfy.sd.load_lora_for_models(mp, None, lora, PAPER["main"], 0)[0]

    def ksampler():
        return nodes.common_ksampler(with_lora, 0, a.steps, 5.5, "ddim", "ddim_uniform", pos, neg, latent)[0]

    def w2sd():
        return W.WeakStrongReflectionLoRA.execute(
            mp, "bench_locon.safetensors", PAPER["strong"], PAPER["weak"], PAPER["main"], pos, neg, 5.5, 1.0, 0,
            a.steps, "ddim", "ddim_uniform", latent, 1.0, -1, "published").args[0]

    return {"KSampler + LoRA 0.8": ksampler, "WeakStrongReflectionLoRA": w2sd}


def memory_child(a):
    env, hostlib, mp, lora, pos, neg, latent = setup(a)
    import torch

    run = runners(a, hostlib, mp, lora, pos, neg, latent)[a.memory_child]
    with torch.inference_mode():
        run()  # load, patch
        with PeakRSS() as m:
            run()
    params = sum(p.numel() * p.element_size() for p in mp.model.diffusion_model.parameters())
    lora_bytes = sum(v.numel() * v.element_size() for v in lora.values())
    print(json.dumps({"before": m.before, "peak": m.peak, "model": params, "lora": lora_bytes}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--size", type=int, default=64, help="latent size")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes")
    ap.add_argument("--memory-only", action="store_true", help="only the peak-memory child processes")
    ap.add_argument("--memory-child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.memory_child:
        return memory_child(a)

    if a.memory_only:
        return memory(a)
    env, hostlib, mp, lora, pos, neg, latent = setup(a)
    import torch

    counter = Counter(mp.model.diffusion_model)
    runs = runners(a, hostlib, mp, lora, pos, neg, latent)
    res = time_runs(runs, counter, a.repeats, a.device)
    print(f"ComfyUI {env['version']} at {env['path']}; device {a.device}; torch {torch.__version__}; "
          f"threads {torch.get_num_threads()}; SD1.5-sized UNet, LoCon rank {a.rank} on every attention and conv "
          f"layer; latent {a.size}x{a.size}, {a.steps} steps, ddim; {a.repeats} alternating repeats (median)")
    print_table(res, "KSampler + LoRA 0.8", width=28)
    if not a.no_memory:
        memory(a)


def memory(a):
    peaks = {}
    for name in ("KSampler + LoRA 0.8", "WeakStrongReflectionLoRA"):
        cmd = [sys.executable, os.path.abspath(__file__), "--memory-child", name, "--steps", str(a.steps),
               "--rank", str(a.rank), "--size", str(a.size), "--device", a.device]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=os.environ)
        peaks[name] = json.loads(out.stdout.strip().splitlines()[-1])
    gib = 1024 ** 3
    k, w = peaks["KSampler + LoRA 0.8"], peaks["WeakStrongReflectionLoRA"]
    print(f"UNet weights {k['model'] / gib:.3f} GiB, LoRA weights {k['lora'] / gib:.3f} GiB (fresh process each)")
    for name, p in peaks.items():
        print(f"{name:28s} RSS before the run {p['before'] / gib:.3f} GiB, peak during it {p['peak'] / gib:.3f} GiB "
              f"(+{(p['peak'] - p['before']) / gib:.3f})")
    print(f"peak difference W2SD - KSampler: {(w['peak'] - k['peak']) / gib:+.3f} GiB")


if __name__ == "__main__":
    main()
