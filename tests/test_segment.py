"""Segmenters: the interface check, ColorSegmenter, and the torchvision adapter."""
from __future__ import annotations

import colorsys

import pytest
import torch
from torch import nn

from netdissect_widgets._io import sha256_file
from netdissect_widgets.segment import (
    CATEGORIES,
    ColorSegmenter,
    Segmenter,
    TorchvisionSegmenter,
    VOC_CLASSES,
    check_segmenter,
)
from tests.conftest import require


def _torchvision_ok() -> bool:
    try:
        import torchvision  # noqa: F401
    except Exception:
        return False
    return True


def _patches(rgbs: list[tuple[int, int, int]], size: int = 4) -> torch.Tensor:
    """One solid ``size x size`` image per colour, as (N, 3, size, size) in [-1, 1]."""
    t = torch.tensor(rgbs, dtype=torch.float32) / 127.5 - 1
    return t[:, :, None, None].expand(-1, -1, size, size).contiguous()


# ---------------------------------------------------------------- ColorSegmenter

COLOUR_CASES = {
    (0, 0, 0): "black",
    (30, 30, 30): "black",
    (255, 255, 255): "white",
    (230, 230, 240): "white",
    (128, 128, 128): "gray",
    (100, 110, 100): "gray",
    (255, 0, 0): "red",
    (200, 20, 30): "red",
    (255, 165, 0): "orange",
    (255, 255, 0): "yellow",
    (240, 220, 40): "yellow",
    (0, 200, 0): "green",
    (34, 139, 34): "green",
    (0, 255, 255): "cyan",
    (0, 0, 255): "blue",
    (30, 144, 255): "blue",
    (128, 0, 128): "purple",
    (138, 43, 226): "purple",
    (255, 192, 203): "pink",
    (255, 105, 180): "pink",
    (139, 69, 19): "brown",
    (210, 180, 140): "brown",
}


def test_color_segmenter_names_solid_patches():
    seg = ColorSegmenter()
    rgbs = list(COLOUR_CASES)
    ids = seg.segment(_patches(rgbs))
    assert ids.shape == (len(rgbs), 1, 4, 4) and ids.dtype == torch.int64
    for k, rgb in enumerate(rgbs):
        assert (ids[k] == ids[k, 0, 0, 0]).all(), "a solid patch must get one colour"
        assert seg.concepts[int(ids[k, 0, 0, 0])] == COLOUR_CASES[rgb], rgb


def test_color_segmenter_members_and_every_pixel_labelled():
    seg = ColorSegmenter()
    assert isinstance(seg, Segmenter)
    assert seg.concepts[0] == "-" and len(seg.concepts) >= 11
    assert set(seg.categories[1:]) == {"color"}
    images = torch.rand(3, 3, 17, 9) * 2 - 1
    ids = seg.segment(images)
    check_segmenter(seg, ids, images)
    assert ids.shape == (3, 1, 17, 9)
    assert (ids >= 1).all(), "every pixel has a colour"
    # every name is reachable
    all_rgb = torch.stack(torch.meshgrid(*[torch.linspace(-1, 1, 24)] * 3, indexing="ij")).reshape(1, 3, -1, 1)
    assert set(seg.segment(all_rgb).unique().tolist()) == set(range(1, len(seg.concepts)))


def test_color_segmenter_grays_depend_only_on_brightness():
    seg = ColorSegmenter()
    levels = torch.linspace(-1, 1, 101)
    ids = seg.segment(levels[:, None, None, None].expand(-1, 3, 1, 1))[:, 0, 0, 0]
    names = [seg.concepts[i] for i in ids.tolist()]
    assert set(names) == {"black", "gray", "white"}
    # black, then gray, then white, never going back
    order = {"black": 0, "gray": 1, "white": 2}
    ranks = [order[n] for n in names]
    assert ranks == sorted(ranks)


def test_color_segmenter_matches_colorsys_hue():
    # pure, bright, saturated colours: the name follows the hue sectors of the docstring
    seg = ColorSegmenter()
    sectors = [(0, "red"), (30, "orange"), (60, "yellow"), (120, "green"), (180, "cyan"),
               (225, "blue"), (270, "purple"), (320, "pink"), (350, "red")]
    rgbs = [tuple(round(255 * c) for c in colorsys.hsv_to_rgb(h / 360, 1.0, 1.0)) for h, _ in sectors]
    ids = seg.segment(_patches(rgbs, size=1))[:, 0, 0, 0]
    assert [seg.concepts[i] for i in ids.tolist()] == [name for _, name in sectors]


