"""Datasets (ZDataset, ImageFolderDataset) and real models (InputNormalization, load_torchvision_model)."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from netdissect_widgets._io import sha256_file
from netdissect_widgets.datasets import ImageFolderDataset, ZDataset
from netdissect_widgets.hooks import Trace, layer_names
from netdissect_widgets.models import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    InputNormalization,
    _import_torchvision,
    load_state_dict_checked,
    load_torchvision_model,
    normalize_images,
)
from tests.conftest import require


def _torchvision_ok() -> bool:
    try:
        import torchvision  # noqa: F401
    except Exception:
        return False
    return True


# ---------------------------------------------------------------- ZDataset


def test_zdataset_is_a_function_of_seed_and_index():
    a, b = ZDataset(50, 16, seed=3), ZDataset(50, 16, seed=3)
    z = a[7]
    assert z.dtype == torch.float32 and z.shape == (16,)
    # read order does not matter
    later = [b[i] for i in (49, 3, 7)]
    assert torch.equal(later[2], z)
    assert torch.equal(a[-1], a[49])
    assert not torch.equal(a[7], a[8])
    assert not torch.equal(ZDataset(50, 16, seed=4)[7], z)
    # batches from a DataLoader are the same vectors
    batch = next(iter(torch.utils.data.DataLoader(a, batch_size=10)))
    assert torch.equal(batch, torch.stack([a[i] for i in range(10)]))


def test_zdataset_is_standard_normal():
    zs = torch.stack([z for z in ZDataset(400, 32, seed=0)])
    assert abs(zs.mean().item()) < 0.05
    assert abs(zs.std().item() - 1) < 0.05
    # items are not correlated with each other
    corr = torch.corrcoef(zs[:50])
    assert corr.fill_diagonal_(0).abs().max() < 0.7


@pytest.mark.parametrize(
    "n, dim, seed", [(0, 4, 0), (5, 0, 0), (-1, 4, 0), (2.5, 4, 0), (5, 4, "x"), (True, 4, 0)]
)
def test_zdataset_rejects_bad_arguments(n, dim, seed):
    with pytest.raises(ValueError):
        ZDataset(n, dim, seed)


def test_zdataset_index_errors():
    ds = ZDataset(5, 2)
    with pytest.raises(IndexError, match="0..4"):
        ds[5]
    with pytest.raises(IndexError):
        ds[-6]
    with pytest.raises(TypeError):
        ds["1"]


# ---------------------------------------------------------------- ImageFolderDataset


def _png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, dtype=np.uint8)).save(path)


def test_image_folder_reads_sorted_images(tmp_path):
    # a wide image: red | green | blue thirds; the centre crop keeps green
    stripes = np.zeros((20, 60, 3), np.uint8)
    stripes[:, :20, 0] = 255
    stripes[:, 20:40, 1] = 255
    stripes[:, 40:, 2] = 255
    _png(tmp_path / "b_stripes.png", stripes)
    _png(tmp_path / "a_solid.PNG", np.full((50, 30, 3), (255, 0, 128)))
    _png(tmp_path / "sub" / "c.png", np.full((8, 8, 3), 0))
    (tmp_path / "notes.txt").write_text("not an image")

    ds = ImageFolderDataset(tmp_path, size=20)
    assert [p.name for p in ds.paths] == ["a_solid.PNG", "b_stripes.png", "c.png"]
    assert len(ds) == 3
    for i in range(3):
        image, label = ds[i]
        assert image.dtype == torch.float32 and image.shape == (3, 20, 20) and label == 0
        assert image.min() >= -1 and image.max() <= 1
    solid, _ = ds[0]
    expected = torch.tensor([1.0, -1.0, 128 / 127.5 - 1]).view(3, 1, 1).expand(3, 20, 20)
    assert torch.allclose(solid, expected, atol=1e-6)
    crop, _ = ds[1]
    assert torch.equal(crop, torch.tensor([-1.0, 1.0, -1.0]).view(3, 1, 1).expand(3, 20, 20))
    small, _ = ds[2]  # upscaled from 8x8
    assert torch.equal(small, torch.full((3, 20, 20), -1.0))


def test_image_folder_resizes_shorter_side_then_crops(tmp_path):
    img = np.zeros((40, 80, 3), np.uint8)  # tall-ish crop test: left half white
    img[:, :40] = 255
    _png(tmp_path / "x.png", img)
    image, _ = ImageFolderDataset(tmp_path, size=10)[0]  # resized to 20 x 10, centre 10 columns kept
    assert image.shape == (3, 10, 10)
    assert torch.allclose(image[:, :, :3], torch.ones(3, 10, 3), atol=0.02)  # white part
    assert torch.allclose(image[:, :, -3:], -torch.ones(3, 10, 3), atol=0.02)  # black part


def test_image_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="nope"):
        ImageFolderDataset(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no image files"):
        ImageFolderDataset(tmp_path / "empty")
    (tmp_path / "file.png").write_bytes(b"this is not a png")
    with pytest.raises(NotADirectoryError):
        ImageFolderDataset(tmp_path / "file.png")
    ds = ImageFolderDataset(tmp_path)
    with pytest.raises(ValueError, match="file.png"):
        ds[0]
    with pytest.raises(IndexError):
        ds[1]
    with pytest.raises(ValueError, match="size"):
        ImageFolderDataset(tmp_path, size=0)


# ---------------------------------------------------------------- InputNormalization


class RootParamModel(nn.Module):
    """A model with a parameter on its root module and two children."""

    def __init__(self):
        super().__init__()
        self.bias = nn.Parameter(torch.tensor(0.5))
        self.features = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU())
        self.head = nn.Conv2d(4, 2, 1)

    def forward(self, x):
        return self.head(self.features(x)) + self.bias


def test_input_normalization_keeps_layer_names_and_normalises():
    torch.manual_seed(0)
    model = RootParamModel()
    wrapped = InputNormalization(model, mean=(0.1, 0.2, 0.3), std=(0.5, 0.6, 0.7))
    assert layer_names(wrapped) == layer_names(model) == ["features", "features.0", "features.1", "head"]
    assert wrapped.features is model.features and wrapped.wrapped is model
    x = torch.rand(2, 3, 5, 5) * 2 - 1
    mean = torch.tensor([0.1, 0.2, 0.3]).view(1, 3, 1, 1)
    std = torch.tensor([0.5, 0.6, 0.7]).view(1, 3, 1, 1)
    expected = model(((x + 1) / 2 - mean) / std)
    assert torch.allclose(wrapped(x), expected, atol=1e-6)
    assert torch.allclose(normalize_images(x, (0.1, 0.2, 0.3), (0.5, 0.6, 0.7)), ((x + 1) / 2 - mean) / std)
    # hooks by the original names see the wrapped model's computation
    with Trace(wrapped, "features.1") as t:
        wrapped(x)
    assert torch.allclose(t.output, model.features(((x + 1) / 2 - mean) / std), atol=1e-6)
    # the state dict is the model's plus the normalisation
    assert set(wrapped.state_dict()) == set(model.state_dict()) | {"input_mean", "input_std"}


def test_input_normalization_follows_dtype_and_mode():
    model = RootParamModel()
    wrapped = InputNormalization(model).double()
    assert model.bias.dtype == torch.float64 and model.head.weight.dtype == torch.float64
    assert wrapped(torch.zeros(1, 3, 4, 4, dtype=torch.float64)).dtype == torch.float64
    wrapped.eval()
    assert not model.training and not model.features.training
    wrapped.train()
    assert model.training and model.head.training
    with pytest.raises(ValueError, match="3 values"):
        InputNormalization(model, mean=(0.5, 0.5))
    with pytest.raises(ValueError, match="positive"):
        InputNormalization(model, std=(0.5, 0.0, 0.5))
    with pytest.raises(TypeError):
        InputNormalization(lambda x: x)


# ---------------------------------------------------------------- weights from local files


def test_load_state_dict_checked_errors(tmp_path):
    state = {"w": torch.arange(3.0)}
    path = tmp_path / "w.pth"
    torch.save(state, path)
    assert torch.equal(load_state_dict_checked(path, sha256_file(path).upper())["w"], state["w"])
    with pytest.raises(FileNotFoundError, match=r"missing\.pth.*never downloads"):
        load_state_dict_checked(tmp_path / "missing.pth")
    with pytest.raises(ValueError, match=f"expected {'a' * 64}, got {sha256_file(path)}"):
        load_state_dict_checked(path, sha256="a" * 64)
    torch.save({"epoch": 3, "state_dict": state}, tmp_path / "ckpt.pth")
    with pytest.raises(ValueError, match="'state_dict'"):
        load_state_dict_checked(tmp_path / "ckpt.pth")
    torch.save(nn.Linear(2, 2), tmp_path / "pickled.pth")  # a whole pickled model is refused
    with pytest.raises(ValueError, match="state_dict"):
        load_state_dict_checked(tmp_path / "pickled.pth")
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="not hold a state dict"):
        load_state_dict_checked(tmp_path / "list.pth")


@pytest.fixture(scope="module")
def resnet_file(tmp_path_factory):
    require(_torchvision_ok(), "torchvision is not importable")
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    folder = tmp_path_factory.mktemp("resnet")
    torch.save(model.state_dict(), folder / "resnet18.pth")
    return model, folder


def test_load_torchvision_model_resnet18(resnet_file):
    model, folder = resnet_file
    path = folder / "resnet18.pth"
    loaded = load_torchvision_model("resnet18", path, sha256=sha256_file(path), num_classes=10)
    assert isinstance(loaded, InputNormalization) and not loaded.training
    names = layer_names(loaded)
    assert "layer4" in names and "layer4.1.conv2" in names and not any(n.startswith("model.") for n in names)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        expected = model(normalize_images(x, IMAGENET_MEAN, IMAGENET_STD))
        assert torch.allclose(loaded(x), expected, atol=1e-5)
    bare = load_torchvision_model("resnet18", path, num_classes=10, mean=None, std=None)
    assert type(bare).__name__ == "ResNet"


def test_load_torchvision_model_errors(resnet_file):
    model, folder = resnet_file
    path = folder / "resnet18.pth"
    with pytest.raises(ValueError, match=f"got {sha256_file(path)}"):
        load_torchvision_model("resnet18", path, sha256="b" * 64, num_classes=10)
    with pytest.raises(ValueError, match=r"shape mismatches.*fc\.weight.*num_classes"):
        load_torchvision_model("resnet18", path)  # file has 10 classes, default head 1000
    state = model.state_dict()
    partial = {k: v for k, v in state.items() if k != "layer1.0.conv1.weight"}
    partial["extra.weight"] = torch.zeros(1)
    torch.save(partial, folder / "partial.pth")
    expected = r"missing keys \(1\): layer1\.0\.conv1\.weight.*unexpected keys \(1\): extra\.weight"
    with pytest.raises(ValueError, match=expected):
        load_torchvision_model("resnet18", folder / "partial.pth", num_classes=10)
    torch.save({"module." + k: v for k, v in state.items()}, folder / "dp.pth")
    with pytest.raises(ValueError, match="'module.'"):
        load_torchvision_model("resnet18", folder / "dp.pth", num_classes=10)
    with pytest.raises(KeyError, match="resnet18"):
        load_torchvision_model("resnet19", path)
    with pytest.raises(FileNotFoundError, match="never downloads"):
        load_torchvision_model("resnet18", folder / "nothing.pth")
    with pytest.raises(ValueError, match="num_classes"):
        load_torchvision_model("resnet18", path, num_classes=0)


# ---------------------------------------------------------------- torch alone


def test_missing_torchvision_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "torchvision", None)  # makes `import torchvision` fail
    with pytest.raises(ImportError, match="scripts/setup.sh"):
        _import_torchvision()
    with pytest.raises(ImportError, match="torch \\+ torchvision"):
        load_torchvision_model("resnet18", __file__)


def test_package_works_without_torchvision():
    code = textwrap.dedent(
        """
        import sys
        sys.modules["torchvision"] = None
        import torch
        from netdissect_widgets.segment import ColorSegmenter, TorchvisionSegmenter, check_segmenter
        from netdissect_widgets.datasets import ZDataset
        from netdissect_widgets.models import InputNormalization
        seg = ColorSegmenter()
        check_segmenter(seg, seg.segment(torch.zeros(1, 3, 2, 2)))
        InputNormalization(torch.nn.Conv2d(3, 1, 1))(torch.zeros(1, 3, 2, 2))
        ZDataset(2, 3)[1]
        try:
            TorchvisionSegmenter.deeplabv3(sys.executable)
        except ImportError as exc:
            print("ImportError", "setup.sh" in str(exc))
        """
    )
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=root)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ImportError True"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (CPU machines run the rest)")
def test_input_normalization_moves_with_the_model():
    torch.manual_seed(0)
    model = RootParamModel()
    x = torch.rand(2, 3, 6, 6) * 2 - 1
    expected = InputNormalization(model)(x)
    wrapped = InputNormalization(model).to("cuda")
    assert model.bias.device.type == "cuda" and model.head.weight.device.type == "cuda"
    assert wrapped.input_mean.device.type == "cuda"
    assert torch.allclose(wrapped(x.cuda()).cpu(), expected, atol=1e-5)
