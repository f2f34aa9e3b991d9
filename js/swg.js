// Sliding Window Guidance: crop layout, masked area and cost, mirroring
// samplers/swg.py (crop_offsets, windows, round_crop, check_layout, overlap)
// and nodes/swg.py (units, defaults). Pure, unit-tested with node --test.

import { cfgBranches, isclose, samplerEvals } from "./cost.js";

// Python's round() of a float: halves to even (round(2.5) == 2).
export function pyRound(x) {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

// The latent's size when the graph does not say: 1024 x 1024 pixels, VAE downscale 8.
export const DEFAULT_LATENT = { width: 128, height: 128, source: "assumed 1024x1024 px" };

// round_crop: a crop size the model takes (multiple > 1: transformers' patch size).
export function roundCrop(k, size, multiple = 1) {
  if (k <= 0) throw new Error(`crop size must be positive (got ${k})`);
  if (multiple <= 1) return k;
  let r = Math.max(multiple, Math.floor(k / multiple + 0.5) * multiple);
  if (r > size) r = Math.floor(size / multiple) * multiple;
  if (r < multiple) throw new Error(`the latent (${size}) is smaller than one patch (${multiple}) of the model`);
  return r;
}

// check_layout: the backend's errors, as a message (null when fine).
export function layoutError(size, k, n, name) {
  if (k <= 0) return `crop size must be positive (got ${k})`;
  if (n <= 0) return `crops per dimension must be positive (got ${n})`;
  if (k > size) return `crop ${name} ${k} is larger than the latent's ${name} ${size}`;
  if (n > 1 && k === size) return `${n} crops of the full ${name} ${size} would all be the same crop`;
  return null;
}

// crop_offsets: first crop at 0, last ending at the edge, spread with rounding.
export function cropOffsets(size, k, n) {
  if (n === 1) return [0];
  return Array.from({ length: n }, (_, i) => pyRound((i * (size - k)) / (n - 1)));
}

// The node's widget values as the patch uses them: crop_height 0 = crop_width,
// crops_y 0 = crops_x, pixel units divided by the VAE downscale (8).
export function cropSettings(v, downscale = 8) {
  let kw = Math.trunc(v.crop_width);
  let kh = Math.trunc(v.crop_height) || kw;
  if (v.crop_units === "pixels") {
    kw = Math.max(1, pyRound(kw / downscale));
    kh = Math.max(1, pyRound(kh / downscale));
  }
  const nw = Math.trunc(v.crops_x);
  const nh = Math.trunc(v.crops_y) || nw;
  return { kh, kw, nh, nw };
}

// Windows (top, bottom, left, right) in the reference's order, the coverage
// per row and column, and the masked share (covered by more than one crop).
// Returns { error } instead when the backend would refuse the layout.
export function swgLayout(v, latent = DEFAULT_LATENT, { downscale = 8, multiple = 1 } = {}) {
  const { height, width } = latent;
  const s = cropSettings(v, downscale);
  if (s.kw <= 0 || s.kh <= 0 || s.nw <= 0 || s.nh <= 0) {
    return { error: `crop sizes and counts must be positive (crop ${s.kw}x${s.kh}, crops ${s.nw}x${s.nh})`, ...s };
  }
  let kh, kw;
  try {
    kh = roundCrop(s.kh, height, multiple);
    kw = roundCrop(s.kw, width, multiple);
  } catch (e) {
    return { error: e.message, ...s };
  }
  const error = layoutError(height, kh, s.nh, "height") ?? layoutError(width, kw, s.nw, "width");
  if (error) return { error, ...s, kh, kw };
  const tops = cropOffsets(height, kh, s.nh);
  const lefts = cropOffsets(width, kw, s.nw);
  const windows = [];
  for (const l of lefts) for (const t of tops) windows.push([t, t + kh, l, l + kw]);
  // overlap(y, x) = rows(y) * cols(x): the windows are every top with every left
  const rows = coverage(height, tops, kh);
  const cols = coverage(width, lefts, kw);
  let masked = 0;
  let uncovered = 0;
  for (const r of rows) {
    for (const c of cols) {
      if (r * c > 1) masked += 1;
      else if (r * c === 0) uncovered += 1;
    }
  }
  const area = height * width;
  return { height, width, kh, kw, nh: s.nh, nw: s.nw, windows, rows, cols, masked, maskedShare: masked / area,
    uncovered, uncoveredShare: uncovered / area };
}

function coverage(size, offsets, k) {
  const out = new Array(size).fill(0);
  for (const o of offsets) for (let i = o; i < o + k; i++) out[i] += 1;
  return out;
}

// Runs of equal values: [[start, end, value], ...], for drawing.
export function runs(values) {
  const out = [];
  let start = 0;
  for (let i = 1; i <= values.length; i++) {
    if (i === values.length || values[i] !== values[start]) {
      out.push([start, i, values[start]]);
      start = i;
    }
  }
  return out;
}

export function swgWarnings(v, layout) {
  const out = [];
  if (layout?.error) out.push(layout.error);
  // not refused by the backend, but where no crop lies the crop prediction is 0 (ComfyUI's area average)
  if (layout?.uncovered) out.push(`crops leave ${Math.round(layout.uncoveredShare * 100)}% of the latent uncovered`);
  if (v.start_percent > v.end_percent) {
    out.push(`start_percent (${v.start_percent}) must not be after end_percent (${v.end_percent})`);
  }
  return out;
}

// Cost of a KSampler sampling the patched model: every evaluation of the
// guided prediction is the CFG branches (both with cfg != 1, or with
// crop_conditioning 'unconditional', which turns ComfyUI's cfg-1 shortcut off)
// plus one batch item per crop window (scale 0: none). `work` weighs a crop by
// its area against the full latent. start/end other than 0/1 guide only part of
// the steps (which ones depends on the schedule): the numbers are then upper bounds.
export function swgCost(v, layout, sampler) {
  if (!layout || layout.error) return null;
  const { steps, cfg, sampler_name = "euler", denoise = 1 } = sampler;
  const evals = denoise > 0 ? samplerEvals(sampler_name, Math.trunc(steps), true) : 0;
  const plainBranches = cfgBranches(cfg, sampler_name);
  const branches = v.crop_conditioning === "unconditional" ? 2 : plainBranches;
  const crops = v.scale === 0 ? 0 : layout.windows.length;
  const cropArea = (layout.kh * layout.kw) / (layout.height * layout.width);
  const total = evals * (branches + crops);
  const plain = evals * plainBranches;
  const work = evals * (branches + crops * cropArea);
  return {
    total, plain, factor: plain > 0 ? total / plain : 0, work, workFactor: plain > 0 ? work / plain : 0,
    perEval: branches + crops, branches, crops, evals,
    masked: Boolean(v.masked) && (isclose(cfg, 1) || Boolean(v.mask_with_cfg)),
    upperBound: v.start_percent > 0 || v.end_percent < 1,
  };
}

// Text beside the figure: the latent, the crops, the masked share.
export function swgLayoutLines(v, layout) {
  if (!layout || layout.error) return [];
  const pct = Math.round(layout.maskedShare * 100);
  const time = !layout.frames ? [] : v.crops_t > 1 || v.crop_frames > 0
    ? [`${layout.frames} latent frames, windows along time too`] : [`${layout.frames} latent frames, each whole`];
  return [
    layout.frames ? `latent ${layout.width}x${layout.height} per frame` : `latent ${layout.width}x${layout.height}`,
    ...time,
    `(${layout.source ?? "from the graph"})`,
    `${layout.nw}x${layout.nh} crops of ${layout.kw}x${layout.kh}`,
    `overlap > 1: ${pct}% ${v.masked ? "(masked)" : "(no mask)"}`,
    ...(layout.uncovered ? [`not covered: ${Math.round(layout.uncoveredShare * 100)}%`] : []),
  ];
}

// Cost lines, per KSampler fed by the node (or per guided evaluation when none).
export function swgCostLines(v, layout, samplers) {
  if (!layout || layout.error) return [];
  const known = samplers.filter((s) => s.kind === "ksampler");
  if (!known.length) {
    const b = v.crop_conditioning === "unconditional" ? "2" : "1 or 2";
    const crops = v.scale === 0 ? 0 : layout.windows.length;
    return [`per model evaluation: ${b} branches + ${crops} crops`];
  }
  const lines = [];
  for (const s of known) {
    const c = swgCost(v, layout, s);
    const le = c.upperBound ? "<= " : "";
    lines.push(`${s.title}: ${le}${c.total} evals/image (x${c.factor.toFixed(2)} KSampler)`);
    lines.push(`  ${c.evals} x (${c.branches} + ${c.crops} crops) at cfg ${s.cfg}; x${c.workFactor.toFixed(2)} by area;` +
      ` mask ${c.masked ? "on" : "off"}`);
  }
  return lines;
}
