"""W2SD core against the reference loop (diffusers DDIM / DDIMInverse) with
different small epsilon models on the strong, weak and main sides."""

import pytest
import torch

from ddim_reference import TinyEps, cfg, denoiser, reflection_loop, sigma_space
from tools.reflect_pack import module
w2sd = module("samplers.w2sd")
zz = module("samplers.zigzag")

diffusers = pytest.importorskip("diffusers")


@pytest.mark.parametrize("mode", ["published", "paper"])
def test_matches_diffusers_reference(mode):
    strong, weak, main = TinyEps(seed=1), TinyEps(seed=2), TinyEps(seed=3)
    sides = (cfg(strong, 5.5), cfg(weak, 1.0), cfg(main, 5.5))  # the paper's CFGs
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    ref = reflection_loop(diffusers, *sides, noise, 50, 49, 1, mode)
    table, sigmas = sigma_space(diffusers, 50)
    got = w2sd.sample_w2sd(*(denoiser(table, s) for s in sides), zz.unit_noise_start(noise, sigmas[0]), sigmas,
                           inversion=mode) * zz.eps_input_scale(sigmas[-1])
    rel = ((got - ref).norm() / ref.norm()).item()
    assert rel < 1e-4, rel
    # the weak side matters: swapping it for the strong one changes the result
    other = reflection_loop(diffusers, sides[0], sides[0], sides[2], noise, 50, 49, 1, mode)
    assert ((other - ref).norm() / ref.norm()).item() > 1e-3


def test_paper_setting_counts():
    ev = w2sd.evaluations(50, 5.5, 1.0, 5.5)
    assert ev == {"minimal": 247, "reference": 296}
    # the first 10 steps reflected: 10 x (strong 2 + weak 1) + 50 main steps x 2
    assert w2sd.evaluations(50, 5.5, 1.0, 5.5, reflect_steps=10) == {"minimal": 130, "reference": 140}
    assert w2sd.evaluations(50, 5.5, 1.0, 5.5, reflect_steps=0) == {"minimal": 100, "reference": 100}
