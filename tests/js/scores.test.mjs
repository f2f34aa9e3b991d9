import { test } from "node:test";
import assert from "node:assert/strict";
import { scoreLines } from "../../js/scores.js";

test("scores, pass/fail and the threshold are listed in batch order", () => {
  const ui = { reflect_scores: [0.7, -1.25, 0.615], reflect_threshold: [0.6154], reflect_passed: [true, false, false] };
  assert.deepEqual(scoreLines(ui), ["1/3 passed (threshold 0.615)", "#0 +0.700 pass", "#1 -1.250 fail", "#2 +0.615 fail"]);
});

test("long batches are cut with a count", () => {
  const n = 20;
  const ui = { reflect_scores: Array(n).fill(0), reflect_threshold: [0], reflect_passed: Array(n).fill(true) };
  const lines = scoreLines(ui, 5);
  assert.equal(lines.length, 6);
  assert.equal(lines[5], "... 16 more");
});

test("nothing to show before execution", () => {
  assert.deepEqual(scoreLines(undefined), []);
  assert.deepEqual(scoreLines({}), []);
});

test("the adaptive node lists kept and refined samples and its cost", () => {
  const ui = { reflect_scores: [0.2, -0.4], reflect_threshold: [0.0], reflect_passed: [true, false],
    reflect_refined: [false, true], text: ["1/2 refined, 8.00 evaluations per image (formula 8.00)"] };
  assert.deepEqual(scoreLines(ui), ["1/2 refined (threshold 0.000)", "#0 +0.200 kept", "#1 -0.400 refined",
    "1/2 refined, 8.00 evaluations per image (formula 8.00)"]);
});
