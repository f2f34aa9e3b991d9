"""The adaptive student-teacher core (samplers/adaptive.py) against the
reference's arithmetic (yandex-research/adaptive-diffusion, adaptive_diffusion.py
under diffusers 0.24.0) and diffusers' schedulers, plus the pure parts of the
calibration client (tools/calibrate.py), without network."""

import json
import math
from pathlib import Path

import pytest
import torch

from tools.reflect_pack import module
adaptive = module("samplers.adaptive")
from tools import calibrate

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO / "datasets"  # the prompt sets shipped in the repository (datasets/README.md)
SDXL_UNIPC = {  # the SDXL base / refiner scheduler config, as UniPCMultistepScheduler.from_config keeps it
    "beta_end": 0.012, "beta_schedule": "scaled_linear", "beta_start": 0.00085, "num_train_timesteps": 1000,
    "prediction_type": "epsilon", "steps_offset": 1, "timestep_spacing": "leading",
}


def diffusers_img2img(scheduler, num_inference_steps, strength):
    """diffusers' StableDiffusionXLImg2ImgPipeline.get_timesteps (denoising_start None), transcribed:
    returns (executed timesteps, number of steps, t_start) after set_timesteps(num_inference_steps)."""
    scheduler.set_timesteps(num_inference_steps)
    init_timestep = min(int(num_inference_steps * strength), num_inference_steps)
    t_start = max(num_inference_steps - init_timestep, 0)
    timesteps = scheduler.timesteps[t_start * scheduler.order:]
    return timesteps, num_inference_steps - t_start, t_start


def unipc(**kw):
    diffusers = pytest.importorskip("diffusers")
    return diffusers.UniPCMultistepScheduler(**SDXL_UNIPC, **kw)


def reference_scheduled(teacher_steps, sigma):
    return int(teacher_steps / sigma + 1)  # adaptive_diffusion.py, num_all_steps


# --------------------------------------------------------------------------- rollback counts

def test_paper_settings_counts():
    assert adaptive.rollback_steps(12, 0.7) == (18, 12, 6)
    assert adaptive.rollback_steps(4, 0.3) == (14, 4, 10)
    for s in adaptive.PAPER_SETTINGS.values():
        _, executed, _ = adaptive.rollback_steps(s["teacher_steps"], s["sigma"])
        assert executed == s["teacher_steps"]


@pytest.mark.parametrize("teacher_steps,sigma", [(12, 0.7), (4, 0.3), (1, 0.5), (3, 0.3), (7, 0.33), (25, 0.1),
                                                  (8, 0.9), (10, 1.0), (4, 1.0), (50, 0.45), (2, 0.05)])
def test_rollback_matches_diffusers_unipc(teacher_steps, sigma):
    sched = unipc(final_sigmas_type="sigma_min")  # 0.24.0's UniPC ends at sigma(abar_0)
    n = reference_scheduled(teacher_steps, sigma)
    ts, executed, t_start = diffusers_img2img(sched, n, sigma)
    assert adaptive.rollback_steps(teacher_steps, sigma) == (n, executed, t_start)
    assert adaptive.leading_timesteps(n) == sched.timesteps.tolist()
    assert adaptive.reference_rollback_timesteps(teacher_steps, sigma) == ts.tolist()
    # k-diffusion sigmas the teacher runs through, final level included
    ours = adaptive.reference_rollback_sigmas(teacher_steps, sigma, adaptive.scaled_linear_sigmas())
    want = sched.sigmas[t_start:].double()
    assert ours.shape == want.shape == (executed + 1,)
    # diffusers builds abar in float32 (1 - abar_0 loses ~1e-5 relative); ours is float64
    torch.testing.assert_close(ours, want, rtol=5e-5, atol=0)
    assert adaptive.rollback_sigmas(sched.sigmas, sigma).tolist() == sched.sigmas[t_start:].tolist()
    zero = unipc(final_sigmas_type="zero")
    diffusers_img2img(zero, n, sigma)
    ours0 = adaptive.reference_rollback_sigmas(teacher_steps, sigma, adaptive.scaled_linear_sigmas(), final="zero")
    torch.testing.assert_close(ours0, zero.sigmas[t_start:].double(), rtol=5e-5, atol=0)


