"""samplers/quality_gate.py without ComfyUI: tokenizer, preprocessing, loading
(weights only), scoring in batches, and the gate's thresholds, splits and merges.
Numerical parity with the original package is tests/test_imagereward_parity.py."""

import hashlib
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

import imagereward_tiny as tiny
from tools.reflect_pack import module
qg = module("samplers.quality_gate")
ir = module("scoring.imagereward")

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO / "datasets"  # reference data shipped in the repository (datasets/README.md)
# sha256 of the adaptive paper's tables (yandex-research/adaptive-diffusion), which percentiles/ ships unchanged
PAPER_TABLES = {
    "IR_percentiles_lcm_sdxl.json": "61f591129e7c8df91f21ec4483d500978773a7967667db7b2c1895865f9ff23b",
    "IR_percentiles_sdxl_turbo.json": "e3b5c5cbdf0f2ec5e06c2e019a3d0bfb3fd4152e52fb72ebdc11d7c513b4d52a",
}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return tiny.write_files(tmp_path_factory.mktemp("ir"))


@pytest.fixture(scope="module")
def model(files):
    return ir.load_model(ir.load_checkpoint(str(files["checkpoint"])), json.loads(files["med_config"].read_text()))


@pytest.fixture(scope="module")
def tok(files):
    return ir.Tokenizer(str(files["vocab"]))


def images(n, h=40, w=56, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, h, w, 3), generator=g)


def test_med_config_is_the_release_config():
    assert ir.MED_CONFIG == json.loads((DATASETS / "imagereward_med_config.json").read_text())


def test_shipped_percentile_tables_are_the_papers():
    for name in ("IR_percentiles_lcm_sdxl.json", "IR_percentiles_sdxl_turbo.json"):
        ours = json.loads((REPO / "percentiles" / name).read_text())
        assert sorted(int(k) for k in ours) == list(qg.PERCENTILE_KS)
        assert qg.threshold_from_table(ours, 50) == ours["50"]
        assert hashlib.sha256((REPO / "percentiles" / name).read_bytes()).hexdigest() == PAPER_TABLES[name]


# --------------------------------------------------------------------------- tokenizer

def test_tokenizer_layout(tok):
    v = {t: i for i, t in enumerate(tiny.VOCAB)}
    ids, mask = tok(["A photo of a CAT", "Café cats!", ""])
    assert ids.shape == mask.shape == (3, ir.MAX_TEXT_TOKENS)
    assert ids[0, :7].tolist() == [v["[CLS]"], v["a"], v["photo"], v["of"], v["a"], v["cat"], v["[SEP]"]]
    assert mask[0].tolist() == [1] * 7 + [0] * 28 and ids[0, 7:].eq(v["[PAD]"]).all()
    # lower case, accents stripped, WordPiece continuation, punctuation split
    assert ids[1, :5].tolist() == [v["[CLS]"], v["cafe"], v["cat"], v["##s"], v["!"]]
    assert ids[2, :2].tolist() == [v["[CLS]"], v["[SEP]"]] and mask[2].sum() == 2


def test_tokenizer_truncates_and_knows_blips_tokens(tok):
    ids, mask = tok(["cat " * 50, "[ENC] dog [DEC]"])
    v = {t: i for i, t in enumerate(tiny.VOCAB)}
    assert mask[0].all() and ids[0, -1] == v["[SEP]"] and ids[0, 1:-1].eq(v["cat"]).all()
    assert tok.vocab_size == len(tiny.VOCAB) + 2
    assert ids[1, :4].tolist() == [v["[CLS]"], len(tiny.VOCAB) + 1, v["dog"], len(tiny.VOCAB)]


def test_tokenizer_rejects_a_non_bert_vocab(tmp_path):
    f = tmp_path / "vocab.txt"
    f.write_text("hello\nworld\n")
    with pytest.raises(ValueError, match="not a BERT vocabulary"):
        ir.Tokenizer(str(f))


# --------------------------------------------------------------------------- images

@pytest.mark.parametrize("hw,expected", [((300, 200), (336, 224)), ((200, 300), (224, 336)),
                                         ((1024, 768), (298, 224)), ((224, 224), (224, 224)), ((64, 64), (224, 224))])
