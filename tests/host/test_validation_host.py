"""Every input of every node of the pack is validated at /prompt (issue 17).

Driven by the server's own ``/object_info``: for each node the pack registers
a graph is built around it from the test node pack and ComfyUI's core nodes
(every input at its default, links from producers of the right type, an
output node downstream), and then each input in turn gets

* a value below its ``min`` / above its ``max`` (INT, FLOAT),
* a value of the wrong type (a string for an INT or FLOAT),
* a value that is not one of its options (COMBO),
* a link to an output of the wrong type (link inputs),
* nothing at all (required inputs).

Each such request must be refused by ``POST /prompt`` with HTTP 400 and a
``node_errors`` entry for that node whose errors name the input
(``extra_info.input_name``), before anything runs: nothing reaches the
queue or the history. The unmutated graph of every node is accepted.
"""

import json
import urllib.error
import urllib.request

import pytest

import hostlib
import imagereward_tiny as tiny

LORA = "validation_lora.safetensors"
TARGET = "target"

# producers of the types the pack's inputs take (node id, class, inputs); CONDITIONING is built for "m"
PRODUCERS = {
    "MODEL": ("m", "ReflectTestTinyModel", {"family": "sd15", "prediction": "eps", "seed": 0, "flow_shift": 3.0}),
    "CONDITIONING": ("c", "ReflectTestConditioning", {"model": ["m", 0], "seed": 1, "batch": 1, "tokens": 77,
                                                       "scale": 1.0, "width": 0, "height": 0}),
    "LATENT": ("l", "ReflectTestLatent", {"batch": 1, "channels": 4, "height": 8, "width": 8, "fill": "zeros", "seed": 0}),
    "IMAGE": ("i", "ReflectTestImage", {"batch": 1, "height": 64, "width": 64, "fill": "random", "seed": 0}),
    "VAE": ("v", "ReflectTestTinyVAE", {"seed": 0}),
    "CONTROL_NET": ("cn", "ReflectTestTinyControlNet", {"family": "sd15", "seed": 0}),
    "SAMPLER": ("ks", "KSamplerSelect", {"sampler_name": "euler"}),
    "SIGMAS": ("sig", "BasicScheduler", {"model": ["m", 0], "scheduler": "normal", "steps": 3, "denoise": 1.0}),
    "GUIDER": ("g", "CFGGuider", {"model": ["m", 0], "positive": ["c", 0], "negative": ["c", 0], "cfg": 2.0}),
    "NOISE": ("noise", "RandomNoise", {"noise_seed": 0}),
}


def _post(srv, graph):
    req = urllib.request.Request(srv.url + "/prompt", method="POST", headers={"Content-Type": "application/json"},
                                 data=json.dumps({"prompt": graph, "client_id": srv.client_id}).encode())
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _get(srv, path):
    with urllib.request.urlopen(srv.url + path, timeout=30) as r:
        return json.loads(r.read())


def _input_spec(spec):
    """(type, options, extra) of an /object_info input entry, both COMBO layouts."""
    kind = spec[0]
    extra = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if isinstance(kind, list):
        return "COMBO", list(kind), extra
    if kind == "COMBO":
        return "COMBO", list(extra.get("options", [])), extra
    return kind, None, extra


def _default(kind, options, extra):
    if "default" in extra:
        return extra["default"]
    if kind == "COMBO":
        return options[0] if options else None
    return {"INT": extra.get("min", 0), "FLOAT": extra.get("min", 0.0), "BOOLEAN": False,
            "STRING": "a photo of a cat"}.get(kind)


