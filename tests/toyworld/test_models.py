"""The toy world's shipped models: checksums, layer names, quality on small held-out sets, errors, training path."""
from __future__ import annotations

import shutil

import pytest
import torch

from netdissect_widgets._io import load_json, sha256_file
from netdissect_widgets.toyworld import evaluate, loaders, train
from netdissect_widgets.toyworld._rendered import HELDOUT_SEED, render_tensors

N_REAL = 200
N_GAN = 200


@pytest.fixture(scope="module")
def heldout():
    return render_tensors(N_REAL, HELDOUT_SEED, progress=False)


@pytest.fixture(scope="module")
def segmenter():
    return loaders.load_segmenter()


def test_shipped_weights_verified_float16_and_small():
    manifest = load_json(loaders.WEIGHTS_DIR / loaders.MANIFEST)["models"]
    total = 0
    for name in loaders.MODEL_NAMES:
        path = loaders.WEIGHTS_DIR / f"{name}.pt"
        assert sha256_file(path) == manifest[name]["sha256"]
        state = torch.load(path, weights_only=True)
        floats = [v for v in state.values() if v.is_floating_point()]
        assert floats and all(v.dtype == torch.float16 for v in floats)
        model = loaders.load_model(name)
        assert not model.training
        assert all(p.dtype == torch.float32 for p in model.parameters())
        total += path.stat().st_size
    assert total <= 15 * 2**20


def test_classifier_layers_and_heldout_accuracy(heldout):
    model = loaders.load_classifier()
    names = [n for n, _ in model.named_children()]
    for name in ["conv1", "conv2", "conv3", "conv4", "conv5", "fc"]:
        assert name in names
    seen = {}
    hooks = [getattr(model, n).register_forward_hook(lambda m, i, o, n=n: seen.__setitem__(n, o))
             for n in ("conv4", "conv5")]
    try:
        with torch.no_grad():
            logits = model(torch.zeros(2, 3, 64, 64))
    finally:
        for h in hooks:
            h.remove()
    assert logits.shape == (2, len(model.fc.linear.weight))
    n, c, h, w = seen["conv5"].shape
    assert c >= 256 and h >= 8 and w >= 8
    assert (seen["conv5"] >= 0).all()  # post-ReLU activations
    assert evaluate.classifier_accuracy(model, heldout) >= 0.90


def test_segmenter_interface_and_heldout_scores(segmenter, heldout):
    from netdissect_widgets.toyworld import CONCEPTS

    n = len(segmenter.concepts)  # concepts appended to the world later are not predicted
    assert segmenter.concepts == CONCEPTS.names[:n] and segmenter.concepts[0] == "-"
    assert segmenter.categories == CONCEPTS.categories[:n] and segmenter.categories[0] == "-"
    assert set(segmenter.categories[1:]) == set(segmenter.channels)
    images = evaluate.as_float(heldout.images[:4])
    seg = segmenter.segment(images)
    assert seg.dtype == torch.int64 and seg.shape == (4, 4, 64, 64)
    cats = segmenter.categories
    for k, channel in enumerate(segmenter.channels):
        assert all(cats[i] == channel for i in seg[:, k].unique().tolist() if i != 0)
    # any image size works (padded inside) and matches the output size
    assert segmenter.segment(torch.zeros(1, 3, 30, 42)).shape == (1, 4, 30, 42)
    scores = evaluate.segmenter_scores(segmenter, heldout)
    assert scores["object"]["pixel_accuracy"] >= 0.90
    assert scores["object"]["miou"] >= 0.70


def test_generator_layers_shapes_and_range():
    gen = loaders.load_generator()
    assert gen.z_dim >= 64
    names = [n for n, _ in gen.named_children()]
    assert names == ["layer1", "layer2", "layer3", "layer4", "layer5", "output"]
    sizes = {}
    hooks = [getattr(gen, n).register_forward_hook(lambda m, i, o, n=n: sizes.__setitem__(n, tuple(o.shape[-2:])))
             for n in names[:5]]
    try:
        with torch.no_grad():
            out = gen(torch.randn(3, gen.z_dim, generator=torch.Generator().manual_seed(0)))
    finally:
        for h in hooks:
            h.remove()
    assert sizes == {"layer1": (4, 4), "layer2": (8, 8), "layer3": (16, 16), "layer4": (32, 32), "layer5": (64, 64)}
    assert out.shape == (3, 3, 64, 64) and out.dtype == torch.float32
    assert out.min() >= -1 and out.max() <= 1 and out.std() > 0.1
    with pytest.raises(ValueError, match="expected z of shape"):
        gen(torch.zeros(2, gen.z_dim + 1))


def test_generator_samples_look_like_scenes(segmenter, heldout):
    gen = loaders.load_generator()
    stats = evaluate.generator_stats(gen, segmenter, heldout, n=N_GAN)
    assert stats["labelled_fraction"] >= 0.90
    assert stats["tv_vs_real_segmented"] <= 0.25
    assert stats["tv_vs_real_truth"] <= 0.25
    assert stats["frequencies"]["tree"]["generated"] > 0.01  # trees for GAN paint


@pytest.fixture
def weights_copy(tmp_path):
    for name in ["classifier.pt", loaders.MANIFEST]:
        shutil.copy(loaders.WEIGHTS_DIR / name, tmp_path / name)
    return tmp_path


