"""The frontend extension (js/) against the real host.

* Parity: the costs js/cost.js and js/swg.js show (run with Node) equal the
  batch items counted through the UNet of real runs of ZigzagKSampler,
  WeakStrongReflection and a KSampler on a SlidingWindowGuidance-patched model
  (tiny models, in-process); the SWG crop layout equals the patch's own; the
  adaptive node's teacher steps equal its rollback plan. Needs `node`.
* End to end: a real ComfyUI server with the pack serves the official
  frontend; headless Chromium (Debian's `chromium`, driven by Python
  `playwright` with executable_path, nothing downloaded) loads shipped
  workflows, changes widgets and checks the cost text on the nodes, queues the
  graphs on tiny models through the frontend's own api and checks the outputs
  and the scores drawn on QualityGate; screenshots go to pytest's tmp dir (and
  to $REFLECT_E2E_SHOTS when set).

Skipped with the reason when ComfyUI (COMFYUI_PATH), node, chromium or
playwright is absent. Run:

    COMFYUI_PATH=/path/to/ComfyUI python -m pytest tests/host/test_frontend_e2e.py -rs
"""

import json
import math
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import hostlib
from test_workflows_host import server_files, tiny_graph  # noqa: F401  (server_files is a fixture)

JS_DIR = hostlib.REPO_ROOT / "js"
WF_DIR = hostlib.REPO_ROOT / "workflows"
NODE = shutil.which("node")
CHROMIUM = os.environ.get("REFLECT_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]

needs_node = pytest.mark.skipif(NODE is None, reason="node (Node.js) is not installed: the js/ modules cannot run")


# --------------------------------------------------------------------------- the js/ modules, run by Node

_RUNNER = """
import { readFileSync } from "node:fs";
const mods = {
  cost: await import(%(cost)s),
  swg: await import(%(swg)s),
};
const calls = JSON.parse(readFileSync(0, "utf8"));
const out = calls.map(([mod, fn, ...args]) => {
  try { return { ok: mods[mod][fn](...args) }; } catch (e) { return { error: String(e.message ?? e) }; }
});
process.stdout.write(JSON.stringify(out));
"""


def run_js(calls: list) -> list:
    """[(module, function, *args)] -> their results (JSON round trip), in one Node process."""
    src = _RUNNER % {"cost": json.dumps((JS_DIR / "cost.js").as_uri()), "swg": json.dumps((JS_DIR / "swg.js").as_uri())}
    p = subprocess.run([NODE, "--input-type=module", "-e", src], input=json.dumps(calls), capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    for c, r in zip(calls, res):
        assert "error" not in r, (c, r)
    return [r["ok"] for r in res]


class CountItems:
    """Batch items through the UNet (crops are items too), restored on exit."""

    def __init__(self, model):
        self.unet = model.model.diffusion_model
        self.items = 0

    def __enter__(self):
        orig = self.unet.forward

        def forward(x, *a, **k):
            self.items += x.shape[0]
            return orig(x, *a, **k)
        self.unet.forward = forward
        return self

    def __exit__(self, *exc):
        del self.unet.forward


@pytest.fixture(scope="module")
def sd15(tiny_model):
    model = tiny_model("sd15", "eps", seed=3)
    return model, hostlib.conditioning(model, seed=1), hostlib.conditioning(model, seed=2)


ZIGZAG = dict(steps=4, cfg=5.5, inversion_cfg=0.0, zigzag_steps=3, rounds=1, inversion="published",
              sampler_name="ddim", scheduler="ddim_reference", denoise=1.0)
# (settings, also count the plain sampler): multi-evaluation samplers are checked at lambda 0 too
ZIGZAG_CASES = [
    ({}, True),
    ({"cfg": 0.0}, False),  # the zigs at cfg 0 evaluate both branches (ComfyUI's sampling function)
    ({"cfg": 1.0}, False),
    ({"cfg": 1.0, "inversion_cfg": 3.0, "inversion": "paper"}, False),
    ({"inversion_cfg": 2.0, "rounds": 2, "zigzag_steps": 2}, False),
    ({"cfg": 4.0, "sampler_name": "heun", "scheduler": "normal"}, True),
    ({"sampler_name": "heunpp2", "scheduler": "karras", "zigzag_steps": 2}, True),
    ({"cfg": 1.0, "sampler_name": "euler_cfg_pp", "scheduler": "normal"}, True),
    ({"sampler_name": "seeds_3", "zigzag_steps": 2}, True),
    ({"sampler_name": "dpmpp_2s_ancestral", "scheduler": "normal", "zigzag_steps": 2}, False),
    ({"sampler_name": "sa_solver_pece", "scheduler": "normal", "zigzag_steps": 0}, True),  # refused reflecting
    ({"sampler_name": "uni_pc", "scheduler": "simple", "zigzag_steps": 0}, False),
    ({"sampler_name": "euler", "scheduler": "normal", "denoise": 0.6, "zigzag_steps": 2}, False),
]


@needs_node
def test_zigzag_cost_matches_counted_batch_items(reflect_nodes, sd15):
    model, pos, neg = sd15
    latent = hostlib.empty_latent(batch=1, height=8, width=8)
    settings = [({**ZIGZAG, **c}, plain) for c, plain in ZIGZAG_CASES]
    shown = run_js([("cost", "zigzagCost", s) for s, _ in settings])
    for (s, plain), c in zip(settings, shown):
        with CountItems(model) as n:
            hostlib.run_node(reflect_nodes["ZigzagKSampler"], model=model, seed=0, positive=pos, negative=neg,
                             latent_image=latent, **s)
        assert c["total"] == n.items, (s["sampler_name"], s["scheduler"], c, n.items)
        if plain:  # lambda 0 is exactly the base sampler: the KSampler the factor compares with
            with CountItems(model) as k:
                hostlib.run_node(reflect_nodes["ZigzagKSampler"], model=model, seed=0, positive=pos, negative=neg,
                                 latent_image=latent, **{**s, "zigzag_steps": 0})
            assert c["plain"] == k.items, (s, c, k.items)


W2SD = dict(steps=4, cfg=5.5, strong_cfg=5.5, weak_cfg=1.0, reflect_steps=-1, sampler_name="ddim",
            scheduler="ddim_reference", denoise=1.0, inversion="published")
W2SD_CASES = [
    {},
    {"cfg": 1.0, "strong_cfg": 5.5, "weak_cfg": 0.0, "reflect_steps": 2, "sampler_name": "euler", "scheduler": "normal"},
    {"weak_cfg": 5.5, "strong_cfg": 1.0, "sampler_name": "heun", "scheduler": "normal"},
    {"reflect_steps": 0},
    {"reflect_steps": 0, "cfg": 1.0, "sampler_name": "euler_cfg_pp", "scheduler": "normal"},
    {"cfg": 1.0, "strong_cfg": 1.0, "weak_cfg": 0.0, "sampler_name": "euler_cfg_pp", "scheduler": "normal"},
    {"strong_cfg": 0.0, "weak_cfg": 0.0},
    {"cfg": 0.0, "weak_cfg": 0.0, "reflect_steps": 2},
]


@needs_node
def test_w2sd_cost_matches_counted_batch_items(reflect_nodes, sd15):
    model, pos, neg = sd15
    latent = hostlib.empty_latent(batch=1, height=8, width=8)
    settings = [{**W2SD, **c} for c in W2SD_CASES]
    shown = run_js([("cost", "w2sdCost", s) for s in settings])
    for s, c in zip(settings, shown):
        with CountItems(model) as n:
            hostlib.run_node(reflect_nodes["WeakStrongReflection"], model=model, positive=pos, negative=neg, seed=0,
                             latent_image=latent, **s)
        assert c["total"] == n.items, (s["sampler_name"], s["scheduler"], c, n.items)


SWG = dict(scale=1.0, crop_width=5, crop_height=0, crop_units="latent", crops_x=2, crops_y=0, masked=False,
           mask_with_cfg=False, crop_conditioning="auto", start_percent=0.0, end_percent=1.0)
SWG_CASES = [
    ({}, {"cfg": 1.0}),
    ({"masked": True}, {"cfg": 5.0}),
    ({"crop_conditioning": "unconditional"}, {"cfg": 1.0}),
    ({"scale": 0.0}, {"cfg": 5.0}),
    ({"crop_units": "pixels", "crop_width": 44, "crops_x": 3, "crops_y": 2}, {"cfg": 1.0, "sampler_name": "heun"}),
    ({}, {"cfg": 1.0, "sampler_name": "euler_cfg_pp"}),
]


@needs_node
def test_swg_cost_matches_counted_batch_items(reflect_nodes, sd15):
    model, pos, neg = sd15
    latent = hostlib.empty_latent(batch=1, height=8, width=8)
    calls = []
    runs = []
    for v, k in SWG_CASES:
        v = {**SWG, **v}
        k = {"steps": 3, "sampler_name": "euler", "scheduler": "normal", "denoise": 1.0, **k}
        runs.append((v, k))
        calls.append(("swg", "swgLayout", v, {"width": 8, "height": 8}))
    layouts = run_js(calls)
    costs = run_js([("swg", "swgCost", v, lay, k) for (v, k), lay in zip(runs, layouts)])
    for (v, k), c in zip(runs, costs):
        patched = hostlib.run_node(reflect_nodes["SlidingWindowGuidance"], model=model, **v)[0]
        with CountItems(model) as n:
            hostlib.ksampler(patched, pos, neg, latent, seed=0, **k)
        assert c["total"] == n.items, (v, k, c, n.items)
        with CountItems(model) as p:
            hostlib.ksampler(model, pos, neg, latent, seed=0, **k)
        assert c["plain"] == p.items, (v, k, c, p.items)


SWG_LAYOUTS = [
    ({"crop_width": 40, "crops_x": 2}, (64, 64)),
    ({"crop_width": 320, "crop_units": "pixels"}, (64, 64)),
    ({"crop_width": 20, "crop_height": 12, "crop_units": "pixels", "crops_y": 3}, (64, 64)),  # halves round to even
    ({"crop_width": 3, "crops_x": 4}, (10, 10)),
    ({"crop_width": 7, "crop_height": 5, "crops_x": 3, "crops_y": 2}, (9, 13)),
    ({"crop_width": 2, "crops_x": 3}, (5, 5)),
    ({"crop_width": 80}, (64, 64)),  # larger than the latent: refused
    ({"crop_width": 64, "crops_x": 2}, (64, 64)),  # the full size twice: refused
    ({"crop_width": 40, "crop_height": 70}, (64, 96)),
]


@needs_node
def test_swg_layout_is_the_patch_layout(reflect_nodes, tiny_model):
    """The windows and masked area drawn on the node are the ones the patch uses."""
    model = tiny_model("sd15", "eps", seed=3)
    shown = run_js([("swg", "swgLayout", {**SWG, **v}, {"height": h, "width": w}) for v, (h, w) in SWG_LAYOUTS])
    swg_mod = sys.modules[reflect_nodes["SlidingWindowGuidance"].__module__]
    for (v, (h, w)), js in zip(SWG_LAYOUTS, shown):
        patched = hostlib.run_node(reflect_nodes["SlidingWindowGuidance"], model=model, **{**SWG, **v})[0]
        patch = next(f for f in patched.model_options["sampler_post_cfg_function"] if isinstance(f, swg_mod.SWGPatch))
        try:
            wins = patch.layout(h, w)
        except ValueError as e:
            assert js.get("error"), (v, h, w, str(e), js)
            continue
        assert not js.get("error"), (v, h, w, js)
        assert [list(x) for x in wins] == js["windows"], (v, h, w)
        masked = int((swg_mod.swg.overlap(h, w, wins) > 1).sum())
        assert masked == js["masked"], (v, h, w)
        assert int((swg_mod.swg.overlap(h, w, wins) == 0).sum()) == js["uncovered"], (v, h, w)


@needs_node
def test_adaptive_teacher_steps_are_the_rollback_plan(reflect_nodes):
    ad = sys.modules[reflect_nodes["AdaptiveStudentTeacher"].__module__]
    grid = [(t, s, sched) for t in (1, 2, 4, 12, 25) for s in (0.05, 0.1, 0.3, 1 / 3, 0.5, 0.7, 0.9, 0.99, 1.0)
            for sched in ("reference", "comfy")]
    shown = run_js([("cost", "teacherSteps", {"teacher_steps": t, "sigma": s, "rollback_schedule": sched})
                    for t, s, sched in grid])
    for (t, s, sched), js in zip(grid, shown):
        assert js == ad.rollback_plan(t, s, sched)[0], (t, s, sched)


# --------------------------------------------------------------------------- end to end in Chromium

def _playwright():
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        return None
    return sync_playwright


@pytest.fixture(scope="module")
def frontend(request):
    """A headless Chromium page on the server's frontend, the app ready."""
    if CHROMIUM is None:
        pytest.skip("chromium is not installed (Debian: apt-get install chromium; or set REFLECT_CHROMIUM)")
    sync_playwright = _playwright()
    if sync_playwright is None:
        pytest.skip("Python playwright is not installed (pip install playwright; its browsers are not needed)")
    comfy_server = request.getfixturevalue("comfy_server")
    try:
        comfy_server.post_json("/settings/Comfy.TutorialCompleted", True)  # no welcome dialog over the canvas
    except Exception:
        pass
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        errors = []
        page.on("pageerror", lambda e: errors.append(f"{e}\n{getattr(e, 'stack', '') or ''}"))
        page.goto(comfy_server.url)
        page.wait_for_function("() => window.app?.graph && window.comfyAPI?.api?.api && "
                               "window.LiteGraph?.registered_node_types?.ZigzagKSampler", timeout=120_000)
        # errors while the app starts: the frontend's own are not ours to fix (frontend 1.27, which ComfyUI
        # 0.3.64 pins, throws one in its settings setup); none may come from an extension's module
        page.startup_errors = list(errors)
        assert not [e for e in page.startup_errors if "/extensions/" in e], page.startup_errors
        errors.clear()
        page.reflect_errors = errors  # from here on, any page error fails the test
        page.reflect_server = comfy_server
        page.reflect_vue = False
        yield page
        browser.close()


VUE_SETTING = "Comfy.VueNodes.Enabled"  # "Nodes 2.0" in the settings dialog (experimental in frontend 1.27)


def set_vue_nodes(page, on: bool):
    """Switch the canvas between classic LiteGraph nodes and Nodes 2.0 (Vue nodes): the user setting,
    then the app reloaded as a user's browser would start with it."""
    if page.reflect_vue == on:
        return
    page.reflect_server.post_json(f"/settings/{VUE_SETTING}", on)
    seen = len(page.reflect_errors)
    page.reload()
    page.wait_for_function("() => window.app?.graph && window.comfyAPI?.api?.api && "
                           "window.LiteGraph?.registered_node_types?.ZigzagKSampler", timeout=120_000)
    # the app started again: its startup errors are judged as the fixture judges them (none from an extension)
    restarted = page.reflect_errors[seen:]
    del page.reflect_errors[seen:]
    assert not [e for e in restarted if "/extensions/" in e], restarted
    assert all(e in page.startup_errors for e in restarted), (restarted, page.startup_errors)
    assert page.evaluate("() => Boolean(window.LiteGraph.vueNodesMode)") == on
    page.reflect_vue = on


def bounds(page) -> dict:
    """The rendered rectangle of every node, title bar included, in canvas units: LiteGraph's
    getBounding(); with Nodes 2.0 also each node's DOM element, converted from screen pixels."""
    return page.evaluate("""() => {
        const ds = app.canvas.ds;
        const out = {};
        for (const n of app.graph._nodes) {
            const r = { type: n.type, title: n.title, box: Array.from(n.getBounding()) };
            const el = document.querySelector(`[data-node-id="${n.id}"]`);
            if (el) {
                const c = app.canvas.canvas.getBoundingClientRect();
                const d = el.getBoundingClientRect();
                r.dom = [(d.x - c.x) / ds.scale - ds.offset[0], (d.y - c.y) / ds.scale - ds.offset[1],
                         d.width / ds.scale, d.height / ds.scale];
            }
            out[n.id] = r;
        }
        return out;
    }""")


def covered(boxes: dict, key: str = "box") -> list:
    """Pairs of nodes whose rectangles intersect (touching edges do not)."""
    items = [(i, b[key]) for i, b in boxes.items() if b.get(key)]
    out = []
    for k, (i, a) in enumerate(items):
        for j, b in items[k + 1:]:
            if a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]:
                out.append((f"{boxes[i]['type']} #{i} {[round(v) for v in a]}",
                            f"{boxes[j]['type']} #{j} {[round(v) for v in b]}"))
    return out


def settle(page):
    """Let the frontend lay the graph out and draw it (Nodes 2.0 measures its DOM nodes asynchronously):
    the whole graph in view, drawn, until no node's size (LiteGraph's or its DOM element's) changes
    between two frames."""
    # half size, in a window large enough for the whole graph (Nodes 2.0 does not draw nodes off screen, and
    # draws less of them at a smaller scale)
    x0, y0, x1, y1 = page.evaluate("""() => { const ns = app.graph._nodes; return [
        Math.min(...ns.map((n) => n.pos[0])), Math.min(...ns.map((n) => n.pos[1])) - 40,
        Math.max(...ns.map((n) => n.pos[0] + n.size[0])), Math.max(...ns.map((n) => n.pos[1] + n.size[1]))]; }""")
    page.set_viewport_size({"width": max(1400, int((x1 - x0 + 600) * 0.5) + 80),
                            "height": max(900, int((y1 - y0 + 300) * 0.5) + 80)})
    page.evaluate("([x0, y0]) => { app.canvas.ds.scale = 0.5; app.canvas.ds.offset = [80 - x0, 80 - y0]; }", [x0, y0])
    last = None
    for _ in range(40):
        page.evaluate("() => app.canvas.draw(true, true)")
        time.sleep(0.25)
        now = page.evaluate("""() => JSON.stringify(app.graph._nodes.map((n) => {
            const d = document.querySelector(`[data-node-id="${n.id}"]`)?.getBoundingClientRect();
            return [n.id, ...n.size, d?.width, d?.height];
        }))""")
        if now == last:
            return
        last = now


def load(page, name: str):
    wf = json.loads((WF_DIR / name).read_text())
    page.evaluate("""async (wf) => {
        await app.loadGraphData(wf, true, true, null, {showMissingNodesDialog: false, showMissingModelsDialog: false});
    }""", wf)
    return wf


def nodes_of(page, type_: str) -> list:
    return page.evaluate("""(type) => app.graph._nodes.filter((n) => n.type === type).map((n) => ({
        id: n.id, cost: n.reflectCost, lines: n.reflectLines, warnings: n.reflectWarnings,
        scores: n.reflectScoreLines ?? [], figure: n.reflectFigure?.text ?? null,
        windows: n.reflectFigure?.layout?.windows ?? null,
        info: n.widgets.some((w) => w.name === "reflect_info"),
    }))""", type_)


def set_widget(page, node_id, name, value):
    """As a user's edit does: the widget's setValue (callback, onWidgetChanged); returns the node's cost text."""
    return page.evaluate("""([id, name, value]) => {
        const n = app.graph.getNodeById(id);
        const w = n.widgets.find((w) => w.name === name);
        if (w.setValue) w.setValue(value, { e: undefined, node: n, canvas: app.canvas });
        else { w.value = value; w.callback?.(value, app.canvas, n); }
        return n.reflectCost;
    }""", [node_id, name, value])


def queue_tiny(page, server) -> tuple[str, dict]:
    """The frontend's API prompt, rewritten to tiny models, queued through the frontend's api
    (so that its client gets the execution messages); returns (prompt_id, graph)."""
    prompt = page.evaluate("async () => (await app.graphToPrompt()).output")
    g = tiny_graph(prompt)
    pid = page.evaluate("""async (g) => {
        const api = window.comfyAPI.api.api;
        const p = await app.graphToPrompt();
        const res = await api.queuePrompt(0, { output: g, workflow: p.workflow });
        return res.prompt_id;
    }""", g)
    return pid, g


def screenshot(page, node_id, tmp_path: Path, name: str) -> Path:
    page.evaluate("""(id) => {
        const n = app.graph.getNodeById(id);
        app.canvas.ds.scale = 1.0;
        app.canvas.centerOnNode(n);
        app.canvas.setDirty(true, true);
    }""", node_id)
    time.sleep(0.5)
    path = tmp_path / name
    page.screenshot(path=str(path))
    assert path.stat().st_size > 10_000
    shots = os.environ.get("REFLECT_E2E_SHOTS")
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(shots) / name)
    return path


