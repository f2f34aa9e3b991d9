// ComfyUI-Reflect frontend extension. On the pack's nodes it shows:
// * the cost of the current settings (model evaluations per image and the
//   factor against a plain KSampler), updated as widgets change and after a
//   workflow is loaded;
// * on SlidingWindowGuidance, a drawing of the crop windows and of the masked
//   area (covered by more than one crop) over the latent's shape;
// * warnings for settings the backend refuses, before the graph is queued;
// * after execution, QualityGate / AdaptiveStudentTeacher scores against the
//   threshold and which samples were refined.
// Everything is drawn by one extra, non-serialised widget ("reflect_info") at
// the bottom of the node; the numbers are also on the node as `reflectCost`
// (first line), `reflectLines`, `reflectWarnings`, `reflectScoreLines`.
// The arithmetic is in cost.js / swg.js / scores.js (unit-tested with node --test).
import { app } from "../../scripts/app.js";
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
const COLORS = { ok: "#9c9", text: "#bbb", warn: "#f66", bad: "#f88", good: "#8c8" };

function w2sd(node, strongIsMain) {
  const v = widgetValues(node);
  const cost = w2sdCost(strongIsMain ? { ...v, strong_cfg: v.cfg } : v);
  return { lines: w2sdLines(cost), warnings: w2sdWarnings(v) };
}

// What each node shows: { lines, warnings, figure? }.
const SPECS = {
  ZigzagKSampler(node) {
    const v = widgetValues(node);
    return { lines: zigzagLines(zigzagCost(v)), warnings: zigzagWarnings(v) };
  },
  WeakStrongReflection: (node) => w2sd(node, false),
  WeakStrongReflectionLoRA: (node) => w2sd(node, true),
  SlidingWindowGuidance(node) {
    const v = widgetValues(node);
    const samplers = downstreamSamplers(node);
    const latent = latentSize(samplers.find((s) => s.kind === "ksampler")?.node ?? null, node);
    const layout = { ...swgLayout(v, latent), source: latent.source };
    return {
      lines: swgCostLines(v, layout, samplers), warnings: swgWarnings(v, layout),
      figure: layout.error ? null : { layout, masked: Boolean(v.masked), text: swgLayoutLines(v, layout) },
    };
  },
  AdaptiveStudentTeacher(node) {
    const v = widgetValues(node);
    return { lines: adaptiveLines(adaptiveCost(v, { hasTable: isConnected(node, "percentiles") })),
      warnings: adaptiveWarnings(v) };
  },
  QualityGate: () => ({ lines: [], warnings: [] }),
};

