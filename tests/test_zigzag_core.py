"""Z-Sampling core: arguments, evaluation counts, the generalised inversion."""

import pytest
import torch

from tools.reflect_pack import module
zz = module("samplers.zigzag")


def test_paper_setting_counts():
    ev = zz.evaluations(50, 49, 1, 5.5, 0.0)
    assert ev["reference"] == 296  # 2 per plain step, 2 + 4 T_max per reflected step
    assert ev["minimal"] == 247
    assert ev["model_calls"] == 50 + 49 * 2
    assert zz.evaluations(50, 49, 2, 5.5, 0.0)["minimal"] == 100 + 49 * 2 * 3
    # gamma_2 = 1: conditional branch only; gamma_1 <= 1 in published mode: no CFG at all
    assert zz.evaluations(50, 49, 1, 5.5, 1.0)["minimal"] == 247
    assert zz.evaluations(50, 49, 1, 1.0, 0.0, "published")["minimal"] == 50 + 49 * 2
    assert zz.evaluations(50, 49, 1, 1.0, 0.0, "paper")["minimal"] == 50 + 49 * 2


def test_zag_guidance_rule():
    assert zz.zag_guidance(5.5, 0.0, "published") == 0.0
    assert zz.zag_guidance(1.0, 0.0, "published") == 1.0
    assert zz.zag_guidance(0.5, 3.0, "published") == 1.0
    assert zz.zag_guidance(1.0, 0.0, "paper") == 0.0


@pytest.mark.parametrize("args,needle", [
    ((50, 50, 1, "published"), "zigzag_steps"),
    ((50, -2, 1, "published"), "zigzag_steps"),
    ((50, 10, 0, "published"), "rounds"),
    ((50, 10, 1, "textbook"), "inversion"),
    ((0, 0, 1, "paper"), "steps"),
])
def test_bad_arguments_name_the_input(args, needle):
    with pytest.raises(ValueError, match=needle):
        zz.check_args(*args)


def _toy_denoiser(scale):
    w = torch.tensor([0.3, -0.2, 0.5, 0.1]).reshape(1, 4, 1, 1)

    def denoise(x, sigma):
        return torch.tanh(x * w * scale) / (1 + sigma)
    return denoise


def test_lambda_zero_is_plain_ddim():
    sig = torch.linspace(10, 0, 11)
    x = torch.randn(1, 4, 4, 4, generator=torch.Generator().manual_seed(0)) * 10
    d = _toy_denoiser(1.0)
    plain = x.clone()
    for i in range(10):
        plain = zz.zig(d, plain, sig[i], sig[i + 1])
    got = zz.sample_zigzag(d, _toy_denoiser(0.0), x, sig, lambda_steps=0)
    assert torch.equal(got, plain)


def test_minus_one_reflects_every_step_but_the_last():
    assert zz.resolve_steps(-1, 50) == 49
    assert zz.resolve_steps(-1, 1) == 0
    zz.check_args(50, -1, 1, "published")


def test_flow_inversion_is_euler_inversion():
    """With c_in = 1 (flow models), one paper-mode zag is x + (s_i - s_{i+1}) * v,
    v the zag model's velocity read at s_i on the zig's output."""
    sig = torch.tensor([1.0, 0.5, 0.0])
    x = torch.randn(1, 4, 2, 2, generator=torch.Generator().manual_seed(1))
    zig, zag = _toy_denoiser(1.0), _toy_denoiser(0.0)
    one = lambda s: torch.ones(())
    x1 = zz.zig(zig, x, sig[0], sig[1])
    v = (x1 - zag(x1, sig[0])) / sig[0]
    expected = x1 + (sig[0] - sig[1]) * v
    torch.testing.assert_close(zz.zag(zag, x1, sig, 0, "paper", one), expected)
    torch.testing.assert_close(zz.reflect(zig, zag, x, sig, 0, 1, "paper", one), expected)
    # the step then keeps the zig from x~_0
    got = zz.sample_zigzag(zig, zag, x, sig[:2], lambda_steps=0)
    seen = {}
    zz.sample_zigzag(zig, zag, x, sig, lambda_steps=1, inversion="paper", input_scale=one,
                     callback=lambda info: seen.setdefault("x", info["x"]))
    torch.testing.assert_close(seen["x"], zz.zig(zig, expected, sig[0], sig[1]))
    assert not torch.equal(seen["x"], got)


def test_published_reads_one_level_lower():
    """published: the zag reads the latent at sigma_{i+2} and writes it at sigma_{i+1}."""
    sig = torch.tensor([8.0, 4.0, 2.0, 0.0])
    x = torch.randn(1, 4, 2, 2, generator=torch.Generator().manual_seed(2)) * 8
    zig, zag = _toy_denoiser(1.0), _toy_denoiser(0.0)
    c = zz.eps_input_scale
    x1 = zz.zig(zig, x, sig[0], sig[1])
    x_in = x1 * c(sig[1]) / c(sig[0])
    d = (x_in - zag(x_in, sig[0])) / sig[0]
    u = x1 * c(sig[1])
    u_out = c(sig[1]) * (u / c(sig[2]) + (sig[1] - sig[2]) * d)
    torch.testing.assert_close(zz.zag(zag, x1, sig, 0, "published"), u_out / c(sig[0]))
    seen = {}
    zz.sample_zigzag(zig, zag, x, sig, lambda_steps=1, inversion="published",
                     callback=lambda info: seen.setdefault("x", info["x"]))
    torch.testing.assert_close(seen["x"], zz.zig(zig, u_out / c(sig[0]), sig[0], sig[1]))
