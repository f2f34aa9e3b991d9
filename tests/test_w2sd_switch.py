"""Forward-time weight differences (weights.switch.WeightSwitch) against merged weights."""

import pytest
import torch

from tools.reflect_pack import module
WeightSwitch = module("weights.switch").WeightSwitch


def merged_lora(w, up, down, alpha, mid=None):
    """The merged weight, as a LoRA loader computes it (ComfyUI's LoRA formula)."""
    r = down.shape[0]
    if mid is not None:
        final = [down.shape[1], down.shape[0], mid.shape[2], mid.shape[3]]
        down = torch.mm(down.transpose(0, 1).flatten(1), mid.transpose(0, 1).flatten(1)).reshape(final).transpose(0, 1)
    return w + (up.flatten(1) @ down.flatten(1)).reshape(w.shape) * (alpha / r)


def forward_as(sw, module, x, side):
    """``module(x)`` with the switch attached and ``side`` active, detached after."""
    sw.attach()
    try:
        with sw.active(side):
            return module(x)
    finally:
        sw.detach()


def test_linear_lora_equals_merged_weights_per_side():
    g = torch.Generator().manual_seed(0)
    lin = torch.nn.Linear(12, 10)
    up, down = torch.randn(10, 4, generator=g), torch.randn(4, 12, generator=g)
    sw = WeightSwitch()
    sw.add_lora(lin, {"strong": 0.7, "weak": -2.3}, up, down, alpha=2.0)
    x = torch.randn(3, 5, 12, generator=g)
    base = lin(x)
    sw.attach()
    try:
        for side, c in (("strong", 0.7), ("weak", -2.3)):
            with sw.active(side):
                got = lin(x)
            want = torch.nn.functional.linear(x, merged_lora(lin.weight, c * up, down, 2.0), lin.bias)
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        with sw.active("main"):  # no term for this side: untouched
            assert torch.equal(lin(x), base)
        assert torch.equal(lin(x), base)  # no side active
    finally:
        sw.detach()
    assert not lin._forward_hooks
    with sw.active("strong"):
        assert torch.equal(lin(x), base)  # detached: nothing added


@pytest.mark.parametrize("stride,padding,kernel", [(1, 1, 3), (2, 1, 3), (1, 0, 1)])
def test_conv_locon_equals_merged_weights(stride, padding, kernel):
    g = torch.Generator().manual_seed(1)
    conv = torch.nn.Conv2d(6, 8, kernel, stride=stride, padding=padding)
    up, down = torch.randn(8, 3, 1, 1, generator=g), torch.randn(3, 6, kernel, kernel, generator=g)
    x = torch.randn(2, 6, 9, 9, generator=g)
    sw = WeightSwitch()
    sw.add_lora(conv, {"s": 1.5}, up, down, alpha=None)
    got = forward_as(sw, conv, x, "s")
    want = torch.nn.functional.conv2d(x, merged_lora(conv.weight, 1.5 * up, down, 3.0), conv.bias, stride, padding)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


def test_conv_lora_with_mid_core_and_circular_padding():
    g = torch.Generator().manual_seed(2)
    conv = torch.nn.Conv2d(5, 7, 3, padding=1, padding_mode="circular")
    up, down, mid = torch.randn(7, 2, 1, 1, generator=g), torch.randn(2, 5, 1, 1, generator=g), torch.randn(2, 2, 3, 3, generator=g)
    x = torch.randn(1, 5, 6, 6, generator=g)
    sw = WeightSwitch()
    sw.add_lora(conv, {"s": -1.0}, up, down, alpha=1.0, mid=mid)
    got = forward_as(sw, conv, x, "s")
    ref = torch.nn.Conv2d(5, 7, 3, padding=1, padding_mode="circular")
    ref.load_state_dict({"weight": merged_lora(conv.weight, -1.0 * up, down, 1.0, mid), "bias": conv.bias})
    torch.testing.assert_close(got, ref(x), rtol=1e-4, atol=1e-4)


def test_offset_dense_and_bias_terms_and_several_terms_add():
    g = torch.Generator().manual_seed(3)
    lin = torch.nn.Linear(6, 9)  # a fused q/k/v-like weight: the LoRA targets rows 3..5 only
    up, down = torch.randn(3, 2, generator=g), torch.randn(2, 6, generator=g)
    dense, dbias = torch.randn(9, 6, generator=g), torch.randn(9, generator=g)
    sw = WeightSwitch()
    sw.add_lora(lin, {"a": 2.0}, up, down, alpha=2.0, offset=(3, 3))
    sw.add_dense(lin, {"a": 0.5, "b": 1.0}, weight=dense, bias=dbias)
    x = torch.randn(4, 6, generator=g)
    w = lin.weight.detach().clone()
    w[3:6] += 2.0 * up @ down
    want = torch.nn.functional.linear(x, w + 0.5 * dense, lin.bias + 0.5 * dbias)
    sw.attach()
    try:
        with sw.active("a"):
            got = lin(x)
        with sw.active("b"):
            got_b = lin(x)
    finally:
        sw.detach()
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_b, torch.nn.functional.linear(x, lin.weight + dense, lin.bias + dbias), rtol=1e-5, atol=1e-5)
    assert sw.sides() == {"a", "b"}
    assert sw.nbytes() == 4 * (up.numel() + down.numel() + dense.numel() + dbias.numel())


def test_zero_coefficients_add_no_hook_and_other_layers_are_rejected():
    lin = torch.nn.Linear(3, 3)
    sw = WeightSwitch()
    sw.add_lora(lin, {"main": 0.0}, torch.ones(3, 1), torch.ones(1, 3))
    assert sw.terms == {}
    with pytest.raises(TypeError, match="Linear or Conv"):
        sw.add_lora(torch.nn.LayerNorm(3), {"s": 1.0}, torch.ones(3, 1), torch.ones(1, 3))
