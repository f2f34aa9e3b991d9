import { test } from "node:test";
import assert from "node:assert/strict";
import { downstreamSamplers, isConnected, latentSize, widgetValues } from "../../js/graph.js";

// A tiny stand-in for a LiteGraph graph: nodes with widgets, typed slots and links.
function makeGraph() {
  const nodes = [];
  const links = [];
  const graph = { _nodes: nodes };
  function node(id, type, widgets, inputs = [], outputs = []) {
    const n = {
      id, type, title: type, graph,
      widgets: Object.entries(widgets).map(([name, value]) => ({ name, value })),
      inputs: inputs.map((name) => ({ name, link: null })),
      outputs: outputs.map((type) => ({ type })),
      getInputNode(slot) {
        const l = links.find((k) => k.to === n && k.slot === slot);
        return l ? l.from : null;
      },
      getOutputNodes(slot) {
        return links.filter((k) => k.from === n && k.out === slot).map((k) => k.to);
      },
    };
    nodes.push(n);
    return n;
  }
  function link(from, out, to, name) {
    const slot = to.inputs.findIndex((i) => i.name === name);
    to.inputs[slot].link = links.length + 1;
    links.push({ from, out, to, slot });
  }
  return { node, link };
}

test("SWG finds the KSamplers it feeds (through MODEL -> MODEL nodes) and their latent", () => {
  const { node, link } = makeGraph();
  const other = node(1, "EmptyLatentImage", { width: 1024, height: 768, batch_size: 1 }, [], ["LATENT"]);
  const latent = node(2, "EmptyLatentImage", { width: 512, height: 640, batch_size: 1 }, [], ["LATENT"]);
  const swg = node(3, "SlidingWindowGuidance", { scale: 1 }, ["model"], ["MODEL"]);
  const ms = node(4, "ModelSamplingDiscrete", { sampling: "eps" }, ["model"], ["MODEL"]);
  const ks = node(5, "KSampler", { seed: 0, steps: 30, cfg: 5, sampler_name: "euler", scheduler: "normal", denoise: 1 },
    ["model", "latent_image"], ["LATENT"]);
  link(swg, 0, ms, "model");
  link(ms, 0, ks, "model");
  link(latent, 0, ks, "latent_image");
  const found = downstreamSamplers(swg);
  assert.equal(found.length, 1);
  assert.equal(found[0].node, ks);
  assert.equal(found[0].kind, "ksampler");
  assert.equal(found[0].steps, 30);
  assert.deepEqual(latentSize(ks, swg), { width: 64, height: 80, source: "512x640 px, #2" });
  assert.equal(latentSize(null, swg).width, 128); // the graph's first EmptyLatentImage
  assert.ok(other);
});

test("without an empty latent in the graph, 1024 x 1024 is assumed", () => {
  const { node } = makeGraph();
  const swg = node(1, "SlidingWindowGuidance", {}, ["model"], ["MODEL"]);
  assert.deepEqual(downstreamSamplers(swg), []);
  assert.deepEqual(latentSize(null, swg), { width: 128, height: 128, source: "assumed 1024x1024 px" });
});

test("widget values and connected inputs", () => {
  const { node, link } = makeGraph();
  const table = node(1, "ImageRewardPercentiles", {}, [], ["PERCENTILES"]);
  const ast = node(2, "AdaptiveStudentTeacher", { k: 50, sigma: 0.7 }, ["percentiles", "teacher_vae"]);
  link(table, 0, ast, "percentiles");
  assert.deepEqual(widgetValues(ast), { k: 50, sigma: 0.7 });
  assert.equal(isConnected(ast, "percentiles"), true);
  assert.equal(isConnected(ast, "teacher_vae"), false);
});

test("a video latent is read with its own compression: spatial size per frame and the latent frames", () => {
  const { node, link } = makeGraph();
  const wan = node(1, "EmptyHunyuanLatentVideo", { width: 832, height: 480, length: 33, batch_size: 1 }, [], ["LATENT"]);
  const swg = node(2, "SlidingWindowGuidance", { scale: 1 }, ["model"], ["MODEL"]);
  const ks = node(3, "KSampler", { steps: 20 }, ["model", "latent_image"], ["LATENT"]);
  link(swg, 0, ks, "model");
  link(wan, 0, ks, "latent_image");
  assert.deepEqual(latentSize(ks, swg),
    { width: 104, height: 60, downscale: 8, frames: 9, source: "832x480 px x 33 frames, #1" });
  const ltx = makeGraph().node(1, "EmptyLTXVLatentVideo", { width: 768, height: 512, length: 97 }, [], ["LATENT"]);
  assert.deepEqual(latentSize(null, ltx),
    { width: 24, height: 16, downscale: 32, frames: 13, source: "768x512 px x 97 frames, #1" });
});
