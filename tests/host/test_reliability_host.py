"""Reliability and security of the pack in a real ComfyUI server.

* Bad input (hypothesis): every node of the pack driven through ``/prompt``
  with random and extreme values (zero and huge steps, lambda beyond steps,
  crops larger than the latent, sigma 0 and 1, empty batches, NaN latents and
  images, mismatched latent formats, odd sizes). Every request ends in a
  validation error or an execution error that names an input of the failing
  node, or a finite result; the server keeps answering; and a normal job after
  all of it gives bit for bit the output it gave on the fresh server.
* Files: inputs that name files resolve only inside ComfyUI's folders
  (absolute paths, ``..`` and links out are refused with the input's name).
"""

import json
import math
import os
import re
import urllib.error
import urllib.request

import pytest

import hostlib
import imagereward_tiny as tiny

hypothesis = pytest.importorskip("hypothesis", reason="the bad-input test needs hypothesis (pip install hypothesis)")
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402

EXAMPLES = int(os.environ.get("REFLECT_FUZZ_EXAMPLES", "8"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                suppress_health_check=list(HealthCheck))
LORA = "fuzz_lora.safetensors"


@pytest.fixture(scope="module")
def server(comfy_env, tmp_path_factory):
    """A fresh server of its own (the 'fresh server' of the comparison), with tiny LoRA / ImageReward files.
    Its base directory (and server.log) stays in pytest's tmp dir."""
    import safetensors.torch
    srv = hostlib.ComfyServer(base_dir=tmp_path_factory.mktemp("fuzz_server"))
    try:
        srv.start()
        (srv.base_dir / "models" / "loras").mkdir(parents=True, exist_ok=True)
        lora = hostlib.make_lora(hostlib.build_model("sd15", "eps", 0), rank=2, seed=1)
        safetensors.torch.save_file({k: v.contiguous() for k, v in lora.items()},
                                    str(srv.base_dir / "models" / "loras" / LORA))
        tiny.write_files(srv.base_dir / "models" / "image_reward", seed=0, name="ImageReward.pt")
        srv.info = srv.object_info()
        srv.baseline = run_normal_job(srv)
        yield srv
    finally:
        srv.cleanup()


def run_normal_job(srv) -> bytes:
    """A plain ZigzagKSampler job; returns the saved latent file's bytes."""
    g = base_graph("sd15", latent=dict(batch=2, fill="random"))
    g["x"] = {"class_type": "ZigzagKSampler", "inputs": {
        "model": ["m", 0], "positive": ["p", 0], "negative": ["n", 0], "latent_image": ["l", 0], "seed": 5,
        "steps": 4, "cfg": 4.0, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0,
        "inversion_cfg": 0.0, "zigzag_steps": 3, "rounds": 1, "inversion": "published"}}
    g["save"] = {"class_type": "SaveLatent", "inputs": {"samples": ["x", 0], "filename_prefix": "normal"}}
    entry = srv.run_prompt(g)
    f = entry["outputs"]["save"]["latents"][0]
    return (srv.output_dir / f.get("subfolder", "") / f["filename"]).read_bytes()


def base_graph(family="sd15", latent=None, prediction="eps"):
    size = 64 if family == "sdxl" else 0
    lat = dict(batch=1, channels=4, height=8, width=8, fill="zeros", seed=0)
    lat.update(latent or {})
    return {
        "m": {"class_type": "ReflectTestTinyModel", "inputs": {"family": family, "prediction": prediction, "seed": 0,
                                                               "flow_shift": 3.0}},
        "p": {"class_type": "ReflectTestConditioning", "inputs": {"model": ["m", 0], "seed": 1, "batch": 1,
                                                                  "tokens": 77, "scale": 1.0, "width": size,
                                                                  "height": size}},
        "n": {"class_type": "ReflectTestConditioning", "inputs": {"model": ["m", 0], "seed": 2, "batch": 1,
                                                                  "tokens": 77, "scale": 1.0, "width": size,
                                                                  "height": size}},
        "l": {"class_type": "ReflectTestLatent", "inputs": lat},
    }


def names_an_input(message: str, graph: dict) -> bool:
    """Whether an error message names an input of the graph the way the pack's and ComfyUI's messages do
    ("steps: ...", "zigzag_steps (4) must ...", "sampler_name 'x' is ...")."""
    names = {n for node in graph.values() for n in node["inputs"]}
    return any(re.search(rf"(^|[\s'\"(/]){re.escape(n)}(\s*[:(='\"]|\s+(must|is|are|has|of|for|can|links|contains|"
                         rf"needs|decodes|makes|takes))", message) for n in names)


def outcome(srv, graph, fuzzed: set[str]):
    """Queue ``graph`` and check the request ends well; returns 'invalid', 'error' or 'ok'."""
    req = urllib.request.Request(srv.url + "/prompt", method="POST", headers={"Content-Type": "application/json"},
                                 data=json.dumps({"prompt": graph, "client_id": srv.client_id}).encode())
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            pid = json.loads(r.read())["prompt_id"]
    except urllib.error.HTTPError as e:
        assert e.code == 400, e.code
        body = json.loads(e.read())
        errs = [err for ne in (body.get("node_errors") or {}).values() for err in ne["errors"]]
        assert errs or body.get("error"), body
        for nid, ne in (body.get("node_errors") or {}).items():
            names = set(graph[nid]["inputs"])
            for err in ne["errors"]:
                text = json.dumps(err)
                assert any(n in text for n in names), f"validation error naming no input of {nid}: {err}"
        return "invalid"
    entry = srv.wait_for_prompt(pid, timeout=300)
    err = hostlib.prompt_error(entry)
    if err is not None:
        msgs = [m[1] for m in entry["status"]["messages"] if m[0] == "execution_error"]
        assert msgs, err
        m = msgs[0]
        assert names_an_input(m["exception_message"], graph), \
            f"{m['node_type']}: error names no input: {m['exception_type']}: " \
            f"{m['exception_message']}\n{''.join(m.get('traceback') or [])[-2000:]}"
        return "error"
    for nid, o in entry["outputs"].items():
        for s in o.get("reflect_latent_stats", []):
            if s["shape"][0] == 0 and any(n["inputs"].get("batch") == 0 for n in graph.values()):
                continue  # an empty batch passed through nodes that do not sample it (e.g. denoise 0)
            assert s["finite"], f"non-finite result from a finite request: {s}"
        for v in o.get("reflect_scores", []):
            assert math.isfinite(v)
    return "ok"


def stats(graph, src):
    graph["s"] = {"class_type": "ReflectTestLatentStats", "inputs": {"samples": [src, 0]}}
    return graph


# value pools: ordinary, boundary and out-of-range
STEPS = st.sampled_from([0, 1, 2, 3, 5, 10001])
CFG = st.sampled_from([0.0, 1.0, 2.5, 5.5, -3.0, 1e6])
LAMBDA = st.sampled_from([-1, 0, 1, 2, 4, 100])
DENOISE = st.sampled_from([0.0, 0.3, 1.0, 1.5])
FAMILY = st.sampled_from(["sd15", "sdxl"])
LATENT = st.fixed_dictionaries({
    "batch": st.sampled_from([0, 1, 2]), "channels": st.sampled_from([4, 4, 4, 16]),
    "height": st.sampled_from([1, 2, 5, 8]), "width": st.sampled_from([1, 3, 8]),
    "fill": st.sampled_from(["zeros", "random", "random", "nan"])})
SAMPLER = st.sampled_from(["euler", "ddim", "dpmpp_2m", "heun", "uni_pc"])
SCHEDULER = st.sampled_from(["normal", "karras", "ddim_uniform", "ddim_reference", "simple"])


def _finite_request(latent: dict) -> bool:
    return latent["fill"] != "nan"


@FUZZ
@given(family=FAMILY, latent=LATENT, steps=STEPS, cfg=CFG, inv=CFG, lam=LAMBDA, rounds=st.sampled_from([0, 1, 2, 3]),
       sampler=SAMPLER, scheduler=SCHEDULER, denoise=DENOISE, inversion=st.sampled_from(["published", "paper", "x"]))
def test_zigzag_bad_input(server, family, latent, steps, cfg, inv, lam, rounds, sampler, scheduler, denoise, inversion):
    g = base_graph(family, latent)
    g["x"] = {"class_type": "ZigzagKSampler", "inputs": {
        "model": ["m", 0], "positive": ["p", 0], "negative": ["n", 0], "latent_image": ["l", 0], "seed": 1,
        "steps": steps, "cfg": cfg, "sampler_name": sampler, "scheduler": scheduler, "denoise": denoise,
        "inversion_cfg": inv, "zigzag_steps": lam, "rounds": rounds, "inversion": inversion}}
    outcome(server, stats(g, "x"), set())


def custom_advanced(guider: str, sampler: str, sigmas: str) -> dict:
    """Nodes "rn" (RandomNoise) and "x" (SamplerCustomAdvanced on latent "l") for the given node ids."""
    return {"rn": {"class_type": "RandomNoise", "inputs": {"noise_seed": 3}},
            "x": {"class_type": "SamplerCustomAdvanced", "inputs": {
                "noise": ["rn", 0], "guider": [guider, 0], "sampler": [sampler, 0], "sigmas": [sigmas, 0],
                "latent_image": ["l", 0]}}}


@FUZZ
@given(latent=LATENT, steps=STEPS, lam=LAMBDA, inv=CFG, denoise=DENOISE, reference=st.booleans(), sampler=SAMPLER)
def test_zigzag_pieces_bad_input(server, latent, steps, lam, inv, denoise, reference, sampler):
    g = base_graph("sd15", latent)
    g.update({
        "z": {"class_type": "SamplerZigzag", "inputs": {"sampler_name": sampler, "inversion_cfg": inv,
                                                        "zigzag_steps": lam, "rounds": 1, "inversion": "published",
                                                        "reference_scaling": reference}},
        "sig": {"class_type": "ZigzagReferenceScheduler", "inputs": {"model": ["m", 0], "steps": steps,
                                                                     "denoise": denoise}},
        "gd": {"class_type": "CFGGuider", "inputs": {"model": ["m", 0], "positive": ["p", 0], "negative": ["n", 0],
                                                     "cfg": 4.0}},
        **custom_advanced("gd", "z", "sig"),
    })
    outcome(server, stats(g, "x"), set())


@FUZZ
@given(latent=LATENT, steps=STEPS, cfgs=st.tuples(CFG, CFG, CFG), reflect=LAMBDA, weak_family=FAMILY,
       denoise=DENOISE, sampler=SAMPLER, inversion=st.sampled_from(["published", "paper"]))
def test_w2sd_bad_input(server, latent, steps, cfgs, reflect, weak_family, denoise, sampler, inversion):
    g = base_graph("sd15", latent)
    g["w"] = {"class_type": "ReflectTestTinyModel", "inputs": {"family": weak_family, "prediction": "eps", "seed": 9,
                                                               "flow_shift": 3.0}}
    g["x"] = {"class_type": "WeakStrongReflection", "inputs": {
        "model": ["m", 0], "positive": ["p", 0], "negative": ["n", 0], "cfg": cfgs[0], "strong_cfg": cfgs[1],
        "weak_cfg": cfgs[2], "seed": 2, "steps": steps, "sampler_name": sampler, "scheduler": "normal",
        "latent_image": ["l", 0], "denoise": denoise, "reflect_steps": reflect, "inversion": inversion,
        "weak_model": ["w", 0]}}
    outcome(server, stats(g, "x"), set())


@FUZZ
@given(latent=LATENT, steps=STEPS, strengths=st.tuples(st.sampled_from([1.5, 0.0, -1.5, 1e3]),
                                                        st.sampled_from([-1.5, 0.0, 200.0])),
       lora=st.sampled_from([LORA, "../" + LORA, "/etc/passwd", "missing.safetensors"]), reflect=LAMBDA)
def test_w2sd_lora_bad_input(server, latent, steps, strengths, lora, reflect):
    g = base_graph("sd15", latent)
    g["x"] = {"class_type": "WeakStrongReflectionLoRA", "inputs": {
        "model": ["m", 0], "lora_name": lora, "strong_strength": strengths[0], "weak_strength": strengths[1],
        "main_strength": 0.8, "positive": ["p", 0], "negative": ["n", 0], "cfg": 5.5, "weak_cfg": 1.0, "seed": 3,
        "steps": steps, "sampler_name": "ddim", "scheduler": "ddim_reference", "latent_image": ["l", 0],
        "denoise": 1.0, "reflect_steps": reflect, "inversion": "published"}}
    outcome(server, stats(g, "x"), set())


@FUZZ
@given(latent=LATENT, cfgs=st.tuples(CFG, CFG, CFG), reflect=LAMBDA, steps=STEPS)
def test_w2sd_guider_bad_input(server, latent, cfgs, reflect, steps):
    g = base_graph("sd15", latent)
    for i, c in zip(("gs", "gw", "gm"), cfgs):
        g[i] = {"class_type": "CFGGuider", "inputs": {"model": ["m", 0], "positive": ["p", 0], "negative": ["n", 0],
                                                      "cfg": c}}
    g.update({
        "wg": {"class_type": "WeakStrongGuider", "inputs": {"strong": ["gs", 0], "weak": ["gw", 0], "main": ["gm", 0],
                                                            "reflect_steps": reflect, "inversion": "published",
                                                            "reference_scaling": False}},
        "ks": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "sig": {"class_type": "BasicScheduler", "inputs": {"model": ["m", 0], "scheduler": "normal", "steps": steps,
                                                           "denoise": 1.0}},
        **custom_advanced("wg", "ks", "sig"),
    })
    outcome(server, stats(g, "x"), set())


@FUZZ
@given(family=FAMILY, latent=LATENT, scale=st.sampled_from([0.0, 1.0, -5.0, 1e4]),
       crop=st.sampled_from([1, 3, 8, 40, 16384]), crop_h=st.sampled_from([0, 1, 9, 100]),
       units=st.sampled_from(["latent", "pixels"]), n=st.sampled_from([1, 2, 3, 16, 17]), ny=st.sampled_from([0, 1, 5]),
       masked=st.booleans(), with_cfg=st.booleans(), cond=st.sampled_from(["auto", "conditional", "unconditional"]),
       start=st.sampled_from([0.0, 0.5, 1.0]), end=st.sampled_from([0.0, 0.5, 1.0]), cfg=CFG)
def test_swg_bad_input(server, family, latent, scale, crop, crop_h, units, n, ny, masked, with_cfg, cond, start, end,
                       cfg):
    # SWG patches a MODEL sampled by ComfyUI's own KSampler, which by itself fails on an empty batch or a 1 x 1
    # latent (too small for the tiny UNet) or a 16-channel latent and passes NaN through: those are KSampler's inputs, not SWG's (crops larger than the latent are SWG's)
    latent = {**latent, "batch": max(latent["batch"], 1), "height": max(latent["height"], 4),
              "width": max(latent["width"], 4), "fill": "zeros" if latent["fill"] == "nan" else latent["fill"],
              "channels": 4}
    g = base_graph(family, latent)
    g["swg"] = {"class_type": "SlidingWindowGuidance", "inputs": {
        "model": ["m", 0], "scale": scale, "crop_width": crop, "crop_height": crop_h, "crop_units": units,
        "crops_x": n, "crops_y": ny, "masked": masked, "mask_with_cfg": with_cfg, "crop_conditioning": cond,
        "start_percent": start, "end_percent": end}}
    g["x"] = {"class_type": "KSampler", "inputs": {
        "model": ["swg", 0], "positive": ["p", 0], "negative": ["n", 0], "latent_image": ["l", 0], "seed": 4,
        "steps": 2, "cfg": cfg, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0}}
    outcome(server, stats(g, "x"), set())


IMAGES = st.fixed_dictionaries({"batch": st.sampled_from([0, 1, 3]), "height": st.sampled_from([1, 7, 64]),
                                "width": st.sampled_from([1, 33, 64]),
                                "fill": st.sampled_from(["random", "random", "zeros", "nan"])})


@FUZZ
@given(images=IMAGES, prompt=st.sampled_from(["a red fox", "", "a\nb", "a\nb\nc", "x" * 3000, "[ENC] 猫"]),
       per_line=st.booleans(), threshold=st.sampled_from([0.0, -10.0, 10.0, 11.0]),
       k=st.sampled_from([0, 50, 55, 90, 101]), table=st.sampled_from([None, "IR_percentiles_lcm_sdxl.json",
                                                                        "../../etc/passwd"]),
       merge_swap=st.booleans())
def test_quality_gate_bad_input(server, images, prompt, per_line, threshold, k, table, merge_swap):
    g = {
        "img": {"class_type": "ReflectTestImage", "inputs": {**images, "seed": 0}},
        "ir": {"class_type": "ImageRewardLoader", "inputs": {"checkpoint": "ImageReward.pt", "download": "never"}},
        "q": {"class_type": "QualityGate", "inputs": {"image_reward": ["ir", 0], "images": ["img", 0],
                                                      "prompt": prompt, "prompt_per_line": per_line,
                                                      "threshold": threshold, "k": k}},
        "mg": {"class_type": "QualityGateMerge", "inputs": {"gate": ["q", 3], "passed": ["q", 1 if merge_swap else 0],
                                                             "failed": ["q", 0 if merge_swap else 1]}},
        "pv": {"class_type": "PreviewImage", "inputs": {"images": ["mg", 0]}},
    }
    if table is not None:
        g["t"] = {"class_type": "ImageRewardPercentiles", "inputs": {"table": table}}
        g["q"]["inputs"]["percentiles"] = ["t", 0]
    outcome(server, g, set())


@FUZZ
@given(latent=LATENT, sigma=st.sampled_from([0.0, 0.3, 0.7, 1.0, 1.5]), steps=STEPS,
       strategy=st.sampled_from(["refine", "regenerate"]), schedule=st.sampled_from(["reference", "comfy"]),
       threshold=st.sampled_from([-10.0, 0.0, 10.0]), teacher_family=FAMILY, with_student=st.booleans(),
       sampler=SAMPLER)
def test_adaptive_bad_input(server, latent, sigma, steps, strategy, schedule, threshold, teacher_family, with_student,
                            sampler):
    g = base_graph("sd15", latent)
    size = 64 if teacher_family == "sdxl" else 0
    g.update({
        "t": {"class_type": "ReflectTestTinyModel", "inputs": {"family": teacher_family, "prediction": "eps", "seed": 7,
                                                               "flow_shift": 3.0}},
        "tp": {"class_type": "ReflectTestConditioning", "inputs": {"model": ["t", 0], "seed": 3, "batch": 1,
                                                                   "tokens": 77, "scale": 1.0, "width": size,
                                                                   "height": size}},
        "v": {"class_type": "ReflectTestTinyVAE", "inputs": {"seed": 0}},
        "ir": {"class_type": "ImageRewardLoader", "inputs": {"checkpoint": "ImageReward.pt", "download": "never"}},
        "x": {"class_type": "AdaptiveStudentTeacher", "inputs": {
            "samples": ["l", 0], "student_vae": ["v", 0], "student_steps": 2, "image_reward": ["ir", 0],
            "prompt": "a red fox", "prompt_per_line": False, "teacher_model": ["t", 0], "teacher_positive": ["tp", 0],
            "teacher_negative": ["tp", 0], "seed": 1, "teacher_steps": steps, "teacher_cfg": 3.0,
            "teacher_sampler": sampler, "teacher_scheduler": "normal", "sigma": sigma, "strategy": strategy,
            "rollback_schedule": schedule, "threshold": threshold, "k": 50}},
    })
    if with_student:
        g["x"]["inputs"]["student_model"] = ["m", 0]
    g["s"] = {"class_type": "ReflectTestLatentStats", "inputs": {"samples": ["x", 1]}}
    outcome(server, g, set())


def test_server_healthy_and_normal_job_unchanged(server):
    """After every fuzz test above (pytest runs this module in order): the server answers, and the normal job
    gives the bytes it gave on the fresh server."""
    assert server.get_json("/system_stats")["system"]
    assert run_normal_job(server) == server.baseline


# --------------------------------------------------------------------------- files

@pytest.fixture()
def outside(tmp_path):
    f = tmp_path / "outside.safetensors"
    f.write_bytes(b"not weights")
    return f


def test_file_inputs_stay_inside_comfyui_folders(reflect_pack, outside, tmp_path):
    import sys
    import folder_paths
    glue = sys.modules[f"{reflect_pack.__name__}.nodes.compat"]
    loras = folder_paths.get_folder_paths("loras")[0]
    os.makedirs(loras, exist_ok=True)
    for bad in ("/etc/passwd", "../x.safetensors", "a/../../x.safetensors", "", "a\x00b"):
        with pytest.raises(ValueError, match="lora_name: .* is not a file name inside the 'loras' folders"):
            glue.resolve_file("loras", bad, "lora_name")
    link = os.path.join(loras, "link_out.safetensors")
    inside = os.path.join(loras, "inside_target.safetensors")
    link_in = os.path.join(loras, "link_in.safetensors")
    try:
        os.symlink(outside, link)
        with open(inside, "wb") as f:
            f.write(b"x")
        os.symlink(inside, link_in)
        with pytest.raises(ValueError, match="lora_name: 'link_out.safetensors' links outside the 'loras' folder"):
            glue.resolve_file("loras", "link_out.safetensors", "lora_name")
        assert glue.resolve_file("loras", "link_in.safetensors", "lora_name") == link_in
        assert glue.resolve_file("loras", "nope.safetensors", "lora_name") is None
    finally:
        for p in (link, link_in, inside):
            if os.path.lexists(p):
                os.remove(p)


def test_nodes_refuse_links_out(reflect_nodes, comfy_env, outside):
    import folder_paths
    import torch
    cases = [("loras", "WeakStrongReflectionLoRA", "lora_name"), ("image_reward", "ImageRewardLoader", "checkpoint"),
             ("image_reward_percentiles", "ImageRewardPercentiles", "table")]
    for folder, node, inp in cases:
        base = folder_paths.get_folder_paths(folder)[0]
        os.makedirs(base, exist_ok=True)
        name = "evil" + (".json" if folder.endswith("percentiles") else ".pt")
        link = os.path.join(base, name)
        os.symlink(outside, link)
        try:
            with pytest.raises(ValueError, match=f"{inp}: '{name}' links outside"):
                if node == "WeakStrongReflectionLoRA":
                    m = hostlib.build_model("sd15", "eps", 0)
                    hostlib.run_node(reflect_nodes[node], model=m, lora_name=name, strong_strength=1.5,
                                     weak_strength=-1.5, main_strength=0.8, positive=hostlib.conditioning(m, 1),
                                     negative=hostlib.conditioning(m, 2), cfg=5.5, weak_cfg=1.0, seed=0, steps=2,
                                     sampler_name="euler", scheduler="normal",
                                     latent_image={"samples": torch.zeros(1, 4, 8, 8)}, denoise=1.0, reflect_steps=1,
                                     inversion="published")
                elif node == "ImageRewardLoader":
                    hostlib.run_node(reflect_nodes[node], checkpoint=name, download="never")
                else:
                    hostlib.run_node(reflect_nodes[node], table=name)
        finally:
            os.remove(link)


# --------------------------------------------------------------------------- interrupts and determinism (in-process)

def _rss() -> int:
    import psutil
    return psutil.Process().memory_info().rss


def _runs(nodes, m, w):
    """One call per sampling node of the pack on tiny models (the same seed each time)."""
    import torch
    p, n = hostlib.conditioning(m, 1), hostlib.conditioning(m, 2)
    lat = {"samples": torch.rand(2, 4, 8, 8, generator=torch.Generator().manual_seed(0))}
    swg = hostlib.run_node(nodes["SlidingWindowGuidance"], model=m, scale=1.0, crop_width=5, crop_height=0,
                           crop_units="latent", crops_x=2, crops_y=0, masked=True, mask_with_cfg=False,
                           crop_conditioning="auto", start_percent=0.0, end_percent=1.0)[0]
    common = dict(seed=3, steps=4, sampler_name="euler", scheduler="normal", latent_image=lat, denoise=1.0)
    return {
        "ZigzagKSampler": lambda: hostlib.run_node(nodes["ZigzagKSampler"], model=m, cfg=4.0, positive=p, negative=n,
                                                   inversion_cfg=0.0, zigzag_steps=3, rounds=1,
                                                   inversion="published", **common)[0]["samples"],
        "WeakStrongReflection": lambda: hostlib.run_node(nodes["WeakStrongReflection"], model=m, positive=p,
                                                         negative=n, cfg=4.0, strong_cfg=4.0, weak_cfg=1.0,
                                                         reflect_steps=3, inversion="published", weak_model=w,
                                                         **common)[0]["samples"],
        "SlidingWindowGuidance": lambda: hostlib.ksampler(swg, p, n, lat, seed=3, steps=4, cfg=1.0)["samples"],
    }


def test_interrupts_leave_models_clean_and_free_memory(reflect_nodes, comfy_env):
    import random
    import comfy.model_management as mm
    import torch
    m, w = hostlib.build_model("sd15", "eps", 0), hostlib.build_model("sd15", "eps", 5)
    p, n = hostlib.conditioning(m, 1), hostlib.conditioning(m, 2)
    lat = {"samples": torch.zeros(1, 4, 8, 8)}
    before = hostlib.ksampler(m, p, n, lat, seed=9, steps=3, cfg=3.0)["samples"]
    opts_before = {k: dict(v) if isinstance(v, dict) else v for k, v in m.model_options.items()}
    rng = random.Random(0)
    rss = []
    for rnd in range(4):
        for name, fn in _runs(reflect_nodes, m, w).items():
            stop_at, calls = rng.randint(1, 6), [0]
            orig = m.model.diffusion_model.forward

            def forward(*a, **kw):
                calls[0] += 1
                if calls[0] == stop_at:
                    mm.interrupt_current_processing(True)
                return orig(*a, **kw)

            m.model.diffusion_model.forward = forward
            try:
                with pytest.raises(mm.InterruptProcessingException):
                    fn()
            finally:
                mm.interrupt_current_processing(False)
                del m.model.diffusion_model.forward
            # nothing left behind: no hooks, the model options as before, KSampler as before
            for mod in m.model.modules():
                assert not mod._forward_hooks and not mod._forward_pre_hooks, (name, mod)
            assert m.model_options.keys() == opts_before.keys(), name
            assert torch.equal(hostlib.ksampler(m, p, n, lat, seed=9, steps=3, cfg=3.0)["samples"], before), name
        import gc
        gc.collect()
        rss.append(_rss())
    # memory: after the first round (caches warm), interrupted runs do not accumulate
    assert rss[-1] - rss[0] < 64 * 2 ** 20, [r / 2 ** 20 for r in rss]


def test_same_seed_same_bits(reflect_nodes, comfy_env):
    import torch
    m, w = hostlib.build_model("sd15", "eps", 0), hostlib.build_model("sd15", "eps", 5)
    first = {k: fn() for k, fn in _runs(reflect_nodes, m, w).items()}
    for k, fn in _runs(reflect_nodes, m, w).items():
        assert torch.equal(fn(), first[k]), k


def test_batch_positions_as_comfyui_guarantees(reflect_nodes, comfy_env):
    """A sample computed alone with its batch_index equals its place in the batch exactly when KSampler's does."""
    import torch
    m = hostlib.build_model("sd15", "eps", 0)
    p, n = hostlib.conditioning(m, 1), hostlib.conditioning(m, 2)
    full = {"samples": torch.zeros(3, 4, 8, 8)}
    one = {"samples": torch.zeros(1, 4, 8, 8), "batch_index": [2]}

    def zz(lat):
        return hostlib.run_node(reflect_nodes["ZigzagKSampler"], model=m, seed=3, steps=4, cfg=4.0,
                                sampler_name="euler", scheduler="normal", positive=p, negative=n, latent_image=lat,
                                denoise=1.0, inversion_cfg=0.0, zigzag_steps=3, rounds=1,
                                inversion="published")[0]["samples"]

    ks_full = hostlib.ksampler(m, p, n, full, seed=3, steps=4, cfg=4.0)["samples"]
    ks_one = hostlib.ksampler(m, p, n, one, seed=3, steps=4, cfg=4.0)["samples"]
    z_full, z_one = zz(full), zz(one)
    assert torch.allclose(z_full[2:], z_one, rtol=1e-3, atol=1e-3)
    if torch.equal(ks_full[2:], ks_one):
        assert torch.equal(z_full[2:], z_one)
