"""AdaptiveStudentTeacher in a real ComfyUI, on tiny seeded models: decisions
follow the scores and the threshold exactly; refined samples equal a separate
img2img run of the teacher (ComfyUI's KSampler) on the same latent, noise and
sigma; kept samples are the student's bit for bit; order is kept in mixed
batches; regenerate; the cross-format path (SD1.5 student, SDXL teacher)
decodes and re-encodes; the cost report; errors and interrupts."""

import json
import sys

import pytest
import torch

import hostlib
import imagereward_tiny as tiny


@pytest.fixture(scope="module")
def ad(reflect_pack):
    return sys.modules[f"{reflect_pack.__name__}.samplers.adaptive"]


@pytest.fixture(scope="module")
def parts(reflect_nodes, comfy_env):
    import folder_paths
    tiny.write_files(folder_paths.get_folder_paths("image_reward")[0], seed=0, name="tiny_ir.pt")
    scorer = hostlib.run_node(reflect_nodes["ImageRewardLoader"], checkpoint="tiny_ir.pt", download="never")[0]
    student = hostlib.build_model("sd15", "eps", seed=3)
    teacher = hostlib.build_model("sd15", "eps", seed=4)
    vae = hostlib.build_vae(0)
    s_pos, s_neg = hostlib.conditioning(student, seed=1), hostlib.conditioning(student, seed=2)
    samples = hostlib.ksampler(student, s_pos, s_neg, hostlib.empty_latent(6, 8, 8), seed=11, steps=2, cfg=1.0)
    return dict(scorer=scorer, student=student, teacher=teacher, vae=vae, samples=samples,
                t_pos=hostlib.conditioning(teacher, seed=5), t_neg=hostlib.conditioning(teacher, seed=6))


def run(nodes, p, **kw):
    args = dict(samples=p["samples"], student_vae=p["vae"], student_steps=2, image_reward=p["scorer"],
                prompt="a red fox", prompt_per_line=False, teacher_model=p["teacher"], teacher_positive=p["t_pos"],
                teacher_negative=p["t_neg"], seed=21, teacher_steps=3, teacher_cfg=4.0, teacher_sampler="euler",
                teacher_scheduler="normal", sigma=0.7, strategy="refine", rollback_schedule="reference",
                threshold=0.0, k=50)
    args.update(kw)
    return hostlib.run_node(nodes["AdaptiveStudentTeacher"], **args)


def decode(vae, latent):
    import nodes as comfy_nodes
    return comfy_nodes.VAEDecode().decode(vae, {"samples": latent})[0]


def split_at_median(p):
    images = decode(p["vae"], p["samples"]["samples"])
    scores = p["scorer"].score(images, ["a red fox"] * images.shape[0])
    assert scores.std() > 1e-4
    tau = float(scores.sort().values[3])  # three below, three at or above
    refine = [i for i in range(6) if scores[i] < tau]
    keep = [i for i in range(6) if scores[i] >= tau]
    assert len(refine) == 3 and refine != [0, 1, 2] and refine != [3, 4, 5]  # a mixed batch
    return scores, images, tau, refine, keep


def teacher_run(p, latent, idx, steps, denoise, seed=21, model=None):
    return hostlib.ksampler(model or p["teacher"], p["t_pos"], p["t_neg"], {"samples": latent[idx], "batch_index": idx},
                            seed=seed, steps=steps, cfg=4.0, denoise=denoise)["samples"]


