"""Parity of scoring/pickscore.py, scoring/hps.py and scoring/aesthetic.py with
their originals (transformers' CLIPModel + CLIPProcessor for PickScore and the
aesthetic predictor's CLIP, open_clip + hpsv2's scoring path for HPSv2.1).

The originals run in their own Python, named by ``ESTIMATORS_REFERENCE_PYTHON``
(a venv with transformers, open_clip_torch, pillow, safetensors; see
tests/estimators_reference.py). It builds each model with random weights of the
real architecture, saves it in the published format and scores PNG files;
here the same files are loaded by our ``build`` (weights only) and the same
images, as ComfyUI IMAGE tensors, are scored in one batch.
``ESTIMATORS_REFERENCE_SIZE``: ``small`` (default: the same architectures at
reduced width and depth, minutes on 2 cores) or ``full`` (ViT-H/14 and ViT-L/14
at their real sizes, ~4 GB per model file). Skipped, with the reason, without
that Python or without CLIP's vocabulary (ComfyUI's comfy/sd1_tokenizer, found
through ``COMFYUI_PATH`` or an importable ``comfy``).
"""

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from tools.reflect_pack import module

clip = module("scoring.clip")
pickscore = module("scoring.pickscore")
hps = module("scoring.hps")
aesthetic = module("scoring.aesthetic")

HERE = Path(__file__).resolve().parent
REF_ENV, SIZE_ENV = "ESTIMATORS_REFERENCE_PYTHON", "ESTIMATORS_REFERENCE_SIZE"
TOL = 1e-4  # relative to the scale of the reference scores

PROMPTS = [
    "a photo of a red fox sitting in the snow, highly detailed",
    "Café au lait on a wooden table, ÉTÉ! (morning light) #coffee &amp; cream",
    "",
    "a very long prompt " + " ".join(f"word{i}" for i in range(90)) + " that runs past seventy-seven tokens",
    "一只猫 and a dog, 3.5mm jack; naïve résumé, X² ½",
    "An astronaut riding a horse on Mars",
    "don't   STOP\tbelieving's e\u0301",
]
SIZES = [(64, 64), (96, 160), (300, 200), (224, 224), (512, 512), (333, 517), (257, 225)]


