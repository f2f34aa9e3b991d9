"""Core behaviour of the CLIP-based estimators (scoring/clip.py, pickscore.py,
hps.py, aesthetic.py) without the reference Python: CLIP's tokenizer on known
ids, preprocessing, weights-only loading, both checkpoint layouts, shapes and
the Scorer contract. Parity with the originals: tests/test_estimators_parity.py."""

import os

import numpy as np
import pytest
import torch

from estimators_tiny import CFG, tiny_state_dict, to_open_clip
from tools.reflect_pack import module

clip = module("scoring.clip")
base = module("scoring.base")
pickscore = module("scoring.pickscore")
hps = module("scoring.hps")
aesthetic = module("scoring.aesthetic")


@pytest.fixture(scope="module")
def tok_dir():
    d = clip.comfy_tokenizer_dir()
    if d is None:
        pytest.skip("ComfyUI's comfy/sd1_tokenizer not found: set COMFYUI_PATH")
    return d


# ids as transformers' CLIPTokenizerFast (openai/clip-vit-large-patch14) gives them
KNOWN = {
    "a photo of a cat": [49406, 320, 1125, 539, 320, 2368, 49407],
    "": [49406, 49407],
}


def test_tokenizer_known_ids(tok_dir):
    for flavour in ("hf", "open_clip"):
        t = clip.Tokenizer(flavour=flavour)
        for text, ids in KNOWN.items():
            assert t.encode(text) == ids
        assert t.encode("A  PHOTO\tof a Cat ") == KNOWN["a photo of a cat"]  # lower case, whitespace folded
        row = t(["a photo of a cat"])[0].tolist()
        assert len(row) == 77 and row[:7] == KNOWN["a photo of a cat"] and set(row[7:]) == {t.pad_id}
    assert clip.Tokenizer(flavour="hf").pad_id == 49407 and clip.Tokenizer(flavour="open_clip").pad_id == 0


def test_tokenizer_truncates_and_flavours(tok_dir):
    t = clip.Tokenizer()
    long = " ".join(["cat"] * 200)
    ids = t.encode(long)
    assert len(ids) == 77 and ids[0] == t.sot and ids[-1] == t.eot and ids[1:-1] == [2368] * 75
    # pooling takes the first end-of-text: the padded batch pools where the prompt ends
    batch = t(["a photo of a cat", long])
    assert batch.argmax(-1).tolist() == [6, 76]
    oc = clip.Tokenizer(flavour="open_clip")
    assert oc.encode("fish &amp; chips") == oc.encode("fish & chips") != t.encode("fish &amp; chips")
    assert oc.encode("cafe\u0301") == t.encode("café") == oc.encode("café")  # NFC
    assert t.encode("一只猫") == oc.encode("一只猫") and len(t.encode("一只猫")) > 3  # byte-level, no unknowns


def test_tokenizer_from_explicit_files(tok_dir, tmp_path):
    t = pickscore.tokenizer({"tokenizer_dir": tok_dir})
    assert t.encode("a photo of a cat") == KNOWN["a photo of a cat"]
    (tmp_path / "vocab.json").write_text('{"a": 0}')
    with pytest.raises(ValueError, match="not CLIP's vocabulary"):
        clip.Tokenizer(str(tmp_path / "vocab.json"), os.path.join(tok_dir, "merges.txt"))


def test_preprocess_properties():
    assert all(np.clip(255.0 * (np.arange(256, dtype=np.float32) / 255.0), 0, 255).astype(np.uint8)
               == np.arange(256))  # ComfyUI's float image quantises back to the PNG's bytes
    flat = torch.full((2, 100, 300, 3), 128 / 255.0)
    x = clip.preprocess(flat)
    assert x.shape == (2, 3, 224, 224) and x.dtype == torch.float32
    want = (128 / 255.0 - torch.tensor(clip.PIXEL_MEAN)) / torch.tensor(clip.PIXEL_STD)
    assert torch.allclose(x, want.view(1, 3, 1, 1).expand_as(x), atol=1e-6)
    assert clip.resized_size(100, 300, 224) == (224, 672) and clip.resized_size(333, 517, 224) == (224, 347)
    # centre crop: transformers floors the offset, torchvision rounds it (347 - 224 = 123: 61 vs 62)
    ramp = torch.linspace(0, 1, 517).view(1, 1, 517, 1).expand(1, 333, 517, 3).contiguous()
    f, r = clip.preprocess(ramp, crop="floor"), clip.preprocess(ramp, crop="round")
    assert (r[0, 0, 112, :-1] - f[0, 0, 112, 1:]).abs().max() < 1e-6 and (f - r).abs().max() > 1e-3
    # a list of differently sized images, grey and RGBA inputs
    imgs = [np.zeros((50, 80, 3), np.uint8), np.zeros((300, 20, 1), np.uint8), np.zeros((64, 64, 4), np.uint8)]
    assert clip.preprocess(imgs).shape == (3, 3, 224, 224)
    with pytest.raises(ValueError, match="empty"):
        clip.preprocess(torch.zeros(0, 8, 8, 3))


class _Code:
    def __reduce__(self):
        return (print, ("this pickle runs code",))


def test_loading_refuses_pickled_code(tmp_path):
    p = tmp_path / "HPS_v2.1_compressed.pt"
    torch.save({"state_dict": {"visual.conv1.weight": torch.zeros(1)}, "extra": _Code()}, p)
    with pytest.raises(ValueError, match="cannot be read as weights"):
        clip.load_weights(str(p))
    with pytest.raises(ValueError, match="HPS_v2.1_compressed.pt"):
        hps.build({"checkpoint": str(p)})
    q = tmp_path / aesthetic.HEAD
    torch.save(_Code(), q)
    with pytest.raises(ValueError, match="cannot be read as weights"):
        aesthetic.load_head(str(q))


