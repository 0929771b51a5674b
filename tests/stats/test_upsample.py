"""The streaming front end (stats.upsample_threshold) upsamples with dissect's Upsampler."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from netdissect_widgets.stats import IoUTally, upsample_threshold
from netdissect_widgets.stats._bilinear import Upsampler


@pytest.mark.parametrize("feature, size, rf", [((5, 7), (20, 28), None), ((7, 7), (56, 56), None),
                                               ((3, 5), (7, 9), None), ((6, 6), (48, 48), ((8.0, 8.0), (3.5, 3.5))),
                                               ((4, 5), (30, 40), ((7.0, 8.0), (1.0, 2.0)))])
def test_threshold_equals_upsampler_bit_for_bit(feature, size, rf) -> None:
    g = torch.Generator().manual_seed(0)
    acts = torch.randn(5, 4, *feature, generator=g)
    dense = Upsampler(feature, size, rf)(acts.reshape(-1, *feature)).reshape(5, 4, *size)
    # levels at actual upsampled values: equality at the threshold decides, so any ulp difference shows
    levels = dense[1].reshape(4, -1).quantile(0.9, dim=1)
    levels = dense.permute(1, 0, 2, 3).reshape(4, -1).gather(
        1, (dense.permute(1, 0, 2, 3).reshape(4, -1) - levels[:, None]).abs().argmin(1, keepdim=True))[:, 0]
    got = upsample_threshold(acts, levels, size, receptive_field=rf)
    assert torch.equal(got, dense > levels[None, :, None, None])
    assert got.any() and not got.all()
    seg = torch.randint(0, 6, (5, 2, *size), generator=g)
    a, b = IoUTally(4, 6), IoUTally(4, 6)
    a.add(got, seg)
    b.add_activations(acts, levels, seg, receptive_field=rf)
    assert torch.equal(a.intersection, b.intersection) and torch.equal(a.unit_count, b.unit_count)


def test_align_corners_matches_torch() -> None:
    acts = torch.randn(3, 2, 5, 6, generator=torch.Generator().manual_seed(1))
    ref = F.interpolate(acts, size=(17, 23), mode="bilinear", align_corners=True)
    mine = Upsampler((5, 6), (17, 23), ((16 / 4, 22 / 5), (0.0, 0.0)))(acts.reshape(-1, 5, 6)).reshape(ref.shape)
    torch.testing.assert_close(mine, ref, rtol=1e-6, atol=1e-6)
    levels = torch.tensor([0.3, -0.2])
    assert torch.equal(upsample_threshold(acts, levels, (17, 23), align_corners=True), mine > levels[None, :, None, None])


def test_bad_receptive_field() -> None:
    acts = torch.randn(1, 2, 3, 3)
    with pytest.raises(ValueError, match="receptive_field"):
        upsample_threshold(acts, torch.zeros(2), 6, receptive_field=(0, 1))
    with pytest.raises(ValueError, match="not both"):
        upsample_threshold(acts, torch.zeros(2), 6, align_corners=True, receptive_field=(2, 0.5))