def assert_ran(entry, g, server):
    hostlib.assert_prompt_succeeded(entry, server)
    outs = entry["outputs"]
    saves = [nid for nid, n in g.items() if n["class_type"] == "SaveImage"]
    for nid in saves:
        imgs = outs.get(nid, {}).get("images", [])
        assert imgs, (nid, outs.get(nid))
        for img in imgs:
            assert (server.output_dir / img.get("subfolder", "") / img["filename"]).is_file()
    for nid, o in outs.items():
        for s in o.get("reflect_latent_stats", []):
            assert s["finite"], (nid, s)


@pytest.mark.parametrize("vue", [False, True], ids=["classic", "nodes2"])
def test_no_node_covers_another(frontend, vue):
    """Every shipped workflow, opened in the browser: no node's rendered rectangle (its title bar, widgets
    and the pack's drawings included) intersects another's, on the classic canvas and with Nodes 2.0."""
    page = frontend
    set_vue_nodes(page, vue)
    # Nodes 2.0 of frontend 1.27 (ComfyUI 0.3.64), experimental there, reports a node's DOM size back to
    # LiteGraph only now and then (a Note's never): there the DOM rectangles alone are the rendered boxes
    synced = not page.evaluate("window.__COMFYUI_FRONTEND_VERSION__ || ''").startswith("1.27.")
    names = sorted(p.name for p in WF_DIR.glob("*.json"))
    assert len(names) >= 10, names
    found = {}
    try:
        for name in names:
            wf = load(page, name)
            settle(page)
            b = bounds(page)
            assert len(b) == len(wf["nodes"]), (name, len(b))
            found[name] = covered(b)
            if vue:  # each node is a DOM element; its box is the one the user sees
                missing = [i for i, x in b.items() if not x.get("dom")]
                assert not missing, (name, missing)
                found[name] += covered(b, "dom")
                if not synced:
                    continue
                for i, x in b.items():  # LiteGraph's idea of the node follows the DOM's size (to a 1 px border)
                    if x["type"] in ("Note", "MarkdownNote"):
                        continue
                    assert abs(x["dom"][2] - x["box"][2]) < 2.01 and abs(x["dom"][3] - x["box"][3]) < 2.01, (name, i, x)
    finally:
        set_vue_nodes(page, False)
    assert not {k: v for k, v in found.items() if v}, found
    assert not page.reflect_errors, page.reflect_errors


