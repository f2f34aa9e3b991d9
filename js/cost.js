// Cost arithmetic of the pack's nodes, shared by the frontend extension and its
// unit tests (node --test tests/js/). Pure: no DOM, no ComfyUI import.
//
// Unit: batch items through the diffusion model per image, CFG branches counted
// (a KSampler at cfg 5.5 costs 2 per step, at cfg 1 one). This is what
// samplers/zigzag.py `evaluations` calls "minimal" and what the host tests
// count through the UNet; tests/host/test_frontend_e2e.py checks these numbers
// against counts of real runs.

export const REFERENCE_SCHEDULER = "ddim_reference";

// math.isclose(a, b) with Python's default rel_tol (ComfyUI's cfg == 1 test).
export function isclose(a, b, relTol = 1e-9) {
  return a === b || Math.abs(a - b) <= relTol * Math.max(Math.abs(a), Math.abs(b));
}

// Samplers that need the unconditional prediction even at cfg 1 (they turn
// ComfyUI's cfg-1 shortcut off): the *_cfg_pp family.
export const CFG_PP_SAMPLERS = new Set([
  "euler_cfg_pp", "euler_ancestral_cfg_pp", "dpmpp_2s_ancestral_cfg_pp", "dpmpp_2m_cfg_pp",
  "res_multistep_cfg_pp", "res_multistep_ancestral_cfg_pp", "gradient_estimation_cfg_pp",
]);

// Branches ComfyUI's sampling_function evaluates at this cfg: only the
// conditional one at cfg 1 (unless the sampler needs the unconditional one), else both.
export function cfgBranches(cfg, sampler = "") {
  return CFG_PP_SAMPLERS.has(sampler) || !isclose(cfg, 1) ? 2 : 1;
}

// Branches of an evaluation at a guidance forced by the pack
// (nodes/comfy_glue.py guidance_options): 0 needs only the unconditional
// branch, 1 only the conditional one.
export function guidanceBranches(g) {
  return g === 0 || isclose(g, 1) ? 1 : 2;
}

// Model calls of ComfyUI's samplers: a mirror of samplers/calls.py (run_calls),
// checked against it for every sampler there by tests/test_sampler_calls.py.
// Multi-call steps; every other sampler makes one call a step.
const CALLS_PER_STEP = {
  heun: 2, heunpp2: 3, dpm_2: 2, dpm_2_ancestral: 2, dpmpp_2s_ancestral: 2, dpmpp_2s_ancestral_cfg_pp: 2,
  dpmpp_sde: 2, dpmpp_sde_gpu: 2, exp_heun_2_x0: 2, exp_heun_2_x0_sde: 2, seeds_2: 2, seeds_3: 3, sa_solver_pece: 2,
};
// Samplers whose number of evaluations depends on the model's outputs.
export const VARIABLE_SAMPLERS = new Set(["dpm_adaptive"]);

// Model calls of step i of n (samplers/calls.py calls_in_step): a multi-call step
// into sigma 0 makes one (endsAtZero: the run's last sigma is 0, as with every
// ComfyUI scheduler; not the ddim_reference schedule); heunpp2 compares with the
// last sigma, whatever it is: one call into it, two with one step left, three
// before; sa_solver_pece has no corrector in its first step.
function callsInStep(sampler, n, i, endsAtZero) {
  if (sampler === "sa_solver_pece") return i === 0 ? 1 : 2;
  if (sampler === "heunpp2") return Math.min(3, n - i);
  if (endsAtZero && i === n - 1) return 1;
  return CALLS_PER_STEP[sampler] ?? 1;
}

// Model evaluations of one run of a ComfyUI sampler over n steps (one call of
// its sampler function).
export function samplerEvals(sampler, n, endsAtZero = true) {
  let total = 0;
  for (let i = 0; i < n; i++) total += callsInStep(sampler, n, i, endsAtZero);
  return total;
}

// Steps a sampling node runs: steps, or none at denoise 0.
function runSteps(steps, denoise) {
  return denoise === undefined || denoise > 0 ? Math.max(0, Math.trunc(steps)) : 0;
}

// A plain KSampler: CFG branches x the sampler's evaluations.
export function ksamplerCost({ steps, cfg, sampler_name = "euler", scheduler = "normal", denoise = 1 }) {
  const n = runSteps(steps, denoise);
  return cfgBranches(cfg, sampler_name) * samplerEvals(sampler_name, n, scheduler !== REFERENCE_SCHEDULER);
}

