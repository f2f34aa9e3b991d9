"""The shipped workflows against a real ComfyUI with the pack loaded.

* Every UI workflow (``workflows/*.json``) is checked against the server's
  /object_info: node types exist, links join matching types, required inputs
  are connected, widget values are valid for their inputs (combo choices aside
  from model file names), and its API twin (``workflows/api``) is exactly the
  conversion of the UI file (``tools/workflows.py``), so the two describe the
  same graph. The server's own validation of each API twin fails only on the
  model files this machine does not have.
* Every API workflow runs end to end with the model loaders pointed at tiny
  models (ComfyUI's own SD1.5 / SDXL UNet, Flux and Wan 2.1 transformers, VAE and ControlNet classes at reduced
  size, seeded, through the test node pack; text encoders replaced by seeded
  conditionings; LoRA, ImageReward and image files written into the server's
  folders), at 64 px; the outputs exist and are finite."""

import importlib.util
import json
import math
import zlib

import pytest

import hostlib
import estimators_tiny
import imagereward_tiny as tiny

WF_DIR = hostlib.REPO_ROOT / "workflows"
UI_FILES = sorted(p.name for p in WF_DIR.glob("*.json"))
FILE_INPUTS = {"ckpt_name", "lora_name", "unet_name", "control_net_name", "image", "vae_name", "clip_name",
               "clip_name1", "clip_name2"}