def test_display_is_computed_on_change_not_per_frame(frontend):
    """Drawing the canvas recomputes nothing and resizes nothing; a widget edit recomputes the
    node it concerns once."""
    page = frontend
    load(page, "swg_sd15.json")
    settle(page)
    state = """() => app.graph._nodes.filter((n) => n.type === 'SlidingWindowGuidance')
        .map((n) => [n.id, n.reflectComputed, ...n.size])"""
    before = page.evaluate(state)
    assert all(c >= 1 for _, c, *_ in before), before
    page.evaluate("() => { for (let i = 0; i < 30; i++) app.canvas.draw(true, true); }")
    assert page.evaluate(state) == before
    (k8,) = [k for k in nodes_of(page, "KSampler") if k["id"] == 8]
    set_widget(page, k8["id"], "steps", 10)
    after = {i: c for i, c, *_ in page.evaluate(state)}
    swgs = nodes_of(page, "SlidingWindowGuidance")
    fed = {n["id"] for n in swgs if any("#8: 50 evals/image" in t for t in n["lines"])}
    assert fed and len(fed) < len(swgs), swgs
    for i, c, *_ in before:  # only the SWG node whose KSampler changed is recomputed, once
        assert after[i] == c + (1 if i in fed else 0), (before, after)
    set_widget(page, k8["id"], "steps", 30)


