"""tools/evaluate.py end to end through real ComfyUI servers on loopback: tiny
seeded models from the test node pack, the tiny seeded ImageReward scored
inside the servers by the appended Load Quality Model + QualityGate; two
workflows and a cfg-sweep baseline over three prompts on two servers (one
killed mid-run, one never there); scores equal the in-process pipeline's for
the same prompt and seed; the report's numbers recomputed from the JSONL
state; resume runs only the missing jobs; a failing workflow's jobs are
reported, not lost."""

import json
import subprocess
import sys
import time

import pytest

import hostlib
import imagereward_tiny as tiny

PROMPTS = ["a red fox", "a cat in the snow", "astronaut"]


def graph(steps, cfg, save):
    g = {
        "1": {"class_type": "ReflectTestTinyModel", "inputs": {"family": "sd15", "prediction": "eps", "seed": 3,
                                                               "flow_shift": 3.0}},
        "2": {"class_type": "ReflectTestConditioning", "inputs": {"model": ["1", 0], "seed": 1, "tokens": 77,
                                                                  "batch": 1}},
        "3": {"class_type": "ReflectTestConditioning", "inputs": {"model": ["1", 0], "seed": 2, "tokens": 77,
                                                                  "batch": 1}},
        "4": {"class_type": "EmptyLatentImage", "inputs": {"width": 64, "height": 64, "batch_size": 1}},
        "5": {"class_type": "KSampler", "inputs": {"model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0],
                                                   "latent_image": ["4", 0], "seed": 0, "steps": steps, "cfg": cfg,
                                                   "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
                                                   "_note": "{prompt}"}},
        "6": {"class_type": "ReflectTestTinyVAE", "inputs": {"seed": 0}},
        "7": {"class_type": "VAEDecode", "inputs": {"samples": ["5", 0], "vae": ["6", 0]}},
    }
    if save:
        g["8"] = {"class_type": "SaveImage", "inputs": {"images": ["7", 0], "filename_prefix": "eval"}}
    return g


def fill(info, g):
    """Widget defaults of the test nodes as this ComfyUI lists them; the {prompt} marker
    moves from the KSampler's note into a string input ComfyUI ignores (the conditioning is random)."""
    out = {}
    for nid, node in g.items():
        inputs = {k: v for k, v in node["inputs"].items() if k != "_note"}
        if node["class_type"].startswith("ReflectTest"):
            links = {k: v for k, v in inputs.items() if isinstance(v, list)}
            n = hostlib.api_node(info[node["class_type"]], node["class_type"], links)
            n["inputs"].update({k: v for k, v in inputs.items() if k in n["inputs"]})
            out[nid] = n
        else:
            out[nid] = {"class_type": node["class_type"], "inputs": inputs}
    return out


