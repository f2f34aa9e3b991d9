// ComfyUI-Reflect frontend extension. On the pack's nodes it shows:
// * the cost of the current settings (model evaluations per image and the
//   factor against a plain KSampler);
// * on SlidingWindowGuidance, a drawing of the crop windows and of the masked
//   area (covered by more than one crop) over the latent's shape;
// * warnings for settings the backend refuses, before the graph is queued;
// * after execution, QualityGate / AdaptiveStudentTeacher scores against the
//   threshold and which samples were refined.
// Everything is drawn by one extra, non-serialised widget ("reflect_info") at
// the bottom of the node; the numbers are also on the node as `reflectCost`
// (first line), `reflectLines`, `reflectWarnings`, `reflectScoreLines`.
//
// Hooks used (the frontend's extension API, no node prototype is touched):
// `nodeCreated` adds the widget to an instance and chains its widgets'
// callbacks and its connection callback; `loadedGraphNode` / `afterConfigureGraph`
// after a workflow is loaded; the api's `executed` event for scores. What a
// node shows is recomputed only when something it depends on changed (its
// widgets, the KSampler it feeds, the latent's size: a key of those values),
// the SWG layout is cached per crop settings and latent size, and the node is
// sized when its content changes, never while it is drawn. In Nodes 2.0 (Vue
// nodes) the widget is drawn by the frontend's legacy-widget canvas at the
// height computeSize gives; the DOM sizes the node.
// The arithmetic is in cost.js / swg.js / scores.js (unit-tested with node --test).
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";
import {
  adaptiveCost, adaptiveLines, adaptiveWarnings, w2sdCost, w2sdLines, w2sdWarnings, zigzagCost, zigzagLines,
  zigzagWarnings,
} from "./cost.js";
import { downstreamSamplers, isConnected, latentSize, widgetValues } from "./graph.js";
import { scoreLines } from "./scores.js";
import { runs, swgCostLines, swgLayout, swgLayoutLines, swgWarnings } from "./swg.js";

const LINE = 14;
const FIG = 84;
const PAD = 6;
const FONT = "12px sans-serif";
const COLORS = { ok: "#9c9", text: "#bbb", warn: "#f66", bad: "#f88", good: "#8c8" };

// The SWG layout of (crop settings, latent size): O(H + W) arrays and an O(H * W)
// coverage count, computed once per distinct input and kept (a few entries).
const layoutCache = new Map();
function cachedLayout(v, latent) {
  const key = JSON.stringify([v.crop_width, v.crop_height, v.crop_units, v.crops_x, v.crops_y,
    latent.width, latent.height, latent.downscale]);
  let layout = layoutCache.get(key);
  if (!layout) {
    layout = swgLayout(v, latent, { downscale: latent.downscale ?? 8 });
    if (layoutCache.size >= 32) layoutCache.delete(layoutCache.keys().next().value);
    layoutCache.set(key, layout);
  }
  return layout;
}

function w2sd(v, strongIsMain) {
  return { lines: w2sdLines(w2sdCost(strongIsMain ? { ...v, strong_cfg: v.cfg } : v)), warnings: w2sdWarnings(v) };
}

// Per node type: inputs(node) -> what the display depends on (JSON-able), and
// show(inputs) -> { lines, warnings, figure? }.
const own = (node) => ({ v: widgetValues(node) });
const SPECS = {
  ZigzagKSampler: {
    inputs: own, show: ({ v }) => ({ lines: zigzagLines(zigzagCost(v)), warnings: zigzagWarnings(v) }),
  },
  WeakStrongReflection: { inputs: own, show: ({ v }) => w2sd(v, false) },
  WeakStrongReflectionLoRA: { inputs: own, show: ({ v }) => w2sd(v, true) },
  SlidingWindowGuidance: {
    inputs(node) {
      const samplers = downstreamSamplers(node);
      const ks = samplers.find((s) => s.kind === "ksampler")?.node ?? null;
      const latent = latentSize(ks, node);
      return { v: widgetValues(node), latent, samplers: samplers.map(({ node: _n, ...s }) => s) };
    },
    show({ v, latent, samplers }) {
      const layout = { ...cachedLayout(v, latent), source: latent.source, frames: latent.frames };
      return {
        lines: swgCostLines(v, layout, samplers), warnings: swgWarnings(v, layout),
        figure: layout.error ? null : { layout, masked: Boolean(v.masked), text: swgLayoutLines(v, layout) },
      };
    },
  },
  AdaptiveStudentTeacher: {
    inputs: (node) => ({ v: widgetValues(node), hasTable: isConnected(node, "percentiles") }),
    show: ({ v, hasTable }) => ({ lines: adaptiveLines(adaptiveCost(v, { hasTable })), warnings: adaptiveWarnings(v) }),
  },
  QualityGate: { inputs: () => ({}), show: () => ({ lines: [], warnings: [] }) },
};