def test_resize_rule_is_torchvisions(hw, expected):
    assert ir.resized_size(*hw) == expected


def test_preprocess_identity_size_is_plain_normalisation():
    img = (np.random.default_rng(0).random((224, 224, 3)) * 255).astype(np.uint8)
    x = ir.preprocess([img])
    want = (torch.from_numpy(img).permute(2, 0, 1).float() / 255 - torch.tensor(ir.PIXEL_MEAN)[:, None, None]) \
        / torch.tensor(ir.PIXEL_STD)[:, None, None]
    assert x.shape == (1, 3, 224, 224) and torch.equal(x[0], want)


def test_preprocess_crops_the_centre():
    img = np.zeros((224, 448, 3), np.uint8)
    img[:, 224:] = 255  # right half white: the centre crop (columns 112..335) is half black, half white
    x = ir.preprocess([img])[0, 0] * ir.PIXEL_STD[0] + ir.PIXEL_MEAN[0]
    assert x[:, :100].max() < 0.01 and x[:, 124:].min() > 0.99


def test_to_uint8_is_saveimage_truncation():
    t = torch.tensor([[[[0.0, 0.5, 0.999], [1.0, 1.5, -0.2]]]])
    assert ir.to_uint8(t).tolist() == [[[[0, 127, 254], [255, 255, 0]]]]


# --------------------------------------------------------------------------- scoring and loading

def test_batch_scores_equal_single_scores(model, tok):
    x = ir.to_uint8(images(4))
    prompts = ["a red fox", "a cat", "a dog in the snow", "astronaut"]
    together = ir.score(model, tok, x, prompts)
    alone = torch.cat([ir.score(model, tok, x[i:i + 1], prompts[i:i + 1]) for i in range(4)])
    assert together.shape == (4,) and together.dtype == torch.float32
    assert torch.allclose(together, alone, atol=1e-5)
    assert together.std() > 1e-3  # the score depends on the image and prompt
    assert not torch.allclose(ir.score(model, tok, x, ["a cat"] * 4), together, atol=1e-4)


def test_score_errors(model, tok):
    x = ir.to_uint8(images(2))
    with pytest.raises(ValueError, match="prompts: 1 prompts for 2 images"):
        ir.score(model, tok, x, ["a cat"])
    with pytest.raises(ValueError, match="images: empty batch"):
        ir.score(model, tok, x[:0], [])


def test_vit_shape_is_read_off_the_checkpoint(model):
    assert ir.vit_config(model.state_dict()) == tiny.VIT
    assert model.image_size == 32


def test_safetensors_and_torch_files_load_the_same(tmp_path, files, model, tok):
    st = tiny.write_files(tmp_path, name="ir.safetensors")
    m2 = ir.load_model(ir.load_checkpoint(str(st["checkpoint"])), json.loads(st["med_config"].read_text()))
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), m2.state_dict().values()))
    x = ir.to_uint8(images(2))
    assert torch.allclose(ir.score(model, tok, x, ["a cat", "a dog"]), ir.score(m2, tok, x, ["a cat", "a dog"]),
                          atol=1e-6)


def test_corrupt_checkpoint_is_named(tmp_path, files):
    bad = tmp_path / "broken.pt"
    bad.write_bytes(files["checkpoint"].read_bytes()[:1000])
    with pytest.raises(ValueError, match=r"checkpoint .*broken\.pt: cannot be read as weights"):
        ir.load_checkpoint(str(bad))
    bad_st = tmp_path / "broken.safetensors"
    bad_st.write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match="broken.safetensors: cannot be read"):
        ir.load_checkpoint(str(bad_st))


class _Payload:
    def __reduce__(self):
        return (os.mkdir, (os.environ["REFLECT_PICKLE_CANARY"],))


def test_pickled_code_is_not_run(tmp_path, monkeypatch):
    canary = tmp_path / "canary"
    monkeypatch.setenv("REFLECT_PICKLE_CANARY", str(canary))
    f = tmp_path / "evil.pt"
    torch.save({"blip.visual_encoder.cls_token": torch.zeros(1), "x": _Payload()}, f)
    with pytest.raises(ValueError, match="evil.pt: cannot be read as weights"):
        ir.load_checkpoint(str(f))
    assert not canary.exists()
    with open(f, "rb") as fh:  # the file really carries the payload
        with pytest.raises(Exception):
            pickle.load(fh)