def test_missing_weight_file_names_file_and_command(weights_copy):
    loaders.load_classifier(weights_dir=weights_copy)  # the copy loads
    (weights_copy / "classifier.pt").unlink()
    with pytest.raises(FileNotFoundError, match=r"classifier\.pt.*toyworld\.train classifier"):
        loaders.load_classifier(weights_dir=weights_copy)
    with pytest.raises(FileNotFoundError, match=r"generator\.pt.*toyworld\.train generator"):
        loaders.load_generator(weights_dir=weights_copy)


def test_missing_manifest_is_an_error(weights_copy):
    (weights_copy / loaders.MANIFEST).unlink()
    with pytest.raises(FileNotFoundError, match=r"manifest.*toyworld\.train classifier"):
        loaders.load_classifier(weights_dir=weights_copy)


def test_corrupt_weight_file_names_file_and_command(weights_copy):
    path = weights_copy / "classifier.pt"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"classifier\.pt is corrupt.*toyworld\.train classifier"):
        loaders.load_classifier(weights_dir=weights_copy)
    path.write_bytes(b"not a torch file")
    with pytest.raises(ValueError, match=r"corrupt"):
        loaders.load_classifier(weights_dir=weights_copy)


def test_weights_for_other_scene_classes_are_refused(weights_copy):
    from netdissect_widgets._io import save_json

    manifest = load_json(weights_copy / loaders.MANIFEST)
    manifest["models"]["classifier"]["config"]["classes"] = ["a", "b"]
    save_json(weights_copy / loaders.MANIFEST, manifest)
    with pytest.raises(ValueError, match=r"scene classes.*toyworld\.train classifier"):
        loaders.load_classifier(weights_dir=weights_copy)


def test_unknown_model_name():
    with pytest.raises(KeyError, match="classifier"):
        loaders.load_model("clasifier")


def test_train_command_runs_into_temp_folder(tmp_path):
    shipped = {n: sha256_file(loaders.WEIGHTS_DIR / f"{n}.pt") for n in loaders.MODEL_NAMES}
    code = train.main(["all", "--out", str(tmp_path), "--device", "cpu", "--steps", "2", "--batch-size", "4",
                       "--train-size", "16", "--heldout-size", "8", "--gan-samples", "8", "--workers", "0",
                       "--no-progress"])
    assert code == 0
    manifest = load_json(tmp_path / loaders.MANIFEST)["models"]
    assert sorted(manifest) == sorted(loaders.MODEL_NAMES)
    for name in loaders.MODEL_NAMES:
        assert manifest[name]["sha256"] == sha256_file(tmp_path / f"{name}.pt")
        assert manifest[name]["training"]["steps"] == 2
        assert manifest[name]["metrics"]
        loaders.load_model(name, weights_dir=tmp_path)
    assert {n: sha256_file(loaders.WEIGHTS_DIR / f"{n}.pt") for n in loaders.MODEL_NAMES} == shipped


def test_train_command_takes_several_models(tmp_path, capsys):
    code = train.main(["segmenter", "classifier", "--out", str(tmp_path), "--device", "cpu", "--steps", "1",
                       "--batch-size", "4", "--train-size", "8", "--heldout-size", "4", "--workers", "0",
                       "--no-progress"])
    assert code == 0
    assert sorted(load_json(tmp_path / loaders.MANIFEST)["models"]) == ["classifier", "segmenter"]
    assert not (tmp_path / "generator.pt").exists()
    with pytest.raises(SystemExit):
        train.main(["classifier-head", "segmenter", "--out", str(tmp_path)])
    assert "classifier-head runs alone" in capsys.readouterr().err


def test_classifier_head_is_sparse_and_stage2_refits_only_the_head(weights_copy):
    shipped = loaders.load_classifier()
    entry = load_json(loaders.WEIGHTS_DIR / loaders.MANIFEST)["models"]["classifier"]["training"]
    assert entry["head_refit"]["l1"] > 0
    # the shipped head reads few conv5 units per class (stage 2's L1 penalty)
    per_class = (shipped.fc.linear.weight != 0).sum(1)
    assert per_class.min() >= 1 and per_class.float().mean() <= 8, per_class

    code = train.main(["classifier-head", "--out", str(weights_copy), "--device", "cpu", "--train-size", "200",
                       "--heldout-size", "50", "--head-steps", "300", "--head-l1", "0.05", "--workers", "0",
                       "--no-progress"])
    assert code == 0
    manifest = load_json(weights_copy / loaders.MANIFEST)["models"]["classifier"]
    assert manifest["sha256"] == sha256_file(weights_copy / "classifier.pt")
    assert manifest["training"]["steps"] == entry["steps"]  # stage 1's facts are kept
    assert manifest["training"]["head_refit"]["l1"] == 0.05
    assert manifest["training"]["head_refit"]["train_size"] == 200
    refit = loaders.load_classifier(weights_dir=weights_copy)
    before, after = shipped.state_dict(), refit.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if not k.startswith("fc."))  # conv layers frozen
    assert not torch.equal(before["fc.linear.weight"], after["fc.linear.weight"])
    assert (after["fc.linear.weight"] != 0).sum() <= 256 * 10 // 4
    assert manifest["metrics"]["heldout_accuracy"] >= 0.9