def test_zsampling_cost_updates_and_runs(frontend, comfy_server, server_files, tmp_path):  # noqa: F811
    page = frontend
    load(page, "zsampling_sdxl.json")
    (z,) = nodes_of(page, "ZigzagKSampler")
    assert z["info"]
    assert z["cost"] == "247 evals/image (x2.47 KSampler)", z
    assert z["warnings"] == []
    # λ 20 of 50: 2·50 + 20·(1 + 2)
    assert set_widget(page, z["id"], "zigzag_steps", 20) == "160 evals/image (x1.60 KSampler)"
    # λ >= steps: the warning the backend's validation would give, before queueing
    set_widget(page, z["id"], "zigzag_steps", 50)
    (z2,) = nodes_of(page, "ZigzagKSampler")
    assert any("zigzag_steps (50) must be smaller than steps (50)" in w for w in z2["warnings"]), z2
    # small enough to run on CPU: 8 steps, λ 7 (2·8 + 7·3 = 37)
    set_widget(page, z["id"], "steps", 8)
    assert set_widget(page, z["id"], "zigzag_steps", 7) == "37 evals/image (x2.31 KSampler)"
    assert nodes_of(page, "ZigzagKSampler")[0]["warnings"] == []
    for k in nodes_of(page, "KSampler"):
        set_widget(page, k["id"], "steps", 8)
    pid, g = queue_tiny(page, comfy_server)
    assert g[str(z["id"])]["inputs"]["zigzag_steps"] == 7 and g[str(z["id"])]["inputs"]["steps"] == 8
    entry = comfy_server.wait_for_prompt(pid, timeout=600)
    assert_ran(entry, g, comfy_server)
    screenshot(page, z["id"], tmp_path, "frontend_e2e.png")
    assert not page.reflect_errors, page.reflect_errors


