"""A real segmenter for faces and people: MediaPipe's face mesh, selfie segmentation and pose, plus colours.

:class:`FaceSegmenter` follows the package's segmenter interface (``concepts``,
``categories``, ``segment(images)``) with models that ship inside the
``mediapipe==0.10.14`` wheel (``.tflite`` files run on the CPU; nothing is
downloaded). For each image it runs

* the **face mesh** (478 landmarks with irises): polygons of the lips, the open
  mouth between them, eyes, irises, eyebrows, nose, and the face oval, whose
  remaining pixels are ``skin``;
* **selfie segmentation**: ``person`` / ``background``;
* **hair_or_headwear**: person pixels outside the face oval, above the nose tip and
  within half a face width of the face (hair, hats, scarves);
* optionally **pose** (``body=True``): ``torso``, ``arm``, ``leg`` where its 33 keypoints
  are visible, kept inside the person mask;
* the 12 named colours of :class:`~netdissect_widgets.segment.ColorSegmenter`.

Label channels of the ``(N, L, H, W)`` result (``L`` = 3, or 4 with ``body=True``)::

    0  person / background                  (category "object")
    1  skin, lips, mouth, eye, iris, eyebrow, nose, hair_or_headwear  ("part")
    2  torso, arm, leg                      ("part", only with body=True)
    last  the colour of every pixel         ("color")

An image in which no face is found gets only what was found (person / background,
body parts, colours) and 0 in the face channel. Small images are enlarged to
``work_size`` pixels (shorter side) before MediaPipe sees them; the labels are drawn
at the input's resolution. MediaPipe's graphs are made on first use; :meth:`close`
frees them (or use the segmenter as a context manager).
"""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..segment.color import COLOR_NAMES, ColorSegmenter
from ._packages import import_optional

__all__ = ["FaceSegmenter", "FACE_PARTS", "BODY_PARTS"]

#: The face channel's concepts, in drawing order (later ones overwrite earlier ones).
FACE_PARTS: tuple[str, ...] = ("skin", "hair_or_headwear", "nose", "eyebrow", "eye", "iris", "lips", "mouth")
#: The body channel's concepts.
BODY_PARTS: tuple[str, ...] = ("torso", "arm", "leg")
_MIN_SIDE = 16


def _rings(edges: Any) -> list[list[int]] | None:
    """Ordered closed rings of an edge set whose nodes all have two neighbours; None otherwise."""
    nbrs: dict[int, list[int]] = {}
    for a, b in edges:
        nbrs.setdefault(a, []).append(b)
        nbrs.setdefault(b, []).append(a)
    if any(len(v) != 2 for v in nbrs.values()):
        return None
    rings, seen = [], set()
    for start in sorted(nbrs):
        if start in seen:
            continue
        ring, prev, cur = [start], None, start
        seen.add(start)
        while True:
            nxt = nbrs[cur][0] if nbrs[cur][0] != prev else nbrs[cur][1]
            if nxt == start:
                break
            ring.append(nxt)
            seen.add(nxt)
            prev, cur = cur, nxt
        rings.append(ring)
    return rings


def _hull(points: np.ndarray) -> np.ndarray:
    """Convex hull of (K, 2) points, counter-clockwise (Andrew's monotone chain)."""
    pts = sorted(map(tuple, points))
    if len(pts) < 3:
        return np.asarray(pts)

    def half(seq: list) -> list:
        out: list = []
        for p in seq:
            while len(out) >= 2 and (out[-1][0] - out[-2][0]) * (p[1] - out[-2][1]) - \
                    (out[-1][1] - out[-2][1]) * (p[0] - out[-2][0]) <= 0:
                out.pop()
            out.append(p)
        return out

    lower, upper = half(pts), half(pts[::-1])
    return np.asarray(lower[:-1] + upper[:-1])


def _area(poly: np.ndarray) -> float:
    x, y = poly[:, 0], poly[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1))))


def _fill(polys: list[np.ndarray], h: int, w: int) -> np.ndarray:
    """Boolean (h, w) mask of the union of polygons given in pixel coordinates."""
    from PIL import Image, ImageDraw

    img = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(img)
    for poly in polys:
        if len(poly) >= 3:
            draw.polygon([(float(x), float(y)) for x, y in poly], fill=1)
    return np.asarray(img, dtype=bool)


def _lines(paths: list[np.ndarray], width: float, h: int, w: int) -> np.ndarray:
    from PIL import Image, ImageDraw

    img = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(img)
    for path in paths:
        draw.line([(float(x), float(y)) for x, y in path], fill=1, width=max(1, int(round(width))), joint="curve")
    return np.asarray(img, dtype=bool)


