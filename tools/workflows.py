#!/usr/bin/env python3
"""The pack's shipped workflows: UI format (what the ComfyUI canvas loads and
its Templates browser lists: ``workflows/*.json``) and API format (what
``POST /prompt`` takes: ``workflows/api/*.json``).

The UI files are the source. ``api`` regenerates every API twin from them, so
the two cannot drift (the host tests check that the twins equal the
conversion). ``build`` writes the UI files from the specifications in
``tools/workflow_specs.py`` (the papers' settings), laying out each node's
widgets in the order ComfyUI's ``/object_info`` gives. Both need the
``/object_info`` of a ComfyUI with the pack loaded: a running server
(``--server``) or a saved copy (``--object-info``).

    python tools/workflows.py build --server http://127.0.0.1:8188
    python tools/workflows.py api --server http://127.0.0.1:8188
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UI_DIR = os.path.join(REPO, "workflows")
API_DIR = os.path.join(UI_DIR, "api")
VIRTUAL = ("Note", "MarkdownNote", "Reroute", "PrimitiveNode")  # frontend-only nodes, absent from the API format
WIDGET_TYPES = ("INT", "FLOAT", "STRING", "BOOLEAN", "COMBO")


# --------------------------------------------------------------------------- /object_info helpers

def input_specs(info: dict) -> list[tuple[str, object, dict]]:
    """(name, type, options) of a node's inputs in ComfyUI's order (required, then optional)."""
    out = []
    for sec in ("required", "optional"):
        entries = info.get("input", {}).get(sec) or {}
        order = (info.get("input_order") or {}).get(sec) or list(entries)
        for name in order:
            spec = entries[name]
            out.append((name, spec[0], spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}))
    return out


def is_widget(typ, opts: dict) -> bool:
    return (isinstance(typ, list) or typ in WIDGET_TYPES) and not opts.get("forceInput")


def extra_value(typ, opts: dict):
    """The value the frontend stores after this widget's own: 'control after generate' of a seed
    ('fixed'), the upload button of an image input ('image'); None when there is none."""
    if typ == "INT" and opts.get("control_after_generate"):
        return "fixed"
    if opts.get("image_upload"):
        return "image"
    return None


def combo_options(typ, opts: dict):
    if isinstance(typ, list):
        return typ
    if typ == "COMBO":
        return list(opts.get("options", []))
    return None


# --------------------------------------------------------------------------- UI -> API

def ui_to_api(ui: dict, object_info: dict) -> dict:
    """The API-format graph of a UI-format workflow: every non-virtual, active
    node with its linked inputs ``[node_id, slot]`` and its widget values by name."""
    links = {lk[0]: lk for lk in ui.get("links", [])}
    nodes = {n["id"]: n for n in ui["nodes"]}
    api = {}
    for n in sorted(ui["nodes"], key=lambda n: n["id"]):
        if n["type"] in VIRTUAL or n.get("mode", 0) != 0:
            continue
        info = object_info.get(n["type"])
        if info is None:
            raise ValueError(f"node {n['id']}: type {n['type']!r} is not in /object_info")
        inputs = {}
        values = list(n.get("widgets_values") or [])
        linked = {i["name"]: i.get("link") for i in n.get("inputs", []) if i.get("link") is not None}
        for name, typ, opts in input_specs(info):
            if is_widget(typ, opts):
                if not values:
                    raise ValueError(f"node {n['id']} ({n['type']}): no widget value for {name!r}")
                inputs[name] = values.pop(0)
                if extra_value(typ, opts) is not None and values:
                    values.pop(0)
            if name in linked:
                lk = links[linked[name]]
                origin = nodes[lk[1]]
                if origin["type"] in VIRTUAL:
                    raise ValueError(f"node {n['id']}: input {name!r} comes from a {origin['type']} node")
                inputs[name] = [str(lk[1]), lk[2]]
        if values:
            raise ValueError(f"node {n['id']} ({n['type']}): {len(values)} widget values left over: {values}")
        api[str(n["id"])] = {"class_type": n["type"], "inputs": inputs,
                             "_meta": {"title": n.get("title") or info.get("display_name") or n["type"]}}
    return api


# --------------------------------------------------------------------------- spec -> UI

def build_ui(spec: dict, object_info: dict) -> dict:
    """A UI-format workflow from a spec: ``{"nodes": [{"id": key, "type", "pos", "inputs": {name: value or
    (key, slot)}, "title"?, "size"?, "text"? (notes)}], "extra"?: {...}}``. Widgets not given take the
    /object_info default; seed widgets get 'fixed'."""
    ids = {n["id"]: i + 1 for i, n in enumerate(spec["nodes"])}
    ui_nodes, links = [], []
    out_links: dict = {}
    for n in spec["nodes"]:
        nid = ids[n["id"]]
        base = {"id": nid, "type": n["type"], "pos": list(n.get("pos", [0, 0])), "size": list(n.get("size", [320, 160])),
                "flags": {}, "order": nid - 1, "mode": 0, "properties": {"Node name for S&R": n["type"]}}
        if n.get("title"):
            base["title"] = n["title"]
        if n["type"] in VIRTUAL:
            base.update(inputs=[], outputs=[], widgets_values=[n["text"]], properties={"text": ""})
            if n.get("color"):
                base["color"], base["bgcolor"] = n["color"], n.get("bgcolor", n["color"])
            ui_nodes.append(base)
            continue
        info = object_info[n["type"]]
        given = dict(n.get("inputs", {}))
        inputs, values = [], []
        for name, typ, opts in input_specs(info):
            v = given.pop(name, None)
            if isinstance(v, tuple):
                links.append([len(links) + 1, ids[v[0]], v[1], nid, len(inputs), None])
                out_links.setdefault((ids[v[0]], v[1]), []).append(len(links))
                inputs.append({"name": name, "type": typ if isinstance(typ, str) else "COMBO", "link": len(links)})
                if is_widget(typ, opts):
                    inputs[-1]["widget"] = {"name": name}
                    values.append(opts.get("default"))
                    if extra_value(typ, opts) is not None:
                        values.append(extra_value(typ, opts))
                continue
            if is_widget(typ, opts):
                if v is None:
                    v = opts.get("default")
                    if v is None:
                        choices = combo_options(typ, opts)
                        v = choices[0] if choices else {"INT": 0, "FLOAT": 0.0, "BOOLEAN": False, "STRING": ""}[typ]
                values.append(v)
                if extra_value(typ, opts) is not None:
                    values.append(extra_value(typ, opts))
            elif v is not None or name in (info.get("input", {}).get("required") or {}):
                raise ValueError(f"{spec.get('name')}: node {n['id']} ({n['type']}): input {name!r} needs a link")
        if given:
            raise ValueError(f"{spec.get('name')}: node {n['id']} ({n['type']}): unknown inputs {sorted(given)}")
        base["inputs"] = inputs
        base["outputs"] = [{"name": name, "type": typ, "links": [], "slot_index": i}
                           for i, (typ, name) in enumerate(zip(info["output"], info["output_name"]))]
        base["widgets_values"] = values
        ui_nodes.append(base)
    _layout(ui_nodes, links, object_info)
    by_id = {n["id"]: n for n in ui_nodes}
    for lk in links:
        origin = by_id[lk[1]]
        lk[5] = origin["outputs"][lk[2]]["type"]
        origin["outputs"][lk[2]]["links"].append(lk[0])
    return {"last_node_id": len(ui_nodes), "last_link_id": len(links), "nodes": ui_nodes, "links": links,
            "groups": [], "config": {}, "extra": dict(spec.get("extra", {})), "version": 0.4}


# The pack's display widget (js/reflect.js "reflect_info"), reserved below a node's widgets so that the
# node never grows into the one below it: (SWG window figure, text lines). Lines: the cost lines and a spare
# one for a warning; QualityGate and AdaptiveStudentTeacher also show up to 9 score lines after a run;
# SlidingWindowGuidance two cost lines per sampler it feeds.
INFO_ROWS = {"ZigzagKSampler": (False, 3), "WeakStrongReflection": (False, 3), "WeakStrongReflectionLoRA": (False, 3),
             "AdaptiveStudentTeacher": (False, 12), "QualityGate": (False, 10), "SlidingWindowGuidance": (True, None)}
INFO_WIDTH = {"SlidingWindowGuidance": 400}  # its cost lines are the longest
INFO_LINE, INFO_FIG = 14, 90                # js/reflect.js LINE and FIG + PAD
TITLE_H = 30                                # the title bar, drawn above a node's pos
H_GAP, V_GAP = 60, 40                       # free space between columns and between nodes of a column
NODES2_WIDGET_WIDTH = 440                   # Nodes 2.0 on frontend 1.27 draws a node with widgets 430 px wide


def _node_rows(n: dict, info: dict | None) -> tuple[int, int]:
    """(slot and widget rows, extra height) of a node: multiline text boxes and image previews are taller."""
    rows = max(len(n["outputs"]), sum(1 for i in n["inputs"] if "widget" not in i)) + len(n["widgets_values"])
    extra = 0
    for _name, typ, opts in input_specs(info or {}):
        if typ == "STRING" and opts.get("multiline"):
            extra += 64
        if opts.get("image_upload"):
            extra += 240
    return rows, extra


def _info_height(n: dict, fed: int) -> int:
    fig, lines = INFO_ROWS.get(n["type"], (False, 0))
    if lines is None:
        lines = 2 * max(fed, 1) + 1
    return (INFO_FIG if fig else 0) + lines * INFO_LINE + 6 if (fig or lines) else 0


def _layout(nodes: list, links: list, object_info: dict):
    """Sizes and positions such that no node covers another at its rendered size, in the classic
    LiteGraph canvas and in Nodes 2.0 (Vue nodes), both of which draw a node at least as large as its
    saved size and larger where its content needs it.

    * size: what the classic canvas needs (about 24 px per slot or widget row, text boxes, the pack's
      display widget), so that nodes open at their natural size;
    * footprint: an upper bound of the rendered size in either mode, used only to place nodes: Nodes 2.0
      draws about 32 px per row on frontend 1.41 (ComfyUI 0.17.0), and on 1.27 (ComfyUI 0.3.64) up to 40 px
      per row and every node with widgets 430 px wide, whatever its saved size;
    * the specs' positions give the arrangement: nodes sharing an x form a column, ordered by y; each
      column starts right of the widest footprint of the column before it, each node below the
      footprint of the one above it (plus its title bar)."""
    fed: dict = {}
    for lk in links:
        fed.setdefault(lk[1], set()).add(lk[3])
    foot = {}
    for n in nodes:
        if n["type"] in VIRTUAL:
            foot[n["id"]] = tuple(n["size"])
            continue
        rows, extra = _node_rows(n, object_info.get(n["type"]))
        info_h = _info_height(n, len(fed.get(n["id"], ())))
        title_w = 70 + 8 * len(n.get("title") or object_info.get(n["type"], {}).get("display_name") or n["type"])
        width = max(n["size"][0], title_w, INFO_WIDTH.get(n["type"], 0))
        n["size"] = [width, max(n["size"][1], 40 + 24 * rows + extra + info_h)]
        foot[n["id"]] = (max(width, NODES2_WIDGET_WIDTH if n["widgets_values"] else 0),
                         max(n["size"][1], 100 + 40 * rows + extra + info_h))
    column_x = None
    prev_width = 0
    columns = [sorted((n for n in nodes if n["pos"][0] == x), key=lambda n: n["pos"][1])
               for x in sorted({n["pos"][0] for n in nodes})]
    for col in columns:
        x = col[0]["pos"][0]
        column_x = x if column_x is None else max(x, column_x + prev_width + H_GAP)
        bottom = None
        for n in col:
            n["pos"][0] = column_x
            if bottom is not None and n["pos"][1] < bottom + V_GAP + TITLE_H:
                n["pos"][1] = bottom + V_GAP + TITLE_H
            bottom = n["pos"][1] + foot[n["id"]][1]
        prev_width = max(foot[n["id"]][0] for n in col)


# --------------------------------------------------------------------------- files

def load_object_info(server: str | None, path: str | None) -> dict:
    if path:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    url = (server or "http://127.0.0.1:8188").rstrip("/") + "/object_info"
    with urllib.request.urlopen(url, timeout=60) as r:
        return json.loads(r.read().decode("utf-8"))


def ui_files() -> list[str]:
    return sorted(f for f in os.listdir(UI_DIR) if f.endswith(".json"))


def dump(obj, path: str):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


def write_api(object_info: dict) -> list[str]:
    os.makedirs(API_DIR, exist_ok=True)
    written = []
    for name in ui_files():
        with open(os.path.join(UI_DIR, name), encoding="utf-8") as f:
            dump(ui_to_api(json.load(f), object_info), os.path.join(API_DIR, name))
        written.append(name)
    return written


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=["build", "api"], help="build: UI files from the specs, then their API "
                                                               "twins; api: API twins from the UI files")
    ap.add_argument("--server", help="a running ComfyUI with the pack (default http://127.0.0.1:8188)")
    ap.add_argument("--object-info", help="a saved /object_info JSON instead of a server")
    a = ap.parse_args(argv)
    oi = load_object_info(a.server, a.object_info)
    if a.command == "build":
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        from workflow_specs import SPECS
        for name, spec in SPECS.items():
            dump(build_ui({**spec, "name": name}, oi), os.path.join(UI_DIR, name + ".json"))
    for name in write_api(oi):
        print(f"workflows/api/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
