"""tools/evaluate.py without ComfyUI: the statistics against scipy and by
hand, workflow rewriting (scoring appended after the image output, cfg sweep,
one output of a multi-output workflow), the cost count, state resume keys,
the report built from records and written to disk."""

import json
import math

import pytest

from tools import evaluate as ev
from tools.calibrate import load_state

ROOT = __import__("pathlib").Path(__file__).resolve().parent.parent
ZS = str(ROOT / "workflows" / "api" / "zsampling_sdxl.json")


# --------------------------------------------------------------------------- statistics

@pytest.mark.parametrize("k,n", [(0, 1), (1, 1), (3, 10), (94, 100), (50, 100), (0, 20), (20, 20), (7, 13),
                                 (88, 100), (1234, 2500)])
def test_clopper_pearson_and_p_value_match_scipy(k, n):
    stats = pytest.importorskip("scipy.stats")
    r = stats.binomtest(k, n, 0.5)
    ci = r.proportion_ci(0.95, method="exact")
    lo, hi = ev.clopper_pearson(k, n)
    assert lo == pytest.approx(ci.low, abs=1e-9) and hi == pytest.approx(ci.high, abs=1e-9)
    assert ev.binom_p_value(k, n) == pytest.approx(r.pvalue, rel=1e-9, abs=1e-300)


def test_clopper_pearson_by_hand():
    # k = 0: upper = 1 - (alpha/2)^(1/n); k = n: lower = (alpha/2)^(1/n)
    assert ev.clopper_pearson(0, 10) == pytest.approx((0.0, 1 - 0.025 ** 0.1))
    assert ev.clopper_pearson(10, 10) == pytest.approx((0.025 ** 0.1, 1.0))
    # n = 1, k = 1: P(X >= 1 | p) = p = 0.025
    assert ev.clopper_pearson(1, 1)[0] == pytest.approx(0.025)
    assert ev.binom_p_value(10, 10) == pytest.approx(2 * 0.5 ** 10)
    assert ev.binom_p_value(5, 10) == 1.0
    with pytest.raises(ValueError):
        ev.clopper_pearson(3, 2)


def test_paired_stats_counts_ties_and_se():
    x = [1.0, 2.0, 3.0, 4.0, 5.0]
    y = [0.5, 2.0, 3.5, 1.0, 5.0]
    s = ev.paired_stats(x, y)
    d = [0.5, 0.0, -0.5, 3.0, 0.0]
    assert (s["n"], s["wins"], s["losses"], s["ties"]) == (5, 2, 1, 2)
    assert s["win_rate"] == pytest.approx(2 / 3)
    assert s["ci"] == pytest.approx(list(ev.clopper_pearson(2, 3)))
    m = sum(d) / 5
    assert s["mean_diff"] == pytest.approx(m)
    assert s["se"] == pytest.approx(math.sqrt(sum((v - m) ** 2 for v in d) / 4) / math.sqrt(5))
    all_tied = ev.paired_stats([1.0, 2.0], [1.0, 2.0])
    assert all_tied["win_rate"] is None and all_tied["ci"] is None and all_tied["ties"] == 2
    assert ev.paired_stats([1.0], [0.0])["se"] is None
    with pytest.raises(ValueError):
        ev.paired_stats([1.0], [])


# --------------------------------------------------------------------------- workflows

def test_scoring_goes_after_the_saved_image():
    g = ev.read_workflow(ZS + ":9", "3.text")
    assert set(g) == {"2", "3", "4", "5", "6", "8", "9"}  # only what the Z-Sampling output needs
    assert g["3"]["inputs"]["text"] == "{prompt}"
    out, gates, sink = ev.add_scoring(g, [("imagereward", "default"), ("pickscore", "my.safetensors")],
                                      {"precision": "fp32", "download": "never"}, {"threshold": 0.0, "k": 50})
    assert gates == {"11": "imagereward", "13": "pickscore"} and sink == "9"
    assert out["10"] == {"class_type": "QualityModelLoader", "inputs": {
        "precision": "fp32", "download": "never", "estimator": "imagereward", "weights": "default"}}
    assert out["13"]["inputs"]["image_reward"] == ["12", 0] and out["12"]["inputs"]["weights"] == "my.safetensors"
    assert out["11"]["inputs"]["images"] == ["8", 0] and out["11"]["inputs"]["prompt"] == "{prompt}"
    assert g == ev.read_workflow(ZS + ":9", "3.text")  # the input is not modified