function result(total, plain, extra = {}) {
  return { total, plain, factor: plain > 0 ? total / plain : 0, ...extra };
}

// samplers/zigzag.py zag_guidance: in 'published' mode cfg <= 1 turns guidance
// off altogether (the inversion then runs on the conditional branch).
export function zagGuidance(cfg, inversionCfg, inversion = "published") {
  return inversion === "published" && cfg <= 1 ? 1 : inversionCfg;
}

// Z-Sampling (ZigzagKSampler): the sampler runs once over the whole schedule
// (its own evaluations, as a KSampler); before each of the first lambda steps,
// T_max times a zig (one model call at cfg, a DDIM step down) and a zag (one
// model call at the inversion guidance, back up), after which the sampler takes
// its own step. Against the same node at lambda 0, which is exactly the base
// sampler (a KSampler with the same settings).
export function zigzagCost({ steps, cfg, inversion_cfg = 0, zigzag_steps, rounds = 1, inversion = "published",
  sampler_name = "ddim", scheduler = REFERENCE_SCHEDULER, denoise = 1 }) {
  const n = runSteps(steps, denoise);
  const lam = zigzagReflected(n, zigzag_steps);
  const t = Math.max(1, Math.trunc(rounds));
  const endsAtZero = scheduler !== REFERENCE_SCHEDULER;
  const zig = cfgBranches(cfg, sampler_name);
  const zag = guidanceBranches(zagGuidance(cfg, inversion_cfg, inversion));
  const plain = zig * samplerEvals(sampler_name, n, endsAtZero);
  const total = plain + lam * t * (zig + zag);
  return result(total, plain, { reflected: lam, steps: n, exact: !VARIABLE_SAMPLERS.has(sampler_name) });
}

// Steps Z-Sampling reflects (samplers/zigzag.py resolve_steps): -1 is every step but the last.
export function zigzagReflected(steps, zigzag_steps) {
  const lam = Math.trunc(zigzag_steps);
  return Math.max(0, Math.min(lam === -1 ? steps - 1 : lam, steps - 1));
}

// Settings ZigzagKSampler refuses (samplers/zigzag.py check_args), as messages
// naming the input; empty when fine.
export function zigzagWarnings({ steps, zigzag_steps, rounds = 1 }) {
  const out = [];
  if (steps < 1) out.push(`steps must be >= 1 (got ${steps})`);
  if (zigzag_steps < -1) out.push(`zigzag_steps must be >= 0, or -1 for every step but the last (got ${zigzag_steps})`);
  if (zigzag_steps > 0 && zigzag_steps >= steps) {
    out.push(`zigzag_steps (${zigzag_steps}) must be smaller than steps (${steps})`);
  }
  if (rounds < 1) out.push(`rounds must be at least 1 (got ${rounds})`);
  return out;
}

// W2SD: how many steps are reflected (nodes/w2sd.py reflected_steps; -1: all but the last).
export function w2sdReflected(steps, reflect_steps) {
  return reflect_steps < 0 ? Math.max(steps - 1, 0) : Math.min(reflect_steps, Math.max(steps - 1, 0));
}

// Branches of a W2SD reflection side (nodes/w2sd.py): its guider's CFG, except
// that guidance 0 evaluates only the unconditional branch. The strong side runs
// the sampler's step, so a CFG++ sampler asks it for both branches at cfg 1;
// the weak side's inversion is a plain model call.
export function sideBranches(cfg, sampler = "") {
  return cfg === 0 ? 1 : cfgBranches(cfg, sampler);
}

// W2SD (WeakStrongReflection, WeakStrongReflectionLoRA, whose strong side uses
// cfg): the main side's sampler runs once over the whole schedule (KSampler's
// CFG); before each reflected step the strong side denoises (one model call, a
// DDIM step down) and the weak side inverts (one model call at weak_cfg).
export function w2sdCost({ steps, cfg, strong_cfg, weak_cfg = 1, reflect_steps = -1, sampler_name = "ddim",
  scheduler = REFERENCE_SCHEDULER, denoise = 1 }) {
  const n = runSteps(steps, denoise);
  const lam = w2sdReflected(n, reflect_steps);
  const endsAtZero = scheduler !== REFERENCE_SCHEDULER;
  const main = cfgBranches(cfg, sampler_name);
  const strong = sideBranches(strong_cfg ?? cfg, sampler_name);
  const weak = sideBranches(weak_cfg, "");
  const plain = main * samplerEvals(sampler_name, n, endsAtZero);
  const total = plain + lam * (strong + weak);
  return result(total, plain, { reflected: lam, steps: n, exact: !VARIABLE_SAMPLERS.has(sampler_name) });
}

