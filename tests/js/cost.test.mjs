import { test } from "node:test";
import assert from "node:assert/strict";
import {
  adaptiveCost, adaptiveLines, adaptiveWarnings, cfgBranches, costLabel, guidanceBranches, ksamplerCost, samplerEvals,
  teacherSteps, w2sdCost, w2sdWarnings, zigzagCost, zigzagLines, zigzagWarnings,
} from "../../js/cost.js";

const paper = { steps: 50, cfg: 5.5, inversion_cfg: 0, zigzag_steps: 49, rounds: 1, inversion: "published",
  sampler_name: "ddim", scheduler: "ddim_reference", denoise: 1 };

test("Z-Sampling paper setting: 247 evaluations per image against 100 for KSampler", () => {
  const c = zigzagCost(paper);
  assert.equal(c.total, 247);
  assert.equal(c.plain, 100);
  assert.equal(c.factor, 2.47);
  assert.equal(costLabel(c), "247 evals/image (x2.47 KSampler)");
  assert.deepEqual(zigzagLines(c), ["247 evals/image (x2.47 KSampler)", "KSampler 100; 49 of 50 steps reflected"]);
});

test("Z-Sampling branches: README table (γ2 1 and 2, γ1 1 in both modes)", () => {
  assert.equal(zigzagCost({ ...paper, inversion_cfg: 1 }).total, 247);
  assert.equal(zigzagCost({ ...paper, inversion_cfg: 2 }).total, 296);
  assert.equal(zigzagCost({ ...paper, cfg: 1 }).total, 148);
  assert.equal(zigzagCost({ ...paper, cfg: 1, inversion: "paper" }).total, 148);
  // 'paper' mode at cfg 1 uses γ2 as given
  assert.equal(zigzagCost({ ...paper, cfg: 1, inversion_cfg: 3, inversion: "paper" }).total, 50 + 49 * 3);
  // cfg 0: ComfyUI's sampling function evaluates both branches for the zigs
  assert.equal(zigzagCost({ ...paper, cfg: 0 }).total, 100 + 49 * 3);
});

test("Z-Sampling rounds and lambda", () => {
  assert.equal(zigzagCost({ ...paper, rounds: 2 }).total, 100 + 49 * 2 * 3);
  const plain = zigzagCost({ ...paper, zigzag_steps: 0 });
  assert.equal(plain.total, 100);
  assert.equal(plain.factor, 1);
  assert.equal(zigzagCost({ ...paper, denoise: 0 }).total, 0);
});

test("multi-evaluation samplers: the last step to sigma 0 is a single evaluation", () => {
  assert.equal(samplerEvals("heun", 5, true), 9);
  assert.equal(samplerEvals("heun", 5, false), 10);
  assert.equal(samplerEvals("heunpp2", 5), 12);
  assert.equal(samplerEvals("heunpp2", 1), 1);
  assert.equal(samplerEvals("heunpp2", 5, false), 12); // heunpp2 steps to its last sigma as to 0
  assert.equal(samplerEvals("seeds_3", 5, true), 13);
  assert.equal(samplerEvals("sa_solver_pece", 5), 9);
  assert.equal(samplerEvals("euler", 5), 5);
  // heun with a KSampler schedule (ends at 0): heun runs once over the schedule (7 evaluations), and each
  // reflected step adds one zig (a single model call at cfg, both branches) and one zag (cfg 0: one branch)
  const z = zigzagCost({ ...paper, steps: 4, zigzag_steps: 3, sampler_name: "heun", scheduler: "normal" });
  assert.equal(z.total, 2 * 7 + 3 * (2 + 1));
  assert.equal(z.plain, 2 * 7);
});

test("cfg_pp samplers need both branches even at cfg 1", () => {
  assert.equal(cfgBranches(1, "euler"), 1);
  assert.equal(cfgBranches(1, "euler_cfg_pp"), 2);
  assert.equal(cfgBranches(1.0000000001, "euler"), 1); // math.isclose
  assert.equal(cfgBranches(0, "euler"), 2);
  assert.equal(guidanceBranches(0), 1);
  assert.equal(guidanceBranches(1), 1);
  assert.equal(guidanceBranches(2), 2);
  assert.equal(ksamplerCost({ steps: 30, cfg: 1, sampler_name: "euler_cfg_pp", scheduler: "normal" }), 60);
});

test("lambda >= steps is flagged before queueing", () => {
  assert.deepEqual(zigzagWarnings(paper), []);
  assert.match(zigzagWarnings({ ...paper, zigzag_steps: 50 })[0], /zigzag_steps \(50\) must be smaller than steps \(50\)/);
  assert.deepEqual(zigzagWarnings({ ...paper, steps: 1, zigzag_steps: 0 }), []);
});

