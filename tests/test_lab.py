"""The lab (lab/): shipped data and weights, metrics, and a mini run of the main job.

Needs only torch, numpy and safetensors (the digits ship as a tensor file, so no
scikit-learn); plots are checked only when matplotlib is installed."""

import importlib.util
import json
import os

import pytest
import torch

from lab import data, metrics, models, run

pytest.importorskip("safetensors")


@pytest.fixture(scope="module", autouse=True)
def _threads():
    # one thread: small batches, and robust when other tests share the CPU
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def test_digits_ship_and_split():
    images, labels = data.load_raw()
    assert images.shape == (1797, 8, 8) and images.dtype == torch.uint8 and int(images.max()) == 16
    assert sorted(labels.unique().tolist()) == list(range(10))
    train, test = data.split_indices(labels)
    assert len(test) == 300 and len(train) == 1497 and not set(train.tolist()) & set(test.tolist())
    x, y = data.load("test")
    assert x.shape == (300, 1, 16, 16) and float(x.min()) >= -1 and float(x.max()) <= 1
    assert torch.equal(y.bincount(), torch.full((10,), 30))


def test_weights_are_small_and_load():
    total = 0
    for name in models.CONFIGS:
        path = models.weights_path(name)
        assert os.path.exists(path), f"{path} is missing: run python3 -m lab.train"
        total += os.path.getsize(path)
        models.load(name)  # strict load: every tensor present, shapes right
    assert total < 5 * 2 ** 20, total
    assert models.n_params(models.load("weak")) < models.n_params(models.load("strong")) / 2


def test_sampling_is_deterministic_and_digits_come_out():
    """Two fresh loads, the same seed: bit-identical samples; and the strong model's
    samples are recognisable digits (the measuring classifier agrees with the prompt)."""
    from lab import methods

    labels = torch.arange(20) % 10
    outs = []
    for _ in range(2):
        strong = models.Model(models.load("strong"), "strong")
        noise = torch.randn(20, 1, 16, 16, generator=torch.Generator().manual_seed(7))
        outs.append(methods.standard(strong, noise, labels, 10, 3.0))
    assert torch.equal(outs[0], outs[1])
    logits, _ = metrics.classify(models.load("classifier"), outs[0])
    assert (logits.argmax(1) == labels).float().mean() >= 0.8


def test_training_is_deterministic():
    """Two short runs of the training code with the same seed give identical weights."""
    from lab import train

    nets = [train.train_diffusion("weak", steps=3, save=False, log_every=10 ** 9) for _ in range(2)]
    sd = [n.state_dict() for n in nets]
    assert all(torch.equal(sd[0][k], sd[1][k]) for k in sd[0])
    shipped = models.load("weak").state_dict()
    assert any(not torch.equal(sd[0][k], shipped[k]) for k in shipped)  # 3 steps are not the shipped 500


def test_classifier_accuracy_on_held_out_digits():
    x, y = data.load("test")
    logits, feats = metrics.classify(models.load("classifier"), x)
    assert feats.shape == (300, 64)
    assert (logits.argmax(1) == y).float().mean() >= 0.97
    scorer = models.load("scorer")
    assert (scorer(x).argmax(1) == y).float().mean() >= 0.95
    s = scorer.score(x, y)
    assert s.shape == (300,) and float(s.max()) <= 0


def test_frechet_distance_behaves():
    clf = models.load("classifier")
    _, f_train = metrics.classify(clf, data.load("train")[0])
    _, f_test = metrics.classify(clf, data.load("test")[0])
    noise = torch.rand(300, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    _, f_noise = metrics.classify(clf, noise)
    assert abs(metrics.frechet_distance(f_train, f_train)) < 1e-6
    real = metrics.frechet_distance(f_test, f_train)
    fake = metrics.frechet_distance(f_noise, f_train)
    assert 0 < real < 0.1 * fake, (real, fake)
    assert abs(metrics.Reference(f_train).fd(f_test) - real) < 1e-9
    # resampled FDs spread (upwards: duplicates inflate FD) and stay far below the noise images' FD
    boot = metrics.bootstrap_fds(f_test, metrics.Reference(f_train), metrics.bootstrap_indices(300, reps=20))
    assert float(boot.std()) > 0 and real < float(boot.mean()) and float(boot.max()) < 0.1 * fake


def test_frechet_distance_against_scipy():
    scipy_linalg = pytest.importorskip("scipy.linalg")
    import numpy as np
    clf = models.load("classifier")
    _, f_train = metrics.classify(clf, data.load("train")[0])
    _, f_test = metrics.classify(clf, data.load("test")[0])
    real = metrics.frechet_distance(f_test, f_train)
    m1, s1 = metrics.stats(f_test)
    m2, s2 = metrics.stats(f_train)
    cov = scipy_linalg.sqrtm(s1.numpy() @ s2.numpy()).real
    ref = float(((m1 - m2) ** 2).sum()) + float(np.trace(s1.numpy() + s2.numpy() - 2 * cov))
    assert abs(metrics.Reference(f_train).fd(f_test) - real) < 1e-9
    assert abs(real - ref) < 1e-6 * max(1.0, abs(ref))


def test_verdicts():
    assert run.verdict(0.05, 0.01, "up") == "holds"
    assert run.verdict(0.01, 0.01, "up") == "within noise"
    assert run.verdict(-0.05, 0.01, "up") == "opposite"
    assert run.verdict(-0.5, 0.1, "down") == "holds"
    assert run.verdict(0.0, 0.0, "up") == "within noise"


def test_mini_run_writes_outputs(tmp_path):
    s = json.loads(json.dumps(run.SETTINGS))
    s.update(n=10, steps=4, matched_steps=8)
    s["zigzag"]["lambda_steps"] = 3
    summary = run.run(s, out=str(tmp_path), quiet=True, threads=1)
    md = (tmp_path / "results.md").read_text()
    js = json.loads((tmp_path / "results.json").read_text())
    assert "| Z-Sampling (published) |" in md and "Inversion modes" in md
    ev = {m["key"]: m["evals"] for m in js["methods"]}
    assert set(ev) == set(run.LABELS)
    assert ev["standard"] == 8 and ev["standard_matched"] == 16 and ev["cond_only"] == 4
    assert ev["zigzag_published"] == ev["zigzag_paper"] == 8 + 3 * 3      # zig 2 + zag 1 (gamma_2 = 0)
    assert ev["w2sd_published"] == ev["w2sd_self_paper"] == 3 * 3 + 1      # strong, weak, main at cfg 1
    assert ev["zigzag_nogap_paper"] == 8 + 3 * (2 + 2)                     # gamma_2 = gamma_1: both branches
    assert ev["swg"] == ev["mswg"] == 4 * (1 + 4)                           # full image + 2x2 crops
    assert ev["student"] == 3
    a = js["extra"]["adaptive"]
    assert ev["adaptive"] == pytest.approx(a["measured_evaluations"])
    assert a["measured_evaluations"] == pytest.approx(3 + a["refined_share"] * 5 * 2)
    assert len(js["claims"]) == len(run.CLAIMS)
    assert all(c["verdict"].split(" ")[0] in ("holds", "within", "opposite", "does") for c in js["claims"])
    if importlib.util.find_spec("matplotlib") is None:
        assert summary["files"] == []
    else:
        for f in ("metrics_vs_evals.png", "grids.png"):
            assert (tmp_path / f).stat().st_size > 1000
