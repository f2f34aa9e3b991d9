"""Seconds per step: plain CFG vs CFG + SWG (SlidingWindowGuidance), side by side.

Same SD1.5-sized UNet for both (ComfyUI's SD15 class, real unet_config, seeded
weights), KSampler with euler, cfg 5.5, alternating runs (median). The
expected ratio is the work alone: CFG evaluates 2 full latents per step, SWG
adds its crops, ``n_y * n_x * k_h * k_w / (H * W)`` full latents' worth, all
in one batched call: expected = (2 + crop area / latent area) / 2.

``--controlnet`` adds an SD1.5-sized ControlNet (ComfyUI's cldm.ControlNet, seeded weights) on both
conditionings, with and without SWG: with the windows' hints cropped and batched, SWG + ControlNet
should cost over ControlNet alone what SWG costs over CFG (seconds per batch item of the UNet).

    COMFYUI_PATH=/path/to/ComfyUI python bench/bench_swg.py [--size 64] [--crop 40] [--crops 2] [--steps 2]
        [--controlnet]
"""

import argparse

from common import Counter, print_table, sd15_inputs, setup, time_runs


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--size", type=int, default=64, help="latent size")
    ap.add_argument("--crop", type=int, default=40, help="crop size (latent pixels; the paper: 40 of 64)")
    ap.add_argument("--crops", type=int, default=2, help="crops per dimension (the paper: 2)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--controlnet", action="store_true", help="also with a ControlNet on the conditioning")
    a = ap.parse_args()

    env, hostlib = setup(a.device)
    import torch
    import nodes

    mp, pos, neg, latent = sd15_inputs(hostlib, a.device, a.size)
    counter = Counter(mp.model.diffusion_model)
    S = hostlib.load_pack().nodes.swg
    patched = S.SlidingWindowGuidance.execute(mp, 1.0, a.crop, a.crop, "latent", a.crops, a.crops, False, False,
                                              "auto", 0.0, 1.0).args[0]

    def run(model, p=pos, n=neg):
        return lambda: nodes.common_ksampler(model, 0, a.steps, 5.5, "euler", "normal", p, n, latent)[0]

    runs = {"CFG": run(mp), "CFG + SWG": run(patched)}
    if a.controlnet:
        torch.manual_seed(0)
        cn = hostlib.build_controlnet(mp, seed=5)
        hint = torch.rand(1, a.size * 8, a.size * 8, 3)
        cpos, cneg = nodes.ControlNetApplyAdvanced().apply_controlnet(pos, neg, cn, hint, 1.0, 0.0, 1.0)[:2]
        runs.update({"CFG + ControlNet": run(mp, cpos, cneg), "CFG + SWG + ControlNet": run(patched, cpos, cneg)})
    res = time_runs(runs, counter, a.repeats, a.device)
    area = a.crops * a.crops * a.crop * a.crop / (a.size * a.size)
    expected = (2 + area) / 2
    print(f"ComfyUI {env['version']} at {env['path']}; device {a.device}; torch {torch.__version__}; threads "
          f"{torch.get_num_threads()}; SD1.5-sized UNet, latent {a.size}x{a.size}, {a.crops}x{a.crops} crops of "
          f"{a.crop}, {a.steps} steps, {a.repeats} alternating repeats (median)")
    print_table(res, "CFG", width=24)
    measured = res["CFG + SWG"]["per_run"] / res["CFG"]["per_run"]
    print(f"seconds per step: CFG {res['CFG']['per_run'] / a.steps:.3f}, CFG + SWG "
          f"{res['CFG + SWG']['per_run'] / a.steps:.3f}; measured ratio {measured:.3f}, expected from the work "
          f"{expected:.3f} (crop area {area:.3f} latents), measured / expected {measured / expected:.3f}")
    if a.controlnet:
        item = {k: r["per_item"] for k, r in res.items()}
        print(f"seconds per batch item: CFG {item['CFG']:.4f}, CFG + SWG {item['CFG + SWG']:.4f}, CFG + ControlNet "
              f"{item['CFG + ControlNet']:.4f}, CFG + SWG + ControlNet {item['CFG + SWG + ControlNet']:.4f}; "
              f"SWG + ControlNet / ControlNet {item['CFG + SWG + ControlNet'] / item['CFG + ControlNet']:.3f} per item "
              f"(SWG / CFG {item['CFG + SWG'] / item['CFG']:.3f}); per run "
              f"{res['CFG + SWG + ControlNet']['per_run'] / res['CFG + ControlNet']['per_run']:.3f} "
              f"(SWG / CFG {measured:.3f})")


if __name__ == "__main__":
    main()
