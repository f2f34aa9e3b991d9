"""The pack in a real ComfyUI server: ``python main.py --cpu`` with the pack
and the test node pack in an isolated base directory's custom_nodes.

* every node the pack declares (read from the pack, not hard-coded) is in
  /object_info with every input of its schema;
* an API-format graph (tiny model -> random conditionings -> EmptyLatentImage
  -> ZigzagKSampler -> SaveLatent + latent stats) runs through /prompt and
  produces its outputs.
"""

import pytest

import hostlib


def test_object_info_has_every_pack_node(comfy_server, reflect_pack):
    info = comfy_server.object_info()
    declared = hostlib.discover_node_classes(reflect_pack)
    assert declared, "the pack declares no nodes"
    missing = sorted(set(declared) - set(info))
    assert not missing, f"pack nodes not registered by the server: {missing}\n{comfy_server.log_text(80)}"
    for node_id, cls in declared.items():
        entry = info[node_id]
        assert entry["python_module"] == f"custom_nodes.{hostlib.PACK_DIRNAME}", entry["python_module"]
        want = hostlib.node_input_names(cls)
        for sec in ("required", "optional"):
            got = set((entry["input"].get(sec) or {}).keys())
            lost = [n for n in want[sec] if n not in got]
            assert not lost, f"{node_id}: {sec} inputs missing from /object_info: {lost}"
        # the server's input order is the schema's
        order = entry.get("input_order", {}).get("required")
        if order is not None:
            assert order == want["required"], (node_id, order, want["required"])
        # a sane output description
        assert len(entry["output"]) == len(entry["output_name"])


def test_testnodes_registered(comfy_server):
    info = comfy_server.object_info()
    for node_id in ("ReflectTestTinyModel", "ReflectTestConditioning", "ReflectTestLatentStats"):
        assert node_id in info, node_id


def zigzag_graph(info, family="sd15", prediction="eps", steps=4, size=64, sampler_overrides=None):
    """API-format graph: tiny model -> 2 conditionings -> EmptyLatentImage(size x size px)
    -> ZigzagKSampler -> SaveLatent + ReflectTestLatentStats. Widget inputs of the
    sampler come from its /object_info schema defaults, then the overrides."""
    g = {
        "1": hostlib.api_node(info["ReflectTestTinyModel"], "ReflectTestTinyModel",
                              {"family": family, "prediction": prediction, "seed": 0}),
        "2": hostlib.api_node(info["ReflectTestConditioning"], "ReflectTestConditioning",
                              {"model": ["1", 0], "seed": 1, "width": size, "height": size}),
        "3": hostlib.api_node(info["ReflectTestConditioning"], "ReflectTestConditioning",
                              {"model": ["1", 0], "seed": 2, "width": size, "height": size}),
        "4": hostlib.api_node(info["EmptyLatentImage"], "EmptyLatentImage",
                              {"width": size, "height": size, "batch_size": 1}),
    }
    ov = {"model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0], "latent_image": ["4", 0],
          "seed": 0, "steps": steps, "cfg": 4.0}
    z = info["ZigzagKSampler"]
    names = set(z["input"]["required"]) | set(z["input"].get("optional") or {})
    if "zigzag_steps" in names:
        ov["zigzag_steps"] = steps - 1
    if "sampler_name" in names:
        ov["sampler_name"] = "ddim" if "ddim" in (hostlib.combo_options(z, "sampler_name") or []) else "euler"
    ov.update(sampler_overrides or {})
    g["5"] = hostlib.api_node(z, "ZigzagKSampler", ov)
    g["6"] = hostlib.api_node(info["SaveLatent"], "SaveLatent",
                              {"samples": ["5", 0], "filename_prefix": "reflect_host/zigzag"})
    g["7"] = {"class_type": "ReflectTestLatentStats", "inputs": {"samples": ["5", 0]}}
    return g


@pytest.mark.parametrize("family,prediction", [("sd15", "eps"), ("sdxl", "v_prediction"), ("sd15", "flow")])
def test_zigzag_prompt_runs(comfy_server, family, prediction):
    info = comfy_server.object_info()
    if "ZigzagKSampler" not in info:
        pytest.fail("ZigzagKSampler is not registered by the server")
    graph = zigzag_graph(info, family, prediction)
    entry = comfy_server.run_prompt(graph, timeout=300)
    outputs = entry["outputs"]
    # SaveLatent wrote its file into the server's output dir
    saved = outputs["6"]["latents"]
    assert len(saved) == 1
    f = comfy_server.output_dir / saved[0]["subfolder"] / saved[0]["filename"]
    assert f.is_file() and f.stat().st_size > 0, f
    stats = outputs["7"]["reflect_latent_stats"][0]
    assert stats["shape"] == [1, 4, 8, 8]
    assert stats["finite"], stats
    assert stats["std"] > 1e-3, stats


def test_invalid_zigzag_prompt_is_rejected(comfy_server):
    """ComfyUI's validation runs the node's validate_inputs: lambda >= steps is refused before execution."""
    info = comfy_server.object_info()
    z = info.get("ZigzagKSampler")
    if z is None or "zigzag_steps" not in z["input"]["required"]:
        pytest.skip("ZigzagKSampler has no zigzag_steps input")
    graph = zigzag_graph(info, sampler_overrides={"steps": 3, "zigzag_steps": 3})
    with pytest.raises(hostlib.ServerError, match="zigzag_steps"):
        comfy_server.queue_prompt(graph)