def test_swg_draws_windows_and_cost(frontend, tmp_path):
    page = frontend
    load(page, "swg_sd15.json")
    swgs = {n["id"]: n for n in nodes_of(page, "SlidingWindowGuidance")}
    assert len(swgs) == 2
    for n in swgs.values():
        # 320 px of a 512 px image: 2 x 2 crops of 40 on the 64 latent, as the paper's layout
        assert n["windows"] == [[0, 40, 0, 40], [24, 64, 0, 40], [0, 40, 24, 64], [24, 64, 24, 64]], n
        assert n["figure"][0] == "latent 64x64" and "44%" in n["figure"][3], n
        assert "150 evals/image (x5.00 KSampler)" in n["cost"], n  # 30 euler steps x (1 + 4 crops) at cfg 1
    swg_id = min(swgs)
    assert any("180 evals/image (x3.00 KSampler)" in t for t in swgs[swg_id]["lines"])  # also feeds the cfg 5 KSampler
    # the cost follows the KSampler it feeds and the latent
    (k8,) = [k for k in nodes_of(page, "KSampler") if k["id"] == 8]
    set_widget(page, k8["id"], "steps", 10)  # the KSampler's widget: the SWG node feeding it follows at once
    assert "50 evals/image" in nodes_of(page, "SlidingWindowGuidance")[0]["cost"]
    (latent,) = page.evaluate("() => app.graph._nodes.filter((n) => n.type === 'EmptyLatentImage').map((n) => n.id)")
    set_widget(page, latent, "width", 256)  # latent 32 wide: a crop of 40 no longer fits
    warned = nodes_of(page, "SlidingWindowGuidance")[0]
    assert any("larger than the latent's width 32" in w for w in warned["warnings"]), warned
    set_widget(page, latent, "width", 512)
    set_widget(page, swg_id, "start_percent", 0.9)
    set_widget(page, swg_id, "end_percent", 0.2)
    warned = [n for n in nodes_of(page, "SlidingWindowGuidance") if n["id"] == swg_id][0]
    assert any("start_percent (0.9) must not be after end_percent (0.2)" in w for w in warned["warnings"]), warned
    set_widget(page, swg_id, "start_percent", 0.0)
    set_widget(page, swg_id, "end_percent", 1.0)
    screenshot(page, swg_id, tmp_path, "frontend_e2e_swg.png")


