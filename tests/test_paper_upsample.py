"""The paper's upsampling convention: ``Upsampler(..., convention="paper")``.

The original NetDissect code upsamples with ``grid_sample(align_corners=True,
padding_mode="zeros")`` at half-pixel centres: the border fades toward 0. These
tests check the weight tables against a brute-force float64 computation of that
rule, against torch's ``grid_sample`` fed the original's float32 grid, and that
every consumer of the tables (dense, blocks, block bounds, samples, matrix, the
numba loops) gives the same values.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from netdissect_widgets.stats._bilinear import CONVENTIONS, Upsampler, axis_weights, interp_matrix

CASES = [((7, 7), (56, 56), None), ((5, 7), (20, 28), None), ((3, 5), (7, 9), None), ((1, 4), (8, 16), None),
         ((4, 5), (30, 40), ((7.0, 8.0), (1.0, 2.0))), ((6, 6), (48, 48), ((8.0, 8.0), (-10.0, 3.5)))]


def original_grid_sample(maps: torch.Tensor, size, receptive_field=None) -> torch.Tensor:
    """The original code's rule, spelled out: float32 grid of half-pixel centres, then grid_sample."""
    feature = maps.shape[-2:]
    if receptive_field is None:
        strides = [t / s for t, s in zip(size, feature)]
        offsets = [st / 2 - 0.5 for st in strides]
    else:
        strides, offsets = receptive_field
    ty, tx = [(torch.arange(t, dtype=torch.float32) - o) * (2 / (st * max(1, n - 1))) - 1
              for t, n, st, o in zip(size, feature, strides, offsets)]
    grid = torch.stack([tx[None, :].expand(*size), ty[:, None].expand(*size)], -1)
    grid = grid[None].expand(maps.shape[0], *size, 2)
    return F.grid_sample(maps[:, None], grid, mode="bilinear", padding_mode="zeros", align_corners=True)[:, 0]


def brute_force(maps: np.ndarray, size, receptive_field=None) -> np.ndarray:
    """Float64, pixel by pixel: bilinear between the two nearest cell centres, cells outside the map = 0."""
    n, h, w = maps.shape
    H, W = size
    if receptive_field is None:
        (sy, sx), (oy, ox) = (H / h, W / w), (H / h / 2 - 0.5, W / w / 2 - 0.5)
    else:
        (sy, sx), (oy, ox) = receptive_field
    padded = np.zeros((n, h + 200, w + 200))           # every read outside the map reads a zero
    padded[:, 100:100 + h, 100:100 + w] = maps

    def cell(p, size_):
        return 0.0 if size_ == 1 else p                 # one cell: every position is that cell

    out = np.zeros((n, H, W))
    for y in range(H):
        py = cell((y - oy) / sy, h)
        fy = math.floor(py)
        for x in range(W):
            px = cell((x - ox) / sx, w)
            fx = math.floor(px)
            v = 0.0
            for dy, wy in ((0, 1 - (py - fy)), (1, py - fy)):
                for dx, wx in ((0, 1 - (px - fx)), (1, px - fx)):
                    v = v + wy * wx * padded[:, 100 + fy + dy, 100 + fx + dx]
            out[:, y, x] = v
    return out


@pytest.mark.parametrize("feature, size, rf", CASES)
def test_equals_grid_sample_of_the_original_code(feature, size, rf) -> None:
    maps = torch.randn(4, *feature, generator=torch.Generator().manual_seed(0))
    mine = Upsampler(feature, size, rf, convention="paper")(maps)
    torch.testing.assert_close(mine, original_grid_sample(maps, size, rf), rtol=0, atol=2e-6)


