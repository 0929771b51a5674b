"""Interventions on the toy world's trained models do what dissection says the units do.

Smaller samples of ``python -m netdissect_widgets.bench interventions`` (which prints
the full figures). Needs the shipped toy weights: skipped locally without them,
failed in CI.
"""
from __future__ import annotations

import pytest

from netdissect_widgets.bench.interventions import (
    DISSECT_Z_SEED,
    EVAL_SEED,
    EVAL_Z_SEED,
    RANK_SEED,
    _stack_z,
    classifier_figures,
    generator_figures,
)
from netdissect_widgets.toyworld.loaders import MANIFEST, WEIGHTS_DIR
from tests.conftest import require


def _weights_ready(*names: str) -> bool:
    return (WEIGHTS_DIR / MANIFEST).is_file() and all((WEIGHTS_DIR / f"{n}.pt").is_file() for n in names)


@pytest.fixture(scope="module")
def toy():
    from netdissect_widgets import toyworld

    return toyworld


def test_removing_a_classs_top_units_hurts_far_more_than_keeping_only_them(toy):
    """The paper's faithfulness test (Fig. 3): per class, rank conv5's units by single-unit
    ablation on some scenes; on other scenes, removing the class's top ~4% of units (10 of
    256; the paper's 20 of 512) lowers its balanced accuracy far more than keeping only them.

    Averaged over all 10 classes. (Paper, VGG16 on Places365: intact 76.6%, removed 53.0%,
    kept-only 73.0%.) It holds for the toy classifier because its head is trained to read
    few units per class (stage 2 of ``toyworld.train``: L1 head refit on frozen features).
    """
    require(_weights_ready("classifier"), "toy classifier weights not shipped yet (toyworld/weights/)")
    clf = toy.load_classifier()
    fig = classifier_figures(clf, "conv5", toy.SceneDataset(300, seed=RANK_SEED),
                             toy.SceneDataset(300, seed=EVAL_SEED), ks=[10, 20], batch_size=100)
    assert fig["num_units"] == 256 and fig["num_classes"] == 10, fig
    intact = fig["mean_intact"]
    assert intact > 0.9, f"the toy classifier should be far above chance (0.5), got {intact:.3f}"
    assert fig["max_single_unit_accuracy_drop"] > 0.05, "some single unit should matter on its own"
    for i, k in enumerate(fig["ks"]):
        removed, kept = fig["mean_removed"][i], fig["mean_kept"][i]
        random_removed = fig["mean_random_removed"][i]
        assert kept - removed >= 0.15, (k, fig)  # removing them hurts far more than keeping only them
        assert removed < intact - 0.2, (k, fig)  # the class loses most of what it had above chance
        assert kept > 0.75 and kept > intact - 0.15, (k, fig)  # kept-only stays well above chance
        assert removed < random_removed - 0.2, (k, fig)  # its own top units, not any k units


def test_generator_tree_units_remove_and_insert_trees(toy):
    require(_weights_ready("generator", "segmenter"), "toy generator/segmenter weights not shipped yet")
    from netdissect_widgets.datasets import ZDataset
    from netdissect_widgets.dissection import dissect

    gen = toy.load_generator()
    seg = toy.load_segmenter()
    # layer2: 256 units at 8x8, the feature size of the paper's ProGAN layer4
    d = dissect(gen, "layer2", ZDataset(300, gen.z_dim, seed=DISSECT_Z_SEED), seg, images="output",
                progress=False, batch_size=50)
    z = _stack_z(48, gen.z_dim, EVAL_Z_SEED)
    fig = generator_figures(gen, "layer2", d, seg, z, ns=(1, 4, 16), insert_units=20)
    removed = [fig["removed"][n] for n in ("1", "4", "16")]
    assert fig["total_before"] > 0.02, "the generator should draw some trees"
    # more tree units zeroed -> more tree pixels gone
    assert removed[0] < removed[1] < removed[2], fig
    assert removed[2] > 0.25, fig
    assert removed[2] > fig["random_removed"]["16"] + 0.15, fig  # tree units, not any units
    # inserting them in a square adds trees mostly inside it
    gain_in = fig["inside_after"] - fig["inside_before"]
    gain_out = fig["outside_after"] - fig["outside_before"]
    assert gain_in > 0.3 and gain_in > 5 * max(gain_out, 0.0), fig