def test_incomplete_or_foreign_state_dicts(model):
    sd = dict(model.state_dict())
    cfg = tiny.med_config()
    del sd["blip.text_encoder.encoder.layer.1.crossattention.self.key.weight"]
    with pytest.raises(ValueError, match="1 tensors missing .*crossattention.self.key.weight"):
        ir.load_model(sd, cfg)
    sd = dict(model.state_dict())
    sd["mlp.layers.0.weight"] = torch.zeros(3, 3)
    with pytest.raises(ValueError, match=r"wrong shape .*mlp.layers.0.weight \(3, 3\)"):
        ir.load_model(sd, cfg)
    with pytest.raises(ValueError, match="cls_token.*missing"):
        ir.load_model({"weight": torch.zeros(1)}, cfg)
    sd = dict(model.state_dict(), **{"blip.text_proj.weight": torch.zeros(1), "foreign.bias": torch.zeros(1)})
    assert ir.unused_keys(model, sd) == ["foreign.bias"]


def test_med_config_errors():
    with pytest.raises(ValueError, match="med_config.json: not valid JSON"):
        ir.check_med_config("{nope")
    with pytest.raises(ValueError, match="missing hidden_size"):
        ir.check_med_config({k: v for k, v in ir.MED_CONFIG.items() if k != "hidden_size"})


def test_half_precision_trunk_keeps_a_float32_head(files, tok):
    sd = ir.load_checkpoint(str(files["checkpoint"]))
    m = ir.load_model(sd, tiny.med_config(), dtype=torch.bfloat16)
    assert m.blip.visual_encoder.pos_embed.dtype == torch.bfloat16 and m.mlp.layers[0].weight.dtype == torch.float32
    ref = ir.load_model(sd, tiny.med_config())
    x = ir.to_uint8(images(2))
    assert torch.allclose(ir.score(m, tok, x, ["a cat"] * 2), ir.score(ref, tok, x, ["a cat"] * 2), atol=0.1)


# --------------------------------------------------------------------------- the gate

def test_percentile_table_is_numpys():
    s = np.random.default_rng(1).normal(size=101)
    t = qg.percentile_table(s)
    assert list(t) == [str(k) for k in range(10, 100, 10)]
    assert all(t[str(k)] == pytest.approx(float(np.percentile(s, k))) for k in range(10, 100, 10))
    with pytest.raises(ValueError, match="scores"):
        qg.percentile_table([1.0, float("nan")])


def test_table_parsing_and_missing_k():
    table = json.dumps({"10": -0.5, "50": 0.6, "90": 1.6})
    assert qg.threshold_from_table(table, 50) == 0.6
    with pytest.raises(ValueError, match=r"k: 60 is not in percentiles \(it has k = 10, 50, 90\)"):
        qg.threshold_from_table(table, 60, "percentiles")
    with pytest.raises(ValueError, match="percentile_table: not valid JSON"):
        qg.parse_table("{")
    with pytest.raises(ValueError, match="entry 'x'"):
        qg.parse_table({"x": 1})
    with pytest.raises(ValueError, match="expected a JSON object"):
        qg.parse_table([1, 2])


def test_gate_split_and_merge_keep_order():
    scores = torch.tensor([0.3, -1.0, 0.6154254, 2.0, -0.2])
    passed = qg.gate(scores, 0.3)
    assert passed.tolist() == [True, False, True, True, False]  # at the threshold passes
    p, f = qg.split_indices(passed)
    assert (p, f) == ([0, 2, 3], [1, 4])
    x = torch.arange(5 * 2 * 3, dtype=torch.float32).reshape(5, 2, 3)
    assert torch.equal(qg.merge(x[p], x[f], p, f), x)
    assert torch.equal(qg.merge(x, None, list(range(5)), []), x)
    with pytest.raises(ValueError, match="failed: 1 items for 2 failed samples"):
        qg.merge(x[p], x[:1], p, f)
    with pytest.raises(ValueError, match="threshold"):
        qg.gate(scores, float("nan"))