# --------------------------------------------------------------------------- tiny models, both layouts

def images(n=3, h=90, w=130, seed=1):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, h, w, 3, generator=g)


def test_pickscore_and_hps_layouts(tok_dir, tmp_path):
    from safetensors.torch import save_file
    sd = tiny_state_dict()
    save_file(sd, str(tmp_path / "model.safetensors"))
    ps = pickscore.build({"checkpoint": str(tmp_path / "model.safetensors")})
    assert (ps.name, ps.weights, ps.needs_prompt) == ("pickscore", "model.safetensors", True)
    assert isinstance(ps.module, torch.nn.Module)
    x, prompts = images(), ["a red fox", "Café ÉTÉ", ""]
    s = ps.score(x, prompts)
    assert s.shape == (3,) and s.dtype == torch.float32 and s.device.type == "cpu"
    assert s.abs().max() <= 100.5  # logit_scale.exp() * cos, exp(4.6) ~ 99.5
    assert (s - ps.score(x[1:2], prompts[1:2])[0]).abs()[1] < 1e-4  # batch = one by one
    assert (ps.score(x, ["a red fox"] * 3) - s).abs().max() > 1e-4  # the prompt matters

    torch.save({"state_dict": {"module." + k: v for k, v in to_open_clip(sd).items()}},
               tmp_path / "HPS_v2.1_compressed.pt")
    h = hps.build({"checkpoint": str(tmp_path / "HPS_v2.1_compressed.pt")})
    assert (h.name, h.weights, h.needs_prompt) == ("hpsv2.1", "HPS_v2.1_compressed.pt", True)
    hs = h.score(x, prompts)
    assert hs.shape == (3,) and hs.abs().max() <= 1.0 + 1e-6
    # the same weights in both layouts: the same cosine where both crops agree (100 x 128 -> 224 x 286, offset 31)
    y = images(3, 100, 128)
    assert (h.score(y, prompts) * ps.module.logit_scale.exp() - ps.score(y, prompts)).abs().max() < 1e-3
    with pytest.raises(ValueError, match="prompt"):
        ps.score(x, prompts[:2])
    with pytest.raises(ValueError, match="images"):
        h.score(torch.zeros(0, 8, 8, 3), [])


def test_loading_names_file_and_problem(tok_dir, tmp_path):
    from safetensors.torch import save_file
    sd = tiny_state_dict()
    del sd["text_model.final_layer_norm.bias"]
    save_file(sd, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match=r"model\.safetensors.*missing.*final_layer_norm"):
        pickscore.build({"checkpoint": str(tmp_path / "model.safetensors")})
    save_file({"foo": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ValueError, match="not a CLIP checkpoint"):
        pickscore.build({"checkpoint": str(tmp_path / "other.safetensors")})
    save_file({"visual.conv1.weight": torch.zeros(2)}, str(tmp_path / "hps.safetensors"))
    with pytest.raises(ValueError, match="incomplete open_clip"):
        hps.build({"checkpoint": str(tmp_path / "hps.safetensors")})


def test_aesthetic_image_only_and_vision_half(tmp_path):
    from safetensors.torch import save_file
    cfg = {"embed_dim": 768, "vision": dict(CFG["vision"], act="quick_gelu")}
    full = tiny_state_dict(2, dict(cfg, text=CFG["text"]))
    save_file(full, str(tmp_path / "model.safetensors"))
    vision = {k: v for k, v in full.items() if k.startswith(("vision_model.", "visual_projection."))}
    save_file(vision, str(tmp_path / aesthetic.CLIP_WEIGHTS))  # a ComfyUI clip_vision file: the vision half
    head = aesthetic.AestheticHead()
    g = torch.Generator().manual_seed(3)
    torch.save({k: torch.randn(v.shape, generator=g) / 8 for k, v in head.state_dict().items()},
               tmp_path / aesthetic.HEAD)
    a = aesthetic.build({"checkpoint": str(tmp_path / aesthetic.HEAD), "clip": str(tmp_path / "model.safetensors")})
    b = aesthetic.build({"checkpoint": str(tmp_path / aesthetic.HEAD),
                         "clip": str(tmp_path / aesthetic.CLIP_WEIGHTS)})
    assert (a.name, a.weights, a.needs_prompt) == ("aesthetic", aesthetic.HEAD, False)
    assert not hasattr(a.module.clip, "text_model")
    x = images(2)
    sa, sb = a.score(x, []), b.score(x, ["ignored", "prompts"])
    assert sa.shape == (2,) and torch.equal(sa, sb)
    assert (sa[0] - sa[1]).abs() > 1e-6
    torch.save({"layers.0.weight": torch.zeros(1024, 768)}, tmp_path / "bad.pth")
    with pytest.raises(ValueError, match="bad.pth.*aesthetic predictor"):
        aesthetic.build({"checkpoint": str(tmp_path / "bad.pth"), "clip": str(tmp_path / "model.safetensors")})


def test_registered_with_files():
    est = base.estimators()
    for name, mod in (("pickscore", pickscore), ("hpsv2.1", hps), ("aesthetic", aesthetic)):
        assert est[name] is mod or est[name].__name__ == mod.__name__
        for role, spec in mod.FILES.items():
            assert isinstance(spec, base.FileSpec) and spec.url.startswith("https://huggingface.co/")
    assert pickscore.FILES["checkpoint"].url == \
        "https://huggingface.co/yuvalkirstain/PickScore_v1/resolve/main/model.safetensors"
    assert hps.FILES["checkpoint"].url == "https://huggingface.co/xswu/HPSv2/resolve/main/HPS_v2.1_compressed.pt"