const specOf = (node) => SPECS[node?.comfyClass ?? node?.type];
const vueMode = () => Boolean(globalThis.LiteGraph?.vueNodesMode);

// Recompute what the node shows when an input of it changed; resize and redraw when the content changed.
function refresh(node) {
  const spec = specOf(node);
  if (!spec) return;
  let inputs;
  try {
    inputs = spec.inputs(node);
  } catch (e) {
    inputs = { error: String(e.message ?? e) };
  }
  const key = JSON.stringify(inputs);
  if (key === node.reflectInputKey) return;
  node.reflectInputKey = key;
  node.reflectComputed = (node.reflectComputed ?? 0) + 1; // how often the display was computed (tests read it)
  let r;
  try {
    if (inputs.error) throw new Error(inputs.error);
    r = spec.show(inputs);
  } catch (e) {
    r = { lines: [], warnings: [`(cost not available: ${e.message})`] };
  }
  node.reflectLines = r.lines;
  node.reflectWarnings = r.warnings;
  node.reflectCost = r.lines[0] ?? "";
  node.reflectFigure = r.figure ?? null;
  changed(node);
}

function changed(node) {
  const key = JSON.stringify([node.reflectLines, node.reflectWarnings, node.reflectFigure?.text,
    node.reflectFigure?.masked, node.reflectScoreLines]);
  if (key === node.reflectShownKey) return;
  node.reflectShownKey = key;
  fit(node);
  node.widgets?.find((w) => w.name === "reflect_info")?.triggerDraw?.(); // Nodes 2.0: redraw the widget's canvas
  node.setDirtyCanvas?.(true, true);
}

function textLines(node) {
  const out = [];
  for (const t of node.reflectWarnings ?? []) out.push([t, COLORS.warn]);
  for (const t of node.reflectLines ?? []) out.push([t, COLORS.ok]);
  for (const t of node.reflectScoreLines ?? []) {
    out.push([t, /(fail|refined)$/.test(t) ? COLORS.bad : COLORS.good]);
  }
  return out;
}

function contentHeight(node) {
  const n = textLines(node).length;
  const fig = node.reflectFigure ? FIG + PAD : 0;
  return n || fig ? fig + n * LINE + PAD : 0;
}

let measureCtx = null;
function textWidth(node) {
  measureCtx ??= globalThis.document?.createElement("canvas")?.getContext("2d") ?? null;
  if (!measureCtx) return 0;
  measureCtx.font = FONT;
  let widest = 0;
  for (const [t] of textLines(node)) widest = Math.max(widest, measureCtx.measureText(t).width);
  if (node.reflectFigure) {
    measureCtx.font = "11px sans-serif";
    for (const t of node.reflectFigure.text) widest = Math.max(widest, FIG + 10 + measureCtx.measureText(t).width);
  }
  return Math.ceil(widest + 20);
}

// Classic canvas: grow the node (never shrink it) so that its widgets and the
// lines fit; called when the content changes. Nodes 2.0 sizes from the DOM.
function fit(node) {
  if (vueMode() || !node.setSize || !node.size || !node.computeSize) return;
  const need = node.computeSize();
  const w = Math.max(node.size[0], need[0], textWidth(node));
  const h = Math.max(node.size[1], need[1]);
  if (w > node.size[0] + 0.5 || h > node.size[1] + 0.5) node.setSize([w, h]);
}

