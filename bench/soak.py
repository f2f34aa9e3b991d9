"""Soak run: mixed jobs of the pack's shipped workflows (API format, loaders
swapped for tiny models as in the host tests, schedules cut to 6 steps) through a real ComfyUI server's
HTTP API, with the server's memory sampled. Prints jobs completed, failures,
and the growth of the server's resident memory after the first round of jobs
(the first job of each workflow fills ComfyUI's caches). Every --probe-every
jobs a probe job (the test pack's ReflectTestMemoryProbe) reports, after a
garbage collection, the server's live torch tensors and their bytes, the
objects the collector tracks, and the resident memory after malloc_trim:
a leak shows there without the allocator's noise.

    COMFYUI_PATH=/path/to/ComfyUI python bench/soak.py [--jobs 200] [--seed 0] [--clear-history]
"""

import argparse
import json
import os
import random
import sys
import threading
import time

import numpy as np

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(HERE, "tests"))
sys.path.insert(0, os.path.join(HERE, "tests", "host"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--jobs", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--probe-every", type=int, default=50,
                    help="every so many jobs, a probe job reports the server's live tensors, tracked objects and "
                         "trimmed resident memory")
    ap.add_argument("--clear-history", action="store_true",
                    help="clear ComfyUI's prompt history after each job (it keeps up to 10,000 finished prompts "
                         "with their graphs and outputs), to tell its growth from the nodes'")
    a = ap.parse_args()

    import psutil
    import hostlib
    from test_workflows_host import WF_DIR, fill_prompts, tiny_graph, write_server_files

    hostlib.bootstrap_comfy()
    srv = hostlib.ComfyServer()
    srv.start()
    try:
        write_server_files(srv.base_dir)
        graphs = {}
        for p in sorted((WF_DIR / "api").glob("*.json")):
            g = tiny_graph(fill_prompts(json.loads(p.read_text())))
            for n in g.values():  # short schedules: the soak is about the server's health, not the images
                inp = n["inputs"]
                if isinstance(inp.get("steps"), int):
                    inp["steps"] = min(inp["steps"], 6)
                    for k in ("zigzag_steps", "reflect_steps"):
                        if isinstance(inp.get(k), int) and inp[k] >= inp["steps"]:
                            inp[k] = inp["steps"] - 1
                if isinstance(inp.get("teacher_steps"), int):
                    inp["teacher_steps"] = min(inp["teacher_steps"], 4)
            graphs[p.stem] = g

        proc = psutil.Process(srv.proc.pid)
        samples, stop = [], threading.Event()

        def sample_memory():
            while not stop.is_set():
                samples.append((time.monotonic(), proc.memory_info().rss))
                time.sleep(0.5)

        threading.Thread(target=sample_memory, daemon=True).start()
        rng = random.Random(a.seed)
        names = sorted(graphs)
        order = names + [rng.choice(names) for _ in range(a.jobs - len(names))]  # every workflow first, then mixed
        done, failures, per_job, probes = 0, [], [], []

        def probe(after_jobs):
            entry = srv.run_prompt({"1": {"class_type": "ReflectTestMemoryProbe", "inputs": {"run": after_jobs}}},
                                   timeout=300)
            probes.append((after_jobs, entry["outputs"]["1"]["reflect_memory"][0]))

        probe(0)
        t0 = time.monotonic()
        for i, name in enumerate(order):
            g = json.loads(json.dumps(graphs[name]))
            for n in g.values():  # new seeds so that ComfyUI's cache does not skip the job
                for k in ("seed", "noise_seed"):
                    if k in n["inputs"] and n["class_type"] not in ("ReflectTestTinyModel", "ReflectTestTinyVAE",
                                                                   "ReflectTestConditioning", "ReflectTestTinyControlNet"):
                        n["inputs"][k] = 1000 + i
            entry = srv.run_prompt(g, timeout=900, check=False)
            err = hostlib.prompt_error(entry)
            if a.clear_history:
                srv.post_json("/history", {"clear": True})
            if err is None:
                done += 1
            else:
                failures.append((name, err.splitlines()[0]))
            per_job.append(proc.memory_info().rss)
            if i + 1 == len(names) or (i + 1) % a.probe_every == 0:
                probe(i + 1)
            if (i + 1) % 20 == 0:
                print(f"  {i + 1}/{len(order)} jobs, rss {proc.memory_info().rss / 2 ** 20:.0f} MiB", flush=True)
        stop.set()
        end, after_first_round = proc.memory_info().rss, per_job[len(names) - 1]
        peak = max(r for _, r in samples)
        print(f"jobs: {len(order)} ({len(names)} workflows), completed {done}, failures {len(failures)}, "
              f"{time.monotonic() - t0:.0f} s")
        for f in failures[:10]:
            print("  failed:", *f)
        print(f"server RSS after the first round ({len(names)} jobs): {after_first_round / 2 ** 20:.0f} MiB; "
              f"after all: {end / 2 ** 20:.0f} MiB; growth {(end - after_first_round) / 2 ** 20:+.0f} MiB; "
              f"peak {peak / 2 ** 20:.0f} MiB ({len(samples)} samples)")
        print("probes (garbage collected, malloc_trim): jobs, live tensors, their MiB, tracked objects, RSS MiB")
        for n_jobs, p in probes:
            print(f"  {n_jobs:5d} {p['tensors']:8d} {p['tensor_bytes'] / 2 ** 20:9.2f} {p['gc_objects']:9d} "
                  f"{p['rss'] / 2 ** 20:8.0f}")
        first = next(p for n_jobs, p in probes if n_jobs == len(names))
        last = probes[-1][1]
        print(f"after the first round -> end: live tensors {first['tensors']} -> {last['tensors']} "
              f"({(last['tensor_bytes'] - first['tensor_bytes']) / 2 ** 20:+.2f} MiB), tracked objects "
              f"{last['gc_objects'] - first['gc_objects']:+d}, trimmed RSS {(last['rss'] - first['rss']) / 2 ** 20:+.0f} MiB")
        settled = per_job[2 * len(names):]  # after every workflow has run twice
        if len(settled) >= 10:
            slope = np.polyfit(np.arange(len(settled)), np.array(settled) / 2 ** 20, 1)[0] * 100
            print(f"after job {2 * len(names)}: {settled[0] / 2 ** 20:.0f} MiB -> {settled[-1] / 2 ** 20:.0f} MiB, "
                  f"least-squares trend {slope:+.2f} MiB per 100 jobs over {len(settled)} jobs")
    finally:
        srv.cleanup()


if __name__ == "__main__":
    main()