def test_swg_draws_video_windows_per_frame(frontend):
    """19.2: on a video latent the drawing is the spatial layout of one frame, and says so."""
    page = frontend
    load(page, "swg_sd15.json")
    swg_id = min(n["id"] for n in nodes_of(page, "SlidingWindowGuidance"))  # feeds KSampler 8
    page.evaluate("""() => {
        const v = LiteGraph.createNode("EmptyHunyuanLatentVideo");
        app.graph.add(v);
        const set = { width: 512, height: 512, length: 33 };
        for (const w of v.widgets) if (w.name in set) w.value = set[w.name];
        const ks = app.graph.getNodeById(8);
        v.connect(0, ks, ks.inputs.findIndex((i) => i.name === "latent_image"));
    }""")
    settle(page)
    (n,) = [x for x in nodes_of(page, "SlidingWindowGuidance") if x["id"] == swg_id]
    assert n["figure"][:3] == ["latent 64x64 per frame", "9 latent frames, each whole",
                               "(512x512 px x 33 frames, #%s)" % n["figure"][2].rsplit("#", 1)[-1][:-1]], n
    assert n["windows"] == [[0, 40, 0, 40], [24, 64, 0, 40], [0, 40, 24, 64], [24, 64, 24, 64]], n
    set_widget(page, swg_id, "crops_t", 3)
    (n,) = [x for x in nodes_of(page, "SlidingWindowGuidance") if x["id"] == swg_id]
    assert n["figure"][1] == "9 latent frames, windows along time too", n
    assert not page.reflect_errors, page.reflect_errors