class GraphBuilder:
    """Builds a valid graph around one node from /object_info."""

    def __init__(self, info: dict, pack_nodes: list[str]):
        self.info, self.pack_nodes = info, pack_nodes

    def producer(self, graph: dict, typ: str, depth: int = 0):
        """A link [node id, slot] to an output of type ``typ`` (adding nodes to ``graph``), or None."""
        if typ in PRODUCERS:
            nid, cls, inputs = PRODUCERS[typ]
            for dep in inputs.values():
                if isinstance(dep, list):
                    self.producer(graph, next(t for t, p in PRODUCERS.items() if p[0] == dep[0]), depth)
            graph.setdefault(nid, {"class_type": cls, "inputs": dict(inputs)})
            return [nid, 0]
        if depth > 3:
            return None
        for name in self.pack_nodes:  # a pack node making this type (a loader, a table, a gate)
            outs = self.info[name]["output"]
            if typ in outs:
                nid = f"p_{name}"
                if nid not in graph:
                    inputs = self.inputs_of(graph, name, depth + 1)
                    if inputs is None:
                        continue
                    graph[nid] = {"class_type": name, "inputs": inputs}
                return [nid, outs.index(typ)]
        return None

    def inputs_of(self, graph: dict, name: str, depth: int = 0):
        """Default widget values and links for every required input of ``name``."""
        inputs = {}
        for iname, spec in self.info[name]["input"].get("required", {}).items():
            kind, options, extra = _input_spec(spec)
            if kind in ("INT", "FLOAT", "BOOLEAN", "STRING", "COMBO"):
                value = _default(kind, options, extra)
                if value is None:
                    return None
                inputs[iname] = value
            else:
                link = self.producer(graph, kind, depth)
                if link is None:
                    return None
                inputs[iname] = link
        return inputs

    def consume(self, graph: dict, src: str, name: str, depth: int = 0) -> bool:
        """Make ``src`` (a node of class ``name``) an ancestor of an output node."""
        if self.info[name].get("output_node"):
            return True
        outs = self.info[name]["output"]
        for slot, typ in enumerate(outs):
            link = [src, slot]
            if typ == "LATENT":
                graph[f"out_{src}"] = {"class_type": "ReflectTestLatentStats", "inputs": {"samples": link}}
                return True
            if typ == "IMAGE":
                graph[f"out_{src}"] = {"class_type": "PreviewImage", "inputs": {"images": link}}
                return True
            if typ in ("SAMPLER", "SIGMAS", "GUIDER"):
                args = {"noise": self.producer(graph, "NOISE"), "guider": self.producer(graph, "GUIDER"),
                        "sampler": self.producer(graph, "SAMPLER"), "sigmas": self.producer(graph, "SIGMAS"),
                        "latent_image": self.producer(graph, "LATENT")}
                args[typ.lower()] = link
                graph[f"sca_{src}"] = {"class_type": "SamplerCustomAdvanced", "inputs": args}
                graph[f"out_{src}"] = {"class_type": "ReflectTestLatentStats", "inputs": {"samples": [f"sca_{src}", 0]}}
                return True
            if typ == "MODEL":
                graph[f"ks_{src}"] = {"class_type": "KSampler", "inputs": {
                    "model": link, "seed": 0, "steps": 2, "cfg": 2.0, "sampler_name": "euler", "scheduler": "normal",
                    "positive": self.producer(graph, "CONDITIONING"), "negative": self.producer(graph, "CONDITIONING"),
                    "latent_image": self.producer(graph, "LATENT"), "denoise": 1.0}}
                graph[f"out_{src}"] = {"class_type": "ReflectTestLatentStats", "inputs": {"samples": [f"ks_{src}", 0]}}
                return True
        if depth > 2:
            return False
        for other in self.pack_nodes:  # a pack node taking this output (e.g. a GATE into QualityGateMerge)
            spec_of = self.info[other]["input"]
            for iname, spec in {**spec_of.get("required", {}), **spec_of.get("optional", {})}.items():
                if _input_spec(spec)[0] in outs and other != name:
                    nid = f"c_{other}"
                    inputs = self.inputs_of(graph, other, depth + 1)
                    if inputs is None:
                        continue
                    inputs[iname] = [src, outs.index(_input_spec(spec)[0])]
                    graph[nid] = {"class_type": other, "inputs": inputs}
                    return self.consume(graph, nid, other, depth + 1)
        return False

    def graph_for(self, name: str):
        graph = {}
        inputs = self.inputs_of(graph, name)
        if inputs is None:
            return None
        graph[TARGET] = {"class_type": name, "inputs": inputs}
        if not self.consume(graph, TARGET, name):
            return None
        return graph