class FaceSegmenter:
    """Face parts, person / background, hair or headwear, body parts and colours (see the module docstring).

    Parameters
    ----------
    body : bool
        Also run MediaPipe pose for torso / arm / leg (about 4x slower than face + person alone).
    colors : bool
        Add the colour channel.
    work_size : int
        Images whose shorter side is smaller are enlarged to this size for MediaPipe.
    min_confidence : float
        Detection confidence MediaPipe needs to report a face / a pose.

    Attributes
    ----------
    concepts, categories : list[str]
        The segmenter interface (``concepts[0] == "-"``).
    """

    def __init__(self, body: bool = False, colors: bool = True, work_size: int = 256,
                 min_confidence: float = 0.5) -> None:
        self._mp = import_optional("mediapipe", "mediapipe==0.10.14", "FaceSegmenter")
        if isinstance(work_size, bool) or not isinstance(work_size, int) or work_size < 64:
            raise ValueError(f"work_size must be an int >= 64, got {work_size!r}")
        if not 0.0 < float(min_confidence) < 1.0:
            raise ValueError(f"min_confidence must be in (0, 1), got {min_confidence!r}")
        self.body = bool(body)
        self.colors = bool(colors)
        self.work_size = work_size
        self.min_confidence = float(min_confidence)
        objects = ["person", "background"]
        parts = list(FACE_PARTS) + (list(BODY_PARTS) if self.body else [])
        colours = list(COLOR_NAMES) if self.colors else []
        self.concepts: list[str] = ["-", *objects, *parts, *colours]
        self.categories: list[str] = ["-"] + ["object"] * 2 + ["part"] * len(parts) + ["color"] * len(colours)
        self._id = {c: i for i, c in enumerate(self.concepts)}
        self._color = ColorSegmenter() if self.colors else None
        self._graphs: dict[str, Any] = {}
        fm = self._mp.solutions.face_mesh
        self._regions: dict[str, tuple[list[list[int]] | None, list[int]]] = {}
        for name, edge_sets in {
            "lips": [fm.FACEMESH_LIPS], "eye": [fm.FACEMESH_LEFT_EYE, fm.FACEMESH_RIGHT_EYE],
            "iris": [fm.FACEMESH_LEFT_IRIS, fm.FACEMESH_RIGHT_IRIS],
            "eyebrow": [fm.FACEMESH_LEFT_EYEBROW, fm.FACEMESH_RIGHT_EYEBROW],
            "nose": [fm.FACEMESH_NOSE], "skin": [fm.FACEMESH_FACE_OVAL],
        }.items():
            self._regions[name] = [(_rings(e), sorted({i for edge in e for i in edge})) for e in edge_sets]

    @property
    def num_channels(self) -> int:
        """Label channels of :meth:`segment`'s result."""
        return 2 + int(self.body) + int(self.colors)

    # -- MediaPipe -------------------------------------------------------------------------------
    def _graph(self, name: str) -> Any:
        if name not in self._graphs:
            sol = self._mp.solutions
            if name == "mesh":
                self._graphs[name] = sol.face_mesh.FaceMesh(
                    static_image_mode=True, max_num_faces=1, refine_landmarks=True,
                    min_detection_confidence=self.min_confidence)
            elif name == "selfie":
                self._graphs[name] = sol.selfie_segmentation.SelfieSegmentation(model_selection=0)
            else:
                self._graphs[name] = sol.pose.Pose(static_image_mode=True, model_complexity=1,
                                                   enable_segmentation=True,
                                                   min_detection_confidence=self.min_confidence)
        return self._graphs[name]

    def close(self) -> None:
        """Free MediaPipe's graphs (they are made again on the next :meth:`segment`)."""
        for graph in self._graphs.values():
            graph.close()
        self._graphs = {}

    def __enter__(self) -> "FaceSegmenter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- labels ----------------------------------------------------------------------------------
    def _face_polygons(self, pts: np.ndarray) -> dict[str, list[np.ndarray]]:
        polys: dict[str, list[np.ndarray]] = {}
        for name, sets in self._regions.items():
            out = []
            for rings, nodes in sets:
                if rings is None:
                    out.append(_hull(pts[nodes]))
                else:
                    out.extend(pts[r] for r in rings)
            polys[name] = out
        lips = sorted(polys["lips"], key=_area)  # inner ring (the mouth opening) is the smaller
        polys["mouth"], polys["lips"] = lips[:1], lips[1:]
        return polys

    def _label_one(self, rgb: np.ndarray, h: int, w: int) -> np.ndarray:
        out = np.zeros((2 + int(self.body), h, w), dtype=np.int64)
        ids = self._id
        person_prob = self._graph("selfie").process(rgb).segmentation_mask
        person = _resize_mask(person_prob, h, w) > 0.5
        out[0] = np.where(person, ids["person"], ids["background"])
        mesh = self._graph("mesh").process(rgb).multi_face_landmarks
        if mesh:
            lm = mesh[0].landmark
            pts = np.array([(p.x * w, p.y * h) for p in lm], dtype=np.float64)
            polys = self._face_polygons(pts)
            masks = {name: _fill(p, h, w) for name, p in polys.items()}
            oval = masks["skin"]
            ys, xs = np.nonzero(oval)
            if len(xs):
                fw = xs.max() - xs.min() + 1
                nose_tip_y = pts[1, 1]
                cols = np.arange(w)[None, :]
                rows = np.arange(h)[:, None]
                near = (cols >= xs.min() - 0.5 * fw) & (cols <= xs.max() + 0.5 * fw) & (rows < nose_tip_y)
                masks["hair_or_headwear"] = person & ~oval & near
            for name in FACE_PARTS:
                if name in masks:
                    out[1][masks[name]] = ids[name]
        if self.body:
            out[2] = self._body(rgb, person, h, w)
        return out

    def _body(self, rgb: np.ndarray, person: np.ndarray, h: int, w: int) -> np.ndarray:
        res = self._graph("pose").process(rgb)
        body = np.zeros((h, w), dtype=np.int64)
        if res.pose_landmarks is None:
            return body
        lm = res.pose_landmarks.landmark
        pts = np.array([(p.x * w, p.y * h) for p in lm])
        seen = np.array([p.visibility > 0.5 for p in lm])
        shoulder = float(np.hypot(*(pts[11] - pts[12])))
        width = max(2.0, 0.25 * shoulder)
        if seen[[11, 12, 23, 24]].all():
            body[_fill([pts[[11, 12, 24, 23]]], h, w)] = self._id["torso"]
        for name, chains in (("arm", ((11, 13, 15), (12, 14, 16))), ("leg", ((23, 25, 27), (24, 26, 28)))):
            paths = []
            for chain in chains:
                visible = [i for i in chain if seen[i]]
                if len(visible) >= 2:
                    paths.append(pts[visible])
            if paths:
                body[_lines(paths, width, h, w) & (body == 0)] = self._id[name]
        body[~person] = 0
        return body

    def segment(self, images: torch.Tensor) -> torch.Tensor:
        """Label ``(N, 3, H, W)`` images in [-1, 1] -> ``(N, L, H, W)`` int64 on the images' device.

        Raises
        ------
        ValueError
            Not a float ``(N, 3, H, W)`` tensor (e.g. greyscale or RGBA), or a side below 16 pixels.
        """
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or images.shape[1] != 3:
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(
                f"FaceSegmenter.segment expects RGB images (N, 3, H, W) in [-1, 1], got {shape}; convert "
                f"greyscale or RGBA images to 3 channels first"
            )
        if not images.is_floating_point():
            raise ValueError(
                f"FaceSegmenter.segment expects float images in [-1, 1], got dtype {images.dtype} "
                f"(convert uint8 pixels with x / 127.5 - 1)"
            )
        n, _, h, w = images.shape
        if min(h, w) < _MIN_SIDE:
            raise ValueError(
                f"FaceSegmenter.segment: images of {w}x{h} pixels are too small to find faces in; "
                f"at least {_MIN_SIDE} pixels a side are needed"
            )
        pixels = ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        pixels = pixels.permute(0, 2, 3, 1).cpu().numpy()
        scale = max(1.0, self.work_size / min(h, w))
        size = (int(round(w * scale)), int(round(h * scale)))
        labels = []
        for img in pixels:
            rgb = np.ascontiguousarray(img)
            if scale > 1.0:
                from PIL import Image

                rgb = np.asarray(Image.fromarray(rgb).resize(size, Image.BILINEAR))
            labels.append(self._label_one(rgb, h, w))
        seg = torch.from_numpy(np.stack(labels)) if labels else torch.zeros((0, 2 + int(self.body), h, w),
                                                                              dtype=torch.int64)
        seg = seg.to(images.device)
        if self._color is not None:
            colour = self._color.segment(images) + (len(self.concepts) - len(COLOR_NAMES) - 1)
            seg = torch.cat([seg, colour], dim=1)
        return seg

    def __repr__(self) -> str:
        return f"FaceSegmenter(body={self.body}, colors={self.colors}, {len(self.concepts) - 1} concepts)"


def _resize_mask(mask: np.ndarray, h: int, w: int) -> np.ndarray:
    """A float mask resized to (h, w) by area averaging (bilinear when enlarging)."""
    if mask.shape == (h, w):
        return mask
    from PIL import Image

    return np.asarray(Image.fromarray(np.ascontiguousarray(mask, dtype=np.float32)).resize((w, h), Image.BILINEAR))