def make_images(seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for h, w in SIZES:
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([xx / w, yy / h, ((xx - w / 2) ** 2 + (yy - h / 2) ** 2 < (min(h, w) / 3) ** 2)], -1)
        img = np.clip(base * rng.uniform(80, 255, 3) + rng.normal(0, 25, (h, w, 3)), 0, 255)
        out.append(img.astype(np.uint8))
    return out


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    py = os.environ.get(REF_ENV)
    if not py:
        pytest.skip(f"{REF_ENV} not set: the parity test needs a Python with transformers and open_clip_torch, "
                    "kept apart from ComfyUI's (see tests/estimators_reference.py)")
    tdir = clip.comfy_tokenizer_dir()
    if tdir is None:
        pytest.skip("CLIP's vocab.json/merges.txt not found: set COMFYUI_PATH (comfy/sd1_tokenizer)")
    from PIL import Image
    size = os.environ.get(SIZE_ENV, "small")
    d = tmp_path_factory.mktemp("estimators")
    names = []
    for i, img in enumerate(make_images()):
        Image.fromarray(img).save(d / f"img{i}.png")
        names.append(f"img{i}.png")
    (d / "cases.json").write_text(json.dumps({"images": names, "prompts": PROMPTS, "tokenizer_dir": tdir}))
    r = subprocess.run([py, str(HERE / "estimators_reference.py"), str(d), size, "0"], capture_output=True,
                       text=True, timeout=3600)
    assert r.returncode == 0, f"reference run failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return d, json.loads((d / "reference.json").read_text())


def comfy_batch(d):
    """The PNGs as ComfyUI's LoadImage gives them: float (H, W, 3) in [0, 1], each a batch of one."""
    from PIL import Image
    return [torch.from_numpy(np.asarray(Image.open(d / f"img{i}.png").convert("RGB")).astype(np.float32) / 255.0)
            [None] for i in range(len(SIZES))]


def score_each(scorer, imgs, prompts):
    return torch.cat([scorer.score(x, [p]) for x, p in zip(imgs, prompts)])


def figures(ours, theirs):
    theirs = torch.tensor(theirs, dtype=torch.float64)
    diff = (ours.double() - theirs).abs()
    return float(diff.max()), float(diff.max() / theirs.abs().max())


def check(name, ours, theirs):
    abs_, rel = figures(ours, theirs)
    print(f"{name}: max abs {abs_:.3g}, rel {rel:.3g}")
    assert torch.tensor(theirs).std() > 1e-3 * torch.tensor(theirs).abs().max(), \
        f"{name}: reference scores do not vary: the test would be weak"
    assert rel <= TOL, (name, ours.tolist(), theirs)


def test_pickscore_matches_original(reference):
    d, ref = reference
    r = ref["pickscore"]
    s = pickscore.build({"checkpoint": str(d / "pickscore" / "model.safetensors")})
    enc = [s.tokenizer.encode(p) for p in PROMPTS]
    assert [row[:len(e)] for row, e in zip(r["token_ids"], enc)] == enc  # then its padding
    assert all(set(row[len(e):]) <= {clip.Tokenizer().eot} and len(row) == 77 for row, e in zip(r["token_ids"], enc))
    imgs = comfy_batch(d)
    check("pickscore", score_each(s, imgs, PROMPTS), r["scores"])
    check("pickscore rank", score_each(s, imgs, [PROMPTS[0]] * len(imgs)), r["rank_prompt_scores"])
    abs_, rel = figures(score_each(s, imgs, PROMPTS), r["scores_torchvision"])
    print(f"pickscore vs transformers 5's torchvision image processor: max abs {abs_:.3g}, rel {rel:.3g}")


def test_hps_matches_original(reference):
    d, ref = reference
    r = ref["hpsv2.1"]
    s = hps.build({"checkpoint": str(d / "hps" / "HPS_v2.1_compressed.pt")})
    assert s.tokenizer(PROMPTS).tolist() == r["token_ids"]
    imgs = comfy_batch(d)
    check("hpsv2.1", score_each(s, imgs, PROMPTS), r["scores"])
    check("hpsv2.1 rank", score_each(s, imgs, [PROMPTS[0]] * len(imgs)), r["rank_prompt_scores"])


def test_aesthetic_matches_original(reference):
    d, ref = reference
    r = ref["aesthetic"]
    s = aesthetic.build({"checkpoint": str(d / "aesthetic" / "sac+logos+ava1-l14-linearMSE.pth"),
                         "clip": str(d / "aesthetic" / "model.safetensors")})
    imgs = comfy_batch(d)
    check("aesthetic", torch.cat([s.score(x, []) for x in imgs]), r["scores"])
    abs_, rel = figures(torch.cat([s.score(x, []) for x in imgs]), r["scores_torchvision"])
    print(f"aesthetic vs transformers 5's torchvision image processor: max abs {abs_:.3g}, rel {rel:.3g}")


def test_same_size_batch(reference):
    """A ComfyUI IMAGE batch (B, H, W, 3) scores as its images one by one."""
    d, ref = reference
    imgs = comfy_batch(d)
    x = imgs[4][0]
    batch = torch.stack([x, x.flip(0), x.flip(1)])
    for s in (pickscore.build({"checkpoint": str(d / "pickscore" / "model.safetensors")}),
              hps.build({"checkpoint": str(d / "hps" / "HPS_v2.1_compressed.pt")})):
        together = s.score(batch, PROMPTS[:3])
        alone = torch.cat([s.score(batch[i:i + 1], [PROMPTS[i]]) for i in range(3)])
        assert (together - alone).abs().max() <= TOL * alone.abs().max()
