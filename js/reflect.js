// ComfyUI-Reflect frontend extension: shows the cost of the current settings
// on the node and warns, before queueing, about settings the backend refuses.
import { app } from "../../scripts/app.js";
import { zigzagCost, zigzagWarnings, costLabel } from "./cost.js";

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
