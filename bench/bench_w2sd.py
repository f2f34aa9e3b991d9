"""Seconds per model evaluation and peak memory: KSampler with a LoRA vs
WeakStrongReflectionLoRA (W2SD's LoRA path, strengths switched at forward time).

Both run side by side in one process, alternating, on the same SD1.5-sized UNet
(ComfyUI's own SD15 class with its real unet_config, seeded weights) with a
seeded LoCon of rank ``--rank`` on every attention and conv layer, saved as a
file and loaded by ComfyUI's LoRA loader. KSampler runs the model with the LoRA
at the main strength (0.8, what LoraLoaderModelOnly gives); W2SD runs the
paper's strengths (+1.5 strong, -1.5 weak, 0.8 main) and CFGs (5.5, 1.0, 5.5).
Seconds are per model call and per batch item through the UNet.

Peak memory (maximum resident set size) is measured in two fresh child
processes, one per sampler, each building the same model and LoRA and sampling
once, so that neither inherits the other's peak.

    COMFYUI_PATH=/path/to/ComfyUI python bench/bench_w2sd.py [--steps 6] [--repeats 2] [--rank 16] [--device cpu]
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAPER = {"strong": 1.5, "weak": -1.5, "main": 0.8}


def setup(a):
    sys.path.insert(0, os.path.join(HERE, "tests", "host"))
    import hostlib  # noqa: E402  (sets up ComfyUI from COMFYUI_PATH)

    env = hostlib.setup_comfy(cpu=a.device == "cpu")
    import torch
    import comfy.utils
    import folder_paths

    torch.manual_seed(0)
    tiny = hostlib._tiny()
    mp = hostlib.build_model("sd15", full_size=True, device=a.device)
    lora = tiny.make_lora(mp, rank=a.rank, seed=1)
    folder = folder_paths.get_folder_paths("loras")[0]
    os.makedirs(folder, exist_ok=True)
    comfy.utils.save_torch_file(lora, os.path.join(folder, "bench_locon.safetensors"))
    pos, neg = hostlib.conditioning(mp, batch=1, seed=1), hostlib.conditioning(mp, batch=1, seed=2)
    latent = {"samples": torch.zeros(1, 4, a.size, a.size)}
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
        run()
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    params = sum(p.numel() * p.element_size() for p in mp.model.diffusion_model.parameters())
    lora_bytes = sum(v.numel() * v.element_size() for v in lora.values())
    print(json.dumps({"peak": peak_kib * 1024, "model": params, "lora": lora_bytes}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--rank", type=int, default=16)
    ap.add_argument("--size", type=int, default=64, help="latent size")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes")
    ap.add_argument("--memory-child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.memory_child:
        return memory_child(a)

    env, hostlib, mp, lora, pos, neg, latent = setup(a)
    import torch

    unet = mp.model.diffusion_model
    counter = {"calls": 0, "items": 0}
    orig = unet.forward

    def counting(x, *args, **kw):
        counter["calls"] += 1
        counter["items"] += x.shape[0]
        return orig(x, *args, **kw)

    unet.forward = counting
    runs = runners(a, hostlib, mp, lora, pos, neg, latent)
    res = {k: {"per_call": [], "per_item": [], "calls": 0, "items": 0} for k in runs}
    with torch.inference_mode():
        for fn in runs.values():
            fn()  # warm-up (model load, LoRA patching, allocator)
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

    print(f"ComfyUI {env['version']} at {env['path']}; device {a.device}; torch {torch.__version__}; "
          f"threads {torch.get_num_threads()}; SD1.5-sized UNet, LoCon rank {a.rank} on every attention and conv "
          f"layer; latent {a.size}x{a.size}, {a.steps} steps, ddim; {a.repeats} alternating repeats (median)")
    base_call = statistics.median(res["KSampler + LoRA 0.8"]["per_call"])
    base_item = statistics.median(res["KSampler + LoRA 0.8"]["per_item"])
    print(f"{'run':28s} {'calls':>6s} {'items':>6s} {'s/call':>8s} {'ratio':>6s} {'s/item':>8s} {'ratio':>6s}")
    for name, r in res.items():
        pc, pi = statistics.median(r["per_call"]), statistics.median(r["per_item"])
        print(f"{name:28s} {r['calls']:6d} {r['items']:6d} {pc:8.4f} {pc / base_call:6.3f} {pi:8.4f} "
              f"{pi / base_item:6.3f}")
    if a.no_memory:
        return
    peaks = {}
    for name in runs:
        cmd = [sys.executable, os.path.abspath(__file__), "--memory-child", name, "--steps", str(a.steps),
               "--rank", str(a.rank), "--size", str(a.size), "--device", a.device]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=os.environ)
        peaks[name] = json.loads(out.stdout.strip().splitlines()[-1])
    gib = 1024 ** 3
    k, w = peaks["KSampler + LoRA 0.8"], peaks["WeakStrongReflectionLoRA"]
    print(f"peak RSS (fresh process each): KSampler + LoRA {k['peak'] / gib:.2f} GiB, WeakStrongReflectionLoRA "
          f"{w['peak'] / gib:.2f} GiB, difference {(w['peak'] - k['peak']) / gib:+.3f} GiB; UNet weights "
          f"{k['model'] / gib:.2f} GiB, LoRA weights {k['lora'] / gib:.3f} GiB")


if __name__ == "__main__":
    main()