// Recompute what the node shows; redraw when it changed.
function refresh(node) {
  const spec = SPECS[node.comfyClass ?? node.type];
  if (!spec) return;
  let r;
  try {
    r = spec(node);
  } catch (e) {
    r = { lines: [], warnings: [`(cost not available: ${e.message})`] };
  }
  node.reflectLines = r.lines;
  node.reflectWarnings = r.warnings;
  node.reflectCost = r.lines[0] ?? "";
  node.reflectFigure = r.figure ?? null;
  const key = JSON.stringify([r.lines, r.warnings, r.figure?.text, node.reflectScoreLines]);
  if (key !== node.reflectKey) {
    node.reflectKey = key;
    node.setDirtyCanvas?.(true, true);
    node.widgets?.find((w) => w.name === "reflect_info")?.triggerDraw?.();
  }
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

// The latent as a rectangle, each window outlined, the area covered by more
// than one window filled (solid where M-SWG masks, hatched where it does not).
function drawFigure(ctx, fig, x0, y0) {
  const { layout } = fig;
  const s = FIG / Math.max(layout.width, layout.height);
  const w = layout.width * s;
  const h = layout.height * s;
  ctx.fillStyle = "#2a2a2a";
  ctx.fillRect(x0, y0, w, h);
  const rows = runs(layout.rows);
  const cols = runs(layout.cols);
  for (const [r0, r1, rv] of rows) {
    for (const [c0, c1, cv] of cols) {
      if (rv * cv <= 1) continue;
      ctx.fillStyle = fig.masked ? "rgba(255, 170, 60, 0.55)" : "rgba(255, 170, 60, 0.2)";
      ctx.fillRect(x0 + c0 * s, y0 + r0 * s, (c1 - c0) * s, (r1 - r0) * s);
    }
  }
  const hues = [200, 120, 280, 40, 330, 160];
  layout.windows.forEach(([t, b, l, r], i) => {
    ctx.strokeStyle = `hsl(${hues[i % hues.length]}, 80%, 65%)`;
    ctx.lineWidth = 1;
    const inset = (i % 4) * 0.75; // keep coinciding edges apart
    ctx.strokeRect(x0 + l * s + inset, y0 + t * s + inset, (r - l) * s - 2 * inset, (b - t) * s - 2 * inset);
  });
  ctx.strokeStyle = "#888";
  ctx.strokeRect(x0, y0, w, h);
  ctx.font = "11px sans-serif";
  ctx.fillStyle = COLORS.text;
  fig.text.forEach((t, i) => ctx.fillText(t, x0 + FIG + 10, y0 + 12 + i * LINE));
}

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
    draw(ctx, n, width, y) {
      refresh(n);
      const lines = textLines(n);
      if (!lines.length && !n.reflectFigure) return;
      ctx.save();
      let top = y + 2;
      if (n.reflectFigure) {
        drawFigure(ctx, n.reflectFigure, 12, top);
        top += FIG + PAD;
      }
      ctx.font = "12px sans-serif";
      ctx.textAlign = "left";
      let widest = 0;
      lines.forEach(([t, color], i) => {
        ctx.fillStyle = color;
        ctx.fillText(t, 10, top + 10 + i * LINE);
        widest = Math.max(widest, ctx.measureText(t).width);
      });
      ctx.restore();
      if (globalThis.LiteGraph?.vueNodesMode || !n.setSize || !n.size) return; // Nodes 2.0 sizes from the DOM
      if (widest + 20 > width && !n.reflectGrown) {
        n.reflectGrown = true; // grow once so that the lines fit, then leave the size to the user
        n.setSize([Math.ceil(widest + 20), n.size[1]]);
      }
      const need = y + contentHeight(n);
      if (need > n.size[1] + 1) n.setSize([n.size[0], need]);
    },
  };
}

app.registerExtension({
  name: "ComfyUI-Reflect.display",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!SPECS[nodeData.name]) return;
    const proto = nodeType.prototype;

    const onNodeCreated = proto.onNodeCreated;
    proto.onNodeCreated = function () {
      const r = onNodeCreated?.apply(this, arguments);
      for (const w of this.widgets ?? []) {
        const cb = w.callback;
        const node = this;
        w.callback = function () {
          const out = cb?.apply(this, arguments);
          refresh(node);
          return out;
        };
      }
      this.addCustomWidget(infoWidget(this));
      refresh(this);
      return r;
    };

    // values set on workflow load (widgets_values) and links made or removed
    for (const hook of ["onConfigure", "onConnectionsChange", "onWidgetChanged", "onAdded"]) {
      const orig = proto[hook];
      proto[hook] = function () {
        const r = orig?.apply(this, arguments);
        refresh(this);
        return r;
      };
    }

    const onExecuted = proto.onExecuted;
    proto.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      const lines = scoreLines(message);
      if (lines.length) this.reflectScoreLines = lines;
      refresh(this);
    };

    // the cost of a node can depend on others (SWG: the KSampler it feeds, the latent):
    // recompute whenever the node is drawn
    const onDrawForeground = proto.onDrawForeground;
    proto.onDrawForeground = function () {
      onDrawForeground?.apply(this, arguments);
      refresh(this);
    };
  },
  // other nodes' widgets matter too (SWG: the KSampler it feeds, the empty latent's size)
  nodeCreated(node) {
    if (SPECS[node.comfyClass ?? node.type]) return;
    const onWidgetChanged = node.onWidgetChanged;
    node.onWidgetChanged = function () {
      const r = onWidgetChanged?.apply(this, arguments);
      refreshGraph(this.graph);
      return r;
    };
  },
  async afterConfigureGraph() {
    refreshGraph(app.graph); // all nodes and links exist now
  },
});

function refreshGraph(graph) {
  for (const node of graph?._nodes ?? graph?.nodes ?? []) {
    if (SPECS[node.comfyClass ?? node.type]) refresh(node);
  }
}

export { refresh as reflectRefresh };