def test_refine_follows_the_threshold_and_keeps_order(reflect_nodes, parts, ad):
    p = parts
    scores, images, tau, refine, keep = split_at_median(p)
    out_images, out, gate, report = run(reflect_nodes, p, threshold=tau)
    r = json.loads(report)
    assert r["refined"] == [i in refine for i in range(6)]
    assert gate["failed_indices"] == refine and gate["passed_indices"] == keep and gate["threshold"] == tau
    assert r["scores"] == pytest.approx(scores.tolist(), abs=1e-5)
    x = p["samples"]["samples"]
    # kept samples: the student's latents and decoded images, bit for bit
    assert torch.equal(out["samples"][keep], x[keep]) and torch.equal(out_images[keep], images[keep])
    # refined samples: the teacher's img2img (ComfyUI's KSampler) from the student's latents at the noise of
    # their batch positions; the reference's rollback for 3 steps at sigma 0.7 runs 3 of int(3/0.7 + 1) = 5
    scheduled, executed, _ = ad.rollback_steps(3, 0.7)
    assert (scheduled, executed) == (5, 3)
    denoise = ad.comfy_denoise_for(scheduled, executed)
    want = teacher_run(p, x, refine, executed, denoise)
    assert torch.equal(out["samples"][refine], want)
    assert torch.equal(out_images[refine], decode(p["vae"], want))
    # ... which is the same as an img2img of the whole batch, read at those positions
    whole = hostlib.ksampler(p["teacher"], p["t_pos"], p["t_neg"], {"samples": x}, seed=21, steps=executed, cfg=4.0,
                             denoise=denoise)["samples"]
    assert torch.allclose(out["samples"][refine], whole[refine], atol=1e-5)
    assert not torch.allclose(want, x[refine], atol=1e-3)  # the teacher did change them


@pytest.fixture(scope="module")
def amod(reflect_pack):
    return sys.modules[f"{reflect_pack.__name__}.nodes.adaptive"]


@pytest.mark.parametrize("steps,sigma,schedule,scheduled", [(12, 0.7, "reference", 18), (4, 0.3, "reference", 14),
                                                            (12, 0.7, "comfy", 17), (4, 0.3, "comfy", 13),
                                                            (3, 1.0, "reference", 4)])
def test_rollback_schedules_are_the_last_steps_of_n(parts, amod, steps, sigma, schedule, scheduled):
    import comfy.samplers
    executed, denoise, n = amod.rollback_plan(steps, sigma, schedule)
    assert n == scheduled and executed == (steps + 1 if sigma == 1.0 and schedule == "reference" else steps)
    ks = comfy.samplers.KSampler(parts["teacher"], steps=executed, device="cpu", sampler="euler", scheduler="normal",
                                 denoise=denoise)
    full = comfy.samplers.calculate_sigmas(parts["teacher"].get_model_object("model_sampling"), "normal", n)
    assert torch.equal(ks.sigmas, full[-(executed + 1):])


def test_regenerate_samples_from_noise(reflect_nodes, parts):
    p = parts
    scores, images, tau, refine, keep = split_at_median(p)
    out_images, out, gate, report = run(reflect_nodes, p, threshold=tau, strategy="regenerate", sigma=0.0)
    x = p["samples"]["samples"]
    want = teacher_run(p, torch.zeros_like(x), refine, 3, 1.0)
    assert torch.equal(out["samples"][refine], want) and torch.equal(out["samples"][keep], x[keep])
    assert json.loads(report)["teacher_steps_executed"] == 3


def test_cost_report_counts_teacher_calls(reflect_nodes, parts, ad):
    p = parts
    *_, tau, refine, _ = split_at_median(p)
    r = json.loads(run(reflect_nodes, p, threshold=tau, teacher_steps=12, sigma=0.7)[3])
    assert r["teacher_steps_scheduled"] == 18 and r["teacher_steps_executed"] == 12
    assert r["teacher_calls"] == 12  # euler: one model call per step, the sub-batch in one call
    assert r["share_refined"] == 0.5
    assert r["evaluations_per_image"] == 2 + 12 * 0.5 == r["paper_formula"]
    table = {k: float(v) for k, v in zip(range(10, 100, 10), range(9))}
    r = json.loads(run(reflect_nodes, p, percentiles=table, k=90, threshold=-99.0)[3])
    assert r["threshold"] == 8.0 and all(r["refined"])  # every tiny score is below 8
    assert r["expected_at_k"] == ad.expected_evaluations(2, 3, 0.9)
    r = json.loads(run(reflect_nodes, p, threshold=-99.0)[3])
    assert not any(r["refined"]) and r["teacher_calls"] == 0 and r["evaluations_per_image"] == 2


