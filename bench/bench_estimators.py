"""Scoring speed of the CLIP-based estimators side by side: images per second
at batch 1 and batch 8, and the share of the time spent in preprocessing
(uint8 conversion, PIL resize and crop, normalisation, tokenisation) against
the model. ImageReward's own figures: bench/bench_quality_gate.py.

Models: the real architectures (PickScore and HPSv2.1: ViT-H/14 image tower +
24-layer text transformer; aesthetic: ViT-L/14 image tower + the MLP) with
seeded random weights, built by scoring/ (no download, no ComfyUI needed;
``--arch small`` for reduced widths), fed ``--size`` x ``--size`` images as SDXL
makes them. Each batch size is timed ``--repeats`` times after a warm-up; medians.
CLIP's vocabulary is read from ComfyUI's comfy/sd1_tokenizer (``COMFYUI_PATH``).

    COMFYUI_PATH=... python bench/bench_estimators.py [--repeats 2] [--size 1024] [--threads 2] [--arch full]

``--precision``: instead of speed, the score error of bf16 and fp16 against fp32 per estimator (ImageReward
included: the full-size release architecture), on ``--images`` random images with their prompts: the largest
absolute error and that error relative to the spread (standard deviation) of the fp32 scores, which is what
decides a threshold. ``--device`` where to run it (fp16 on a CPU is slow but exact to the GPU's arithmetic
only roughly; a GPU run is the figure that matters).
"""

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from tools.reflect_pack import module  # noqa: E402

clip = module("scoring.clip")
pickscore = module("scoring.pickscore")
aesthetic = module("scoring.aesthetic")
imagereward = module("scoring.imagereward")

ARCH = {
    "full": {"h": ({"width": 1280, "layers": 32, "heads": 16, "mlp": 5120},
                   {"width": 1024, "layers": 24, "heads": 16, "mlp": 4096}, 1024),
             "l": ({"width": 1024, "layers": 24, "heads": 16, "mlp": 4096}, None, 768)},
    "small": {"h": ({"width": 320, "layers": 3, "heads": 16, "mlp": 1280},
                    {"width": 256, "layers": 2, "heads": 16, "mlp": 1024}, 192),
              "l": ({"width": 256, "layers": 3, "heads": 16, "mlp": 1024}, None, 768)},
}


def make_clip(vision, text, embed, act, seed):
    cfg = {"embed_dim": embed, "vision": dict(vision, patch=14, image_size=224, act=act, eps=1e-5)}
    if text:
        cfg["text"] = dict(text, vocab=49408, context=77, act=act, eps=1e-5)
    torch.manual_seed(seed)
    m = clip.CLIP(cfg, text=bool(text))
    with torch.no_grad():
        for p in m.parameters():
            p.normal_(0, 0.02)
        if text:
            m.logit_scale.fill_(4.6)
    return m.eval().requires_grad_(False)


def scorers(arch):
    h_v, h_t, h_e = ARCH[arch]["h"]
    l_v, _, l_e = ARCH[arch]["l"]
    tok = clip.Tokenizer()
    ps = pickscore.ClipScorer("pickscore", make_clip(h_v, h_t, h_e, "gelu", 0), tok, "model.safetensors",
                              "floor", True)
    hp = pickscore.ClipScorer("hpsv2.1", make_clip(h_v, h_t, h_e, "gelu", 1), clip.Tokenizer(flavour="open_clip"),
                              "HPS_v2.1_compressed.pt", "round", False)
    ae = aesthetic.AestheticScorer(aesthetic.Aesthetic(make_clip(l_v, None, l_e, "quick_gelu", 2),
                                                       aesthetic.AestheticHead().eval()), aesthetic.HEAD)
    return [ps, hp, ae]


def imagereward_scorer():
    """The full-size ImageReward (bench_quality_gate.py's build) with a bert-base-uncased-sized vocabulary."""
    import tempfile
    from bench_quality_gate import _Tok, build
    vocab = _Tok.vocab_file(os.path.join(tempfile.mkdtemp(), "vocab.txt"))
    return imagereward.ImageRewardScorer(build("cpu", torch.float32), imagereward.Tokenizer(vocab), "ImageReward.pt")