def _tool():
    spec = importlib.util.spec_from_file_location("reflect_workflows_tool", hostlib.REPO_ROOT / "tools" / "workflows.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


wf = _tool()


@pytest.fixture(scope="module")
def info(comfy_server):
    return comfy_server.object_info()


def test_every_paper_setup_ships_in_both_formats():
    assert len(UI_FILES) >= 10
    assert sorted(p.name for p in (WF_DIR / "api").glob("*.json")) == UI_FILES


def _check_widget(node, name, typ, opts, value):
    where = f"node {node['id']} ({node['type']}) {name}"
    choices = wf.combo_options(typ, opts)
    if choices is not None:
        if name not in FILE_INPUTS:
            assert value in choices, f"{where}: {value!r} not in {choices[:8]}..."
    elif typ == "INT":
        assert isinstance(value, int) and not isinstance(value, bool), where
        assert opts.get("min", -math.inf) <= value <= opts.get("max", math.inf), f"{where}: {value} out of range"
    elif typ == "FLOAT":
        assert isinstance(value, (int, float)) and not isinstance(value, bool), where
        assert opts.get("min", -math.inf) <= value <= opts.get("max", math.inf), f"{where}: {value} out of range"
    elif typ == "BOOLEAN":
        assert isinstance(value, bool), where
    elif typ == "STRING":
        assert isinstance(value, str), where


@pytest.mark.parametrize("name", UI_FILES)
def test_ui_workflow_is_valid_for_the_server(info, name):
    ui = json.loads((WF_DIR / name).read_text())
    nodes = {n["id"]: n for n in ui["nodes"]}
    assert any(n["type"] == "Note" and "20" in n["widgets_values"][0] for n in ui["nodes"]), "a note citing the paper"
    for lk in ui["links"]:
        link_id, src, src_slot, dst, dst_slot, typ = lk
        out_t = nodes[src]["outputs"][src_slot]["type"]
        in_t = nodes[dst]["inputs"][dst_slot]["type"]
        assert link_id in nodes[src]["outputs"][src_slot]["links"] and nodes[dst]["inputs"][dst_slot]["link"] == link_id
        assert typ == out_t and (out_t == in_t or "*" in (out_t, in_t)), f"link {link_id}: {out_t} -> {in_t}"
        # and the server agrees on the types
        assert info[nodes[src]["type"]]["output"][src_slot] == out_t
        spec_t = wf.input_specs(info[nodes[dst]["type"]])
        assert {n: t for n, t, _ in spec_t}[nodes[dst]["inputs"][dst_slot]["name"]] == in_t
    for n in ui["nodes"]:
        if n["type"] in wf.VIRTUAL:
            continue
        assert n["type"] in info, f"node type {n['type']} is not registered"
        linked = {i["name"] for i in n["inputs"] if i.get("link") is not None}
        values = list(n["widgets_values"])
        for iname, typ, opts in wf.input_specs(info[n["type"]]):
            if wf.is_widget(typ, opts):
                _check_widget(n, iname, typ, opts, values.pop(0))
                if wf.extra_value(typ, opts) is not None:
                    assert values.pop(0) in ("fixed", "increment", "decrement", "randomize", "image")
            elif iname in (info[n["type"]]["input"].get("required") or {}):
                assert iname in linked, f"node {n['id']} ({n['type']}): required input {iname} not connected"
        assert not values, f"node {n['id']} ({n['type']}): extra widget values {values}"
    def graph(api):  # _meta titles fall back to display names, which differ between ComfyUI versions
        return {k: {kk: vv for kk, vv in n.items() if kk != "_meta"} for k, n in api.items()}
    twin, converted = json.loads((WF_DIR / "api" / name).read_text()), wf.ui_to_api(ui, info)
    assert graph(twin) == graph(converted), "API twin differs"
    if hostlib.comfyui_version().startswith("0.17"):  # the version the twins are generated with
        assert twin == converted, "API twin differs (titles)"


@pytest.mark.parametrize("name", UI_FILES)
def test_server_rejects_api_twin_only_for_missing_model_files(comfy_server, name):
    import urllib.error
    api = json.loads((WF_DIR / "api" / name).read_text())
    try:
        comfy_server.request("POST", "/prompt", {"prompt": api, "client_id": comfy_server.client_id})
        pytest.fail(f"{name} was queued: every workflow names model files this machine lacks")
    except urllib.error.HTTPError as e:
        assert e.code == 400
        body = json.loads(e.read())
    errors = body.get("node_errors") or {}
    assert errors, body
    for nid, e in errors.items():
        for err in e["errors"]:
            inp = (err.get("extra_info") or {}).get("input_name")
            # a file ComfyUI lists (value_not_in_list) or LoadImage's own file check
            assert err["type"] in ("value_not_in_list", "custom_validation_failed") and inp in FILE_INPUTS, \
                (name, nid, err)


# --------------------------------------------------------------------------- end to end on tiny models

def _family(filename: str) -> str:
    name = filename.lower()
    sdxl = "xl" in name or "ssd-1b" in name  # SSD-1B: distilled SDXL, SDXL's latent format
    return "flux" if "flux" in name else "wan21" if "wan" in name else "sdxl" if sdxl else "sd15"


def tiny_graph(api: dict) -> dict:
    """The API graph with ComfyUI's loaders and text encoders swapped for the
    test node pack's tiny models, at 64 px, and a latent-stats node after every
    sampler."""
    g = json.loads(json.dumps(api))
    sizes = [n["inputs"]["width"] for n in g.values() if n["class_type"] == "EmptyLatentImage"]
    shrink = 64 / sizes[0] if sizes else 1.0
    fam = {}
    for nid, n in list(g.items()):
        ct, inp = n["class_type"], n["inputs"]
        if ct in ("CheckpointLoaderSimple", "UNETLoader"):
            fam[nid] = _family(inp.get("ckpt_name") or inp.get("unet_name"))
            g[nid] = {"class_type": "ReflectTestTinyModel",
                      "inputs": {"family": fam[nid], "prediction": "eps", "seed": int(nid), "flow_shift": 3.0}}
            g[nid + "0"] = {"class_type": "ReflectTestTinyVAE", "inputs": {"seed": 0}}
    # separate text encoders and VAE files (Flux, Wan): the conditionings come from the model, the VAE is tiny
    clip_src = {nid: next(iter(fam)) for nid, n in g.items() if n["class_type"] in ("CLIPLoader", "DualCLIPLoader")}
    for nid in clip_src:
        del g[nid]
    for nid, n in list(g.items()):
        if n["class_type"] == "VAELoader":
            vae_fam = next(iter(fam.values()))
            g[nid] = {"class_type": "ReflectTestTinyVAE",
                      "inputs": {"seed": 0, "family": vae_fam if vae_fam in ("flux", "wan21") else "sd15"}}
    for nid, n in list(g.items()):
        ct, inp = n["class_type"], n["inputs"]
        for k, v in inp.items():
            if isinstance(v, list) and v[0] in fam and v[1] == 2:
                inp[k] = [v[0] + "0", 0]
        if ct in ("CLIPTextEncode", "CLIPTextEncodeSDXLRefiner"):
            src = clip_src.get(inp["clip"][0], inp["clip"][0])
            size = 64 if fam[src] == "sdxl" else 0
            g[nid] = {"class_type": "ReflectTestConditioning",
                      "inputs": {"model": [src, 0], "seed": zlib.crc32(inp["text"].encode()) % 1000, "batch": 1,
                                 "tokens": 77, "scale": 1.0, "width": size, "height": size}}
        elif ct in ("EmptyLatentImage", "EmptySD3LatentImage"):
            inp.update(width=64, height=64)
        elif ct == "EmptyHunyuanLatentVideo":
            inp.update(width=64, height=64, length=5)  # 2 latent frames
        elif ct == "SlidingWindowGuidance" and inp.get("crop_units") == "pixels":
            inp["crop_width"] = max(8, round(inp["crop_width"] * shrink))  # the same share of the smaller image
        elif ct == "ControlNetLoader":
            g[nid] = {"class_type": "ReflectTestTinyControlNet", "inputs": {"family": next(iter(fam.values())), "seed": 0}}
        elif ct in ("KSampler", "ZigzagKSampler", "WeakStrongReflection", "WeakStrongReflectionLoRA"):
            g[nid + "9"] = {"class_type": "ReflectTestLatentStats", "inputs": {"samples": [nid, 0]}}
        elif ct == "AdaptiveStudentTeacher":
            g[nid + "9"] = {"class_type": "ReflectTestLatentStats", "inputs": {"samples": [nid, 1]}}
    return g


def fill_prompts(api: dict) -> dict:
    """The calibration workflows' {prompt} placeholder filled in (what tools/calibrate.py does per prompt)."""
    for n in api.values():
        for k, v in n["inputs"].items():
            if isinstance(v, str) and "{prompt}" in v:
                n["inputs"][k] = v.replace("{prompt}", "a red fox")
    return api


@pytest.fixture(scope="module")
def server_files(comfy_server):
    return write_server_files(comfy_server.base_dir)


def write_server_files(base):
    """LoRAs, quality-model files and input images the workflows name, written for the tiny models."""
    import safetensors.torch
    import torch
    from PIL import Image
    loras = base / "models" / "loras"
    loras.mkdir(parents=True, exist_ok=True)
    names = set()
    for p in (WF_DIR / "api").glob("*.json"):
        for n in json.loads(p.read_text()).values():
            if "lora_name" in n["inputs"]:
                names.add(n["inputs"]["lora_name"])
    for name in names:
        lora = hostlib.make_lora(hostlib.build_model(_family(name), "eps", 0), rank=2, seed=1)
        safetensors.torch.save_file({k: v.contiguous() for k, v in lora.items()}, str(loras / name))
    tiny.write_files(base / "models" / "image_reward", seed=0, name="ImageReward.pt")
    estimators_tiny.write_files(base / "models", seed=0)  # PickScore and HPSv2.1, for the workflows that load them
    (base / "input").mkdir(exist_ok=True)
    g = torch.Generator().manual_seed(0)
    img = (torch.rand(64, 64, 3, generator=g) * 255).to(torch.uint8).numpy()
    Image.fromarray(img).save(base / "input" / "example.png")
    return base


@pytest.mark.parametrize("name", UI_FILES)
def test_api_workflow_runs_on_tiny_models(comfy_server, server_files, name):
    g = tiny_graph(fill_prompts(json.loads((WF_DIR / "api" / name).read_text())))
    entry = comfy_server.run_prompt(g, timeout=900)
    outs = entry["outputs"]
    saved = [img for nid, o in outs.items() for img in o.get("images", []) if g[nid]["class_type"] == "SaveImage"]
    n_save = sum(1 for n in g.values() if n["class_type"] == "SaveImage")
    assert len({nid for nid, o in outs.items() if g[nid]["class_type"] == "SaveImage" and o.get("images")}) == n_save
    for img in saved:
        assert (comfy_server.output_dir / img.get("subfolder", "") / img["filename"]).is_file()
    stats = [s for nid, o in outs.items() for s in o.get("reflect_latent_stats", [])]
    assert len(stats) == sum(1 for n in g.values() if n["class_type"] == "ReflectTestLatentStats")
    for s in stats:
        assert s["finite"], (name, s)
    for nid, o in outs.items():
        if "reflect_scores" in o:
            assert all(math.isfinite(x) for x in o["reflect_scores"]), (name, nid, o)