def test_paper_rollback_timesteps():
    assert adaptive.reference_rollback_timesteps(12, 0.7) == [625, 573, 521, 469, 417, 365, 313, 261, 209, 157, 105, 53]
    assert adaptive.reference_rollback_timesteps(4, 0.3) == [265, 199, 133, 67]
    s = adaptive.reference_rollback_sigmas(12, 0.7, adaptive.scaled_linear_sigmas())
    assert s[0].item() == pytest.approx(2.5017, abs=1e-4) and s[-1].item() == pytest.approx(0.029168, abs=1e-5)


def test_step_count_is_scheduler_independent_for_first_order():
    diffusers = pytest.importorskip("diffusers")
    euler = diffusers.EulerDiscreteScheduler(**SDXL_UNIPC)
    for t, s in [(12, 0.7), (4, 0.3), (10, 1.0)]:
        n = reference_scheduled(t, s)
        ts, executed, t_start = diffusers_img2img(euler, n, s)
        assert adaptive.rollback_steps(t, s) == (n, executed, t_start)
        assert len(ts) == executed
        # Euler's "leading" divides by N, UniPC's by N + 1: same count, other timesteps
        assert ts.tolist() != adaptive.reference_rollback_timesteps(t, s)


def test_executed_equals_teacher_steps_below_one():
    for t in range(1, 60):
        for i in range(1, 100):
            assert adaptive.rollback_steps(t, i / 100)[1] == t
        assert adaptive.rollback_steps(t, 1.0) == (t + 1, t + 1, 0)


def test_comfy_denoise_differs_and_can_be_matched():
    assert adaptive.comfy_denoise_steps(12, 0.7) == (17, 12)
    assert adaptive.comfy_denoise_steps(4, 0.3) == (13, 4)
    assert adaptive.comfy_denoise_steps(5, 1.0) == (5, 5)
    for t in (1, 2, 4, 12, 30):
        for i in range(5, 100, 5):
            n, e, _ = adaptive.rollback_steps(t, i / 100)
            d = adaptive.comfy_denoise_for(n, e)
            assert 0 < d <= 1
            assert adaptive.comfy_denoise_steps(e, d) == (n, e)
    with pytest.raises(ValueError, match="executed_steps"):
        adaptive.comfy_denoise_for(4, 5)


def test_rollback_sigmas_tail():
    full = torch.linspace(14.6, 0.0, 19)  # 18 steps
    tail = adaptive.rollback_sigmas(full, 0.7)
    assert tail.numel() == 13 and torch.equal(tail, full[6:])
    assert torch.equal(adaptive.rollback_sigmas(full, 1.0), full)
    with pytest.raises(ValueError, match="descending"):
        adaptive.rollback_sigmas(full.flip(0), 0.5)
    with pytest.raises(ValueError, match="full_sigmas"):
        adaptive.rollback_sigmas(torch.tensor([1.0]), 0.5)


@pytest.mark.parametrize("args,name", [((0, 0.5), "teacher_steps"), ((-3, 0.5), "teacher_steps"),
                                       ((2.5, 0.5), "teacher_steps"), ((True, 0.5), "teacher_steps"),
                                       ((12, 0.0), "sigma"), ((12, -0.1), "sigma"), ((12, 1.01), "sigma"),
                                       ((12, float("nan")), "sigma"), ((12, "x"), "sigma")])
def test_rollback_validation(args, name):
    with pytest.raises(ValueError, match=f"^{name}:"):
        adaptive.rollback_steps(*args)


def test_rollback_noise():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    torch.testing.assert_close(adaptive.rollback_noise(x0, eps, 2.5), x0 + 2.5 * eps)
    # diffusers' add_noise is alpha_t times the k-diffusion form
    sched = unipc(final_sigmas_type="sigma_min")
    sched.set_timesteps(18)
    t = sched.timesteps[6:7]
    vp = sched.add_noise(x0, eps, t)
    sk = sched.sigmas[6].item()
    torch.testing.assert_close(vp * math.sqrt(1 + sk * sk), adaptive.rollback_noise(x0, eps, sk), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="noise"):
        adaptive.rollback_noise(x0, eps[:1], 1.0)


# --------------------------------------------------------------------------- cost

