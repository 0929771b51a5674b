"""``python -m netdissect_widgets.bench paint``, the command behind issue #14's figures, on a tiny setting."""
from __future__ import annotations

import json

import pytest

from netdissect_widgets.bench import paint


@pytest.mark.slow
def test_bench_paint_sweeps_by_causal_effect_and_paints_the_context_with_that_ranking(capsys):
    assert paint.main(["--layers", "layer4", "--n-dissect", "40", "--n-z", "4", "--select", "causal",
                       "--causal-steps", "2", "--n-context", "4", "--context-concepts", "foliage", "water",
                       "--n-units", "3", "--skip", "invert", "coverage", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    sweep = out["sweep"]["causal"]
    assert sweep["best_layer"] == "layer4" and sweep["measured"]["layer4"] == len(sweep["rows"]) >= 1
    assert all(len(r["units"]) == 3 for r in sweep["rows"])
    assert set(out["context"]) == {"foliage", "water"}
    for concept, context in out["context"].items():
        assert context["layer"] == "layer4" and context["square"] == 8
        assert f"inserting 3 '{concept}' units at layer4 in 8x8 px squares" in context["table"]
    assert out["weights_dir"] == "shipped"


def test_bench_paint_refuses_a_weights_folder_without_the_models(tmp_path):
    with pytest.raises(FileNotFoundError, match="generator"):
        paint.main(["--weights-dir", str(tmp_path), "--skip", "sweep", "context", "invert", "coverage"])