def test_color_segmenter_rejects_bad_images():
    seg = ColorSegmenter()
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        seg.segment(torch.zeros(3, 8, 8))
    with pytest.raises(ValueError, match="float"):
        seg.segment(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))


# ---------------------------------------------------------------- check_segmenter


class UserSeg:
    """A user-written segmenter: no base class, just the three members."""

    def __init__(self, concepts=("-", "sky", "tree"), categories=("-", "object", "object"), out=None):
        self.concepts = concepts if isinstance(concepts, str) else list(concepts)
        self.categories = categories if isinstance(categories, str) else list(categories)
        self.out = out

    def segment(self, images):
        if self.out is not None:
            return self.out
        return torch.ones(images.shape[0], 2, *images.shape[-2:], dtype=torch.int64)


def test_check_segmenter_accepts_a_plain_user_object():
    seg = UserSeg()
    assert isinstance(seg, Segmenter)
    images = torch.zeros(2, 3, 5, 5)
    check_segmenter(seg, seg.segment(images), images)


@pytest.mark.parametrize(
    "out, images_n, message",
    [
        (torch.ones(2, 5, 5, dtype=torch.int64), 2, "4 dims"),
        (torch.ones(2, 1, 5, 5, dtype=torch.int32), 2, "int64"),
        (torch.ones(2, 1, 5, 5), 2, "int64"),
        (torch.full((2, 1, 5, 5), 3, dtype=torch.int64), 2, r"\[0, 2\]"),
        (torch.full((2, 1, 5, 5), -1, dtype=torch.int64), 2, r"\[0, 2\]"),
        (torch.ones(3, 1, 5, 5, dtype=torch.int64), 2, "one per image"),
        (torch.ones(2, 0, 5, 5, dtype=torch.int64), 2, "empty"),
        ([[1]], 2, "torch.Tensor"),
    ],
)
def test_check_segmenter_rejects_bad_output_naming_the_segmenter(out, images_n, message):
    seg = UserSeg(out=out)
    images = torch.zeros(images_n, 3, 5, 5)
    with pytest.raises(ValueError, match=message) as info:
        check_segmenter(seg, seg.segment(images), images)
    assert "UserSeg" in str(info.value)


@pytest.mark.parametrize(
    "concepts, categories, message",
    [
        (["sky", "tree"], ["-", "object"], "start with '-'"),
        (["-"], ["-"], "at least one"),
        (["-", 3], ["-", "object"], "list of str"),
        ("-ab", "-oo", "list of str"),
        (["-", "sky", "sky"], ["-", "object", "object"], "twice"),
        (["-", "sky"], ["-", "object", "part"], "one entry per concept"),
        (["-", "sky"], ["object", "object"], r"categories\[0\]"),
        (["-", "sky"], ["-", "scenery"], "allowed: " + ", ".join(CATEGORIES)),
    ],
)
def test_check_segmenter_rejects_bad_members(concepts, categories, message):
    seg = UserSeg(concepts, categories)
    with pytest.raises(ValueError, match=message) as info:
        check_segmenter(seg)
    assert "UserSeg" in str(info.value)


def test_check_segmenter_missing_members_and_custom_name():
    class NoSegment:
        concepts = ["-", "a"]
        categories = ["-", "object"]

    assert not isinstance(NoSegment(), Segmenter)
    with pytest.raises(ValueError, match="NoSegment.*segment"):
        check_segmenter(NoSegment())
    with pytest.raises(ValueError, match="my-segmenter.*concepts"):
        check_segmenter(object(), name="my-segmenter")


# ---------------------------------------------------------------- TorchvisionSegmenter


class RGBScores(nn.Module):
    """Scores = the normalised input's channels, so the winning class is the dominant colour."""

    def __init__(self, as_dict: bool = True):
        super().__init__()
        self.scale = nn.Parameter(torch.ones(()))
        self.as_dict = as_dict
        self.seen: list[torch.Tensor] = []

    def forward(self, x):
        self.seen.append(x.detach().clone())
        out = x * self.scale
        return {"out": out} if self.as_dict else out


