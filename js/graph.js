// Reading what a node's cost depends on from the graph around it. Works on
// LiteGraph nodes (and on the plain objects of the unit tests): a node has
// `type`, `title`, `id`, `widgets` [{name, value}], `inputs` [{name, link}],
// `outputs` [{type}], getInputNode(slot), getOutputNodes(slot) and `graph`.

import { DEFAULT_LATENT } from "./swg.js";

export function widgetValues(node) {
  const v = {};
  for (const w of node?.widgets ?? []) if (w?.name) v[w.name] = w.value;
  return v;
}

export function isConnected(node, name) {
  const slot = node?.inputs?.find((i) => i.name === name);
  return slot?.link != null;
}

export function inputNode(node, name) {
  const i = node?.inputs?.findIndex((s) => s.name === name) ?? -1;
  return i < 0 ? null : node.getInputNode?.(i) ?? null;
}

function hasWidgets(node, names) {
  const v = widgetValues(node);
  return names.every((n) => n in v);
}

// Sampling nodes fed (directly or through other MODEL -> MODEL nodes) by the
// MODEL outputs of `node`: [{node, title, steps, cfg, sampler_name, scheduler,
// denoise, kind}]. kind "ksampler" for KSampler (whose cost is known), else "other".
export function downstreamSamplers(node, maxDepth = 4) {
  const out = [];
  const seen = new Set([node]);
  let frontier = [node];
  for (let depth = 0; depth < maxDepth && frontier.length; depth++) {
    const next = [];
    for (const n of frontier) {
      (n.outputs ?? []).forEach((o, slot) => {
        if (o?.type !== "MODEL") return;
        for (const t of n.getOutputNodes?.(slot) ?? []) {
          if (!t || seen.has(t)) continue;
          seen.add(t);
          if (hasWidgets(t, ["steps", "cfg"])) {
            const v = widgetValues(t);
            out.push({
              node: t, title: `${t.title ?? t.type} #${t.id}`, kind: t.type === "KSampler" ? "ksampler" : "other",
              steps: v.steps, cfg: v.cfg, sampler_name: v.sampler_name, scheduler: v.scheduler,
              denoise: v.denoise ?? 1,
            });
          } else {
            next.push(t);
          }
        }
      });
    }
    frontier = next;
  }
  return out;
}

function graphNodes(node) {
  const g = node?.graph;
  return g?._nodes ?? g?.nodes ?? [];
}

// ComfyUI's empty video latents: [spatial, temporal] compression (latent frames = (length - 1) / t + 1).
export const VIDEO_LATENTS = {
  EmptyHunyuanLatentVideo: [8, 4], EmptyLTXVLatentVideo: [32, 8], EmptyMochiLatentVideo: [8, 6],
  EmptyCosmosLatentVideo: [8, 8],
};
const EMPTY_LATENT = /^Empty.*Latent/;

function latentFrom(n, downscale) {
  const v = widgetValues(n);
  if (typeof v.width !== "number" || typeof v.height !== "number") return null;
  const video = VIDEO_LATENTS[n.type];
  if (video && typeof v.length === "number") {
    const [sd, td] = video;
    return {
      width: Math.floor(v.width / sd), height: Math.floor(v.height / sd), downscale: sd,
      frames: Math.floor((v.length - 1) / td) + 1, source: `${v.width}x${v.height} px x ${v.length} frames, #${n.id}`,
    };
  }
  return {
    width: Math.floor(v.width / downscale), height: Math.floor(v.height / downscale),
    source: `${v.width}x${v.height} px, #${n.id}`,
  };
}

// The latent a sampler samples: the empty-latent node on its latent_image
// input, else the graph's first empty-latent node, else 1024 x 1024 pixels.
// Video latents carry their latent frame count and spatial downscale.
export function latentSize(sampler, anyNode, downscale = 8) {
  const src = sampler ? inputNode(sampler, "latent_image") : null;
  if (src && EMPTY_LATENT.test(src.type ?? "")) {
    const l = latentFrom(src, downscale);
    if (l) return l;
  }
  for (const n of graphNodes(sampler ?? anyNode)) {
    if (EMPTY_LATENT.test(n.type ?? "")) {
      const l = latentFrom(n, downscale);
      if (l) return l;
    }
  }
  return { ...DEFAULT_LATENT };
}