const w2sdPaper = { steps: 50, cfg: 5.5, strong_cfg: 5.5, weak_cfg: 1.0, reflect_steps: -1, sampler_name: "ddim",
  scheduler: "ddim_reference", denoise: 1 };

test("W2SD paper setting: 247 per image (weak side at cfg 1 is single-branch)", () => {
  const c = w2sdCost(w2sdPaper);
  assert.equal(c.total, 247);
  assert.equal(c.plain, 100);
  assert.equal(c.reflected, 49);
  assert.equal(w2sdCost({ ...w2sdPaper, weak_cfg: 5.5 }).total, 296);
  assert.equal(w2sdCost({ ...w2sdPaper, reflect_steps: 10 }).total, 100 + 10 * 3);
  assert.equal(w2sdCost({ ...w2sdPaper, reflect_steps: 0 }).factor, 1);
  // the LoRA node's strong side uses cfg: the display passes strong_cfg = cfg
  assert.equal(w2sdCost({ ...w2sdPaper, strong_cfg: undefined, cfg: 1 }).total, 50 + 49 * 2);
});

test("W2SD sides: guidance 0 is one branch, CFG++ asks the strong side for both at cfg 1", () => {
  const base = { steps: 10, cfg: 5.5, strong_cfg: 5.5, weak_cfg: 1, scheduler: "normal", sampler_name: "euler" };
  // 9 reflected steps x (strong + weak + main) + the last step: the main side is KSampler's CFG
  assert.equal(w2sdCost({ ...base, weak_cfg: 0 }).total, 9 * (2 + 1 + 2) + 2);
  assert.equal(w2sdCost({ ...base, strong_cfg: 0, weak_cfg: 0 }).total, 9 * (1 + 1 + 2) + 2);
  assert.equal(w2sdCost({ ...base, cfg: 0, strong_cfg: 5.5 }).total, 9 * (2 + 1 + 2) + 2);
  assert.equal(w2sdCost({ ...base, cfg: 1, strong_cfg: 1, weak_cfg: 1, sampler_name: "euler_cfg_pp" }).total,
    9 * (2 + 1 + 2) + 2);
});

test("W2SD reflect_steps >= steps is flagged", () => {
  assert.deepEqual(w2sdWarnings(w2sdPaper), []);
  assert.deepEqual(w2sdWarnings({ ...w2sdPaper, reflect_steps: 49 }), []);
  assert.match(w2sdWarnings({ ...w2sdPaper, reflect_steps: 50 })[0], /reflect_steps \(50\) must be smaller than steps \(50\)/);
  assert.deepEqual(w2sdWarnings({ ...w2sdPaper, sampler_name: "euler_cfg_pp" }), []); // CFG++ runs in W2SD
});

test("adaptive: rollback counts as the reference's img2img and KSampler's denoise", () => {
  assert.equal(teacherSteps({ teacher_steps: 12, sigma: 0.7 }), 12); // 12 of 18
  assert.equal(teacherSteps({ teacher_steps: 4, sigma: 0.3 }), 4); // 4 of 14
  assert.equal(teacherSteps({ teacher_steps: 12, sigma: 1.0 }), 13); // sigma 1: the whole 13-step schedule
  assert.equal(teacherSteps({ teacher_steps: 12, sigma: 0.7, rollback_schedule: "comfy" }), 12);
  assert.equal(teacherSteps({ teacher_steps: 12, sigma: 0, strategy: "regenerate" }), 12);
  assert.equal(teacherSteps({ teacher_steps: 12, sigma: 0 }), null);
});

test("adaptive: paper's cost formula at share k/100", () => {
  const lcm = adaptiveCost({ student_steps: 4, teacher_steps: 12, sigma: 0.7, k: 50 });
  assert.equal(lcm.expected, 10);
  assert.equal(lcm.vsStudent, 2.5);
  assert.equal(adaptiveCost({ student_steps: 2, teacher_steps: 4, sigma: 0.3, k: 50 }).expected, 4);
  assert.deepEqual(adaptiveLines(lcm), ["10.00 steps/image at ~50% refined", "4 + 0.50 x 12; x2.50 student, x0.83 teacher alone"]);
  const fixed = adaptiveCost({ student_steps: 4, teacher_steps: 12, sigma: 0.7, k: 50 }, { hasTable: false });
  assert.equal(fixed.expected, null);
  assert.match(adaptiveLines(fixed)[0], /^4-16 steps\/image/);
});

test("adaptive: sigma outside (0, 1] is flagged for refine only", () => {
  assert.deepEqual(adaptiveWarnings({ sigma: 0.7, strategy: "refine" }), []);
  assert.match(adaptiveWarnings({ sigma: 0, strategy: "refine" })[0], /sigma \(0\) must be in \(0, 1\]/);
  assert.deepEqual(adaptiveWarnings({ sigma: 0, strategy: "regenerate" }), []);
});