def test_preview_added_when_nothing_shows_the_image():
    g = {"1": {"class_type": "VAEDecode", "inputs": {"samples": ["0", 0], "vae": ["2", 0]}},
         "x": {"class_type": "VAEDecode", "inputs": {"samples": ["0", 0], "vae": ["2", 0]}},
         "3": {"class_type": "CLIPTextEncode", "inputs": {"text": "{prompt}"}}}
    out, gates, sink = ev.add_scoring(g, [("aesthetic", "default")])
    assert out[sink] == {"class_type": "PreviewImage", "inputs": {"images": ["x", 0]}}  # the last decoder
    assert out[next(iter(gates))]["inputs"]["images"] == ["x", 0]
    with pytest.raises(ValueError, match="no image output"):
        ev.add_scoring({"3": g["3"]}, [("imagereward", "default")])


def test_cfg_sweep_rewrites_every_cfg_input():
    g = {"1": {"class_type": "KSampler", "inputs": {"cfg": 5.5, "steps": 4}},
         "2": {"class_type": "CFGGuider", "inputs": {"cfg": 2}},
         "3": {"class_type": "DualCFGGuider", "inputs": {"cfg_conds": 8.0, "cfg_cond2_negative": 3.0}},
         "4": {"class_type": "KSampler", "inputs": {"cfg": ["9", 0]}}}
    out = ev.with_cfg(g, 7)
    assert out["1"]["inputs"] == {"cfg": 7.0, "steps": 4} and out["2"]["inputs"]["cfg"] == 7.0
    assert out["3"]["inputs"] == {"cfg_conds": 7.0, "cfg_cond2_negative": 3.0}
    assert out["4"]["inputs"]["cfg"] == ["9", 0] and g["1"]["inputs"]["cfg"] == 5.5
    with pytest.raises(ValueError, match="no numeric cfg"):
        ev.with_cfg({"1": {"class_type": "VAEDecode", "inputs": {}}}, 3)


def test_plan_orders_baseline_sweep_methods_and_pairs():
    graphs, roles = ev.plan_workflows([ZS + ":11", ZS + ":9"], ["standard", "zs"], None, [3, 7.5],
                                      lambda f: ev.read_workflow(f, "3.text"))
    assert list(roles.items()) == [("standard", "baseline"), ("standard@cfg3", "sweep"),
                                   ("standard@cfg7.5", "sweep"), ("zs", "method")]
    assert graphs["standard@cfg3"]["7"]["inputs"]["cfg"] == 3.0 and graphs["standard"]["7"]["inputs"]["cfg"] == 5.5
    assert ev.default_pairs(roles) == [("zs", "standard"), ("zs", "standard@cfg3"), ("zs", "standard@cfg7.5"),
                                       ("standard@cfg3", "standard"), ("standard@cfg7.5", "standard")]
    assert ev.workflow_name(ZS + ":9") == "zsampling_sdxl:9"
    with pytest.raises(ValueError, match="at least two"):
        ev.plan_workflows([ZS], None, None, [])
    with pytest.raises(ValueError, match="no token|{prompt}"):
        ev.read_workflow(ZS + ":9")  # the shipped workflow has a literal prompt


def test_evaluations_per_image():
    zs = ev.read_workflow(ZS + ":9", "3.text")
    std = ev.read_workflow(ZS + ":11", "3.text")
    assert ev.evaluations_per_image(std) == (100.0, "KSampler inputs")  # 50 steps x 2 branches at cfg 5.5
    # Z-Sampling: 50 zig steps x 2 + 49 reflections x (zag at gamma_2 = 0: 1 branch + zig: 2)
    assert ev.evaluations_per_image(zs) == (50 * 2 + 49 * 3, "ZigzagKSampler inputs")
    one = {"1": {"class_type": "KSampler", "inputs": {"steps": 4, "cfg": 1.0, "sampler_name": "euler"}}}
    assert ev.evaluations_per_image(one)[0] == 4.0
    adv = {"1": {"class_type": "KSamplerAdvanced", "inputs": {"steps": 10, "cfg": 3.0, "sampler_name": "euler",
                                                              "start_at_step": 2, "end_at_step": 10000}}}
    assert ev.evaluations_per_image(adv)[0] == 16.0
    # a node's own report covers the samplers upstream of it
    g = {"1": {"class_type": "KSampler", "inputs": {"steps": 4, "cfg": 1.0, "sampler_name": "euler"}},
         "2": {"class_type": "AdaptiveStudentTeacher", "inputs": {"samples": ["1", 0]}}}
    outputs = {"2": {"text": ["1/2 refined, 5.50 evaluations per image (formula 5.50)"]}}
    assert ev.evaluations_per_image(g, outputs) == (5.5, "AdaptiveStudentTeacher report")
    assert ev.evaluations_per_image(g)[0] is None  # the adaptive node's cost cannot be told from its inputs
    linked = {"1": {"class_type": "KSampler", "inputs": {"steps": ["9", 0], "cfg": 1.0, "sampler_name": "euler"}}}
    assert ev.evaluations_per_image(linked) == (None, "KSampler (node 1) not counted")