export function w2sdWarnings({ steps, reflect_steps }) {
  const out = [];
  if (steps < 1) out.push(`steps must be >= 1 (got ${steps})`);
  if (reflect_steps >= steps) {
    out.push(`reflect_steps (${reflect_steps}) must be smaller than steps (${steps}); -1 reflects all but the last`);
  }
  return out;
}

// Adaptive student-teacher (nodes/adaptive.py rollback_plan): the steps the
// teacher executes on a refined sample, or null for a sigma the node refuses.
export function teacherSteps({ teacher_steps, sigma, strategy = "refine", rollback_schedule = "reference" }) {
  const t = Math.trunc(teacher_steps);
  if (!(t >= 1)) return null;
  if (strategy === "regenerate") return t;
  if (!(sigma > 0 && sigma <= 1)) return null;
  if (rollback_schedule === "comfy") return t; // KSampler(steps, denoise=sigma) runs `steps` steps
  const scheduled = Math.trunc(t / sigma + 1); // int(T / sigma + 1), as the reference asks diffusers' img2img
  const init = Math.min(Math.trunc(scheduled * sigma), scheduled);
  return scheduled - Math.max(scheduled - init, 0);
}

// The paper's cost per image: student_steps + share refined x teacher steps
// executed (samplers/adaptive.py expected_evaluations); with a percentile
// table the share is about k/100; without one (a fixed threshold) it is
// unknown and the range [student alone, every sample refined] is given.
export function adaptiveCost({ student_steps, teacher_steps, sigma, strategy = "refine",
  rollback_schedule = "reference", k = 50 }, { hasTable = true } = {}) {
  const s = Math.max(0, Math.trunc(student_steps));
  const exec = teacherSteps({ teacher_steps, sigma, strategy, rollback_schedule });
  if (exec === null) return null;
  const share = hasTable ? Math.min(Math.max(k, 0), 100) / 100 : null;
  const expected = share === null ? null : s + share * exec;
  return {
    student: s, teacher: exec, teacherAlone: Math.trunc(teacher_steps), share, expected,
    min: s, max: s + exec,
    vsStudent: expected !== null && s > 0 ? expected / s : null,
    vsTeacher: expected !== null && teacher_steps > 0 ? expected / Math.trunc(teacher_steps) : null,
  };
}

export function adaptiveWarnings({ sigma, strategy = "refine", teacher_steps = 1, student_steps = 1 }) {
  const out = [];
  if (strategy !== "regenerate" && !(sigma > 0 && sigma <= 1)) out.push(`sigma (${sigma}) must be in (0, 1] for refine`);
  if (teacher_steps < 1) out.push(`teacher_steps must be >= 1 (got ${teacher_steps})`);
  if (student_steps < 1) out.push(`student_steps must be >= 1 (got ${student_steps})`);
  return out;
}

function num(x) {
  return Number.isInteger(x) ? String(x) : x.toFixed(2);
}

// The node's first line: "247 evals/image (x2.47 KSampler)".
export function costLabel(cost) {
  return `${num(cost.total)} evals/image (x${cost.factor.toFixed(2)} KSampler)`;
}

export function zigzagLines(cost) {
  if (cost.steps === 0) return ["denoise 0: nothing is sampled"];
  return [costLabel(cost),
    `KSampler ${cost.plain}; ${cost.reflected} of ${cost.steps} steps reflected${cost.exact ? "" : " (sampler's count varies)"}`];
}

export const w2sdLines = zigzagLines;

export function adaptiveLines(c) {
  if (!c) return [];
  const fmt = (x) => x.toFixed(2);
  if (c.expected === null) {
    return [`${c.min}-${c.max} steps/image (fixed threshold: share refined unknown)`,
      `${c.student} student + share x ${c.teacher} teacher steps`];
  }
  return [`${fmt(c.expected)} steps/image at ~${Math.round(c.share * 100)}% refined`,
    `${c.student} + ${fmt(c.share)} x ${c.teacher}; x${fmt(c.vsStudent)} student, x${fmt(c.vsTeacher)} teacher alone`];
}