def fan_in_init(module, seed):
    """Weights of trained-network scale (so activations and scores spread as in a released model, unlike the
    speed benchmark's N(0, 0.02)): matrices N(0, 1/fan_in), norms 1 + N(0, 0.2^2), biases N(0, 0.2^2)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            r = torch.randn(p.shape, generator=g)
            if "norm" in name or name.endswith(("ln.weight", "LayerNorm.weight")):
                r = 1 + 0.2 * r if name.endswith("weight") else 0.2 * r
            elif p.ndim >= 2:
                r = r / (p[0].numel() ** 0.5)
            else:
                r = 0.2 * r if name.endswith("bias") else r
            if name.endswith("logit_scale"):
                r = torch.tensor(4.6)
            p.copy_(r.reshape(p.shape))


def precision(a, imgs, prompts):
    """Largest |score - fp32 score| of bf16 and fp16 trunks (heads stay fp32, as the loaders build them)."""
    import copy
    print(f"{'estimator':<12} {'dtype':>9} {'max |err|':>10} {'err / std(fp32)':>16} {'fp32 std':>9}")
    for k, s in enumerate([imagereward_scorer()] + scorers(a.arch)):
        fan_in_init(s.module, k)
        s.module.to(a.device)
        ref = s.score(imgs, prompts)
        std = float(ref.std())
        for dt in (torch.bfloat16, torch.float16):
            low = copy.copy(s)
            low.module = copy.deepcopy(s.module)
            trunk = low.module.clip if hasattr(low.module, "head") else low.module
            trunk.to(dt)
            if hasattr(low.module, "mlp"):
                low.module.mlp.float()
            if hasattr(trunk, "logit_scale"):
                trunk.logit_scale.data = trunk.logit_scale.data.float()
            err = float((low.score(imgs, prompts) - ref).abs().max())
            print(f"{s.name:<12} {str(dt)[6:]:>9} {err:>10.2e} {err / std:>16.2e} {std:>9.3f}", flush=True)
            del low
        del s


def prep(s, images, prompts):
    x = s.pixels(images)
    if s.needs_prompt:
        s.tokenizer(prompts)
    return x


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--arch", choices=sorted(ARCH), default="full")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--precision", action="store_true", help="score error of bf16 / fp16 instead of speed")
    ap.add_argument("--images", type=int, default=8, help="images for --precision")
    ap.add_argument("--device", default="cpu", help="device for --precision")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    g = torch.Generator().manual_seed(0)
    if a.precision:
        imgs = torch.rand(a.images, a.size, a.size, 3, generator=g)
        prompts = [f"a photo of a red fox in the snow, detailed, number {i}" for i in range(a.images)]
        print(f"arch {a.arch}, {a.size}x{a.size} images x {a.images}, {a.device}, torch {torch.__version__}")
        return precision(a, imgs, prompts)
    batches = [int(b) for b in a.batches.split(",")]
    imgs = torch.rand(max(batches), a.size, a.size, 3, generator=g)
    prompts = [f"a photo of a red fox in the snow, detailed, number {i}" for i in range(max(batches))]
    print(f"arch {a.arch}, {a.size}x{a.size} images, {a.threads} threads, torch {torch.__version__}, "
          f"{a.repeats} repeats (medians)")
    print(f"{'estimator':<10} {'batch':>5} {'img/s':>8} {'s/img':>8} {'preprocess':>10}")
    for s in scorers(a.arch):
        for b in batches:
            x, p = imgs[:b], prompts[:b]
            s.score(x, p)  # warm-up
            tot, pre = [], []
            for _ in range(a.repeats):
                t0 = time.perf_counter()
                prep(s, x, p)
                t1 = time.perf_counter()
                s.score(x, p)
                t2 = time.perf_counter()
                pre.append(t1 - t0)
                tot.append(t2 - t1)
            t, q = statistics.median(tot), statistics.median(pre)
            print(f"{s.name:<10} {b:>5} {b / t:>8.2f} {t / b:>8.3f} {100 * q / t:>9.1f}%", flush=True)
        del s


if __name__ == "__main__":
    main()
