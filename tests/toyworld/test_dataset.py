"""SceneDataset and GroundTruthSegmenter: items, determinism, workers, balance, bad input."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from netdissect_widgets import toyworld
from netdissect_widgets.toyworld import CLASSES, CONCEPTS, GroundTruthSegmenter, SceneDataset


def test_item_types_shapes_and_range():
    ds = SceneDataset(12, seed=3, size=64)
    assert len(ds) == 12
    image, label, seg = ds[5]
    assert image.shape == (3, 64, 64) and image.dtype == torch.float32
    assert -1.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert float(image.max()) - float(image.min()) > 0.5  # a real picture, not a constant
    assert isinstance(label, int) and label == 5 % len(CLASSES)
    assert seg.shape == (4, 64, 64) and seg.dtype == torch.int64
    raw, raw_label, raw_seg = ds.render(5)  # the tensors are the rendered scene, rescaled
    np.testing.assert_allclose(image.permute(1, 2, 0).numpy(), raw / 127.5 - 1.0, atol=1e-6)
    assert raw_label == label and np.array_equal(raw_seg, seg.numpy())
    assert SceneDataset(2, size=128)[1][0].shape == (3, 128, 128)


def test_deterministic_per_seed_and_index():
    a, b = SceneDataset(20, seed=1), SceneDataset(20, seed=1)
    for i in (0, 7, 19):
        assert torch.equal(a[i][0], b[i][0]) and torch.equal(a[i][2], b[i][2])
    assert not torch.equal(a[0][0], a[10][0])               # same class, other index
    assert not torch.equal(a[3][0], SceneDataset(20, seed=2)[3][0])  # other seed
    assert torch.equal(SceneDataset(5, seed=1)[3][0], a[3][0])     # n does not change items


def test_negative_indices_and_out_of_range():
    ds = SceneDataset(6)
    assert torch.equal(ds[-1][0], ds[5][0]) and ds[-6][1] == ds[0][1]
    for bad in (6, -7, 100):
        with pytest.raises(IndexError, match="out of range"):
            ds[bad]
    with pytest.raises(TypeError, match="must be ints"):
        ds[1.0]
    assert len(list(iter(ds))) == 6  # the sequence protocol stops at IndexError


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(n=0), ValueError, "positive"),
    (dict(n=-3), ValueError, "positive"),
    (dict(n=2.5), TypeError, "ints"),
    (dict(n=4, seed=-1), ValueError, "non-negative"),
    (dict(n=4, size=48), ValueError, "multiple of 32"),
    (dict(n=4, size=1024), ValueError, "between 32 and 256"),
])
def test_bad_arguments(kwargs, error, match):
    with pytest.raises(error, match=match):
        SceneDataset(**kwargs)


def test_classes_exactly_balanced():
    ds = SceneDataset(len(CLASSES) * 7 + 3)
    counts = np.bincount(ds.labels(), minlength=len(CLASSES))
    assert counts.max() - counts.min() <= 1 and counts.sum() == len(ds)
    assert [ds[i][1] for i in range(len(ds))] == ds.labels().tolist()


def test_dataloader_workers_give_the_same_items():
    ds = SceneDataset(8, seed=4)
    direct = torch.stack([ds[i][0] for i in range(8)])
    loaded = torch.cat([x for x, _, _ in DataLoader(ds, batch_size=4, num_workers=2)])
    assert torch.equal(direct, loaded)


def test_ground_truth_segmenter():
    seg_model = GroundTruthSegmenter()
    assert seg_model.concepts == CONCEPTS.names and seg_model.categories == CONCEPTS.categories
    batch = next(iter(DataLoader(SceneDataset(4), batch_size=4)))
    assert seg_model.segment_batch(batch) is batch[2]
    assert seg_model.segment_batch(batch).shape == (4, 4, 64, 64)
    # labels read from the data, not a segmenter of images (it has no segment(images) to raise from)
    from netdissect_widgets.segment import DataLabels, Segmenter, check_segmenter, reads_labels_from_data

    assert isinstance(seg_model, DataLabels) and not isinstance(seg_model, Segmenter)
    assert reads_labels_from_data(seg_model)
    check_segmenter(seg_model, seg_model.segment_batch(batch), batch[0])
    images, labels, seg = batch
    with pytest.raises(ValueError, match="int64"):
        seg_model.segment_batch((images, labels, seg.to(torch.int32)))
    with pytest.raises(ValueError, match="int64"):
        seg_model.segment_batch((images, labels, seg[:, :2]))
    with pytest.raises(ValueError, match="outside"):
        seg_model.segment_batch((images, labels, seg + len(CONCEPTS)))
    with pytest.raises(ValueError, match="do not match"):
        seg_model.segment_batch((images[:2], labels, seg))
    with pytest.raises(TypeError, match="SceneDataset batch"):
        seg_model.segment_batch(images)
    with pytest.raises(TypeError, match="seg tensor"):
        seg_model.segment_batch((images, labels, seg.numpy()))


def test_import_is_light_and_lazy_names_resolve():
    code = ("import sys, netdissect_widgets.toyworld as t; "
            "print('torch' in sys.modules, sorted(n for n in ('load_classifier', 'SceneDataset') if n in vars(t)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "[]"]
    assert toyworld.SceneDataset is SceneDataset
    for name in ("CONCEPTS", "CLASSES", "render_scene", "SceneDataset", "GroundTruthSegmenter",
                 "load_classifier", "load_generator", "load_segmenter"):
        assert name in toyworld.__all__
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        toyworld.nope
