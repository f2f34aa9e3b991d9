"""A small ImageReward with the release's architecture at reduced size, and
its files (checkpoint, med_config.json, vocab.txt) as ComfyUI's models folder
holds them. Used by the core tests and the host tests; the weights are random
(seeded) at the scales of tests/imagereward_reference.py's ``randomise``."""

import json
import string
from pathlib import Path

import torch

from imagereward_reference import randomise
from tools.reflect_pack import module


qg = module("scoring.imagereward")  # the ImageReward network (name kept for the tests using it)

# a WordPiece vocabulary: BERT's specials, letters, digits, punctuation, a few words and suffixes
VOCAB = (["[PAD]"] + [f"[unused{i}]" for i in range(3)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]
         + list(string.ascii_lowercase) + list(string.digits) + list("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
         + ["a", "photo", "of", "cat", "dog", "red", "fox", "in", "the", "snow", "cafe", "astronaut", "horse"]
         + [f"##{c}" for c in string.ascii_lowercase] + ["##s", "##ing"])
VOCAB = list(dict.fromkeys(VOCAB))
VIT = {"width": 128, "depth": 2, "heads": 2, "patch": 8, "image_size": 32}


def med_config():
    return {**qg.MED_CONFIG, "hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
            "intermediate_size": 64, "max_position_embeddings": 40, "vocab_size": len(VOCAB) + 2}


def build(seed: int = 0) -> qg.ImageReward:
    torch.manual_seed(seed)
    model = qg.ImageReward(med_config(), VIT).eval()
    randomise(model, seed)
    return model


def write_files(folder, seed: int = 0, name: str = "ImageReward.pt") -> dict:
    """Checkpoint (``.pt`` via torch.save, or ``.safetensors`` by the name), med_config.json and vocab.txt."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    sd = build(seed).state_dict()
    sd["blip.vision_proj.weight"] = torch.randn(4, VIT["width"])  # present in the release, unused for scoring
    ckpt = folder / name
    if name.endswith(".safetensors"):
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in sd.items()}, str(ckpt))
    else:
        torch.save(sd, ckpt)
    (folder / "med_config.json").write_text(json.dumps(med_config()))
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n")
    return {"checkpoint": ckpt, "med_config": folder / "med_config.json", "vocab": folder / "vocab.txt"}
