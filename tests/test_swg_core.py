"""SWG core against the reference's definitions (sample_edm2.py: edges, swg_guidance, compute_score)."""

import pytest
import torch

from tools.reflect_pack import module
swg = module("samplers.swg")


def ref_swg_guidance(x, net, crop_size, steps):
    """Transcription of the reference's swg_guidance for square inputs."""
    bs, c, img, _ = x.shape
    y_neg, w = torch.zeros_like(x), torch.zeros_like(x)
    stride = (img - crop_size) // (steps - 1) if steps > 1 else 0
    for i in range(steps):
        for j in range(steps):
            le, te = stride * i, stride * j
            re, be = le + crop_size, te + crop_size
            y = net(x[:, :, te:be, le:re])
            y_neg[:, :, te:be, le:re] += y
            w[:, :, te:be, le:re] += 1
    return y_neg / w, w


def toy_net(x):
    # position-independent but non-linear, so crops see different contexts through the mean
    return torch.tanh(x * 0.7) + x.mean(dim=(-2, -1), keepdim=True)


@pytest.mark.parametrize("img,k,n", [(64, 40, 2), (64, 40, 3), (64, 32, 5), (64, 64, 1), (32, 20, 2)])
def test_matches_reference_where_it_covers(img, k, n):
    assert swg.crop_offsets(img, k, n) == swg.reference_offsets(img, k, n)
    x = torch.randn(2, 4, img, img, generator=torch.Generator().manual_seed(0))
    ref, w_ref = ref_swg_guidance(x, toy_net, k, n)
    wins = swg.windows(img, img, k, k, n, n)
    got, w = swg.crop_prediction(toy_net, x, wins)
    torch.testing.assert_close(got, ref)
    torch.testing.assert_close(w.expand_as(w_ref), w_ref)
    # M-SWG mask: pixels covered by more than one crop
    d_pos = toy_net(x)
    ref_mswg = d_pos + 1.5 * (w_ref > 1).float() * (d_pos - ref)
    torch.testing.assert_close(swg.guide(d_pos, got, 1.5, w, masked=True), ref_mswg)


def test_paper_setting_layout():
    # latent 64, k = 40, N = 2: crops [0, 40) and [24, 64), overlap band [24, 40)
    assert swg.crop_offsets(64, 40, 2) == [0, 24]
    w = swg.overlap(64, 64, swg.windows(64, 64, 40, 40, 2, 2))[0, 0]
    assert w[30, 30] == 4 and w[0, 0] == 1 and w[30, 0] == 2 and w[63, 63] == 1
    assert int((w > 1).sum()) == 64 * 64 - 2 * 2 * 24 * 24


def test_non_square_and_uneven():
    wins = swg.windows(48, 80, 32, 40, 2, 3)
    assert len(wins) == 6
    assert {(t, b) for t, b, _, _ in wins} == {(0, 32), (16, 48)}
    assert {(l, r) for _, _, l, r in wins} == {(0, 40), (20, 60), (40, 80)}
    # where the reference's integer stride would leave the edge uncovered, ours still covers it
    assert swg.reference_offsets(64, 41, 3)[-1] + 41 < 64
    assert swg.crop_offsets(64, 41, 3)[-1] + 41 == 64
    assert swg.overlap(64, 64, swg.windows(64, 64, 41, 41, 3, 3)).min() >= 1


def test_combined_cfg_swg_formula():
    d_pos, d_unc, d_crop = (torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(i)) for i in range(3))
    got = swg.guide(d_pos, d_crop, 0.4, d_uncond=d_unc, cfg_scale=2.0)
    torch.testing.assert_close(got, d_pos + 2.0 * (d_pos - d_unc) + 0.4 * (d_pos - d_crop))


@pytest.mark.parametrize("size,k,n,needle", [(32, 40, 2, "larger"), (32, 0, 2, "positive"), (32, 8, 0, "positive"),
                                             (32, 32, 2, "same crop")])
def test_bad_layouts(size, k, n, needle):
    with pytest.raises(ValueError, match=needle):
        swg.crop_offsets(size, k, n)


def test_round_crop_to_patch_size():
    assert swg.round_crop(40, 64, 1) == 40
    assert swg.round_crop(41, 64, 2) == 42        # nearest multiple, ties up
    assert swg.round_crop(5, 64, 2) == 6
    assert swg.round_crop(43, 64, 2) == 44
    assert swg.round_crop(1, 64, 2) == 2          # at least one patch
    assert swg.round_crop(63, 63, 2) == 62        # never beyond the latent
    with pytest.raises(ValueError, match="smaller than one patch"):
        swg.round_crop(1, 1, 2)
    with pytest.raises(ValueError, match="positive"):
        swg.round_crop(0, 64, 2)


def test_guidance_term_matches_guide():
    g = torch.Generator().manual_seed(0)
    d_pos, d_crops = torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)
    weight = swg.overlap(8, 8, swg.windows(8, 8, 5, 5, 2, 2))
    for masked in (False, True):
        torch.testing.assert_close(d_pos + swg.guidance_term(d_pos, d_crops, 1.7, weight, masked),
                                   swg.guide(d_pos, d_crops, 1.7, weight, masked))
