"""QualityGate under ComfyUI's model management: seconds per image of the first and the tenth consecutive
QualityGate call, side by side in one run, with the model loads ComfyUI made for each, and a call after
ComfyUI evicted the scorer (what every call cost when the model was unloaded after each score).

A full-size ImageReward (ViT-L/16 + BERT-base, the release architecture, seeded random weights) is saved as
a .safetensors file into the models/image_reward folder of a temporary ComfyUI base directory, loaded by the
ImageRewardLoader node and run by the QualityGate node, in-process, as ComfyUI executes them. Loads are
counted from ComfyUI's own log line ("Requested to load ImageReward": a model not among its loaded models).

    COMFYUI_PATH=/path/to/ComfyUI python bench/bench_gate_loads.py [--calls 10] [--size 1024] [--device cpu]
"""

import argparse
import json
import logging
import os
import shutil
import sys
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, HERE)
from bench.common import setup  # noqa: E402


class Loads(logging.Handler):
    def __init__(self):
        super().__init__(logging.INFO)
        self.count = 0

    def emit(self, record):
        self.count += "Requested to load ImageReward" in record.getMessage()


def write_model(folder: str) -> str:
    """The release layout: ImageReward.safetensors (bench_quality_gate.py's seeded full-size model),
    med_config.json (the release's, datasets/) and its bert-base-uncased-sized vocab.txt."""
    import torch
    from safetensors.torch import save_file
    from bench.bench_quality_gate import _Tok, build
    os.makedirs(folder, exist_ok=True)
    sd = build("cpu", torch.float32).state_dict()
    save_file({k: v.contiguous() for k, v in sd.items()}, os.path.join(folder, "ImageReward.safetensors"))
    shutil.copy(os.path.join(HERE, "datasets", "imagereward_med_config.json"), os.path.join(folder, "med_config.json"))
    _Tok.vocab_file(os.path.join(folder, "vocab.txt"))
    return "ImageReward.safetensors"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=10)
    ap.add_argument("--size", type=int, default=1024, help="image side in pixels (SDXL: 1024)")
    ap.add_argument("--device", default="cpu", help="cpu, or cuda (ComfyUI's model management on the GPU)")
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    env, hostlib = setup(a.device)
    import torch
    if a.threads:
        torch.set_num_threads(a.threads)
    import comfy.model_management as mm
    import folder_paths
    pack = hostlib.load_pack()
    nodes = hostlib.pack_nodes()
    qmod = sys.modules[f"{pack.__name__}.nodes.quality_gate"]
    name = write_model(folder_paths.get_folder_paths(qmod.FOLDER)[0])
    scorer = hostlib.run_node(nodes["ImageRewardLoader"], checkpoint=name, download="never", precision="fp32")[0]

    loads = Loads()
    root = logging.getLogger()
    root.addHandler(loads)
    root.setLevel(logging.INFO)
    images = torch.rand((1, a.size, a.size, 3), generator=torch.Generator().manual_seed(0))
    sync = torch.cuda.synchronize if str(mm.get_torch_device()).startswith("cuda") else (lambda: None)

    def gate():
        before = loads.count
        sync()
        t = time.perf_counter()
        hostlib.run_node(nodes["QualityGate"], image_reward=scorer, images=images, prompt="an astronaut on a horse",
                         prompt_per_line=False, threshold=0.0, k=50)
        sync()
        return time.perf_counter() - t, loads.count - before

    mm.unload_all_models()
    rows = [("1st call (model not loaded)",) + gate()]
    for k in range(2, a.calls + 1):
        dt, n = gate()
        if k == a.calls:
            suffix = "th" if 10 <= k % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(k % 10, "th")
            rows.append((f"{k}{suffix} consecutive call",) + (dt, n))
    mm.unload_all_models()  # ComfyUI's own eviction: the next call loads again
    rows.append(("call after ComfyUI evicted it",) + gate())
    params = sum(p.numel() for p in scorer.patcher.model.parameters()) / 1e6
    print(f"ImageReward ({params:.0f}M parameters, random weights, fp32), ComfyUI {env.version}, device "
          f"{mm.get_torch_device()}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{a.size}x{a.size} image, batch 1")
    print("| QualityGate call | s/image | loads | ratio to the 1st |")
    print("|---|---|---|---|")
    for label, dt, n in rows:
        print(f"| {label} | {dt:.3f} | {n} | {dt / rows[0][1]:.2f} |")
    print(json.dumps({"rows": [{"call": r[0], "s_per_image": r[1], "loads": r[2]} for r in rows]}))


if __name__ == "__main__":
    main()