@pytest.fixture(scope="module")
def server(comfy_env, tmp_path_factory):
    import safetensors.torch
    base = tmp_path_factory.mktemp("validation_server")
    (base / "models" / "loras").mkdir(parents=True)
    lora = hostlib.make_lora(hostlib.build_model("sd15", "eps", 0), rank=2, seed=1)
    safetensors.torch.save_file({k: v.contiguous() for k, v in lora.items()}, str(base / "models" / "loras" / LORA))
    tiny.write_files(base / "models" / "image_reward", seed=0, name="ImageReward.pt")
    srv = hostlib.ComfyServer(base_dir=base)
    try:
        srv.start()
        info = srv.object_info()
        srv.info = info
        srv.pack_nodes = sorted(n for n, v in info.items() if "ComfyUI-Reflect" in str(v.get("python_module", "")))
        yield srv
    finally:
        srv.cleanup()


def _mutations(spec_section: str, iname: str, spec):
    """(label, value or a callable(graph) -> value, or MISSING) for one input."""
    kind, options, extra = _input_spec(spec)
    out = []
    if spec_section == "required":
        out.append(("missing", MISSING))
    if kind in ("INT", "FLOAT"):
        step = 1 if kind == "INT" else 1.0
        if extra.get("min") is not None:
            out.append(("below_min", extra["min"] - step))
        if extra.get("max") is not None:
            out.append(("above_max", extra["max"] + step))
        out.append(("wrong_type", "not-a-number"))
    elif kind == "COMBO":
        out.append(("not_in_list", "no_such_option.xyz"))
    elif kind not in ("BOOLEAN", "STRING", "*"):
        wrong = "LATENT" if kind != "LATENT" else "MODEL"
        out.append(("wrong_link", ("link", wrong)))
    return out


MISSING = object()


def test_every_input_of_every_node_is_validated_at_prompt(server):
    assert len(server.pack_nodes) >= 10, server.pack_nodes
    builder = GraphBuilder(server.info, server.pack_nodes)
    history_before = len(_get(server, "/history"))
    failures, checked, unbuildable = [], 0, []
    for name in server.pack_nodes:
        base = builder.graph_for(name)
        if base is None:
            unbuildable.append(name)
            continue
        code, body = _post(server, base)
        assert code == 200, f"{name}: the graph with every input at its default is refused: {body}"
        server.wait_for_prompt(body["prompt_id"], timeout=300)
        history_before = len(_get(server, "/history"))
        for section in ("required", "optional"):
            for iname, spec in server.info[name]["input"].get(section, {}).items():
                for label, value in _mutations(section, iname, spec):
                    graph = json.loads(json.dumps(base))
                    if value is MISSING:
                        graph[TARGET]["inputs"].pop(iname, None)
                    elif isinstance(value, tuple) and value[0] == "link":
                        graph[TARGET]["inputs"][iname] = builder.producer(graph, value[1])
                    else:
                        graph[TARGET]["inputs"][iname] = value
                    checked += 1
                    code, body = _post(server, graph)
                    errs = (body.get("node_errors") or {}).get(TARGET, {}).get("errors", [])
                    named = [e for e in errs if (e.get("extra_info") or {}).get("input_name") == iname]
                    if code != 400 or not named:
                        failures.append(f"{name}.{iname} [{label}={value if value is not MISSING else '-'}]: "
                                        f"HTTP {code}, errors {[(e.get('type'), e.get('details')) for e in errs]}")
                        if code == 200:
                            server.wait_for_prompt(body["prompt_id"], timeout=300)
                            history_before = len(_get(server, "/history"))
    assert not unbuildable, f"no valid graph could be built around: {unbuildable}"
    assert checked > 100, checked
    assert not failures, f"{len(failures)} of {checked} bad inputs not refused at /prompt naming the input:\n" + \
        "\n".join(failures)
    # nothing refused ran: the history holds only the accepted default graphs
    assert len(_get(server, "/history")) == history_before
    queue = _get(server, "/queue")
    assert not queue["queue_running"] and not queue["queue_pending"]
