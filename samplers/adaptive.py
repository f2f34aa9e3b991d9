"""The pure parts of the adaptive student-teacher scheme (Starodubcev et al.
2023, "Your Student is Better Than Expected: Adaptive Teacher-Student
Collaboration for Text-Conditional Diffusion Models"; reference code
``yandex-research/adaptive-diffusion``, ``adaptive_diffusion.py``, run under
the diffusers 0.24.0 it pins).

The method: a distilled student samples; ImageReward scores each sample; a
sample whose score is strictly below the threshold ``tau`` (the k-th entry of a
percentile table of the student's scores) is refined by the teacher, an
img2img run from the student's sample with strength ``sigma`` (the "rollback");
the others are kept as they are.

Conventions (as in the rest of ``samplers/``):

* sigmas are k-diffusion sigmas, ``x = x0 + sigma * eps``, a schedule is a
  descending 1-D tensor ending with its final level (0 or the lowest sigma);
* a model's sigma table is ComfyUI's ``model_sampling.sigmas``: entry ``t`` is
  ``sqrt((1 - abar_t) / abar_t)`` for the integer training timestep ``t``;
* the rollback counts are those of the reference: it asks the teacher for
  ``int(teacher_steps / sigma + 1)`` steps with ``strength=sigma`` and diffusers'
  img2img keeps ``min(int(N * strength), N)`` of them (:func:`rollback_steps`);
  the teacher's scheduler is UniPC with the SDXL config, whose "leading" spacing
  divides by ``N + 1`` (:func:`leading_timesteps`), and in diffusers 0.24.0 its
  last step ends at ``sigma(abar_0)``, not at 0 (:func:`reference_rollback_sigmas`);
* a refined sample is one whose score is ``< tau``; ``>= tau`` is kept (the
  quality gate's pass rule, ``samplers.quality_gate.gate``). A NaN score fails
  the gate, so it is refined.

Also here: the paper's cost formula and its measured counterpart, the
batch split/merge of a mixed batch, and readers of the prompt files used for
calibration (PartiPrompts, DrawBench, the reference's COCO captions).
"""

from __future__ import annotations

import csv
import math
import os
from typing import Iterable, Sequence

import torch

from .quality_gate import gate, merge, parse_table, split_indices, threshold_from_table

__all__ = [
    "PAPER_SETTINGS", "rollback_steps", "img2img_steps", "comfy_denoise_steps", "comfy_denoise_for",
    "leading_timesteps", "rollback_sigmas", "reference_rollback_timesteps", "reference_rollback_sigmas",
    "scaled_linear_sigmas", "rollback_noise", "expected_evaluations", "share_refined", "measured_evaluations",
    "select", "scatter_back", "threshold", "load_percentile_table", "read_prompts", "read_partiprompts",
    "read_drawbench", "read_coco_captions", "PROMPT_COLUMNS",
]

# The two settings of the reference's README (student steps / guidance, teacher steps / guidance,
# rollback sigma, percentile k, the percentile table shipped with it).
PAPER_SETTINGS = {
    "lcm_sdxl": {"student": "LCM-SDXL", "student_steps": 4, "student_guidance": 8.0, "teacher": "SDXL base",
                 "teacher_steps": 12, "teacher_guidance": 8.0, "sigma": 0.7, "k": 50,
                 "table": "IR_percentiles_lcm_sdxl.json"},
    "sdxl_turbo": {"student": "SDXL-Turbo", "student_steps": 2, "student_guidance": 0.0, "teacher": "SDXL refiner",
                   "teacher_steps": 4, "teacher_guidance": 8.0, "sigma": 0.3, "k": 50,
                   "table": "IR_percentiles_sdxl_turbo.json"},
}


# --------------------------------------------------------------------------- rollback counts