def test_execution_seconds():
    entry = {"status": {"messages": [["execution_start", {"timestamp": 1000}], ["execution_cached", {}],
                                     ["execution_success", {"timestamp": 3500}]]}}
    assert ev.execution_seconds(entry) == 2.5
    assert ev.execution_seconds({"status": {}}) is None


# --------------------------------------------------------------------------- state and report

def records_for(scores_by_w):
    return {(w, i): {"workflow": w, "index": i, "prompt": f"p{i}", "scores": {"imagereward": [s]},
                     "evaluations": 2.0, "seconds": 0.5, "images": [], "server": "http://x"}
            for w, ss in scores_by_w.items() for i, s in enumerate(ss)}


def test_state_resume_keys_by_workflow_and_prompt(tmp_path):
    recs = records_for({"a": [0.1, 0.2], "b": [0.3, 0.4]})
    p = tmp_path / "s.jsonl"
    lines = [json.dumps(r) for r in recs.values()]
    lines.insert(1, json.dumps({"workflow": "b", "index": 1, "prompt": "p1", "scores": None, "error": "boom"}))
    p.write_text("\n".join(lines[:-1]) + "\n" + json.dumps({"workflow": "a", "index": 9, "prompt": "x"})[:-3])
    done, failed = load_state(str(p), ["p0", "p1"], key=lambda r: (r.get("workflow"), r["index"]),
                              valid=ev._valid_record)
    assert sorted(done) == [("a", 0), ("a", 1), ("b", 0)] and failed == {("b", 1): "boom"}
    with pytest.raises(ValueError, match="line 1: changed"):
        load_state(str(p), ["p0", "p1"], key=lambda r: r["index"], check=lambda r: "changed")


def test_report_from_records_and_files(tmp_path):
    roles = {"base": "baseline", "m": "method"}
    recs = records_for({"base": [0.0, 1.0, 2.0, 3.0], "m": [0.5, 1.0, 1.0, 4.0]})
    del recs[("m", 3)]
    rep = ev.build_report(recs, roles, ["imagereward"], 4, {("m", 3): "boom"}, {"prompts": "x.txt"})
    (pair,) = rep["pairs"]
    assert (pair["x"], pair["y"], pair["n"], pair["wins"], pair["losses"], pair["ties"]) == ("m", "base", 3, 1, 1, 1)
    assert pair["mean_diff"] == pytest.approx((0.5 + 0 - 1.0) / 3)
    assert pair["largest_x_better"] == [0] and pair["largest_y_better"] == [2]
    assert rep["workflows"]["m"]["scored"] == 3 and rep["workflows"]["m"]["failed"] == 1
    assert rep["workflows"]["base"]["mean_score"]["imagereward"] == pytest.approx(1.5)
    assert rep["failed"] == [{"workflow": "m", "index": 3, "error": "boom"}]
    png = _png()
    written = ev.write_report(rep, recs, str(tmp_path), contact=2, fetch=lambda rec: png)
    names = {p.rsplit("/", 1)[-1] for p in written}
    assert {"report.json", "report.md"} <= names
    md = (tmp_path / "report.md").read_text()
    assert "| m vs base | imagereward | 3 | 1 | 1 | 1 | 0.500 | 0.013-0.987 |" in md
    assert "- m #3: boom" in md
    assert json.loads((tmp_path / "report.json").read_text())["pairs"][0]["wins"] == 1
    pytest.importorskip("matplotlib")
    from PIL import Image
    assert "winrate.png" in names and "contact_m_vs_base.png" in names
    sheet = Image.open(tmp_path / "contact_m_vs_base.png")
    assert sheet.size[0] == 2 * 256 + 12 and sheet.size[1] > 2 * 256  # two rows: one each way


