"""Bilinear upsampling of feature maps, dense or block by block: the one upsampler.

Both :func:`~netdissect_widgets.stats.active_pixels` (the streaming IoU front
end) and :func:`netdissect_widgets.dissect` upsample with :class:`Upsampler`, so
the two compute the same float values (equal to ``F.interpolate`` up to an ulp).

Along each axis, output pixel ``y`` reads feature cells ``i0(y), i1(y)`` with
weights ``w0(y) + w1(y) = 1`` (:func:`axis_weights`; by default the weights of
``F.interpolate(mode="bilinear", align_corners=False)``, optionally receptive-
field-aware). Output pixels that read the same pair of cells along both axes
form a *block*; a block's values are convex combinations of its 4 corner cells,
and a bilinear function on a rectangle is largest at one of its corners, so a
block's maximum is the max of its 4 corner pixels. :class:`Upsampler` computes
values for any chosen blocks with exactly the same float operations as its
dense ``__call__`` (bit-identical), which :mod:`netdissect_widgets.dissection.backends`
relies on.

Two conventions (``convention=``, the same tables either way, so every consumer
of them computes the same values):

* ``"interpolate"`` (default): ``F.interpolate(mode="bilinear",
  align_corners=False)``; beyond the first/last cell centre the edge value is held.
* ``"paper"``: the original NetDissect / PNAS-paper code (``netdissect/upsample.py``
  of the paper's repository): ``F.grid_sample(align_corners=True,
  padding_mode="zeros")`` on a float32 grid sampling each output pixel at the
  same half-pixel centre, ``(y - offset) / stride`` in cells, but with *zero*
  padding: beyond the first/last cell centre the value is blended with 0, so
  the outer half cell of an upsampled map fades toward 0. Neighbours outside the
  map get weight 0 (their index is clamped so reads stay in range), so the
  weights of a pixel near the border sum to less than 1 and an upsampled value
  is a convex combination of its cells *and 0*: it lies in
  ``[min(cells, 0), max(cells, 0)]``. :meth:`Upsampler.corner_max` accounts for
  that; :attr:`Upsampler.zero_border` says whether a map has such pixels.
  The positions are computed with the original's float32 operations (grid, then
  ``grid_sample``'s unnormalisation), so they are the ones it samples; values
  equal ``grid_sample``'s up to float rounding (a few ulp).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F


#: the upsampling conventions :class:`Upsampler` knows (see the module docstring)
CONVENTIONS = ("interpolate", "paper")


def check_convention(convention: str) -> str:
    """Return ``convention`` if it is one of :data:`CONVENTIONS`, else raise a ValueError saying which are."""
    if convention not in CONVENTIONS:
        raise ValueError(f"upsampling convention must be one of {CONVENTIONS} ('interpolate': F.interpolate, "
                         f"edge value held; 'paper': the original NetDissect code, zero-padded border), "
                         f"got {convention!r}")
    return convention


def axis_weights(out_size: int, in_size: int, stride: float | None = None, offset: float | None = None,
                 convention: str = "interpolate"):
    """Per output coordinate: cells ``i0, i1`` (int64) and weights ``w0, w1`` (float32).

    Feature cell ``j`` is centred at output coordinate ``offset + j * stride``
    (pixel ``y`` is centred at ``y``). The defaults give the weights of
    ``F.interpolate(mode="bilinear", align_corners=False)``:
    ``stride = out_size / in_size``, ``offset = stride / 2 - 0.5``. Beyond the
    first/last cell centre the value is held (clamped); with
    ``convention="paper"`` it is blended with 0 instead (a neighbour outside the
    map has weight 0). The last output, ``group``, numbers the runs of output
    coordinates that read the same two cells with weights affine in the coordinate.
    """
    if stride is None:
        stride = out_size / in_size
    if offset is None:
        offset = stride / 2 - 0.5
    if check_convention(convention) == "paper":
        return _paper_axis_weights(out_size, in_size, stride, offset)
    raw = (np.arange(out_size, dtype=np.float64) - offset) / stride
    pos = np.clip(raw, 0, in_size - 1)
    i0 = np.minimum(np.floor(pos).astype(np.int64), in_size - 1)
    i1 = np.minimum(i0 + 1, in_size - 1)
    w1 = (pos - i0).astype(np.float32)
    w0 = (1 - w1).astype(np.float32)
    group = np.clip(np.floor(raw), -1, in_size - 1).astype(np.int64)
    return i0, i1, w0, w1, group


def _paper_axis_weights(out_size: int, in_size: int, stride: float, offset: float):
    """:func:`axis_weights` of the original code: ``grid_sample(align_corners=True, padding_mode="zeros")``.

    The original builds the grid in float32 as ``(y - offset) * (2 / (stride *
    max(1, in_size - 1))) - 1``; ``grid_sample`` maps a grid value ``g`` back to
    the cell position ``(g + 1) * ((in_size - 1) / 2)`` (float32), reads cells
    ``floor(pos)`` and ``floor(pos) + 1`` with weights ``floor(pos) + 1 - pos``
    and ``pos - floor(pos)``, and reads 0 outside the map. (A map of one cell
    maps every position to 0: the cell's value everywhere.)
    """
    y = torch.arange(out_size, dtype=torch.float32)
    grid = (y - offset) * (2 / (stride * max(1, in_size - 1))) - 1
    pos = ((grid + 1) * ((in_size - 1) / 2)).numpy()
    floor = np.floor(pos)
    w0 = (floor + 1 - pos).astype(np.float32)        # float32 throughout, as grid_sample computes them
    w1 = (pos - floor).astype(np.float32)
    f = floor.astype(np.int64)
    i0, i1 = f, f + 1
    w0 = np.where((i0 >= 0) & (i0 < in_size), w0, np.float32(0))
    w1 = np.where((i1 >= 0) & (i1 < in_size), w1, np.float32(0))
    group = np.clip(f, -2, in_size)  # -2 / in_size: both neighbours outside (value 0)
    return np.clip(i0, 0, in_size - 1), np.clip(i1, 0, in_size - 1), w0, w1, group


def interp_matrix(out_size: int, in_size: int, stride: float | None = None, offset: float | None = None,
                  convention: str = "interpolate") -> torch.Tensor:
    """The same weights as a matrix ``(out_size, in_size)``: ``up = Wy @ A @ Wx.T``."""
    i0, i1, w0, w1, _ = axis_weights(out_size, in_size, stride, offset, convention)
    m = np.zeros((out_size, in_size), dtype=np.float64)
    np.add.at(m, (np.arange(out_size), i0), w0)
    np.add.at(m, (np.arange(out_size), i1), w1)
    return torch.from_numpy(m).float()


class _Axis:
    """One axis of the upsampling, with its output coordinates grouped into blocks."""

    def __init__(self, out_size: int, in_size: int, stride=None, offset=None, max_block: int = 8,
                 convention: str = "interpolate") -> None:
        i0, i1, w0, w1, group = axis_weights(out_size, in_size, stride, offset, convention)
        # split groups longer than max_block: smaller blocks have tighter maxima (fewer wasted values)
        rank = np.zeros_like(group)
        for g in np.unique(group):
            where = np.nonzero(group == g)[0]
            rank[where] = np.arange(len(where)) // max_block
        group = group * (out_size + 1) + rank
        self.i0, self.i1 = torch.from_numpy(i0), torch.from_numpy(i1)
        self.w0, self.w1 = torch.from_numpy(w0), torch.from_numpy(w1)
        keys = sorted(set(group.tolist()))
        size = max(int((group == g).sum()) for g in keys)
        n = len(keys)
        coords = np.full((n, size), -1, dtype=np.int64)
        for gi, g in enumerate(keys):
            where = np.nonzero(group == g)[0]
            coords[gi, : len(where)] = where
        valid = coords >= 0
        safe = np.where(valid, coords, coords[:, :1])
        self.coords = torch.from_numpy(coords)                   # (G, S) output coordinate, -1 = padding
        self.valid = torch.from_numpy(valid)
        self.g_i0 = self.i0[torch.from_numpy(safe[:, 0])]         # (G,) cells read by the block
        self.g_i1 = self.i1[torch.from_numpy(safe[:, 0])]
        # weights position-major, (S, G): a block's weights are a column (padding = NaN)
        self.g_w0 = torch.from_numpy(np.where(valid, w0[safe], np.nan).astype(np.float32).T.copy())
        self.g_w1 = torch.from_numpy(np.where(valid, w1[safe], np.nan).astype(np.float32).T.copy())
        last = valid.sum(1) - 1                                     # weights of each block's end pixels
        ends = np.stack([safe[:, 0], safe[np.arange(n), last]], 1)
        self.e_w0, self.e_w1 = torch.from_numpy(w0[ends].T.copy()), torch.from_numpy(w1[ends].T.copy())  # (2, G)
        # blocks that blend with the zero padding somewhere (only with convention="paper"): weights sum < 1
        short = (w0.astype(np.float64) + w1) < 1 - 1e-6
        self.g_zero = torch.from_numpy(np.array([bool(short[coords[gi][valid[gi]]].any()) for gi in range(n)]))

    def to(self, device: torch.device) -> "_Axis":
        for name, value in vars(self).items():
            if isinstance(value, torch.Tensor):
                setattr(self, name, value.to(device))
        return self


class Upsampler:
    """Bilinear upsampling ``(n, h, w) -> (n, H, W)``, dense or block by block.

    Parameters
    ----------
    feature_size, seg_size : (h, w), (H, W)
    receptive_field : ((stride_y, stride_x), (offset_y, offset_x)), optional
        Centre of feature cell ``j`` in output pixels: ``offset + j * stride``.
        Default: the weights of ``F.interpolate(align_corners=False)``.
    convention : {"interpolate", "paper"}
        ``"interpolate"`` (default): the edge value is held beyond the outer cell
        centres, as ``F.interpolate``. ``"paper"``: the original NetDissect code's
        ``grid_sample(align_corners=True, padding_mode="zeros")``, where the border
        fades toward 0 (see the module docstring). Same tables, same methods.
    """

    def __init__(self, feature_size: Sequence[int], seg_size: Sequence[int], receptive_field=None,
                 device: torch.device | str = "cpu", max_block: int = 8, convention: str = "interpolate") -> None:
        (h, w), (H, W) = feature_size, seg_size
        sy = sx = oy = ox = None
        if receptive_field is not None:
            (sy, sx), (oy, ox) = receptive_field
        self.convention = check_convention(convention)
        self.y = _Axis(int(H), int(h), sy, oy, max_block, self.convention).to(torch.device(device))
        self.x = _Axis(int(W), int(w), sx, ox, max_block, self.convention).to(torch.device(device))
        self.out_size = (int(H), int(W))

    @property
    def zero_border(self) -> bool:
        """True when some output pixel blends its cells with 0 (``convention="paper"``): its value then
        lies in ``[min(cells, 0), max(cells, 0)]``, not ``[min(cells), max(cells)]``; a bound on the
        upsampled values taken from the cells alone must include 0."""
        return bool(self.y.g_zero.any() or self.x.g_zero.any())

    def __call__(self, maps: torch.Tensor) -> torch.Tensor:
        """Dense upsampling of every map (the reference the block computation equals bit for bit).

        Computed in float32 (float64 maps stay float64)."""
        maps = maps if maps.dtype == torch.float64 else maps.float()
        y, x = self.y, self.x
        xw0, xw1, yw0, yw1 = (v.to(maps.dtype) for v in (x.w0, x.w1, y.w0, y.w1))
        # along x on the low-res rows first (the same products per output value as the blocks compute,
        # so bit-identical), then the rows gathered along y
        inner = maps.index_select(-1, x.i0) * xw0 + maps.index_select(-1, x.i1) * xw1  # (n, h, W)
        out = inner.index_select(-2, y.i0).mul_(yw0[:, None])
        return out.add_(inner.index_select(-2, y.i1).mul_(yw1[:, None]))

    def sample(self, maps: torch.Tensor, k: int, seed: int = 0) -> torch.Tensor:
        """Upsampled values at ``k`` random output positions of each map (drawn independently per
        image): ``(N, U, h, w) -> (N, U, k)``, a stratified sample of the upsampled values."""
        n, u, h, w = maps.shape
        yy, xx = self.sample_positions(n, k, seed)
        yy, xx = yy[:, None], xx[:, None]
        y, x = self.y, self.x
        flat = maps.reshape(n, u, h * w)

        def at(iy: torch.Tensor, ix: torch.Tensor) -> torch.Tensor:
            return flat.gather(2, (iy[yy] * w + ix[xx]).expand(n, u, -1)).float()

        a, b, c, d = at(y.i0, x.i0), at(y.i0, x.i1), at(y.i1, x.i0), at(y.i1, x.i1)
        inner_top = a * x.w0[xx] + b * x.w1[xx]
        inner_bot = c * x.w0[xx] + d * x.w1[xx]
        return inner_top * y.w0[yy] + inner_bot * y.w1[yy]

    def sample_positions(self, n: int, k: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
        """The output rows and columns ``(n, k)`` that :meth:`sample` reads: ``k`` random positions
        per image (at most every position), drawn from a generator seeded with ``seed``."""
        H, W = self.out_size
        g = torch.Generator().manual_seed(seed)
        pos = torch.randint(0, H * W, (n, min(k, H * W)), generator=g).to(self.y.i0.device)
        return pos // W, pos % W

    def tables(self, h: int, w: int) -> dict[str, torch.Tensor]:
        """Flat-index tables for maps ``(..., h, w)``: per block type ``gy * Gx + gx``, the offsets of
        its 4 corner cells ``(G, 4)`` and of its first pixel ``y * W + x`` in the output ``(G,)``; and
        the offset of each block position from that first pixel ``(Sy * Sx,)`` (a block's pixels are
        consecutive rows and columns, so first pixel + offset is the pixel for every valid position)."""
        key = (h, w)
        cache = self.__dict__.setdefault("_tables", {})
        if key not in cache:
            y, x = self.y, self.x
            r0, r1 = y.g_i0[:, None], y.g_i1[:, None]
            c0, c1 = x.g_i0[None, :], x.g_i1[None, :]
            corner = torch.stack([r0 * w + c0, r0 * w + c1, r1 * w + c0, r1 * w + c1], -1).reshape(-1, 4)
            W = self.out_size[1]
            origin = (y.coords[:, 0, None] * W + x.coords[None, :, 0]).reshape(-1)
            Sy, Sx = y.coords.shape[1], x.coords.shape[1]
            dev = y.coords.device
            rel = (torch.arange(Sy, device=dev)[:, None] * W + torch.arange(Sx, device=dev)[None, :]).reshape(-1)
            cache[key] = {"corner_offsets": corner, "block_origin": origin, "pixel_rel": rel}
        return cache[key]

    def corner_max(self, maps: torch.Tensor) -> torch.Tensor:
        """``(..., h, w) -> (..., Gy, Gx)``: each block's largest corner cell (its cells are adjacent), an
        upper bound of its values (with ``convention="paper"``, at least 0 for blocks blending with 0)."""
        shape = maps.shape
        x4 = maps.reshape(-1, 1, shape[-2], shape[-1])
        pooled = F.max_pool2d(F.pad(x4, (0, 1, 0, 1), mode="replicate"), 2, stride=1)  # max of cells i, i+1
        pooled = pooled.reshape(*shape[:-2], shape[-2], shape[-1])
        out = pooled.index_select(-2, self.y.g_i0).index_select(-1, self.x.g_i0)
        if self.zero_border:  # blocks blending with the zero padding can reach 0 (convention="paper")
            zero = self.y.g_zero[:, None] | self.x.g_zero[None, :]
            out = torch.where(zero, out.clamp(min=0), out)
        return out

    def corner_any(self, hot: torch.Tensor) -> torch.Tensor:
        """``(..., h, w) bool -> (..., Gy, Gx) bool``: blocks with some corner cell marked. (With
        ``convention="paper"`` and a bound below 0, the blocks ``g_zero`` of either axis can pass it too.)"""
        y, x = self.y, self.x
        rows = hot.index_select(-2, y.g_i0) | hot.index_select(-2, y.g_i1)
        return rows.index_select(-1, x.g_i0) | rows.index_select(-1, x.g_i1)

    def corners(self, maps: torch.Tensor, n: torch.Tensor | tuple, gy: torch.Tensor, gx: torch.Tensor) -> torch.Tensor:
        """The 4 feature cells ``(P, 4)`` (top-left, top-right, bottom-left, bottom-right) that blocks
        ``(n[p], gy[p], gx[p])`` of ``maps (N, h, w)`` interpolate. ``n`` may be a tuple of index
        tensors for maps with more leading dimensions, e.g. ``(n, u)`` for ``maps (N, U, h, w)``."""
        y, x = self.y, self.x
        lead = n if isinstance(n, tuple) else (n,)
        r0, r1, c0, c1 = y.g_i0[gy], y.g_i1[gy], x.g_i0[gx], x.g_i1[gx]
        return torch.stack([maps[(*lead, r0, c0)], maps[(*lead, r0, c1)],
                            maps[(*lead, r1, c0)], maps[(*lead, r1, c1)]], 1).float()

    def block_values(self, abcd: torch.Tensor, gy: torch.Tensor, gx: torch.Tensor, ends: bool = False) -> torch.Tensor:
        """Values ``(Sy, Sx, P)`` of blocks whose 4 corner cells are ``abcd (4, P)`` (top-left,
        top-right, bottom-left, bottom-right), laid out position-major so that every operation runs
        along the blocks. Padding positions are NaN (never "> t"). Bit-identical to the dense
        ``__call__`` at the same pixels.

        With ``ends=True`` only the block's first and last row and column ``(2, 2, P)``: a bilinear
        function on a rectangle is largest at a corner, so their max is the block's max (up to
        rounding).
        """
        y, x = self.y, self.x
        if ends:
            wy0, wy1, wx0, wx1 = y.e_w0[:, gy], y.e_w1[:, gy], x.e_w0[:, gx], x.e_w1[:, gx]
        else:
            wy0, wy1, wx0, wx1 = y.g_w0[:, gy], y.g_w1[:, gy], x.g_w0[:, gx], x.g_w1[:, gx]
        a, b, c, d = abcd[0:1], abcd[1:2], abcd[2:3], abcd[3:4]
        inner_top = a * wx0 + b * wx1  # (Sx, P)
        inner_bot = c * wx0 + d * wx1
        return inner_top[None] * wy0[:, None, :] + inner_bot[None] * wy1[:, None, :]

    def from_corners(self, abcd: torch.Tensor, gy: torch.Tensor, gx: torch.Tensor) -> torch.Tensor:
        """Block values ``(P, Sy, Sx)`` from :meth:`corners` ``(P, 4)`` (:meth:`block_values`, block-major)."""
        return self.block_values(abcd.t(), gy, gx).permute(2, 0, 1)

    def blocks(self, maps: torch.Tensor, n: torch.Tensor | tuple, gy: torch.Tensor, gx: torch.Tensor) -> torch.Tensor:
        """Values ``(P, Sy, Sx)`` of blocks ``(n[p], gy[p], gx[p])``; padding = NaN."""
        return self.from_corners(self.corners(maps, n, gy, gx), gy, gx)

    def block_pixels(self, n: torch.Tensor, gy: torch.Tensor, gx: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
        """Flat pixel index ``(n * H + y) * W + x`` of positions ``where (P', 3)`` in the given blocks."""
        p, r, s = where[:, 0], where[:, 1], where[:, 2]
        yy = self.y.coords[gy[p], r]
        xx = self.x.coords[gx[p], s]
        H, W = self.out_size
        return (n[p] * H + yy) * W + xx
