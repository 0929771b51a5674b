"""The paper's models from local files (Places365 VGG16 / AlexNet / ResNet-152, ProGAN), and the zoo's error paths.

The weight files are written here, with random values, in the key layout of each
release (built from torchvision's own key names by the mappings below, written
independently of the loader), so these tests need no download and no optional package.
"""
from __future__ import annotations

import hashlib
import math

import pytest
import torch
import torch.nn.functional as F

from netdissect_widgets.hooks import Trace
from netdissect_widgets.zoo import MissingExtraError, load_places365, load_proggan
from netdissect_widgets.zoo._packages import import_optional, package_file

torchvision = pytest.importorskip("torchvision")

VGG_NAMES = ["conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1", "conv2_1", "relu2_1", "conv2_2", "relu2_2",
             "pool2", "conv3_1", "relu3_1", "conv3_2", "relu3_2", "conv3_3", "relu3_3", "pool3", "conv4_1",
             "relu4_1", "conv4_2", "relu4_2", "conv4_3", "relu4_3", "pool4", "conv5_1", "relu5_1", "conv5_2",
             "relu5_2", "conv5_3", "relu5_3", "pool5"]


def _random_like(shapes: dict[str, torch.Size], seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, s in shapes.items():
        if k.endswith("num_batches_tracked"):
            out[k] = torch.tensor(7)
        elif k.endswith("running_var"):
            out[k] = torch.rand(s, generator=g).half() + 0.5
        else:
            out[k] = (torch.randn(s, generator=g) * 0.02).half()  # float16 keeps the files small
    return out


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_vgg16_places365_layout(tmp_path):
    with torch.device("meta"):  # shapes only
        tv_keys = {k: v.shape for k, v in torchvision.models.vgg16(weights=None, num_classes=365).state_dict().items()}
    classifier = {"0": "fc6", "3": "fc7", "6": "fc8a"}
    state_shapes = {}
    for k, s in tv_keys.items():
        part, index, leaf = k.split(".")
        name = VGG_NAMES[int(index)] if part == "features" else classifier[index]
        state_shapes[f"{part}.{name}.{leaf}"] = s
    state = _random_like(state_shapes)
    path = tmp_path / "vgg16_places365.pth"
    torch.save(state, path)
    model = load_places365("vgg16", path, sha256=_sha(path))
    assert torch.equal(model.features.conv5_3.weight, state["features.conv5_3.weight"].float())
    assert torch.equal(model.classifier.fc8a.bias, state["classifier.fc8a.bias"].float())
    x = torch.rand(1, 3, 64, 64) * 2 - 1  # small input: the classifier pools adaptively to 7x7
    with Trace(model, "features.conv5_3") as tr:
        logits = model(x)
    assert logits.shape == (1, 365) and tr.output.shape == (1, 512, 4, 4)
    with pytest.raises(ValueError, match="SHA-256 mismatch"):
        load_places365("vgg16", path, sha256="0" * 64)


def test_alexnet_places365_layout(tmp_path):
    shapes = {
        "conv1.weight": (96, 3, 11, 11), "conv1.bias": (96,), "conv2.weight": (256, 48, 5, 5), "conv2.bias": (256,),
        "conv3.weight": (384, 256, 3, 3), "conv3.bias": (384,), "conv4.weight": (384, 192, 3, 3),
        "conv4.bias": (384,), "conv5.weight": (256, 192, 3, 3), "conv5.bias": (256,),
        "fc6.weight": (4096, 9216), "fc6.bias": (4096,), "fc7.weight": (4096, 4096), "fc7.bias": (4096,),
        "fc8.weight": (365, 4096), "fc8.bias": (365,),
    }
    state = _random_like({k: torch.Size(v) for k, v in shapes.items()})
    path = tmp_path / "alexnet.pth"
    torch.save(state, path)
    model = load_places365("alexnet", path)
    x = torch.rand(2, 3, 227, 227) * 2 - 1
    with Trace(model, "conv5") as tr:
        assert model(x).shape == (2, 365)
    assert tr.output.shape == (2, 256, 13, 13)
    # conv2 is grouped and lrn1 is Caffe's LRN: recompute conv2 from relu1's pooled output by hand
    with Trace(model, "lrn1", clone=True) as before, Trace(model, "conv2", clone=True) as after:
        model(x)
    w, b = state["conv2.weight"].float(), state["conv2.bias"].float()
    halves = before.output.chunk(2, dim=1)
    expected = torch.cat([F.conv2d(h, wi, bi, padding=2) for h, wi, bi in zip(halves, w.chunk(2), b.chunk(2))], 1)
    torch.testing.assert_close(after.output, expected, rtol=1e-4, atol=1e-5)
    xn = ((x + 1) / 2 - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    conv1 = F.conv2d(xn, state["conv1.weight"].float(), state["conv1.bias"].float(), stride=4)
    pooled = F.max_pool2d(F.relu(conv1), 3, 2)
    sq = F.pad(pooled.pow(2)[:, None], (0, 0, 0, 0, 2, 2))[:, 0]
    norm = torch.stack([sq[:, c:c + 5].sum(1) for c in range(96)], 1)
    torch.testing.assert_close(before.output, pooled / (1 + 1e-4 / 5 * norm) ** 0.75, rtol=1e-4, atol=1e-5)


def _torch7_resnet152_key(tv_key: str) -> str:
    parts = tv_key.split(".")
    if parts[0] == "conv1":
        return "0." + parts[1]
    if parts[0] == "bn1":
        return "1." + parts[1]
    if parts[0] == "fc":
        return "10.1." + parts[1]
    stage, block = int(parts[0][-1]) + 3, parts[1]
    if parts[2] == "downsample":
        return f"{stage}.{block}.0.1.{parts[3]}.{parts[4]}"
    index = {"conv1": 0, "bn1": 1, "conv2": 3, "bn2": 4, "conv3": 6, "bn3": 7}[parts[2]]
    return f"{stage}.{block}.0.0.{index}.{parts[3]}"


@pytest.mark.slow
def test_resnet152_places365_torch7_layout(tmp_path):
    with torch.device("meta"):  # shapes only
        tv_state = torchvision.models.resnet152(weights=None, num_classes=365).state_dict()
    state = _random_like({_torch7_resnet152_key(k): v.shape for k, v in tv_state.items()})
    assert "4.0.0.0.0.weight" in state and "4.0.0.1.0.weight" in state and "10.1.weight" in state
    path = tmp_path / "resnet152.pth"
    torch.save(state, path)
    model = load_places365("resnet152", path)
    assert torch.equal(model.layer1[0].conv2.weight, state["4.0.0.0.3.weight"].float())
    assert torch.equal(model.layer3[35].bn3.running_var, state["6.35.0.0.7.running_var"].float())
    assert torch.equal(model.layer4[0].downsample[0].weight, state["7.0.0.1.0.weight"].float())
    with Trace(model, "layer4") as tr:
        assert model(torch.zeros(1, 3, 64, 64)).shape == (1, 365)
    assert tr.output.shape == (1, 2048, 2, 2)


def test_places365_bad_input(tmp_path):
    with pytest.raises(ValueError, match="choose one of vgg16, alexnet, resnet152"):
        load_places365("vgg19", tmp_path / "x.pth")
    with pytest.raises(FileNotFoundError, match="never downloads"):
        load_places365("alexnet", tmp_path / "missing.pth")
    wrong = tmp_path / "alexnet_places365-92864cf6.pth"  # the release's name, other bytes
    torch.save({"conv1.weight": torch.zeros(1)}, wrong)
    with pytest.raises(ValueError, match="SHA-256 begins with 92864cf6"):
        load_places365("alexnet", wrong)
    named = tmp_path / "x.pth"
    torch.save({"conv1.weight": torch.zeros(1)}, named)
    right_prefix = tmp_path / f"alexnet_places365-{_sha(named)[:8]}.pth"
    named.rename(right_prefix)
    with pytest.raises(ValueError, match="missing keys"):  # the name check passed; the keys do not fit
        load_places365("alexnet", right_prefix)


def _proggan_state(sizes, seed=0):
    g = torch.Generator().manual_seed(seed)
    state, n = {}, 0
    shapes = [(sizes[1], sizes[0], 4, 4), (sizes[1], sizes[1], 3, 3)]
    for cin, cout in zip(sizes[1:-1], sizes[2:]):
        shapes += [(cout, cin, 3, 3), (cout, cout, 3, 3)]
    for n, s in enumerate(shapes, 1):
        state[f"layer{n}.conv.weight"] = torch.randn(s, generator=g)
        state[f"layer{n}.wscale.b"] = torch.randn(s[0], generator=g) * 0.1
    res = 4 * 2 ** (len(sizes) - 2)
    state[f"output_{res}x{res}.conv.weight"] = torch.randn(3, sizes[-1], 1, 1, generator=g)
    state[f"output_{res}x{res}.wscale.b"] = torch.randn(3, generator=g) * 0.1
    return state


def test_proggan_layout_and_first_layer_by_hand(tmp_path):
    sizes = [16, 16, 8, 8]
    state = _proggan_state(sizes)
    path = tmp_path / "proggan.pth"
    torch.save({"state_dict": state}, path)  # the release wraps some files in a dict
    gen = load_proggan(path, sha256=_sha(path))
    assert gen.z_dim == 16 and [n for n, _ in gen.named_children()] == [
        "layer1", "layer2", "layer3", "layer4", "layer5", "layer6", "output_16x16"]
    z = torch.randn(3, 16)
    with Trace(gen, "layer1") as l1, Trace(gen, "layer3") as l3:
        images = gen(z)
    assert images.shape == (3, 3, 16, 16) and l3.output.shape == (3, 8, 8, 8)
    x = z / torch.sqrt(z.pow(2).mean(1, keepdim=True) + 1e-8)
    y = F.conv2d(x[:, :, None, None], state["layer1.conv.weight"], padding=3)
    y = y * (math.sqrt(2) / 4 / math.sqrt(16)) + state["layer1.wscale.b"].view(1, -1, 1, 1)
    torch.testing.assert_close(l1.output, F.leaky_relu(y, 0.2), rtol=1e-5, atol=1e-5)


def test_proggan_bad_files(tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"features.0.weight": torch.zeros(2)}, bad)
    with pytest.raises(ValueError, match="not a ProGAN generator in the GAN-dissection layout"):
        load_proggan(bad)
    good = tmp_path / "good.pth"
    torch.save(_proggan_state([8, 8, 4]), good)
    with pytest.raises(ValueError, match="SHA-256 mismatch"):
        load_proggan(good, sha256="1" * 64)
    assert load_proggan(good)(torch.zeros(1, 8)).shape == (1, 3, 8, 8)
    with pytest.raises(ValueError, match=r"expected z of shape \(N, 8\)"):
        load_proggan(good)(torch.zeros(1, 9))


def test_a_missing_package_names_the_extra_and_the_command(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "gan_face_generate" else real(name, *a))
    from netdissect_widgets.zoo import load_face_gan

    with pytest.raises(MissingExtraError, match=r"'gan-face-generate'.*\[real\].*--no-deps gan-face-generate==1.1.1"):
        load_face_gan()
    with pytest.raises(ImportError, match=r"needs the package 'not-a-pkg'.*scripts/setup.sh"):
        import_optional("not_a_module_anywhere", "not-a-pkg", "this test")


def test_a_packaged_file_with_other_bytes_is_refused(tmp_path, monkeypatch):
    # a fake installed package holding a file whose checksum is not the expected one
    pkg = tmp_path / "fake_weights_pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "w.pth").write_bytes(b"not the weights")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ValueError, match="SHA-256 mismatch"):
        package_file("fake_weights_pkg", "w.pth", "fake-weights", "test", sha256="2" * 64)
    with pytest.raises(FileNotFoundError, match="has no 'other.pth'"):
        package_file("fake_weights_pkg", "other.pth", "fake-weights", "test")
    assert package_file("fake_weights_pkg", "w.pth", "fake-weights", "test",
                        sha256=hashlib.sha256(b"not the weights").hexdigest()).name == "w.pth"


def test_the_method_never_imports_the_zoo():
    """dissection/, stats/, intervene/ and segment/ may be imported by the zoo, never the other way."""
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "netdissect_widgets"
    offenders = []
    for folder in ("dissection", "stats", "intervene", "segment"):
        for path in (root / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                names = []
                if isinstance(node, ast.ImportFrom):
                    names = [(node.module or "")] + [f"{node.module or ''}.{a.name}" for a in node.names]
                elif isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                if any("zoo" in n.split(".") for n in names):
                    offenders.append(f"{path.relative_to(root)}:{node.lineno}")
    assert offenders == []
    assert any((root / "zoo").glob("*.py"))  # the scan looked at a real tree