def test_w2sd_and_adaptive_costs(frontend):
    page = frontend
    load(page, "w2sd_lora_sdxl.json")
    (w,) = nodes_of(page, "WeakStrongReflectionLoRA")
    assert w["cost"] == "247 evals/image (x2.47 KSampler)", w
    set_widget(page, w["id"], "reflect_steps", 50)
    assert any("reflect_steps (50) must be smaller than steps (50)" in t for t in nodes_of(page, "WeakStrongReflectionLoRA")[0]["warnings"])
    load(page, "w2sd_controlnet_sdxl.json")
    (w,) = nodes_of(page, "WeakStrongReflection")
    assert w["cost"] == "247 evals/image (x2.47 KSampler)", w
    load(page, "adaptive_lcm_sdxl.json")
    (a,) = nodes_of(page, "AdaptiveStudentTeacher")
    assert a["cost"] == "10.00 steps/image at ~50% refined", a  # 4 + 0.5 x 12, the paper's formula
    set_widget(page, a["id"], "k", 30)
    assert nodes_of(page, "AdaptiveStudentTeacher")[0]["cost"] == "7.60 steps/image at ~30% refined"
    set_widget(page, a["id"], "sigma", 0.0)
    assert any("sigma (0) must be in (0, 1]" in t for t in nodes_of(page, "AdaptiveStudentTeacher")[0]["warnings"])
    load(page, "adaptive_yoso_sd15.json")  # no percentile table: the share is unknown
    (a,) = nodes_of(page, "AdaptiveStudentTeacher")
    assert a["cost"].startswith("2-14 steps/image"), a


