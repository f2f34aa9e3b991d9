"""Shared pieces of the benchmarks: ComfyUI set-up, a UNet call counter, and
the alternating timing loop (medians of seconds per call and per batch item)."""

import os
import statistics
import sys
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def setup(device: str):
    """(ComfyEnv, hostlib) with ComfyUI from COMFYUI_PATH set up in-process."""
    sys.path.insert(0, os.path.join(HERE, "tests", "host"))
    import hostlib  # noqa: E402

    return hostlib.setup_comfy(cpu=device == "cpu"), hostlib


def sd15_inputs(hostlib, device: str, size: int):
    """The benchmarks' model and inputs: an SD1.5-sized UNet (ComfyUI's SD15
    class, real unet_config, seeded weights) on ``device``, two seeded
    conditionings and an empty ``size`` x ``size`` latent."""
    import torch

    torch.manual_seed(0)
    mp = hostlib.build_model("sd15", full_size=True, device=device)
    pos, neg = hostlib.conditioning(mp, batch=1, seed=1), hostlib.conditioning(mp, batch=1, seed=2)
    return mp, pos, neg, {"samples": torch.zeros(1, 4, size, size)}


class Counter:
    """Counts calls and batch items through a diffusion model's forward."""

    def __init__(self, unet):
        self.calls = self.items = 0
        orig = unet.forward

        def counting(x, *args, **kw):
            self.calls += 1
            self.items += x.shape[0]
            return orig(x, *args, **kw)

        unet.forward = counting


def time_runs(runs: dict, counter: Counter, repeats: int, device: str, warmup: bool = True) -> dict:
    """Run every entry of ``runs`` (name -> callable) ``repeats`` times,
    alternating, and return per name the median seconds per call, per batch
    item and per run, with the call and item counts of one run."""
    import torch

    res = {k: {"per_call": [], "per_item": [], "per_run": [], "calls": 0, "items": 0} for k in runs}
    with torch.inference_mode():
        if warmup:
            for fn in runs.values():
                fn()  # model load, patching, allocator
        for _ in range(repeats):
            for name, fn in runs.items():
                counter.calls = counter.items = 0
                if device != "cpu":
                    torch.cuda.synchronize()
                t = time.perf_counter()
                fn()
                if device != "cpu":
                    torch.cuda.synchronize()
                dt = time.perf_counter() - t
                r = res[name]
                r["per_call"].append(dt / counter.calls)
                r["per_item"].append(dt / counter.items)
                r["per_run"].append(dt)
                r["calls"], r["items"] = counter.calls, counter.items
    return {k: {**r, **{m: statistics.median(r[m]) for m in ("per_call", "per_item", "per_run")}}
            for k, r in res.items()}


def print_table(res: dict, base: str, width: int = 34):
    print(f"{'run':{width}s} {'calls':>6s} {'items':>6s} {'s/call':>8s} {'ratio':>6s} {'s/item':>8s} {'ratio':>6s}")
    b = res[base]
    for name, r in res.items():
        print(f"{name:{width}s} {r['calls']:6d} {r['items']:6d} {r['per_call']:8.4f} {r['per_call'] / b['per_call']:6.3f} "
              f"{r['per_item']:8.4f} {r['per_item'] / b['per_item']:6.3f}")


class PeakRSS:
    """Peak resident set size while the block runs (polled from /proc every
    5 ms), and the size before it: ``with PeakRSS() as m: ...; m.before, m.peak``."""

    def __init__(self, interval: float = 0.005):
        self.interval, self.before, self.peak = interval, 0, 0

    @staticmethod
    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self):
        import gc
        import threading

        gc.collect()
        self.before = self.peak = self.rss()
        self._stop = threading.Event()

        def poll():
            while not self._stop.is_set():
                self.peak = max(self.peak, self.rss())
                self._stop.wait(self.interval)

        self._thread = threading.Thread(target=poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self.rss())