def _png():
    import io
    from PIL import Image
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (200, 10, 10)).save(buf, format="PNG")
    return buf.getvalue()


def test_parse_options():
    assert ev.parse_estimators(None) == [("imagereward", "default")]
    assert ev.parse_estimators(["pickscore=x.safetensors", "aesthetic"]) == [("pickscore", "x.safetensors"),
                                                                             ("aesthetic", "default")]
    with pytest.raises(ValueError):
        ev.parse_estimators(["a", "a"])
    assert ev.parse_sweep("3, 5,7,9") == [3.0, 5.0, 7.0, 9.0]
    with pytest.raises(ValueError, match="cfg-sweep"):
        ev.parse_sweep("3,x")


def test_only_sampling_nodes_are_costed():
    assert [n for n in ("KSampler", "KSamplerAdvanced", "SamplerCustomAdvanced", "ZigzagKSampler", "MyKSampler",
                        "AdaptiveStudentTeacher", "KSamplerSelect", "SamplerZigzag", "CFGGuider", "BasicScheduler",
                        "SamplerEulerAncestral", "WeakStrongGuider")
            if ev.is_sampler({"class_type": n})] == ["KSampler", "KSamplerAdvanced", "SamplerCustomAdvanced",
                                                     "ZigzagKSampler", "MyKSampler", "AdaptiveStudentTeacher"]
    g = {"1": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
         "2": {"class_type": "SamplerCustomAdvanced", "inputs": {"sampler": ["1", 0]}}}
    assert ev.evaluations_per_image(g) == (None, "SamplerCustomAdvanced (node 2) not counted")


def test_a_cost_patch_upstream_is_not_counted_as_plain():
    g = {"1": {"class_type": "SlidingWindowGuidance", "inputs": {"model": ["0", 0]}},
         "2": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "steps": 4, "cfg": 5.0, "sampler_name": "euler"}}}
    assert ev.evaluations_per_image(g) == (None, "KSampler (node 2) not counted: SlidingWindowGuidance changes its cost")


def test_state_of_a_changed_workflow_is_refused(tmp_path):
    g = {"1": {"class_type": "CLIPTextEncode", "inputs": {"text": "{prompt}"}}}
    rec = {"workflow": "a", "index": 0, "prompt": "p0", "scores": {"imagereward": [0.5]},
           "workflow_sha": ev.graph_sha(g)}
    p = tmp_path / "s.jsonl"
    p.write_text(json.dumps(rec) + "\n" + json.dumps({**rec, "workflow": "gone"}) + "\n")
    done, failed = ev.read_state(str(p), ["p0"], {"a": g})
    assert list(done) == [("a", 0)] and not failed  # records of other workflows are left out
    changed = {"1": {"class_type": "CLIPTextEncode", "inputs": {"text": "{prompt}, more"}}}
    with pytest.raises(ValueError, match="line 1: workflow 'a' has changed"):
        ev.read_state(str(p), ["p0"], {"a": changed})


def test_a_torn_state_tail_is_cut_before_appending(tmp_path):
    from tools.calibrate import _repair_tail
    p = tmp_path / "s.jsonl"
    p.write_text('{"index": 0}\n{"index": 1, "pro')
    _repair_tail(str(p))
    assert p.read_text() == '{"index": 0}\n'
    p.write_text('{"index": 0}\n{"index": 1}')  # a whole record without its newline keeps it
    _repair_tail(str(p))
    assert p.read_text() == '{"index": 0}\n{"index": 1}\n'
    p.write_text('{"ind')
    _repair_tail(str(p))
    assert p.read_text() == ""


def test_command_line_without_a_server(tmp_path, capsys):
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    (tmp_path / "p.txt").write_text("a fox\n")
    args = ["--workflow", ZS + ":11", "--workflow", ZS + ":9", "--prompt-input", "3.text", "--prompts",
            str(tmp_path / "p.txt"), "--server", f"127.0.0.1:{port}", "--out", str(tmp_path / "o"), "--no-progress"]
    assert ev.main(args) == 2
    assert "no server answered" in capsys.readouterr().err
    assert ev.main(args[:4] + args[6:]) == 2  # without --prompt-input the shipped workflow has no {prompt}
    assert "{prompt}" in capsys.readouterr().err