def test_expected_evaluations_paper():
    assert adaptive.expected_evaluations(4, 12, 0.5) == 10
    assert adaptive.expected_evaluations(2, 4, 0.5) == 4
    assert adaptive.expected_evaluations(4, 12, 0.0) == 4
    assert adaptive.expected_evaluations(4, 12, 1.0) == 16
    assert adaptive.expected_evaluations(4, 12, 0.25, student_evals_per_step=2, teacher_evals_per_step=2) == 14
    with pytest.raises(ValueError, match="share_refined"):
        adaptive.expected_evaluations(4, 12, 1.5)
    with pytest.raises(ValueError, match="teacher_steps"):
        adaptive.expected_evaluations(4, 0, 0.5)
    with pytest.raises(ValueError, match="teacher_evals_per_step"):
        adaptive.expected_evaluations(4, 12, 0.5, teacher_evals_per_step=0)


def test_measured_evaluations():
    decisions = [True, False, False, True, False, False, False, True]
    assert adaptive.share_refined(decisions) == 3 / 8
    assert adaptive.measured_evaluations(decisions, 4, 12) == pytest.approx(4 + 12 * 3 / 8)
    assert adaptive.measured_evaluations(torch.tensor([True, True]), 2, 4, 1, 2) == 10
    scores = torch.tensor([0.1, 0.9, -0.3, 0.7])
    refine, keep = adaptive.select(scores, 0.5)
    flags = [i in refine for i in range(4)]
    assert adaptive.measured_evaluations(flags, 2, 4) == 2 + 4 * 0.5
    with pytest.raises(ValueError, match="refined"):
        adaptive.share_refined([])


# --------------------------------------------------------------------------- selection

def test_select_and_scatter_mixed_batch():
    scores = torch.tensor([0.5, -1.0, 2.0, 0.1, float("nan"), 0.3])
    refine, keep = adaptive.select(scores, 0.3)
    assert refine == [1, 3, 4]  # below tau, and NaN
    assert keep == [0, 2, 5]    # >= tau (0.3 itself is kept, as `reward < tau` refines)
    x = torch.arange(6, dtype=torch.float32).view(6, 1, 1) * torch.ones(6, 2, 2)
    kept, refined = x[keep], x[refine] + 100
    out = adaptive.scatter_back(kept, refined, keep, refine)
    want = torch.tensor([0, 101, 2, 103, 104, 5], dtype=torch.float32)
    assert torch.equal(out[:, 0, 0], want) and out.shape == x.shape
    assert adaptive.scatter_back(["a", "c", "f"], ["B", "D", "E"], keep, refine) == ["a", "B", "c", "D", "E", "f"]
    assert adaptive.select([1.0, 2.0], 0.0) == ([], [0, 1])
    assert adaptive.select([1.0, 2.0], 5.0) == ([0, 1], [])
    assert torch.equal(adaptive.scatter_back(None, x[:2], [], [0, 1]), x[:2])
    with pytest.raises(ValueError, match="each batch index once"):
        adaptive.scatter_back(kept, refined, [0, 2, 5], [1, 3, 3])
    with pytest.raises(ValueError, match="refined"):
        adaptive.scatter_back(kept, refined[:2], keep, refine)
    with pytest.raises(ValueError, match="threshold"):
        adaptive.select(scores, float("nan"))


def test_threshold_from_shipped_tables():
    lcm = adaptive.load_percentile_table(str(REPO / "percentiles" / "IR_percentiles_lcm_sdxl.json"))
    assert sorted(lcm) == list(range(10, 100, 10))
    assert adaptive.threshold(lcm, 50) == 0.6154254078865051
    turbo = (REPO / "percentiles" / "IR_percentiles_sdxl_turbo.json").read_text()
    assert adaptive.threshold(turbo, 10) == -0.30758287012577057
    with pytest.raises(ValueError, match="k: 55"):
        adaptive.threshold(lcm, 55)


