"""The command line: ``python -m netdissect_widgets {dissect,bench,lab}``."""
from __future__ import annotations

import json
import sys

import pytest

from netdissect_widgets.__main__ import main
from tests.conftest import require


def _toy_weights(*names: str) -> bool:
    from netdissect_widgets.toyworld import loaders

    return all((loaders.WEIGHTS_DIR / f"{n}.pt").is_file() for n in names)


def test_help_lists_the_commands(capsys):
    assert main([]) == 2
    out = capsys.readouterr().out
    assert "dissect" in out and "bench" in out and "lab" in out


def test_lab_execs_jupyterlab_in_examples(monkeypatch):
    calls = []
    monkeypatch.setattr("os.execv", lambda path, args: calls.append((path, args)))
    main(["lab", "--no-browser"])
    (path, args), = calls
    assert path == sys.executable and args[1:3] == ["-m", "jupyterlab"]
    assert args[3].startswith("--ServerApp.root_dir=") and args[3].endswith("examples")
    assert args[-1] == "--no-browser"


def test_bench_forwards_to_the_benchmarks(capsys):
    assert main(["bench", "--help"]) == 0
    assert "dissect" in capsys.readouterr().out
    assert main(["bench", "no-such-bench"]) == 2


def test_truth_segmenter_is_refused_for_the_gan(tmp_path, capsys):
    rc = main(["dissect", "--model", "toy-gan", "--segmenter", "truth", "--out", str(tmp_path)])
    assert rc == 2 and "generated images" in capsys.readouterr().err


def test_missing_weights_say_how_to_regenerate(tmp_path, capsys, monkeypatch):
    from netdissect_widgets import toyworld

    def missing(device="cpu"):
        raise FileNotFoundError("toy-world classifier weights not found: x.pt. Regenerate it with ...")

    monkeypatch.setattr(toyworld, "load_classifier", missing, raising=False)
    rc = main(["dissect", "--model", "toy-classifier", "--out", str(tmp_path / "r"), "--n-images", "4"])
    assert rc == 2 and "Regenerate" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_dissect_tiny_run_writes_report_and_dissection(tmp_path, capsys):
    require(_toy_weights("classifier"), "toy classifier weights not trained yet")
    from netdissect_widgets.dissection import Dissection

    out = tmp_path / "r"
    rc = main(["dissect", "--model", "toy-classifier", "--layer", "conv5", "--out", str(out),
               "--n-images", "24", "--batch-size", "12", "--no-progress", "--cache-dir", str(tmp_path / "c")])
    assert rc == 0
    text = capsys.readouterr().out
    assert "0-based" in text and "level 0.99 = top 1% of pixels" in text and "units matched" in text
    assert (out / "index.html").is_file() and (out / "units" / "unit_0000.png").is_file()
    d = Dissection.load(out / "dissection")
    assert d.layer == "conv5" and d.kind == "classifier" and d.config["n_items"] == 24


def test_dissect_at_a_lower_segmentation_resolution(tmp_path, capsys):
    require(_toy_weights("classifier"), "toy classifier weights not trained yet")
    from netdissect_widgets.dissection import Dissection

    rc = main(["dissect", "--model", "toy-classifier", "--out", str(tmp_path), "--n-images", "8",
               "--seg-size", "16", "--no-progress"])
    assert rc == 0
    d = Dissection.load(tmp_path / "dissection")
    assert d.config["seg_size"] == [16, 16] and d.unit_pixels.sum() > 0
    rc = main(["dissect", "--model", "toy-classifier", "--out", str(tmp_path), "--n-images", "8",
               "--seg-size", "0", "--no-progress"])
    assert rc == 2 and "seg_size must be positive" in capsys.readouterr().err


def test_dissect_unknown_layer_is_a_clear_error(tmp_path, capsys):
    require(_toy_weights("classifier"), "toy classifier weights not trained yet")
    rc = main(["dissect", "--model", "toy-classifier", "--layer", "conv6", "--out", str(tmp_path),
               "--n-images", "4", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and "conv6" in err and "conv5" in err


def test_gan_tiny_run(tmp_path, capsys):
    require(_toy_weights("generator", "segmenter"), "toy generator/segmenter weights not trained yet")
    rc = main(["dissect", "--model", "toy-gan", "--out", str(tmp_path), "--n-images", "16",
               "--batch-size", "8", "--no-progress"])
    assert rc == 0 and "generator" in capsys.readouterr().out


def test_bench_dissect_json_smoke(capsys):
    require(_toy_weights("classifier"), "toy classifier weights not trained yet")
    rc = main(["bench", "dissect", "--json", "--models", "toy-classifier", "--n-images", "16",
               "--batch-size", "8", "--repeats", "1"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    (r,) = report["results"]
    assert r["model"] == "toy-classifier" and r["layer"] == "conv5"
    assert r["ratio"] == pytest.approx(r["dissect_s"] / r["forward_s"], rel=1e-2)