@pytest.mark.parametrize("feature, size, rf", CASES)
def test_equals_brute_force_with_zero_padding(feature, size, rf) -> None:
    maps = torch.randn(3, *feature, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    mine = Upsampler(feature, size, rf, convention="paper")(maps)
    np.testing.assert_allclose(mine.numpy(), brute_force(maps.numpy(), size, rf), rtol=0, atol=1e-5)


def test_border_fades_to_zero_where_the_default_holds_the_edge() -> None:
    maps = torch.ones(1, 7, 7)
    paper = Upsampler((7, 7), (56, 56), convention="paper")(maps)[0]
    default = Upsampler((7, 7), (56, 56))(maps)[0]
    assert torch.equal(default, torch.ones(56, 56))
    # 8 pixels per cell: centres at 3.5 + 8j; the outer 4 rows/columns blend with 0
    torch.testing.assert_close(paper[4:-4, 4:-4], torch.ones(48, 48))
    assert paper[0, 28] == pytest.approx(1 - 3.5 / 8) and paper[0, 0] == pytest.approx((1 - 3.5 / 8) ** 2)
    assert paper[:4].lt(1).all() and paper[-4:].lt(1).all() and paper[:, :4].lt(1).all()


def test_out_of_range_neighbours_have_zero_weight_and_safe_indices() -> None:
    i0, i1, w0, w1, group = axis_weights(56, 7, convention="paper")
    assert i0.min() >= 0 and i1.max() <= 6
    assert w0.dtype == np.float32 and w1.dtype == np.float32
    np.testing.assert_allclose(w0[:4], 0) and np.testing.assert_allclose(w1[-4:], 0)
    np.testing.assert_allclose((w0 + w1)[4:-4], 1, atol=1e-6)
    assert ((w0 + w1)[:4] < 1).all() and ((w0 + w1)[-4:] < 1).all()
    # a receptive field that centres the cells far inside: outputs beyond both neighbours read only zeros
    i0, i1, w0, w1, group = axis_weights(40, 3, 4.0, 15.0, convention="paper")
    far = (np.arange(40) < 11) | (np.arange(40) > 27)
    assert (w0[far] == 0).all() and (w1[far] == 0).all()
    assert set(group[np.arange(40) < 11]) == {-2} and set(group[np.arange(40) > 27]) == {3}


@pytest.mark.parametrize("feature, size, rf", CASES)
def test_every_consumer_of_the_tables_agrees(feature, size, rf) -> None:
    g = torch.Generator().manual_seed(2)
    maps = torch.randn(5, *feature, generator=g)
    maps[:2] = -maps[:2].abs() - 0.1                    # all negative: the zero border raises the values
    up = Upsampler(feature, size, rf, convention="paper")
    dense = up(maps)
    # blocks: bit-identical to the dense values, and bounded by corner_max (which includes 0 at the border)
    Gy, Gx = up.y.coords.shape[0], up.x.coords.shape[0]
    n, gy, gx = torch.meshgrid(torch.arange(5), torch.arange(Gy), torch.arange(Gx), indexing="ij")
    n, gy, gx = n.reshape(-1), gy.reshape(-1), gx.reshape(-1)
    vals = up.blocks(maps, n, gy, gx)
    valid = up.y.valid[gy][:, :, None] & up.x.valid[gx][:, None, :]
    yy, xx = up.y.coords[gy][:, :, None].expand_as(vals), up.x.coords[gx][:, None, :].expand_as(vals)
    assert torch.equal(vals[valid], dense[n[:, None, None].expand_as(vals)[valid], yy[valid], xx[valid]])
    bound = up.corner_max(maps)[n, gy, gx]
    assert (vals.nan_to_num(-math.inf).amax((1, 2)) <= bound + 1e-6).all()
    assert up.zero_border and (dense[:2].amax((1, 2)) > maps[:2].amax((1, 2))).all()  # values a cell bound alone misses
    ends = up.block_values(up.corners(maps, n, gy, gx).t(), gy, gx, ends=True).amax((0, 1))
    torch.testing.assert_close(ends, vals.nan_to_num(-math.inf).amax((1, 2)))
    # samples and the interpolation matrix
    sample = up.sample(maps[:, None], 50, seed=3)[:, 0]
    sy, sx = up.sample_positions(5, 50, seed=3)
    assert torch.equal(sample, dense[torch.arange(5)[:, None], sy, sx])
    (sty, stx), (oy, ox) = rf if rf is not None else ((None, None), (None, None))
    wy = interp_matrix(size[0], feature[0], sty, oy, convention="paper")
    wx = interp_matrix(size[1], feature[1], stx, ox, convention="paper")
    torch.testing.assert_close(wy @ maps @ wx.T, dense, rtol=0, atol=1e-5)


def test_numba_sample_loop_reads_the_same_tables() -> None:
    from netdissect_widgets.dissection.backends import numba_cpu as _kernels

    if not _kernels.available():
        pytest.skip("numba is not importable here; the tensor path is checked above")
    maps = torch.randn(3, 2, 7, 7, generator=torch.Generator().manual_seed(4))
    up = Upsampler((7, 7), (56, 56), convention="paper")
    got = _kernels.sample(_kernels.unit_major(maps), up, 40, 5)
    want = up.sample(maps, 40, seed=5).permute(1, 0, 2).reshape(2, -1)
    assert np.array_equal(got, want.numpy())


def test_default_is_unchanged_and_bad_convention_is_refused() -> None:
    maps = torch.randn(2, 5, 7, generator=torch.Generator().manual_seed(5))
    ref = F.interpolate(maps[:, None], size=(20, 28), mode="bilinear", align_corners=False)[:, 0]
    torch.testing.assert_close(Upsampler((5, 7), (20, 28))(maps), ref, rtol=1e-6, atol=1e-6)
    assert not Upsampler((5, 7), (20, 28)).zero_border
    assert CONVENTIONS == ("interpolate", "paper")
    with pytest.raises(ValueError, match="'interpolate'.*'paper'"):
        Upsampler((5, 7), (20, 28), convention="grid_sample")