def test_torchvision_segmenter_maps_classes_to_concepts():
    model = RGBScores()
    seg = TorchvisionSegmenter(model, ["background", "grass", "water"], categories=["material", "material"],
                               mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    assert seg.concepts == ["-", "grass", "water"]
    assert seg.categories == ["-", "material", "material"]
    images = _patches([(255, 0, 0), (0, 255, 0), (0, 0, 255)], size=6)
    ids = seg.segment(images)
    check_segmenter(seg, ids, images)
    assert ids.dtype == torch.int64 and ids.shape == (3, 1, 6, 6)
    assert ids[:, 0, 0, 0].tolist() == [0, 1, 2]  # red = background -> "no label"
    # mean/std 0.5 maps [-1, 1] to itself: the model saw the images unchanged
    assert torch.allclose(model.seen[-1], images)
    assert not model.training


def test_torchvision_segmenter_normalises_and_resizes():
    model = RGBScores(as_dict=False)
    seg = TorchvisionSegmenter(model, ["bg", "a", "b"], input_size=(8, 4))
    images = torch.rand(2, 3, 10, 6) * 2 - 1
    ids = seg.segment(images)
    assert ids.shape == (2, 1, 10, 6)  # back at the images' size
    seen = model.seen[-1]
    assert seen.shape == (2, 3, 8, 4)  # the model ran at input_size
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    expected = torch.nn.functional.interpolate(((images + 1) / 2 - mean) / std, size=(8, 4),
                                               mode="bilinear", align_corners=False)
    assert torch.allclose(seen, expected, atol=1e-5)


def test_torchvision_segmenter_rejects_bad_arguments():
    with pytest.raises(ValueError, match="background"):
        TorchvisionSegmenter(RGBScores(), ["only-one"])
    with pytest.raises(ValueError, match="one entry per non-background class"):
        TorchvisionSegmenter(RGBScores(), ["bg", "a", "b"], categories=["object"])
    with pytest.raises(ValueError, match="allowed"):
        TorchvisionSegmenter(RGBScores(), ["bg", "a", "b"], categories="thing")
    seg = TorchvisionSegmenter(RGBScores(), ["bg", "a"])
    with pytest.raises(ValueError, match="3 class scores per pixel but 2 classes"):
        seg.segment(torch.zeros(1, 3, 4, 4))


@pytest.fixture(scope="module")
def deeplab_file(tmp_path_factory):
    require(_torchvision_ok(), "torchvision is not importable")
    from torchvision.models.segmentation import deeplabv3_mobilenet_v3_large

    torch.manual_seed(0)
    model = deeplabv3_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=21, aux_loss=True)
    model.eval()
    path = tmp_path_factory.mktemp("deeplab") / "deeplab.pth"
    torch.save(model.state_dict(), path)
    return model, path


def test_deeplabv3_from_local_file_with_sha(deeplab_file):
    model, path = deeplab_file
    seg = TorchvisionSegmenter.deeplabv3(path, sha256=sha256_file(path), backbone="mobilenet_v3_large")
    assert seg.concepts == ["-", *VOC_CLASSES[1:]] and len(seg.concepts) == 21
    torch.manual_seed(1)
    images = torch.rand(2, 3, 33, 40) * 2 - 1
    ids = seg.segment(images)
    assert ids.shape == (2, 1, 33, 40) and ids.dtype == torch.int64
    check_segmenter(seg, ids, images)
    # the same answer as running the original model by hand
    with torch.no_grad():
        mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
        std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
        expected = model(((images + 1) / 2 - mean) / std)["out"].argmax(1, keepdim=True)
    assert torch.equal(ids, expected)


def test_deeplabv3_checksum_and_file_errors(deeplab_file, tmp_path):
    _, path = deeplab_file
    actual = sha256_file(path)
    with pytest.raises(ValueError, match=f"expected {'0' * 64}, got {actual}"):
        TorchvisionSegmenter.deeplabv3(path, sha256="0" * 64, backbone="mobilenet_v3_large")
    with pytest.raises(FileNotFoundError, match="never downloads"):
        TorchvisionSegmenter.deeplabv3(tmp_path / "missing.pth")
    with pytest.raises(ValueError, match="backbone must be one of"):
        TorchvisionSegmenter.deeplabv3(path, backbone="vgg")
    # weights of one backbone do not fit another: the error lists the keys
    with pytest.raises(ValueError, match="missing keys"):
        TorchvisionSegmenter.deeplabv3(path, backbone="resnet50")


# ---------------------------------------------------------------- devices


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (CPU machines run the rest)")
def test_segmenters_follow_devices():
    images = torch.rand(2, 3, 9, 7) * 2 - 1
    colour = ColorSegmenter()
    on_gpu = colour.segment(images.cuda())
    assert on_gpu.device.type == "cuda" and torch.equal(on_gpu.cpu(), colour.segment(images))
    # the model runs on its own device; the ids come back on the images' device
    model = RGBScores()
    seg = TorchvisionSegmenter(model.cuda(), ["bg", "a", "b"], input_size=5)
    ids = seg.segment(images)
    assert model.seen[-1].device.type == "cuda" and ids.device.type == "cpu"
    assert torch.equal(seg.segment(images.cuda()).cpu(), ids)