def test_load_percentile_table_errors(tmp_path):
    with pytest.raises(ValueError, match="missing.json"):
        adaptive.load_percentile_table(str(tmp_path / "missing.json"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="bad.json"):
        adaptive.load_percentile_table(str(bad))


# --------------------------------------------------------------------------- prompt files

def test_partiprompts():
    p = adaptive.read_partiprompts(str(DATASETS / "PartiPrompts.tsv"))
    assert len(p) == 1632 and p[:3] == ["bond", "element", "molecule"]
    assert p[-1] == "a series of musical notes on a computer screen"
    # no CSV quoting in the TSV: the quotes are part of the prompt
    assert any(x.startswith('"G I G G L E" painted') for x in p)
    assert adaptive.read_prompts(str(DATASETS / "PartiPrompts.tsv"), limit=5) == p[:5]


def test_drawbench():
    p = adaptive.read_drawbench(str(DATASETS / "drawbench.csv"))
    assert len(p) == 200 and p[0] == "A red colored car." and p[1] == "A black colored car."
    assert p[-1] == "New York Skyline with 'Google Research Pizza Cafe' written with fireworks on the sky."
    assert adaptive.read_prompts(str(DATASETS / "drawbench.csv")) == p


def test_coco_captions_in_reference_order():
    p = adaptive.read_coco_captions(str(DATASETS / "coco_captions_5k.csv"))
    assert len(p) == 5000
    assert p[0] == "Green commercial building with refrigerator and refrigeration units outside."
    assert p[2] == "Four cows in a pen on a sunny day "  # kept as written, as pandas reads it
    assert adaptive.read_prompts(str(DATASETS / "coco_captions_5k.csv"), limit=100) == p[:100]
    assert adaptive.read_coco_captions(str(DATASETS / "coco_captions_5k.csv"), limit=0) == []


def test_prompt_reader_errors(tmp_path):
    with pytest.raises(ValueError, match=r"prompts\.json: unknown prompt file format"):
        adaptive.read_prompts(str(tmp_path / "prompts.json"))
    f = tmp_path / "other.csv"
    f.write_text("id,title\n1,hello\n")
    with pytest.raises(ValueError, match=r"other\.csv: no prompt column.*'title'"):
        adaptive.read_prompts(str(f))
    with pytest.raises(ValueError, match=r"other\.csv: no column 'caption'"):
        adaptive.read_coco_captions(str(f))
    assert adaptive.read_prompts(str(f), column="title") == ["hello"]
    with pytest.raises(ValueError, match="limit"):
        adaptive.read_prompts(str(f), limit=-1, column="title")
    with pytest.raises(ValueError, match=r"nothere\.tsv: cannot be read"):
        adaptive.read_prompts(str(tmp_path / "nothere.tsv"))
    t = tmp_path / "p.txt"
    t.write_text("a cat\n\n  \na dog\n")
    assert adaptive.read_prompts(str(t)) == ["a cat", "a dog"]
    e = tmp_path / "empty.csv"
    e.write_text("prompt\n \n")
    with pytest.raises(ValueError, match=r"empty\.csv: no prompts"):
        adaptive.read_prompts(str(e))


# --------------------------------------------------------------------------- calibration client (no network)

WORKFLOW = {
    "3": {"class_type": "KSampler", "inputs": {"seed": 7, "steps": 4, "cfg": 1.0, "model": ["4", 0],
                                               "positive": ["6", 0], "denoise": 1.0}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "{prompt}, high quality", "clip": ["4", 1]}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
    "9": {"class_type": "QualityGate", "inputs": {"prompt": "{prompt}", "images": ["8", 0], "k": 50}},
    "10": {"class_type": "SamplerCustom", "inputs": {"noise_seed": 3, "add_noise": True, "cfg": 8}},
    "11": {"class_type": "Note", "inputs": {"seed": "not an int", "flag": True}},
}


def test_substitute():
    g = calibrate.substitute(WORKFLOW, "a red car", 105)
    assert g["6"]["inputs"]["text"] == "a red car, high quality"
    assert g["9"]["inputs"]["prompt"] == "a red car"
    assert g["7"]["inputs"]["text"] == "blurry"
    assert g["3"]["inputs"]["seed"] == 105 and g["10"]["inputs"]["noise_seed"] == 105
    assert g["3"]["inputs"]["steps"] == 4 and g["3"]["inputs"]["model"] == ["4", 0]
    assert g["11"]["inputs"]["seed"] == "not an int" and g["10"]["inputs"]["add_noise"] is True
    assert WORKFLOW["6"]["inputs"]["text"] == "{prompt}, high quality" and WORKFLOW["3"]["inputs"]["seed"] == 7
    # a prompt that itself contains braces is inserted literally
    assert calibrate.substitute(WORKFLOW, "{x} {prompt}", 0)["9"]["inputs"]["prompt"] == "{x} {prompt}"
    # seeds of other nodes are left alone; an explicit {seed} token is the only seed set when present
    g = {**WORKFLOW, "12": {"class_type": "ReflectTestTinyModel", "inputs": {"seed": 3}}}
    assert calibrate.substitute(g, "p", 9)["12"]["inputs"]["seed"] == 3
    g["13"] = {"class_type": "MyNoise", "inputs": {"seed": "{seed}"}}
    out = calibrate.substitute(g, "p", 9)
    assert out["13"]["inputs"]["seed"] == 9 and out["3"]["inputs"]["seed"] == 7 and out["12"]["inputs"]["seed"] == 3


def test_check_workflow():
    with pytest.raises(ValueError, match="Export \\(API\\)"):
        calibrate.check_workflow({"nodes": [], "links": []}, "ui.json")
    with pytest.raises(ValueError, match=r"wf\.json: no string input contains the token \{prompt\}"):
        calibrate.check_workflow({"1": {"class_type": "X", "inputs": {"text": "a cat"}}}, "wf.json")
    with pytest.raises(ValueError, match="not an API-format workflow"):
        calibrate.check_workflow({"1": "x"})


def test_load_state(tmp_path):
    prompts = ["p0", "p1", "p2", "p3"]
    path = tmp_path / "state.jsonl"
    assert calibrate.load_state(str(path), prompts) == ({}, {})
    lines = [
        {"index": 0, "prompt": "p0", "scores": [0.5], "server": "http://a"},
        {"index": 2, "prompt": "p2", "scores": None, "server": "http://a", "error": "boom"},
        {"index": 3, "prompt": "p3", "scores": None, "server": "http://b", "error": "x"},
        {"index": 3, "prompt": "p3", "scores": [1.0, -0.25], "server": "http://b"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in lines) + '{"index": 1, "prom')  # torn last line
    done, failed = calibrate.load_state(str(path), prompts)
    assert sorted(done) == [0, 3] and done[3]["scores"] == [1.0, -0.25]
    assert failed == {2: "boom"}
    path.write_text('{"index": 0, "prompt": "p0", "scores": [0.5]}\nnot json\n{"index": 1, "prompt": "p1", "scores": [1]}\n')
    with pytest.raises(ValueError, match="line 2"):
        calibrate.load_state(str(path), prompts)
    path.write_text('{"index": 1, "prompt": "other", "scores": [0.5]}\n')
    with pytest.raises(ValueError, match="another prompt list"):
        calibrate.load_state(str(path), prompts)
    path.write_text('{"index": 9, "prompt": "p9", "scores": [0.5]}\n')
    with pytest.raises(ValueError, match="outside"):
        calibrate.load_state(str(path), prompts)


def test_collect_scores():
    entry = {"status": {"status_str": "success", "completed": True},
             "outputs": {"12": {"reflect_scores": [0.3]}, "9": {"reflect_scores": [0.1, 0.2], "images": []},
                         "8": {"images": [{"filename": "x.png"}]}}}
    assert calibrate.collect_scores(entry) == [0.1, 0.2, 0.3]
    with pytest.raises(calibrate.JobError, match="reflect_scores"):
        calibrate.collect_scores({"outputs": {"8": {"images": []}}})
    err = {"status": {"status_str": "error", "messages": [["execution_error", {"node_type": "KSampler",
                                                                                 "exception_message": "OOM"}]]}}
    with pytest.raises(calibrate.JobError, match="KSampler OOM"):
        calibrate.collect_scores(err)
    with pytest.raises(calibrate.JobError, match="finite"):
        calibrate.collect_scores({"outputs": {"9": {"reflect_scores": [float("nan")]}}})


def test_normalize_server():
    assert calibrate.normalize_server("127.0.0.1:8188/") == "http://127.0.0.1:8188"
    assert calibrate.normalize_server("https://host:1/") == "https://host:1"
