"""ImageReward scoring speed: images per second at batch 1 and batch 8, and the
share of the time spent in preprocessing (uint8 conversion, PIL resize and crop,
normalisation, tokenisation) against the model (ViT-L/16 + BERT + head).

The model is the full-size release architecture with random weights (seeded,
built by samplers/quality_gate.py; no download, no ComfyUI needed), fed 1024x1024
images as SDXL makes them. Each batch size is timed ``--repeats`` times after a
warm-up; medians are printed.

    python bench/bench_quality_gate.py [--repeats 3] [--size 1024] [--threads 2] [--device cpu]
"""

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tools.reflect_pack import module
ir = module("scoring.imagereward")  # noqa: E402


class _Tok:
    """bert-base-uncased-sized stand-in vocabulary for timing the tokenizer (30,522 WordPiece entries)."""

    @staticmethod
    def vocab_file(path):
        specials = ["[PAD]"] + [f"[unused{i}]" for i in range(99)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        words = [f"w{i}" for i in range(30522 - len(specials) - 26)] + [chr(97 + i) for i in range(26)]
        with open(path, "w") as f:
            f.write("\n".join(specials + words) + "\n")
        return path


def build(device, dtype):
    torch.manual_seed(0)
    with torch.device(device):
        model = ir.ImageReward()
    for p in model.parameters():  # explicitly random (seeded), finite activations
        torch.nn.init.normal_(p, std=0.02)
    model.to(dtype)
    model.mlp.float()
    return model.eval().requires_grad_(False)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--size", type=int, default=1024, help="image side in pixels")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"])
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    dtype = getattr(torch, a.dtype)
    model = build(a.device, dtype)
    import tempfile
    tok = ir.Tokenizer(_Tok.vocab_file(os.path.join(tempfile.mkdtemp(), "vocab.txt")))
    sync = torch.cuda.synchronize if a.device.startswith("cuda") else (lambda: None)
    print(f"ImageReward (ViT-L/16 + BERT-base, {sum(p.numel() for p in model.parameters()) / 1e6:.0f}M parameters, "
          f"random weights), {a.device} {a.dtype}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{a.size}x{a.size} images")
    print(f"| batch | images/s | s/batch | preprocessing share | model share |")
    print(f"|---|---|---|---|---|")
    g = torch.Generator().manual_seed(0)
    for b in [int(x) for x in a.batches.split(",")]:
        images = torch.rand((b, a.size, a.size, 3), generator=g)  # a ComfyUI IMAGE
        prompts = ["a photo of an astronaut riding a horse on the moon, highly detailed"] * b
        pre, run = [], []
        for r in range(a.repeats + 1):
            t0 = time.perf_counter()
            pixels = ir.preprocess(ir.to_uint8(images)).to(a.device, dtype)
            ids, mask = tok(prompts)
            ids, mask = ids.to(a.device), mask.to(a.device)
            sync()
            t1 = time.perf_counter()
            with torch.no_grad():
                s = model(pixels, ids, mask)
            sync()
            t2 = time.perf_counter()
            assert s.shape == (b,) and torch.isfinite(s).all()
            if r:  # the first round warms up
                pre.append(t1 - t0)
                run.append(t2 - t1)
        p, m = statistics.median(pre), statistics.median(run)
        print(f"| {b} | {b / (p + m):.2f} | {p + m:.3f} | {100 * p / (p + m):.1f}% | {100 * m / (p + m):.1f}% |")


if __name__ == "__main__":
    main()