def test_cross_format_decodes_and_reencodes(reflect_nodes, parts):
    import nodes as comfy_nodes
    p = parts
    teacher = hostlib.build_model("sdxl", "eps", seed=7)
    t_vae = hostlib.build_vae(1)
    t_pos, t_neg = hostlib.conditioning(teacher, seed=8, width=64, height=64), hostlib.conditioning(teacher, seed=9)
    scores, images, tau, refine, keep = split_at_median(p)
    with pytest.raises(ValueError, match="teacher_model: its latent format \\(SDXL\\) is not the student's \\(SD15\\)"):
        run(reflect_nodes, p, threshold=tau, teacher_model=teacher, teacher_positive=t_pos, teacher_negative=t_neg,
            student_model=p["student"])
    out_images, out, gate, report = run(reflect_nodes, p, threshold=tau, teacher_model=teacher, teacher_positive=t_pos,
                                        teacher_negative=t_neg, teacher_vae=t_vae, student_model=p["student"])
    encoded = comfy_nodes.VAEEncode().encode(t_vae, images)[0]["samples"]
    want = hostlib.ksampler(teacher, t_pos, t_neg, {"samples": encoded[refine], "batch_index": refine}, seed=21,
                            steps=3, cfg=4.0, denoise=3 / 5.5)["samples"]
    assert torch.equal(out["samples"][refine], want)
    assert torch.equal(out["samples"][keep], encoded[keep])  # the latent output is in the teacher's format
    assert torch.equal(out_images[keep], images[keep])       # kept images: the student's own
    assert torch.equal(out_images[refine], decode(t_vae, want))


def test_errors_name_the_input(reflect_nodes, parts):
    p = parts
    cls = reflect_nodes["AdaptiveStudentTeacher"]
    assert "sigma (0.0) must be in (0, 1]" in cls.validate_inputs(sigma=0.0, strategy="refine")
    assert cls.validate_inputs(sigma=0.0, strategy="regenerate") is True
    with pytest.raises(ValueError, match="sigma"):
        run(reflect_nodes, p, sigma=0.0)
    with pytest.raises(ValueError, match="sigma"):
        run(reflect_nodes, p, sigma=1.5)
    with pytest.raises(ValueError, match=r"k: 55 is not in percentiles"):
        run(reflect_nodes, p, percentiles={10: 0.0, 50: 1.0}, k=55)
    with pytest.raises(ValueError, match="prompt: 2 prompts \\(one per line\\) for a batch of 6"):
        run(reflect_nodes, p, prompt="a\nb", prompt_per_line=True)
    with pytest.raises(ValueError, match="samples: empty batch"):
        run(reflect_nodes, p, samples={"samples": p["samples"]["samples"][:0]})
    with pytest.raises(ValueError, match="student_vae: decodes 4-channel latents, the samples have 16"):
        run(reflect_nodes, p, samples={"samples": torch.zeros(2, 16, 8, 8)})
    with pytest.raises(ValueError, match="rollback_schedule"):
        run(reflect_nodes, p, rollback_schedule="other")


def test_interrupt_leaves_the_teacher_clean(reflect_nodes, parts):
    import comfy.model_management as mm
    p = parts
    *_, tau, refine, _ = split_at_median(p)
    before = dict(p["teacher"].model_options)
    calls = []

    def interrupt_on_second_call(apply_model, args):
        calls.append(1)
        if len(calls) == 2:
            mm.interrupt_current_processing(True)
        return apply_model(args["input"], args["timestep"], **args["c"])

    teacher = p["teacher"].clone()
    teacher.set_model_unet_function_wrapper(interrupt_on_second_call)
    try:
        with pytest.raises(mm.InterruptProcessingException):
            run(reflect_nodes, p, threshold=tau, teacher_model=teacher)
    finally:
        mm.interrupt_current_processing(False)
    assert len(calls) == 2  # the user's wrapper ran inside ours
    assert p["teacher"].model_options.keys() == before.keys()
    assert teacher.model_options["model_function_wrapper"] is interrupt_on_second_call
    x = p["samples"]["samples"]
    out = run(reflect_nodes, p, threshold=tau)[1]  # the next run is the normal one
    assert torch.equal(out["samples"][refine], teacher_run(p, x, refine, 3, 3 / 5.5))