@pytest.fixture(scope="module")
def setup(comfy_server, reflect_nodes, tmp_path_factory):
    import folder_paths
    second = hostlib.ComfyServer().start()
    tmp = tmp_path_factory.mktemp("evaluate")
    for srv in (comfy_server, second):
        tiny.write_files(srv.base_dir / "models" / "image_reward", seed=0, name="tiny_ir.pt")
    tiny.write_files(folder_paths.get_folder_paths("image_reward")[0], seed=0, name="tiny_ir.pt")
    info = comfy_server.object_info()
    a, b = fill(info, graph(2, 1.0, True)), fill(info, graph(3, 2.0, False))
    a["8"]["inputs"]["filename_prefix"] = "eval {prompt}"
    # b has no string input of its own: its prompt token rides on an extra input ComfyUI drops
    b["4"]["inputs"]["_prompt"] = "{prompt}"
    (tmp / "a.json").write_text(json.dumps(a))
    (tmp / "b.json").write_text(json.dumps(b))
    (tmp / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
    yield dict(second=second, tmp=tmp, a=a, b=b)
    second.cleanup()


def cmd(tmp, servers, out, *extra):
    c = [sys.executable, "-m", "tools.evaluate", "--workflow", str(tmp / "a.json"), "--workflow", str(tmp / "b.json"),
         "--prompts", str(tmp / "prompts.txt"), "--estimator", "imagereward=tiny_ir.pt", "--download", "never",
         "--base-seed", "100", "--out", str(out), "--no-progress", "--poll", "0.1", "--contact", "2", *extra]
    for s in servers:
        c += ["--server", s]
    return c


def test_evaluate_two_servers_kill_resume_report(comfy_server, setup, reflect_nodes):
    ev = pytest.importorskip("tools.evaluate")
    tmp, second = setup["tmp"], setup["second"]
    out = tmp / "run"
    dead = f"http://127.0.0.1:{hostlib.free_port()}"
    c = cmd(tmp, [comfy_server.url, second.url, dead], out, "--cfg-sweep", "1.5")
    proc = subprocess.Popen(c, cwd=hostlib.REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    state = out / "state.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:  # kill the second server after its first job
        if state.exists() and any(json.loads(x).get("server") == second.url for x in state.read_text().splitlines()
                                  if x.strip()):
            second.stop()
            break
        time.sleep(0.2)
    text, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, text
    assert f"dropping {dead}" in text and f"dropping {second.url}" in text
    recs = [json.loads(x) for x in state.read_text().splitlines()]
    good = {(r["workflow"], r["index"]): r for r in recs if r.get("scores")}
    names = ["a", "a@cfg1.5", "b"]
    assert sorted(good) == sorted((w, i) for w in names for i in range(3))
    assert {r["server"] for r in good.values()} == {comfy_server.url, second.url}
    # the in-process pipeline gives the same score for that prompt and seed
    import nodes as comfy_nodes
    scorer = hostlib.run_node(reflect_nodes["QualityModelLoader"], estimator="imagereward", weights="tiny_ir.pt",
                              precision="fp32", download="never")[0]
    model = hostlib.build_model("sd15", "eps", seed=3)
    pos, neg = hostlib.conditioning(model, seed=1), hostlib.conditioning(model, seed=2)
    vae = hostlib.build_vae(0)
    for w, steps, cfg in (("a", 2, 1.0), ("b", 3, 2.0), ("a@cfg1.5", 2, 1.5)):
        i = 1
        lat = hostlib.ksampler(model, pos, neg, hostlib.empty_latent(1, 8, 8), seed=100 + i, steps=steps, cfg=cfg)
        img = comfy_nodes.VAEDecode().decode(vae, {"samples": lat["samples"]})[0]
        want = float(scorer.score(img, [PROMPTS[i]])[0])
        assert good[(w, i)]["scores"]["imagereward"][0] == pytest.approx(want, abs=1e-5)
        assert good[(w, i)]["seed"] == 101
    # evaluations per image: KSampler steps x CFG branches
    assert {w: good[(w, 0)]["evaluations"] for w in names} == {"a": 2.0, "a@cfg1.5": 4.0, "b": 6.0}
    # the report's numbers from the state alone
    rep = json.loads((out / "report.json").read_text())
    score = {k: r["scores"]["imagereward"][0] for k, r in good.items()}
    pairs = {(p["x"], p["y"]): p for p in rep["pairs"]}
    assert set(pairs) == {("b", "a"), ("b", "a@cfg1.5"), ("a@cfg1.5", "a")}
    for (x, y), p in pairs.items():
        d = [score[(x, i)] - score[(y, i)] for i in range(3)]
        assert (p["wins"], p["losses"], p["ties"]) == (sum(v > 0 for v in d), sum(v < 0 for v in d),
                                                       sum(v == 0 for v in d))
        assert p["mean_diff"] == pytest.approx(sum(d) / 3)
        m = sum(d) / 3
        assert p["se"] == pytest.approx((sum((v - m) ** 2 for v in d) / 2) ** 0.5 / 3 ** 0.5)
        if p["wins"] + p["losses"]:
            assert p["ci"] == pytest.approx(list(ev.clopper_pearson(p["wins"], p["wins"] + p["losses"])))
    wf = rep["workflows"]
    assert wf["b"]["evaluations_per_image"] == 6.0 and wf["a"]["role"] == "baseline"
    assert wf["a@cfg1.5"]["role"] == "sweep" and wf["b"]["role"] == "method"
    assert all(wf[w]["seconds_per_image"] > 0 for w in names)
    assert wf["b"]["mean_score"]["imagereward"] == pytest.approx(sum(score[("b", i)] for i in range(3)) / 3)
    md = (out / "report.md").read_text()
    assert "| b vs a | imagereward | 3 |" in md
    from PIL import Image
    assert Image.open(out / "winrate.png").size[0] > 100
    for name in rep["figures"]:
        assert (out / name).exists()
    assert "contact_b_vs_a.png" in rep["figures"]
    # resume: keep four records and a torn line; only the other five run, on the first server
    state.write_text("".join(json.dumps(r) + "\n" for r in recs[:4]) + '{"workflow": "a", "ind')
    kept = {(r["workflow"], r["index"]) for r in recs[:4] if r.get("scores")}
    r2 = subprocess.run(cmd(tmp, [comfy_server.url], out, "--cfg-sweep", "1.5"), cwd=hostlib.REPO_ROOT,
                        capture_output=True, text=True, timeout=600)
    assert r2.returncode == 0, r2.stdout + r2.stderr
    assert f"{comfy_server.url}: {9 - len(kept)} jobs this run" in r2.stdout
    again = [json.loads(x) for x in state.read_text().splitlines() if x.endswith("}") and x.startswith("{")]
    again_good = {(r["workflow"], r["index"]): r for r in again if r.get("scores")}
    assert sorted(again_good) == sorted(good)
    for k in good:  # deterministic: the same scores on a rerun
        assert again_good[k]["scores"]["imagereward"] == pytest.approx(good[k]["scores"]["imagereward"], abs=1e-6)
    # --report-only: the same report from the state file, nothing run (no server needed)
    rep2_before = json.loads((out / "report.json").read_text())
    r3 = subprocess.run(cmd(tmp, [dead], out, "--cfg-sweep", "1.5", "--report-only"), cwd=hostlib.REPO_ROOT,
                        capture_output=True, text=True, timeout=600)
    assert r3.returncode == 0, r3.stdout + r3.stderr
    rep3 = json.loads((out / "report.json").read_text())
    assert [(p["x"], p["y"], p["wins"], p["losses"], p["ties"]) for p in rep3["pairs"]] == \
        [(p["x"], p["y"], p["wins"], p["losses"], p["ties"]) for p in rep2_before["pairs"]]


def test_failed_jobs_are_reported(comfy_server, setup):
    tmp = setup["tmp"]
    bad = dict(setup["b"])
    bad["5"] = {**bad["5"], "inputs": {**bad["5"]["inputs"], "sampler_name": "no_such_sampler"}}
    (tmp / "bad.json").write_text(json.dumps(bad))
    out = tmp / "bad_run"
    c = cmd(tmp, [comfy_server.url], out, "-n", "2")
    c[c.index(str(tmp / "b.json"))] = str(tmp / "bad.json")
    r = subprocess.run(c, cwd=hostlib.REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 1, r.stdout + r.stderr
    rep = json.loads((out / "report.json").read_text())
    assert sorted((f["workflow"], f["index"]) for f in rep["failed"]) == [("bad", 0), ("bad", 1)]
    assert all("sampler_name" in f["error"] for f in rep["failed"])
    recs = [json.loads(x) for x in (out / "state.jsonl").read_text().splitlines()]
    assert sorted((x["workflow"], x["index"]) for x in recs if x["scores"] is None) == [("bad", 0), ("bad", 1)]
    assert rep["workflows"]["a"]["scored"] == 2 and rep["workflows"]["bad"]["failed"] == 2
    assert rep["pairs"][0]["n"] == 0 and rep["pairs"][0]["win_rate"] is None