def _check_steps(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: {value!r} must be an integer >= 1")
    return value


def _check_fraction(value, name: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name}: {value!r} is not a number in (0, 1]") from None
    if not (0.0 < v <= 1.0):  # also rejects NaN
        raise ValueError(f"{name}: {value!r} must be in (0, 1]")
    return v


def img2img_steps(num_inference_steps: int, strength: float) -> tuple[int, int]:
    """diffusers' img2img ``get_timesteps`` without ``denoising_start``:
    ``(executed, t_start)`` where ``init = min(int(N * strength), N)``,
    ``t_start = max(N - init, 0)`` and the run executes ``timesteps[t_start:]``
    (for a first-order scheduler such as UniPC, Euler, DDIM), i.e.
    ``N - t_start`` steps."""
    n = _check_steps(num_inference_steps, "num_inference_steps")
    s = _check_fraction(strength, "strength")
    init = min(int(n * s), n)
    t_start = max(n - init, 0)
    return n - t_start, t_start


def rollback_steps(teacher_steps: int, sigma: float) -> tuple[int, int, int]:
    """``(scheduled_steps, executed_steps, start_index)`` of the reference's
    refinement: it calls the teacher's img2img with
    ``num_inference_steps = int(teacher_steps / sigma + 1)`` and
    ``strength = sigma``; the scheduler is set for ``scheduled_steps`` steps
    and the run executes steps ``start_index .. scheduled_steps - 1``.

    For sigma in (0, 1) this executes exactly ``teacher_steps`` steps; sigma 1
    executes ``teacher_steps + 1`` (the whole ``teacher_steps + 1``-step
    schedule), as the reference does. Paper settings: (12, 0.7) -> (18, 12, 6),
    (4, 0.3) -> (14, 4, 10)."""
    t = _check_steps(teacher_steps, "teacher_steps")
    s = _check_fraction(sigma, "sigma")
    scheduled = int(t / s + 1)
    executed, start = img2img_steps(scheduled, s)
    return scheduled, executed, start


def comfy_denoise_steps(steps: int, denoise: float) -> tuple[int, int]:
    """ComfyUI's ``KSampler(steps, denoise)``: ``(scheduled_steps, executed_steps)``.
    ComfyUI computes a schedule of ``int(steps / denoise)`` steps and keeps its
    last ``steps + 1`` sigmas (denoise > 0.9999 means the plain ``steps`` schedule).

    It differs from the reference's count: with steps = teacher_steps and
    denoise = sigma, ComfyUI schedules ``int(T / sigma)`` steps, the reference
    ``int(T / sigma + 1)`` (12, 0.7: 17 vs 18; 4, 0.3: 13 vs 14), so the
    rollback starts from a different level even with the same scheduler."""
    n = _check_steps(steps, "steps")
    d = _check_fraction(denoise, "denoise")
    if d > 0.9999:
        return n, n
    return int(n / d), n


def comfy_denoise_for(scheduled_steps: int, executed_steps: int) -> float:
    """A ComfyUI denoise for which ``KSampler(executed_steps, denoise)``
    schedules exactly ``scheduled_steps`` steps (``int(executed / denoise) ==
    scheduled``): ``executed / (scheduled + 0.5)``, the middle of the interval,
    safe from float rounding. ``executed == scheduled`` gives 1.0."""
    n = _check_steps(scheduled_steps, "scheduled_steps")
    e = _check_steps(executed_steps, "executed_steps")
    if e > n:
        raise ValueError(f"executed_steps: {e} is more than scheduled_steps ({n})")
    return 1.0 if e == n else e / (n + 0.5)


def leading_timesteps(steps: int, num_train_timesteps: int = 1000, steps_offset: int = 1) -> list[int]:
    """The teacher's timesteps: diffusers' UniPC / DPM-Solver "leading" spacing,
    ``ratio = num_train_timesteps // (steps + 1)``, ``t_i = (steps - i) * ratio
    + steps_offset`` for i = 0 .. steps - 1 (descending). Note the ``+ 1``: DDIM
    and Euler's "leading" divide by ``steps``."""
    n = _check_steps(steps, "steps")
    ratio = int(num_train_timesteps) // (n + 1)
    if ratio < 1:
        raise ValueError(f"steps: {n} leaves no timestep spacing in {num_train_timesteps} training timesteps")
    return [(n - i) * ratio + int(steps_offset) for i in range(n)]


def reference_rollback_timesteps(teacher_steps: int, sigma: float, num_train_timesteps: int = 1000,
                                 steps_offset: int = 1) -> list[int]:
    """The integer timesteps the reference's teacher evaluates (descending):
    the last ``executed`` of the ``scheduled``-step leading schedule.
    (12, 0.7): 625, 573, ..., 53; (4, 0.3): 265, 199, 133, 67."""
    scheduled, _, start = rollback_steps(teacher_steps, sigma)
    return leading_timesteps(scheduled, num_train_timesteps, steps_offset)[start:]


def rollback_sigmas(full_sigmas: torch.Tensor, sigma: float) -> torch.Tensor:
    """The tail of a descending schedule that an img2img of strength ``sigma``
    runs, diffusers' way: ``full_sigmas`` is the schedule of all
    ``N = len(full_sigmas) - 1`` steps (final level included) and the run keeps
    ``full_sigmas[t_start:]`` with ``t_start`` from :func:`img2img_steps`
    (``executed + 1`` values; the first is the level the noise is added at).

    ComfyUI's denoise keeps the last ``steps + 1`` sigmas of an
    ``int(steps / denoise)``-step schedule instead (:func:`comfy_denoise_steps`);
    pass the reference's ``scheduled`` steps' schedule here to get the
    reference's tail."""
    if not isinstance(full_sigmas, torch.Tensor) or full_sigmas.ndim != 1 or full_sigmas.numel() < 2:
        raise ValueError("full_sigmas: expected a 1-D tensor of at least 2 sigmas (N steps, final level included)")
    if bool((full_sigmas[1:] > full_sigmas[:-1]).any()):
        raise ValueError("full_sigmas: the schedule must be descending")
    _, start = img2img_steps(full_sigmas.numel() - 1, sigma)
    return full_sigmas[start:]


def scaled_linear_sigmas(num_train_timesteps: int = 1000, beta_start: float = 0.00085,
                         beta_end: float = 0.012) -> torch.Tensor:
    """The sigma table (float64, ascending in t) of SD / SDXL's "scaled_linear"
    betas: ``betas = linspace(sqrt(b0), sqrt(b1), T)**2``, ``abar = cumprod(1 -
    betas)``, ``sigma_t = sqrt((1 - abar_t) / abar_t)`` (ComfyUI's
    ``model_sampling.sigmas`` for these models, up to its float32 storage)."""
    betas = torch.linspace(beta_start ** 0.5, beta_end ** 0.5, int(num_train_timesteps), dtype=torch.float64) ** 2
    abar = torch.cumprod(1.0 - betas, dim=0)
    return ((1.0 - abar) / abar).sqrt()


def reference_rollback_sigmas(teacher_steps: int, sigma: float, sigma_table: torch.Tensor,
                              final: str = "alpha0", steps_offset: int = 1) -> torch.Tensor:
    """The k-diffusion sigmas the reference's teacher runs through (``executed
    + 1`` values, descending): ``sigma_table[t]`` for each of
    :func:`reference_rollback_timesteps`, then the final level: ``"alpha0"``
    = ``sigma_table[0]`` (diffusers 0.24.0's UniPC, which the reference pins; its
    output is decoded at that level) or ``"zero"`` (diffusers >= 0.27's default).
    ``sigma_table`` has one entry per training timestep (its length is
    ``num_train_timesteps``). The first value is the level the student's latent
    is noised to."""
    if not isinstance(sigma_table, torch.Tensor) or sigma_table.ndim != 1 or sigma_table.numel() < 2:
        raise ValueError("sigma_table: expected a 1-D tensor with one sigma per training timestep")
    if final not in ("alpha0", "zero"):
        raise ValueError(f"final: {final!r} must be 'alpha0' (diffusers 0.24.0) or 'zero'")
    ts = reference_rollback_timesteps(teacher_steps, sigma, sigma_table.numel(), steps_offset)
    if ts[0] >= sigma_table.numel():
        raise ValueError(f"sigma_table: {sigma_table.numel()} entries, the schedule needs timestep {ts[0]}")
    last = sigma_table[:1] if final == "alpha0" else sigma_table.new_zeros(1)
    return torch.cat([sigma_table[torch.tensor(ts, dtype=torch.long)], last])


def rollback_noise(latent: torch.Tensor, noise: torch.Tensor, sigma: float | torch.Tensor) -> torch.Tensor:
    """The student's latent rolled back to level ``sigma`` (k-diffusion form):
    ``latent + sigma * noise``. diffusers' ``add_noise`` gives ``alpha_t``
    times this (``alpha_t * x0 + sigma_vp * eps``); the reference draws
    ``noise`` from the global CUDA RNG, not from the seeded generator."""
    if latent.shape != noise.shape:
        raise ValueError(f"noise: shape {tuple(noise.shape)} differs from the latent's {tuple(latent.shape)}")
    return latent + noise.to(latent) * sigma


# --------------------------------------------------------------------------- cost

def expected_evaluations(student_steps: int, teacher_steps: int, share_refined: float,
                         student_evals_per_step: float = 1, teacher_evals_per_step: float = 1) -> float:
    """The paper's average cost per sample: ``student_steps *
    student_evals_per_step + share_refined * teacher_steps *
    teacher_evals_per_step`` (README: 4 + 12 * 0.5 = 10, 2 + 4 * 0.5 = 4 with
    one evaluation per step). ``share_refined`` is the refined fraction (k / 100
    when tau is the k-th percentile of the same score distribution); pass 2 as
    ``*_evals_per_step`` to count CFG's two passes. Scoring and VAE work are not
    counted, as in the paper."""
    s = _check_steps(student_steps, "student_steps")
    t = _check_steps(teacher_steps, "teacher_steps")
    share = float(share_refined)
    if not (0.0 <= share <= 1.0):
        raise ValueError(f"share_refined: {share_refined!r} must be in [0, 1]")
    for name, v in (("student_evals_per_step", student_evals_per_step),
                    ("teacher_evals_per_step", teacher_evals_per_step)):
        if not (float(v) > 0 and math.isfinite(float(v))):
            raise ValueError(f"{name}: {v!r} must be a positive number")
    return s * float(student_evals_per_step) + share * t * float(teacher_evals_per_step)


def share_refined(refined: Iterable[bool]) -> float:
    """The fraction of samples refined, from per-sample decisions (True = refined)."""
    d = [bool(x) for x in (refined.tolist() if isinstance(refined, torch.Tensor) else refined)]
    if not d:
        raise ValueError("refined: no decisions")
    return sum(d) / len(d)


def measured_evaluations(refined: Iterable[bool], student_steps: int, teacher_executed_steps: int,
                         student_evals_per_step: float = 1, teacher_evals_per_step: float = 1) -> float:
    """The average cost a run actually had, from its per-sample decisions
    (True = refined): every sample pays the student, the refined ones also the
    teacher's *executed* steps (:func:`rollback_steps`, e.g. 12 for 12 / 0.7).
    Equals :func:`expected_evaluations` with the observed share."""
    return expected_evaluations(student_steps, teacher_executed_steps, share_refined(refined),
                                student_evals_per_step, teacher_evals_per_step)


# --------------------------------------------------------------------------- selection

def threshold(table, k: int, source: str = "percentile_table") -> float:
    """tau: the k-th entry of a percentile table (no interpolation between
    entries, as the reference's ``score_percentiles[k]``)."""
    return threshold_from_table(table, k, source)


def load_percentile_table(path: str) -> dict[int, float]:
    """A percentile table JSON file ``{"10": v, ..., "90": v}`` as ``{k: v}``; errors name the file."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ValueError(f"{path}: cannot be read ({e.strerror or e})") from None
    return parse_table(text, str(path))


def select(scores, tau: float) -> tuple[list[int], list[int]]:
    """``(refine_indices, keep_indices)``, each in batch order: a score below
    ``tau`` is refined, ``>= tau`` kept (a NaN score is refined)."""
    s = scores if isinstance(scores, torch.Tensor) else torch.as_tensor(list(scores), dtype=torch.float64)
    if s.ndim != 1:
        raise ValueError(f"scores: expected one score per sample (1-D), got shape {tuple(s.shape)}")
    keep, refine = split_indices(gate(s, tau))
    return refine, keep


def scatter_back(kept, refined, keep_idx: Sequence[int], refine_idx: Sequence[int]):
    """The batch in its original order from the kept and the refined parts
    (inverse of indexing by :func:`select`'s indices). Tensors (items along
    dim 0; either part may be None when its index list is empty) or lists."""
    keep_idx, refine_idx = list(keep_idx), list(refine_idx)
    if sorted(keep_idx + refine_idx) != list(range(len(keep_idx) + len(refine_idx))):
        raise ValueError("keep_idx, refine_idx: together they must be each batch index once")
    if isinstance(kept, torch.Tensor) or isinstance(refined, torch.Tensor):
        for items, idx, name in ((kept, keep_idx, "kept"), (refined, refine_idx, "refined")):
            got = 0 if items is None else len(items)
            if got != len(idx):
                raise ValueError(f"{name}: {got} items for {len(idx)} {name} samples")
        return merge(kept, refined, keep_idx, refine_idx)
    out = [None] * (len(keep_idx) + len(refine_idx))
    for items, idx, name in ((kept, keep_idx, "kept"), (refined, refine_idx, "refined")):
        items = [] if items is None else list(items)
        if len(items) != len(idx):
            raise ValueError(f"{name}: {len(items)} items for {len(idx)} {name} samples")
        for i, item in zip(idx, items):
            out[i] = item
    return out


# --------------------------------------------------------------------------- prompt files

# Column names read when none is given, in this order ("Prompt": PartiPrompts, "Prompts": DrawBench,
# "caption": the reference's COCO captions).
PROMPT_COLUMNS = ("Prompt", "Prompts", "prompt", "prompts", "caption", "text")


def _check_limit(limit):
    if limit is None:
        return None
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise ValueError(f"limit: {limit!r} must be None or an integer >= 0")
    return limit


def read_prompts(path: str, limit: int | None = None, column: str | None = None) -> list[str]:
    """Prompts of a prompt file, in file order, the first ``limit`` of them
    (all when None), as the reference's ``list(...)[:n]``:

    * ``.tsv``: tab-separated with a header, no quoting (PartiPrompts has
      prompts that start with a quote, e.g. ``"G I G G L E" painted ...``);
    * ``.csv``: comma-separated with a header, standard CSV quoting;
    * ``.txt``: one prompt per line.

    The column is ``column`` or the first of :data:`PROMPT_COLUMNS` present.
    Prompts are returned as written (COCO captions keep their trailing
    spaces); empty or blank prompts are skipped. Unknown formats, a missing
    column or a file without prompts raise ValueError naming the file."""
    limit = _check_limit(limit)
    ext = os.path.splitext(str(path))[1].lower()
    if ext not in (".tsv", ".csv", ".txt"):
        raise ValueError(f"{path}: unknown prompt file format {ext or '(no extension)'!r} "
                         "(expected .tsv, .csv or .txt)")
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            if ext == ".txt":
                if column is not None:
                    raise ValueError(f"{path}: a .txt prompt file has no columns (column={column!r})")
                rows = [line.rstrip("\r\n") for line in f]
            else:
                if ext == ".tsv":
                    reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
                else:
                    reader = csv.reader(f)
                header = next(reader, None)
                if not header:
                    raise ValueError(f"{path}: empty file (no header row)")
                names = [h.strip() for h in header]
                if column is not None:
                    if column not in names:
                        raise ValueError(f"{path}: no column {column!r} (columns: {', '.join(map(repr, names))})")
                    col = column
                else:
                    col = next((c for c in PROMPT_COLUMNS if c in names), None)
                    if col is None:
                        raise ValueError(f"{path}: no prompt column (columns: {', '.join(map(repr, names))}; "
                                         f"expected one of {', '.join(PROMPT_COLUMNS)})")
                j = names.index(col)
                rows = [r[j] if j < len(r) else "" for r in reader]
    except OSError as e:
        raise ValueError(f"{path}: cannot be read ({e.strerror or e})") from None
    except (UnicodeDecodeError, csv.Error) as e:
        raise ValueError(f"{path}: not a readable {ext[1:]} prompt file ({e})") from None
    prompts = [r for r in rows if r.strip()]
    if not prompts:
        raise ValueError(f"{path}: no prompts")
    return prompts if limit is None else prompts[:limit]


def read_partiprompts(path: str, limit: int | None = None) -> list[str]:
    """PartiPrompts.tsv (column ``Prompt``; 1,632 prompts)."""
    return read_prompts(path, limit, column="Prompt")


def read_drawbench(path: str, limit: int | None = None) -> list[str]:
    """drawbench.csv (column ``Prompts``; 200 prompts)."""
    return read_prompts(path, limit, column="Prompts")


def read_coco_captions(path: str, limit: int | None = None) -> list[str]:
    """coco_captions_5k.csv, the reference's ``data/coco.csv`` (column ``caption``; 5,000 captions)."""
    return read_prompts(path, limit, column="caption")