// The latent as a rectangle, each window outlined, the area covered by more
// than one window filled (solid where M-SWG masks, hatched where it does not).
function drawFigure(ctx, fig, x0, y0) {
  const { layout } = fig;
  const s = FIG / Math.max(layout.width, layout.height);
  ctx.fillStyle = "#2a2a2a";
  ctx.fillRect(x0, y0, layout.width * s, layout.height * s);
  fig.runs ??= { rows: runs(layout.rows), cols: runs(layout.cols) }; // once per layout
  ctx.fillStyle = fig.masked ? "rgba(255, 170, 60, 0.55)" : "rgba(255, 170, 60, 0.2)";
  for (const [r0, r1, rv] of fig.runs.rows) {
    for (const [c0, c1, cv] of fig.runs.cols) {
      if (rv * cv > 1) ctx.fillRect(x0 + c0 * s, y0 + r0 * s, (c1 - c0) * s, (r1 - r0) * s);
    }
  }
  const hues = [200, 120, 280, 40, 330, 160];
  ctx.lineWidth = 1;
  layout.windows.forEach(([t, b, l, r], i) => {
    ctx.strokeStyle = `hsl(${hues[i % hues.length]}, 80%, 65%)`;
    const inset = (i % 4) * 0.75; // keep coinciding edges apart
    ctx.strokeRect(x0 + l * s + inset, y0 + t * s + inset, (r - l) * s - 2 * inset, (b - t) * s - 2 * inset);
  });
  ctx.strokeStyle = "#888";
  ctx.strokeRect(x0, y0, layout.width * s, layout.height * s);
  ctx.font = "11px sans-serif";
  ctx.fillStyle = COLORS.text;
  fig.text.forEach((t, i) => ctx.fillText(t, x0 + FIG + 10, y0 + 12 + i * LINE));
}

// The display widget: draws what refresh() computed, nothing else.
function infoWidget(node) {
  return {
    name: "reflect_info",
    type: "reflect_info",
    value: "",
    serialize: false,
    options: { serialize: false },
    computeSize(width) {
      return [width ?? node.size?.[0] ?? 0, contentHeight(node)];
    },
    draw(ctx, n, _width, y) {
      const lines = textLines(n);
      if (!lines.length && !n.reflectFigure) return;
      ctx.save();
      let top = y + 2;
      if (n.reflectFigure) {
        drawFigure(ctx, n.reflectFigure, 12, top);
        top += FIG + PAD;
      }
      ctx.font = FONT;
      ctx.textAlign = "left";
      lines.forEach(([t, color], i) => {
        ctx.fillStyle = color;
        ctx.fillText(t, 10, top + 10 + i * LINE);
      });
      ctx.restore();
    },
  };
}

// Call fn after obj[name] (the instance's own callback, or the one it inherits).
function chainAfter(obj, name, fn) {
  const orig = obj[name];
  obj[name] = function (...args) {
    const r = orig?.apply(this, args);
    fn.apply(this, args);
    return r;
  };
}

function graphOf(node) {
  return node?.graph ?? app.graph;
}

function refreshGraph(graph) {
  for (const node of graph?._nodes ?? graph?.nodes ?? []) refresh(node);
}

// Widgets added after creation (e.g. converted inputs) are chained when first seen.
function watchWidgets(node) {
  for (const w of node.widgets ?? []) {
    if (!w || w.reflectWatched || w.name === "reflect_info") continue;
    w.reflectWatched = true;
    chainAfter(w, "callback", () => refreshGraph(graphOf(node)));
  }
}

app.registerExtension({
  name: "ComfyUI-Reflect.display",
  nodeCreated(node) {
    // any node's widgets or links can matter to a pack node (SWG: the KSampler it feeds, the latent's size)
    watchWidgets(node);
    chainAfter(node, "onConnectionsChange", () => refreshGraph(graphOf(node)));
    if (!specOf(node)) return;
    node.addCustomWidget(infoWidget(node));
    refresh(node);
  },
  loadedGraphNode(node) {
    watchWidgets(node);
    refresh(node); // widgets_values are set now
  },
  async afterConfigureGraph() {
    refreshGraph(app.graph); // all nodes and links exist now
  },
  async setup() {
    api.addEventListener("executed", ({ detail }) => {
      const id = detail?.display_node ?? detail?.node;
      const node = app.graph?.getNodeById?.(Number(id)) ?? app.graph?.getNodeById?.(id);
      if (!specOf(node)) return;
      const lines = scoreLines(detail.output);
      if (!lines.length) return;
      node.reflectScoreLines = lines;
      changed(node);
    });
  },
});

export { refresh as reflectRefresh };
