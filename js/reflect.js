// ComfyUI-Reflect frontend extension: shows the cost of the current settings
// on the node and warns, before queueing, about settings the backend refuses.
import { app } from "../../scripts/app.js";
import { zigzagCost, zigzagWarnings, costLabel } from "./cost.js";
import { scoreLines } from "./scores.js";

const NODES = { ZigzagKSampler: { cost: zigzagCost, warnings: zigzagWarnings } };

function widgetValues(node) {
  const v = {};
  for (const w of node.widgets ?? []) v[w.name] = w.value;
  return v;
}

app.registerExtension({
  name: "ComfyUI-Reflect.cost",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    const spec = NODES[nodeData.name];
    if (!spec) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      const r = onNodeCreated?.apply(this, arguments);
      const update = () => {
        const v = widgetValues(this);
        this.reflectCost = costLabel(spec.cost(v));
        this.reflectWarnings = spec.warnings(v);
        this.setDirtyCanvas?.(true, true);
      };
      for (const w of this.widgets ?? []) {
        const cb = w.callback;
        w.callback = function () {
          const out = cb?.apply(this, arguments);
          update();
          return out;
        };
      }
      update();
      return r;
    };
    const onDrawForeground = nodeType.prototype.onDrawForeground;
    nodeType.prototype.onDrawForeground = function (ctx) {
      onDrawForeground?.apply(this, arguments);
      if (this.flags?.collapsed || !this.reflectCost) return;
      ctx.save();
      ctx.font = "12px sans-serif";
      ctx.fillStyle = this.reflectWarnings?.length ? "#f55" : "#8c8";
      const text = this.reflectWarnings?.length ? this.reflectWarnings[0] : this.reflectCost;
      ctx.fillText(text, 8, this.size[1] - 6);
      ctx.restore();
    };
  },
});

// Scores (and, on AdaptiveStudentTeacher, what was refined) on the node after execution.
const LINE = 14;

app.registerExtension({
  name: "ComfyUI-Reflect.scores",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== "QualityGate" && nodeData.name !== "AdaptiveStudentTeacher") return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      const old = this.reflectScoreLines?.length ?? 0;
      this.reflectScoreLines = scoreLines(message);
      const grow = (this.reflectScoreLines.length - old) * LINE;
      if (grow) this.setSize?.([this.size[0], this.size[1] + grow]);
      this.setDirtyCanvas?.(true, true);
    };
    const onDrawForeground = nodeType.prototype.onDrawForeground;
    nodeType.prototype.onDrawForeground = function (ctx) {
      onDrawForeground?.apply(this, arguments);
      const lines = this.reflectScoreLines;
      if (this.flags?.collapsed || !lines?.length) return;
      ctx.save();
      ctx.font = "12px monospace";
      lines.forEach((text, i) => {
        ctx.fillStyle = text.endsWith("fail") || text.endsWith("refined") ? "#f88" : "#8c8";
        ctx.fillText(text, 8, this.size[1] - (lines.length - i) * LINE + 8);
      });
      ctx.restore();
    };
  },
});
