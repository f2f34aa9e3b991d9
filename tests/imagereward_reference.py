"""The original ImageReward (PyPI ``image-reward`` 1.5), run in an isolated
environment where it imports (transformers 4.x, timm 0.6.13, fairscale 0.4.13):
build it with random weights, save them, and score PNG images with its own
``score`` (file path, PIL preprocessing, one image at a time) and
``inference_rank`` (one prompt, several images).

Called by tests/test_imagereward_parity.py as
``$IMAGEREWARD_REFERENCE_PYTHON tests/imagereward_reference.py OUT_DIR`` with
``OUT_DIR`` holding ``cases.json`` ({"images": [png names], "prompts": [...]}),
the PNGs, ``med_config.json`` and ``bert-base-uncased/vocab.txt``; writes
``ImageReward.pt`` and ``reference.json`` there. Not collected by pytest.

Only the package's ``__init__`` files are bypassed (they import the CLIP,
Aesthetic and ReFL code, which need ``clip``, ``datasets`` and ``diffusers``);
the model, its BLIP modules, tokenizer and preprocessing are the package's own.
"""

import importlib.util
import json
import math
import os
import sys
import types


def import_original():
    spec = importlib.util.find_spec("ImageReward")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("the image-reward package is not installed in this Python")
    root = list(spec.submodule_search_locations)[0]
    for name, path in (("ImageReward", root), ("ImageReward.models", os.path.join(root, "models"))):
        mod = types.ModuleType(name)
        mod.__path__ = [path]
        sys.modules[name] = mod
    from ImageReward.ImageReward import ImageReward
    return ImageReward


def randomise(model, seed: int):
    """Every parameter random, at scales that keep activations O(1) and make
    the score depend on the image and the prompt (the release's own init
    leaves LayerNorms at 1/0 and the head near zero, which would test little)."""
    import torch
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=g)
            if "norm" in name.lower():
                p.copy_(1.0 + 0.2 * r if name.endswith("weight") else 0.2 * r)
            elif name.endswith("bias"):
                p.copy_(0.1 * r)
            elif p.ndim >= 2 and "embed" not in name and "token" not in name:
                p.copy_(r / math.sqrt(p[0].numel()))
            else:  # embeddings, class token, positions
                p.copy_(0.5 * r)


def main(out_dir: str, seed: int = 0):
    import torch
    os.chdir(out_dir)  # BertTokenizer.from_pretrained('bert-base-uncased') reads ./bert-base-uncased/
    os.environ["HF_HUB_OFFLINE"] = "1"
    torch.manual_seed(seed)
    ImageReward = import_original()
    cases = json.load(open("cases.json"))
    model = ImageReward(med_config="med_config.json", device="cpu").eval()
    randomise(model, seed)
    torch.save(model.state_dict(), "ImageReward.pt")
    with torch.no_grad():
        scores = [model.score(p, img) for p, img in zip(cases["prompts"], cases["images"])]
        _, ranked = model.inference_rank(cases["prompts"][0], cases["images"])
    tok = model.blip.tokenizer
    ids = [tok(p, padding="max_length", truncation=True, max_length=35)["input_ids"] for p in cases["prompts"]]
    json.dump({"scores": scores, "rank_prompt_scores": ranked, "token_ids": ids,
               "versions": {m: sys.modules[m].__version__ for m in ("torch", "transformers", "timm")}},
              open("reference.json", "w"))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 0)
