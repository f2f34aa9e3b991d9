import { test } from "node:test";
import assert from "node:assert/strict";
import { zigzagCost, zigzagWarnings } from "../../js/cost.js";

const paper = { steps: 50, cfg: 5.5, inversion_cfg: 0, zigzag_steps: 49, rounds: 1, inversion: "published", sampler_name: "ddim" };

test("paper setting costs 247 evaluations per image against 100 for KSampler", () => {
  const c = zigzagCost(paper);
  assert.equal(c.total, 247);
  assert.equal(c.plain, 100);
  assert.equal(c.factor, 2.47);
});

test("cfg <= 1 in published mode drops the inversion guidance", () => {
  assert.equal(zigzagCost({ ...paper, cfg: 1 }).total, 50 + 49 * 2);
  assert.equal(zigzagCost({ ...paper, inversion_cfg: 2 }).total, 100 + 49 * 4);
});

test("lambda >= steps is flagged before queueing", () => {
  assert.deepEqual(zigzagWarnings(paper), []);
  assert.match(zigzagWarnings({ ...paper, zigzag_steps: 50 })[0], /zigzag_steps/);
});
