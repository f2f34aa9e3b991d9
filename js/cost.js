// Cost arithmetic of the pack's nodes, shared by the frontend extension and
// its unit tests (node --test). Mirrors samplers/zigzag.py `evaluations`.

const EVALS_PER_STEP = {
  heun: 2, heunpp2: 2, dpm_2: 2, dpm_2_ancestral: 2, dpmpp_2s_ancestral: 2, dpmpp_2s_ancestral_cfg_pp: 2,
  dpmpp_sde: 2, dpmpp_sde_gpu: 2, exp_heun_2_x0: 2, exp_heun_2_x0_sde: 2, seeds_2: 2, seeds_3: 3, sa_solver_pece: 2,
};

function branches(g) {
  return g === 0 || g === 1 ? 1 : 2;
}

// Batch items through the diffusion model per image for Z-Sampling, and the
// same for a plain KSampler with the same steps and cfg.
export function zigzagCost({ steps, cfg, inversion_cfg, zigzag_steps, rounds, inversion = "published", sampler_name = "ddim" }) {
  const per = EVALS_PER_STEP[sampler_name] ?? 1;
  const g2 = inversion === "published" && cfg <= 1 ? 1 : inversion_cfg;
  const lam = Math.max(0, Math.min(zigzag_steps, steps));
  const zig = branches(cfg) * per;
  const plain = steps * zig;
  const total = plain + lam * rounds * (branches(g2) + zig);
  return { total, plain, factor: plain > 0 ? total / plain : 0 };
}

// Settings the backend refuses, as messages naming the input (empty when fine).
export function zigzagWarnings({ steps, zigzag_steps, rounds }) {
  const out = [];
  if (zigzag_steps > 0 && zigzag_steps >= steps) out.push(`zigzag_steps (${zigzag_steps}) must be smaller than steps (${steps})`);
  if (rounds < 1) out.push("rounds must be at least 1");
  return out;
}

export function costLabel(cost) {
  return `${cost.total} evals/image (x${cost.factor.toFixed(2)} KSampler)`;
}
