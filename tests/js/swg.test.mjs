import { test } from "node:test";
import assert from "node:assert/strict";
import { cropOffsets, pyRound, roundCrop, runs, swgCost, swgCostLines, swgLayout, swgLayoutLines, swgWarnings }
  from "../../js/swg.js";

const paper = { scale: 1, crop_width: 40, crop_height: 0, crop_units: "latent", crops_x: 2, crops_y: 0, masked: true,
  mask_with_cfg: false, crop_conditioning: "auto", start_percent: 0, end_percent: 1 };
const latent64 = { width: 64, height: 64 };

test("Python rounding (halves to even) as the backend rounds offsets and pixel units", () => {
  assert.deepEqual([0.5, 1.5, 2.5, 3.49, 3.5].map(pyRound), [0, 2, 2, 3, 4]);
  assert.deepEqual(cropOffsets(64, 40, 2), [0, 24]);
  assert.deepEqual(cropOffsets(10, 3, 4), [0, 2, 5, 7]); // 7/3 -> 2, 14/3 -> 5
  assert.deepEqual(cropOffsets(5, 2, 3), [0, 2, 3]); // 1.5 -> 2
  assert.equal(roundCrop(7, 64, 2), 8);
  assert.equal(roundCrop(5, 64, 2), 6);
  assert.equal(roundCrop(9, 8, 2), 8);
});

test("paper layout: 2x2 crops of 40 on a 64 latent, overlap band masked", () => {
  const l = swgLayout(paper, latent64);
  assert.deepEqual(l.windows, [[0, 40, 0, 40], [24, 64, 0, 40], [0, 40, 24, 64], [24, 64, 24, 64]]);
  // rows 24..39 and columns 24..39 are covered twice or more: 64*64 - (48*48) cells
  assert.equal(l.masked, 64 * 64 - 48 * 48);
  assert.deepEqual(runs(l.rows), [[0, 24, 1], [24, 40, 2], [40, 64, 1]]);
  assert.deepEqual(swgLayoutLines(paper, { ...l, source: "test" }),
    ["latent 64x64", "(test)", "2x2 crops of 40x40", "overlap > 1: 44% (masked)"]);
});

test("pixel units divide by 8 with Python rounding; 0 means 'same as width'", () => {
  const l = swgLayout({ ...paper, crop_units: "pixels", crop_width: 320 }, latent64);
  assert.equal(l.kw, 40);
  assert.equal(l.kh, 40);
  const r = swgLayout({ ...paper, crop_units: "pixels", crop_width: 20, crop_height: 12, crops_y: 3 }, latent64);
  assert.equal(r.kw, 2); // round(2.5) == 2
  assert.equal(r.kh, 2); // round(1.5) == 2
  assert.equal(r.windows.length, 6);
});

test("crop larger than the latent and start after end are flagged", () => {
  const big = swgLayout({ ...paper, crop_width: 80 }, latent64);
  assert.ok(big.error);
  assert.match(swgWarnings(paper, big)[0], /larger than the latent's height 64/);
  const full = swgLayout({ ...paper, crop_width: 64 }, latent64);
  assert.match(full.error, /would all be the same crop/);
  assert.deepEqual(swgWarnings(paper, swgLayout(paper, latent64)), []);
  assert.match(swgWarnings({ ...paper, start_percent: 0.8, end_percent: 0.2 }, swgLayout(paper, latent64))[0],
    /start_percent \(0.8\) must not be after end_percent \(0.2\)/);
});

test("cost: one or two branches plus one batch item per crop, per evaluation", () => {
  const l = swgLayout(paper, latent64);
  const ks = { steps: 30, cfg: 1, sampler_name: "euler", scheduler: "normal", denoise: 1, kind: "ksampler", title: "K" };
  const swg = swgCost(paper, l, ks);
  assert.equal(swg.total, 30 * 5);
  assert.equal(swg.factor, 5);
  assert.ok(Math.abs(swg.workFactor - (1 + 4 * 1600 / 4096)) < 1e-12);
  assert.equal(swg.masked, true);
  const cfg = swgCost(paper, l, { ...ks, cfg: 5 });
  assert.equal(cfg.total, 30 * 6);
  assert.equal(cfg.factor, 3);
  assert.equal(cfg.masked, false); // the combined mode never masks unless mask_with_cfg
  assert.equal(swgCost({ ...paper, mask_with_cfg: true }, l, { ...ks, cfg: 5 }).masked, true);
  assert.equal(swgCost({ ...paper, crop_conditioning: "unconditional" }, l, ks).total, 30 * 6);
  assert.equal(swgCost({ ...paper, scale: 0 }, l, ks).factor, 1);
  assert.equal(swgCost(paper, l, { ...ks, sampler_name: "heun" }).total, 59 * 5);
  assert.equal(swgCost({ ...paper, start_percent: 0.5 }, l, ks).upperBound, true);
  assert.deepEqual(swgCostLines(paper, l, [ks]), ["K: 150 evals/image (x5.00 KSampler)",
    "  30 x (1 + 4 crops) at cfg 1; x2.56 by area; mask on"]);
});

test("small crops that leave part of the latent uncovered are pointed out", () => {
  const l = swgLayout({ ...paper, crop_width: 10 }, latent64);
  assert.equal(l.uncovered, 64 * 64 - 20 * 20); // crops at 0 and 54: covered where rows 0-9/54-63 meet such columns
  assert.match(swgWarnings(paper, l)[0], /uncovered/);
  assert.equal(swgLayout(paper, latent64).uncovered, 0);
});

test("video latents: the windows are drawn per frame, time whole unless temporal windows are asked for", () => {
  const l = { ...swgLayout(paper, latent64), source: "test", frames: 9 };
  const lines = swgLayoutLines(paper, l);
  assert.equal(lines[0], "latent 64x64 per frame");
  assert.equal(lines[1], "9 latent frames, each whole");
  assert.equal(swgLayoutLines({ ...paper, crops_t: 3 }, l)[1], "9 latent frames, windows along time too");
  assert.equal(swgLayoutLines(paper, { ...l, frames: undefined })[0], "latent 64x64");
});
