"""QualityGate nodes in a real ComfyUI: files from the registered models
folder, scores equal to the pure core's, the split / best / merge outputs,
thresholds from percentile tables, model management (on the compute device
only while scoring), interrupts, the errors named in the issue, and a run
through the server's /prompt with the scores in /history."""

import json
import logging
from pathlib import Path

import pytest
import torch

import hostlib
import imagereward_tiny as tiny

qg = tiny.qg
qg_gate = tiny.module("samplers.quality_gate")


@pytest.fixture(scope="module")
def qmod(reflect_pack):
    import sys
    return sys.modules[f"{reflect_pack.__name__}.nodes.quality_gate"]


@pytest.fixture(scope="module")
def ir_files(qmod):
    import folder_paths
    folder = folder_paths.get_folder_paths(qmod.FOLDER)[0]
    return tiny.write_files(folder, seed=0, name="tiny_ir.pt")


@pytest.fixture(scope="module")
def scorer(reflect_nodes, ir_files):
    return hostlib.run_node(reflect_nodes["ImageRewardLoader"], checkpoint="tiny_ir.pt", download="never")[0]


@pytest.fixture(scope="module")
def core(ir_files):
    model = qg.load_model(qg.load_checkpoint(str(ir_files["checkpoint"])), tiny.med_config())
    return model, qg.Tokenizer(str(ir_files["vocab"]))