def test_quality_gate_shows_scores_after_execution(frontend, comfy_server, server_files, tmp_path):  # noqa: F811
    page = frontend
    load(page, "quality_gate_best_of_batch.json")
    (q,) = nodes_of(page, "QualityGate")
    assert q["scores"] == [] and q["warnings"] == []
    for k in nodes_of(page, "KSampler"):
        set_widget(page, k["id"], "steps", 4)
    pid, g = queue_tiny(page, comfy_server)
    entry = comfy_server.wait_for_prompt(pid, timeout=600)
    assert_ran(entry, g, comfy_server)
    out = entry["outputs"][str(q["id"])]
    scores, tau, passed = out["reflect_scores"], out["reflect_threshold"][0], out["reflect_passed"]
    assert len(scores) == 4 and all(math.isfinite(s) for s in scores)
    page.wait_for_function("(id) => (app.graph.getNodeById(id).reflectScoreLines ?? []).length > 0", arg=q["id"],
                           timeout=60_000)
    lines = nodes_of(page, "QualityGate")[0]["scores"]
    assert lines[0] == f"{sum(passed)}/4 passed (threshold {tau:.3f})", lines
    for i, (s, ok) in enumerate(zip(scores, passed)):
        assert lines[1 + i] == f"#{i} {'+' if s >= 0 else ''}{s:.3f} {'pass' if ok else 'fail'}", lines
    assert not covered(bounds(page)), covered(bounds(page))  # the scores' lines fit the room left for them
    screenshot(page, q["id"], tmp_path, "frontend_e2e_quality_gate.png")
    assert not page.reflect_errors, page.reflect_errors