# --------------------------------------------------------------------------- calibration through the API

PROMPTS = ["a red fox", "a cat in the snow", "a dog", "astronaut", "a photo of a horse", "the red cat",
           "a fox in the snow", "a photo of a dog"]


def calibration_graph(info):
    return hostlib.gate_graph(info, 1, prompt="{prompt}")


def test_calibration_over_two_servers_resumes(comfy_server, parts, tmp_path):
    import subprocess
    second = hostlib.ComfyServer()
    try:
        second.start()
        for srv in (comfy_server, second):
            tiny.write_files(srv.base_dir / "models" / "image_reward", seed=0, name="tiny_ir.pt")
        (tmp_path / "wf.json").write_text(json.dumps(calibration_graph(comfy_server.object_info())))
        (tmp_path / "prompts.txt").write_text("\n".join(PROMPTS) + "\n")
        dead = f"http://127.0.0.1:{hostlib.free_port()}"
        state, table_path = tmp_path / "state.jsonl", tmp_path / "table.json"
        cmd = [sys.executable, str(hostlib.REPO_ROOT / "tools" / "calibrate.py"), "--prompts", str(tmp_path / "prompts.txt"),
               "--workflow", str(tmp_path / "wf.json"), "--server", comfy_server.url, "--server", second.url,
               "--server", dead, "--state", str(state), "--out", str(table_path), "--base-seed", "100",
               "--no-progress", "--poll", "0.1"]
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stdout + r.stderr
        recs = [json.loads(line) for line in state.read_text().splitlines()]
        assert sorted(x["index"] for x in recs) == list(range(8))
        assert {x["server"] for x in recs} == {comfy_server.url, second.url}  # both real servers did work
        assert "dropped" in r.stdout and dead in r.stdout
        by_index = {x["index"]: x for x in recs}
        scores = [by_index[i]["scores"][0] for i in range(8)]
        # each score is the in-process pipeline's for that prompt and seed
        import numpy as np
        student = parts["student"]
        pos, neg = hostlib.conditioning(student, seed=1), hostlib.conditioning(student, seed=2)
        for i in (0, 5):
            lat = hostlib.ksampler(student, pos, neg, hostlib.empty_latent(1, 8, 8), seed=100 + i, steps=2, cfg=1.0)
            want = parts["scorer"].score(decode(parts["vae"], lat["samples"]), [PROMPTS[i]])
            assert scores[i] == pytest.approx(float(want[0]), abs=1e-5)
        table = json.loads(table_path.read_text())
        assert table == pytest.approx({str(k): float(np.percentile(scores, k)) for k in range(10, 100, 10)})
        # resume: keep three records and a torn line, run again; only the other five run
        state.write_text("".join(json.dumps(by_index[i]) + "\n" for i in (0, 1, 2)) + '{"index": 3, "pro')
        r2 = subprocess.run(cmd[:cmd.index(dead) - 1] + cmd[cmd.index(dead) + 1:], capture_output=True, text=True,
                            timeout=600)
        assert r2.returncode == 0, r2.stdout + r2.stderr
        assert "(3 resumed)" in r2.stdout
        again = [json.loads(line) for line in state.read_text().splitlines() if line.startswith('{"index": ') and
                 line.endswith("}")]
        assert sorted(x["index"] for x in again if x.get("scores")) == list(range(8))
        assert json.loads(table_path.read_text()) == pytest.approx(table)
    finally:
        second.cleanup()