def batch(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand((n, 40, 56, 3), generator=g)


PROMPTS = ["a red fox in the snow", "a cat", "a dog", "astronaut"]


def gate(nodes, scorer, images, prompt, per_line=True, threshold=0.0, k=50, percentiles=None):
    kw = {} if percentiles is None else {"percentiles": percentiles}
    return hostlib.run_node(nodes["QualityGate"], image_reward=scorer, images=images, prompt=prompt,
                            prompt_per_line=per_line, threshold=threshold, k=k, **kw)


def test_loader_lists_the_folder_and_the_release_name(reflect_nodes, ir_files):
    opts = reflect_nodes["ImageRewardLoader"].define_schema().inputs[0].options
    assert "tiny_ir.pt" in opts and "ImageReward.pt" in opts


def test_scores_split_best_and_merge(reflect_nodes, scorer, core):
    images = batch()
    want = qg.score(*core, qg.to_uint8(images), PROMPTS)
    assert want.std() > 1e-3
    tau = float(want.median())
    passed, failed, best, g, report = gate(reflect_nodes, scorer, images, "\n".join(PROMPTS), threshold=tau)
    assert torch.allclose(g["scores"], want, atol=1e-6)
    ok = want >= tau
    p_idx = [i for i in range(4) if ok[i]]
    f_idx = [i for i in range(4) if not ok[i]]
    assert g["passed_indices"] == p_idx and g["failed_indices"] == f_idx and g["threshold"] == tau
    assert torch.equal(passed, images[p_idx]) and torch.equal(failed, images[f_idx])
    assert torch.equal(best, images[int(want.argmax())][None])
    r = json.loads(report)
    assert r["passed"] == ok.tolist() and r["threshold"] == tau
    assert r["scores"] == pytest.approx(want.tolist(), abs=1e-5)
    merged = hostlib.run_node(reflect_nodes["QualityGateMerge"], gate=g, passed=passed, failed=failed * 0.5)[0]
    assert torch.equal(merged[p_idx], images[p_idx]) and torch.equal(merged[f_idx], images[f_idx] * 0.5)


def test_one_prompt_for_the_batch(reflect_nodes, scorer, core):
    images = batch(3, seed=1)
    g = gate(reflect_nodes, scorer, images, "a photo of a cat\nin the snow", per_line=False)[3]
    assert torch.allclose(g["scores"], qg.score(*core, qg.to_uint8(images), ["a photo of a cat\nin the snow"] * 3),
                          atol=1e-6)
    g1 = gate(reflect_nodes, scorer, images, "a cat", per_line=True)[3]  # one line serves every image
    assert torch.allclose(g1["scores"], qg.score(*core, qg.to_uint8(images), ["a cat"] * 3), atol=1e-6)


def test_ui_shows_scores(reflect_nodes, scorer):
    out = reflect_nodes["QualityGate"].execute(image_reward=scorer, images=batch(2), prompt="a cat",
                                               prompt_per_line=False, threshold=0.0, k=50)
    ui = out.ui if isinstance(out.ui, dict) else out.ui.as_dict()
    assert len(ui["reflect_scores"]) == 2 and ui["reflect_threshold"] == [0.0]
    assert ui["text"][0].startswith("pass" if ui["reflect_passed"][0] else "fail")


def test_threshold_from_percentile_table(reflect_nodes, scorer):
    table = hostlib.run_node(reflect_nodes["QualityPercentiles"], table="IR_percentiles_lcm_sdxl.json")[0]
    old = hostlib.run_node(reflect_nodes["ImageRewardPercentiles"], table="IR_percentiles_lcm_sdxl.json")[0]
    assert old == table and table["estimator"] == "imagereward"  # the paper's tables are ImageReward's
    pct = table["percentiles"]
    assert pct[50] == pytest.approx(0.6154254078865051) and sorted(pct) == list(range(10, 100, 10))
    g = gate(reflect_nodes, scorer, batch(), "a cat", per_line=False, threshold=-99.0, k=90, percentiles=table)[3]
    assert g["threshold"] == pct[90] and g["k"] == 90
    assert g["passed"].tolist() == (g["scores"] >= pct[90]).tolist()
    with pytest.raises(ValueError, match=r"k: 55 is not in percentiles"):
        gate(reflect_nodes, scorer, batch(), "a cat", per_line=False, k=55, percentiles=table)


def test_table_of_another_estimator_is_refused(reflect_nodes, scorer, tmp_path):
    import folder_paths
    calibrated = qg_gate.percentile_table([0.1, 0.2, 0.3, 0.4], estimator="pickscore", weights="model.safetensors")
    folder = folder_paths.get_folder_paths("image_reward_percentiles")[0]
    path = Path(folder) / "pickscore_test_table.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(calibrated))
    table = hostlib.run_node(reflect_nodes["QualityPercentiles"], table="pickscore_test_table.json")[0]
    assert table["estimator"] == "pickscore" and table["weights"] == "model.safetensors"
    with pytest.raises(ValueError, match=r"percentiles: this percentile table was made with the pickscore "
                                         r"\(model\.safetensors\) estimator, the images are scored with imagereward"):
        gate(reflect_nodes, scorer, batch(), "a cat", per_line=False, percentiles=table)
    own = qg_gate.percentile_table([0.1, 0.2, 0.3], estimator="imagereward", weights="tiny_ir.pt")
    g = gate(reflect_nodes, scorer, batch(), "a cat", per_line=False, k=50, percentiles=own)[3]
    assert g["threshold"] == pytest.approx(0.2)


class _Loads(logging.Handler):
    """ComfyUI's own record of a load: model_management logs "Requested to load <model>" when a model that is
    not among its loaded models is requested (one already loaded is only marked in use)."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.count = 0

    def emit(self, record):
        self.count += "Requested to load ImageReward" in record.getMessage()


def test_model_stays_loaded_and_comfyui_evicts_it(reflect_nodes, scorer):
    import comfy.model_management as mm
    seen, loads = [], _Loads()
    root = logging.getLogger()
    level = root.level
    root.addHandler(loads)
    root.setLevel(logging.INFO)
    h = scorer.patcher.model.register_forward_pre_hook(
        lambda m, a: seen.append(any(lm.model is scorer.patcher for lm in mm.current_loaded_models)))
    try:
        mm.unload_all_models()
        gate(reflect_nodes, scorer, batch(2), "a cat", per_line=False)
        assert loads.count == 1
        for _ in range(3):
            gate(reflect_nodes, scorer, batch(2), "a cat", per_line=False)
        assert seen == [True] * 4  # one pass per call, the model under ComfyUI's management
        assert loads.count == 1  # kept loaded between calls: no second load
        assert any(lm.model is scorer.patcher for lm in mm.current_loaded_models)
        mm.unload_all_models()  # ComfyUI's own eviction
        assert not any(lm.model is scorer.patcher for lm in mm.current_loaded_models)
        gate(reflect_nodes, scorer, batch(2), "a cat", per_line=False)
        assert loads.count == 2  # loaded again on demand
    finally:
        h.remove()
        root.removeHandler(loads)
        root.setLevel(level)
    assert scorer.dtype == torch.float32  # the default precision


def test_interrupt_is_honoured(reflect_nodes, scorer):
    import comfy.model_management as mm
    calls = []
    h = scorer.patcher.model.register_forward_pre_hook(lambda m, a: calls.append(1))
    mm.interrupt_current_processing(True)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            gate(reflect_nodes, scorer, batch(2), "a cat", per_line=False)
    finally:
        mm.interrupt_current_processing(False)
        h.remove()
    assert calls == []  # nothing scored after the interrupt
    gate(reflect_nodes, scorer, batch(2), "a cat", per_line=False)  # still usable


def test_large_batch_in_passes_with_progress(reflect_nodes, scorer, qmod, core, monkeypatch):
    import comfy.utils
    updates, passes = [], []
    monkeypatch.setattr(scorer.scorer, "batch_size", 3)
    monkeypatch.setattr(comfy.utils, "PROGRESS_BAR_HOOK",
                        lambda value, total, preview, *a, **kw: updates.append((value, total)))
    h = scorer.patcher.model.register_forward_pre_hook(lambda m, a: passes.append(a[0].shape[0]))
    try:
        images = batch(7, seed=3)
        g = gate(reflect_nodes, scorer, images, "a cat", per_line=False)[3]
    finally:
        h.remove()
    assert passes == [3, 3, 1] and updates[-1] == (7, 7)
    assert torch.allclose(g["scores"], qg.score(*core, qg.to_uint8(images), ["a cat"] * 7), atol=1e-6)


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_precision_option(reflect_nodes, scorer, core, precision):
    low = hostlib.run_node(reflect_nodes["QualityModelLoader"], estimator="imagereward", weights="tiny_ir.pt",
                           precision=precision, download="never")[0]
    images = batch(4, seed=5)
    want = qg.score(*core, qg.to_uint8(images), PROMPTS)
    got = low.score(images, PROMPTS)
    assert low.dtype == {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]
    err = float((got - want).abs().max())
    assert 0 < err < 0.2, err  # a lower precision, close to fp32 (measured errors in the tooltip)


def test_failed_download_leaves_nothing_behind(reflect_nodes, qmod, monkeypatch, tmp_path):
    import os
    import folder_paths
    import huggingface_hub
    empty = tmp_path / "image_reward"
    empty.mkdir()
    monkeypatch.setitem(folder_paths.folder_names_and_paths, qmod.FOLDER, ([str(empty)], {".pt", ".safetensors"}))
    monkeypatch.setattr(qmod, "_packaged_vocab", lambda: None)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    real = huggingface_hub.file_download.http_get

    def dies_half_way(url, temp_file, *a, **kw):  # the hub's real download code, cut off after some bytes
        temp_file.write(b"\x80\x02partial checkpoint bytes" * 100)
        raise ConnectionError("connection reset by the fake hub")
    monkeypatch.setattr(huggingface_hub.file_download, "http_get", dies_half_way)
    monkeypatch.setattr(huggingface_hub.file_download, "get_hf_file_metadata", lambda *a, **kw: _FakeMeta())
    with pytest.raises(ValueError, match="download failed: .*connection reset by the fake hub"):
        hostlib.run_node(reflect_nodes["ImageRewardLoader"], checkpoint="ImageReward.pt", download="if missing")
    left = [os.path.relpath(os.path.join(d, f), empty) for d, ds, fs in os.walk(empty) for f in fs + ds]
    assert left == [], left

    class Interrupt(KeyboardInterrupt):
        pass

    def interrupted(url, temp_file, *a, **kw):
        temp_file.write(b"partial")
        raise Interrupt()
    monkeypatch.setattr(huggingface_hub.file_download, "http_get", interrupted)
    with pytest.raises(Interrupt):
        hostlib.run_node(reflect_nodes["ImageRewardLoader"], checkpoint="ImageReward.pt", download="if missing")
    left = [os.path.relpath(os.path.join(d, f), empty) for d, ds, fs in os.walk(empty) for f in fs + ds]
    assert left == [], left
    assert real is not None


class _FakeMeta:
    commit_hash = "0" * 40
    etag = "fake-etag"
    location = "https://huggingface.co/THUDM/ImageReward/resolve/main/ImageReward.pt"
    size = 2600
    xet_file_data = None


def test_errors_name_the_input(reflect_nodes, scorer, qmod, ir_files, monkeypatch, tmp_path):
    with pytest.raises(ValueError, match="images: empty batch"):
        gate(reflect_nodes, scorer, batch(4)[:0], "a cat")
    with pytest.raises(ValueError, match="prompt: 2 prompts \\(one per line\\) for a batch of 4 images"):
        gate(reflect_nodes, scorer, batch(4), "a cat\na dog")
    broken = ir_files["checkpoint"].parent / "broken_ir.pt"
    broken.write_bytes(ir_files["checkpoint"].read_bytes()[:4096])
    with pytest.raises(ValueError, match=r"checkpoint .*broken_ir\.pt: cannot be read as weights"):
        hostlib.run_node(reflect_nodes["ImageRewardLoader"], checkpoint="broken_ir.pt", download="never")
    with pytest.raises(ValueError, match="checkpoint: 'nope.pt' is not in the image_reward folders"):
        hostlib.run_node(reflect_nodes["ImageRewardLoader"], checkpoint="nope.pt", download="never")
    with pytest.raises(ValueError, match="table 'nope.json' is not in"):
        hostlib.run_node(reflect_nodes["QualityPercentiles"], table="nope.json")


def test_missing_files_say_what_to_put_where(reflect_nodes, qmod, monkeypatch, tmp_path):
    import folder_paths
    empty = tmp_path / "image_reward"
    empty.mkdir()
    monkeypatch.setitem(folder_paths.folder_names_and_paths, qmod.FOLDER, ([str(empty)], {".pt", ".safetensors"}))
    monkeypatch.setattr(qmod, "_packaged_vocab", lambda: None)
    with pytest.raises(ValueError) as e:
        hostlib.run_node(reflect_nodes["ImageRewardLoader"], checkpoint="ImageReward.pt", download="never")
    msg = str(e.value)
    assert f"Put them in {empty}" in msg and "download is 'never'" in msg
    for line in ("ImageReward.pt  from https://huggingface.co/THUDM/ImageReward/resolve/main/ImageReward.pt",
                 "med_config.json  from https://huggingface.co/THUDM/ImageReward/resolve/main/med_config.json",
                 "vocab.txt  from https://huggingface.co/google-bert/bert-base-uncased/resolve/main/vocab.txt"):
        assert line in msg
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ValueError, match="offline: HF_HUB_OFFLINE is set"):
        hostlib.run_node(reflect_nodes["ImageRewardLoader"], checkpoint="ImageReward.pt", download="if missing")
    (empty / "vocab.txt").write_text("\n".join(tiny.VOCAB))
    with pytest.raises(ValueError) as e:
        hostlib.run_node(reflect_nodes["ImageRewardLoader"], checkpoint="ImageReward.pt", download="never")
    assert "vocab.txt" not in str(e.value) and "med_config.json" in str(e.value)


def test_quality_gate_through_the_server(comfy_server):
    tiny.write_files(comfy_server.base_dir / "models" / "image_reward", seed=0, name="tiny_ir.pt")
    info = comfy_server.object_info()
    g = {
        "1": {"class_type": "EmptyImage", "inputs": {"width": 48, "height": 40, "batch_size": 1, "color": 0xFF3300}},
        "2": {"class_type": "EmptyImage", "inputs": {"width": 48, "height": 40, "batch_size": 2, "color": 0x2255AA}},
        "3": {"class_type": "ImageBatch", "inputs": {"image1": ["1", 0], "image2": ["2", 0]}},
        "4": hostlib.api_node(info["ImageRewardLoader"], "ImageRewardLoader",
                              {"checkpoint": "tiny_ir.pt", "download": "never"}),
        "5": hostlib.api_node(info["ImageRewardPercentiles"], "ImageRewardPercentiles",
                              {"table": "IR_percentiles_sdxl_turbo.json"}),
        "6": hostlib.api_node(info["QualityGate"], "QualityGate",
                              {"image_reward": ["4", 0], "images": ["3", 0], "prompt": "a red fox", "k": 50,
                               "percentiles": ["5", 0]}),
        "7": {"class_type": "PreviewImage", "inputs": {"images": ["6", 2]}},
    }
    entry = comfy_server.run_prompt(g)
    ui = entry["outputs"]["6"]
    scores = ui["reflect_scores"]
    assert len(scores) == 3 and all(isinstance(s, float) for s in scores)
    assert scores[1] == scores[2] != scores[0]  # same image, same score; another image, another
    table = json.loads((hostlib.REPO_ROOT / "percentiles" / "IR_percentiles_sdxl_turbo.json").read_text())
    assert ui["reflect_threshold"] == [table["50"]]
    assert ui["reflect_passed"] == [s >= table["50"] for s in scores]
    bad = json.loads(json.dumps(g))
    bad["6"]["inputs"].update(prompt="a\nb", prompt_per_line=True)
    err = hostlib.prompt_error(comfy_server.run_prompt(bad, check=False))
    assert "prompt: 2 prompts (one per line) for a batch of 3 images" in err


def _branch_graph(info, batch_size, threshold):
    """student KSampler -> decode -> QualityGate; failed -> VAEEncode -> KSampler (refine) -> decode ->
    QualityGateMerge (the passed part unconnected: taken from the gate); previews of the merge and of the failed
    part."""
    return {
        **hostlib.gate_graph(info, batch_size, prompt="a red fox", threshold=threshold),
        "10": {"class_type": "VAEEncode", "inputs": {"pixels": ["9", 1], "vae": ["6", 0]}},
        "11": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0],
                                                    "latent_image": ["10", 0], "seed": 7, "steps": 2, "cfg": 1.0,
                                                    "sampler_name": "euler", "scheduler": "normal", "denoise": 0.5}},
        "12": {"class_type": "VAEDecode", "inputs": {"samples": ["11", 0], "vae": ["6", 0]}},
        "13": {"class_type": "QualityGateMerge", "inputs": {"gate": ["9", 3], "failed": ["12", 0]}},
        "14": {"class_type": "PreviewImage", "inputs": {"images": ["13", 0]}},
        "15": {"class_type": "PreviewImage", "inputs": {"images": ["9", 1]}},
    }


def _executed(entry) -> set:
    """Node ids that ran (not cached) in a /history entry."""
    done = set()
    for kind, data in (entry.get("status") or {}).get("messages") or []:
        if kind == "execution_cached":
            done |= {str(n) for n in data.get("nodes", [])}
    return done


def test_gate_refine_merge_through_the_server(comfy_server):
    """17.3: at batch 1 all passed or all failed, and at batch 8 mixed, gate -> refine -> merge runs; an empty
    part skips the nodes it feeds (no empty IMAGE reaches VAEEncode / KSampler)."""
    tiny.write_files(comfy_server.base_dir / "models" / "image_reward", seed=0, name="tiny_ir.pt")
    info = comfy_server.object_info()
    for n, threshold, want_failed in ((1, -10.0, 0), (1, 10.0, 1), (8, None, None)):
        if threshold is None:  # batch 8: the median of the scores splits it
            probe = comfy_server.run_prompt(_branch_graph(info, n, 0.0))
            scores = sorted(probe["outputs"]["9"]["reflect_scores"])
            assert len(set(scores)) > 2
            threshold = (scores[3] + scores[4]) / 2
            want_failed = 4
        entry = comfy_server.run_prompt(_branch_graph(info, n, threshold))
        ui = entry["outputs"]["9"]
        assert sum(not p for p in ui["reflect_passed"]) == want_failed
        assert "14" in entry["outputs"], (json.dumps(entry["status"]["messages"])[-1500:], json.dumps(entry["outputs"])[:800])
        assert len(entry["outputs"]["14"]["images"]) == n  # the merge has the whole batch, in order
        failed_preview = entry["outputs"].get("15", {}).get("images", [])
        assert len(failed_preview) == want_failed  # an empty failed part is skipped, not previewed


@pytest.mark.parametrize("estimator", ["pickscore", "hpsv2.1", "aesthetic"])
def test_every_estimator_through_the_server(comfy_server, reflect_nodes, estimator):
    """Load Quality Model -> QualityGate through /prompt for each CLIP estimator (tiny seeded weights in the
    published layouts and folders): the scores in /history are those of the same nodes run in this process, the
    aesthetic predictor ignores the prompt and the others do not."""
    import folder_paths
    import estimators_tiny
    estimators_tiny.write_files(comfy_server.base_dir / "models", seed=0)
    estimators_tiny.write_files(Path(folder_paths.models_dir), seed=0)
    info = comfy_server.object_info()

    def graph(prompt):
        return {
            "1": {"class_type": "EmptyImage", "inputs": {"width": 48, "height": 40, "batch_size": 1, "color": 0xFF3300}},
            "2": {"class_type": "EmptyImage", "inputs": {"width": 48, "height": 40, "batch_size": 1, "color": 0x2255AA}},
            "3": {"class_type": "ImageBatch", "inputs": {"image1": ["1", 0], "image2": ["2", 0]}},
            "4": hostlib.api_node(info["QualityModelLoader"], "QualityModelLoader",
                                  {"estimator": estimator, "weights": "default", "download": "never"}),
            "6": hostlib.api_node(info["QualityGate"], "QualityGate",
                                  {"image_reward": ["4", 0], "images": ["3", 0], "prompt": prompt, "threshold": 0.0}),
            "7": {"class_type": "PreviewImage", "inputs": {"images": ["6", 2]}},
        }
    served = [comfy_server.run_prompt(graph(p))["outputs"]["6"]["reflect_scores"] for p in ("a red fox", "a cat")]
    images = torch.cat([torch.tensor([1.0, 0x33 / 255, 0.0]).expand(1, 40, 48, 3),
                        torch.tensor([0x22 / 255, 0x55 / 255, 0xAA / 255]).expand(1, 40, 48, 3)])
    model = hostlib.run_node(reflect_nodes["QualityModelLoader"], estimator=estimator, weights="default",
                             precision="fp32", download="never")[0]
    here = [json.loads(gate(reflect_nodes, model, images, p, per_line=False)[4])["scores"]
            for p in ("a red fox", "a cat")]
    assert len(served[0]) == 2 and served[0][0] != served[0][1]
    torch.testing.assert_close(torch.tensor(served), torch.tensor(here), rtol=1e-5, atol=2e-6)
    assert (served[0] == served[1]) == (estimator == "aesthetic")
