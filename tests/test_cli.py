"""The command line: ``python -m netdissect_widgets {dissect,bench,lab}``."""
from __future__ import annotations

import json
import subprocess
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
    monkeypatch.setattr("netdissect_widgets._lab.running_as_root", lambda: False)
    main(["lab", "--no-browser"])
    (path, args), = calls
    assert path == sys.executable and args[1:3] == ["-m", "jupyterlab"]
    assert args[3].startswith("--ServerApp.root_dir=") and args[3].endswith("examples")
    assert "--ContentsManager.pre_save_hook=netdissect_widgets._lab.strip_outputs" in args
    assert args[-1] == "--no-browser" and "--allow-root" not in args


def test_lab_as_root_allows_root(monkeypatch):
    calls = []
    monkeypatch.setattr("os.execv", lambda path, args: calls.append(args))
    monkeypatch.setattr("netdissect_widgets._lab.running_as_root", lambda: True)
    main(["lab", "--no-browser"])
    main(["lab", "--allow-root"])
    assert calls[0].count("--allow-root") == 1 and calls[1].count("--allow-root") == 1


def test_the_save_hook_is_importable_by_jupyter():
    from traitlets.utils.importstring import import_item

    from netdissect_widgets._lab import HOOK, strip_outputs

    assert import_item(HOOK) is strip_outputs
    model = {"type": "notebook", "content": {"cells": [
        {"cell_type": "code", "source": "1", "outputs": [{"output_type": "stream"}], "execution_count": 3,
         "metadata": {"execution": {}}}], "metadata": {"widgets": {}, "language_info": {"name": "python",
                                                                                     "version": "3.12"}}}}
    strip_outputs(model, path="x.ipynb", contents_manager=None)
    cell = model["content"]["cells"][0]
    assert cell["outputs"] == [] and cell["execution_count"] is None and cell["metadata"] == {}
    assert model["content"]["metadata"] == {"language_info": {"name": "python"}}
    text = {"type": "file", "content": "keep"}
    strip_outputs(text)
    assert text["content"] == "keep"


def test_help_imports_no_torch_and_shows_no_markup():
    code = ("import sys, contextlib, io\nfrom netdissect_widgets.__main__ import main\n"
            "buf = io.StringIO()\n"
            "for argv in ([], ['dissect', '--help'], ['bench', '--help']):\n"
            "    with contextlib.redirect_stdout(buf):\n"
            "        try: main(argv)\n"
            "        except SystemExit: pass\n"
            "print('TORCH', 'torch' in sys.modules)\nprint(buf.getvalue())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "TORCH False" in out
    assert "``" not in out and "```" not in out
    assert "--device" in out and "--allow-root" in out


def test_every_dissect_option_has_help():
    from netdissect_widgets.__main__ import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    dissect = sub.choices["dissect"]
    for action in dissect._actions:
        assert action.help and action.help.strip(), f"{action.option_strings} has no help"


def test_bench_help_lists_each_benchmark_with_a_line(capsys):
    from netdissect_widgets.bench.__main__ import available

    assert main(["bench", "--help"]) == 0
    out = capsys.readouterr().out
    for name in available():
        line = next(ln for ln in out.splitlines() if ln.strip().startswith(name + " "))
        assert len(line.split(name, 1)[1].strip()) > 10, line


@pytest.fixture
def no_dissection(monkeypatch):
    """Fail the test if the work (loading the models, then the dissection) starts."""
    from netdissect_widgets.toyworld import setups

    def boom(*a, **k):
        raise AssertionError("the work started before the options were checked")

    monkeypatch.setattr(setups, "toy_setup", boom)


@pytest.mark.parametrize("option", ["--out", "--cache-dir", "--figures"])
def test_bad_paths_fail_before_any_work_with_one_line(option, tmp_path, capsys, no_dissection):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    argv = ["dissect", "--out", str(tmp_path / "out"), "--n-images", "4", "--no-progress"]
    argv += [option, str(blocker / "sub")] if option != "--out" else []
    if option == "--out":
        argv[2] = str(blocker / "sub")
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and option in err and "is a file" in err and "Traceback" not in err
    assert main(["dissect", "--out", str(tmp_path / "o2"), option, str(blocker)] if option != "--out"
                else ["dissect", "--out", str(blocker)]) == 2
    assert "not a folder" in capsys.readouterr().err


def test_unavailable_device_is_one_line(tmp_path, capsys, no_dissection):
    import torch

    require(not torch.cuda.is_available(), "this check needs a machine without a CUDA GPU")
    assert main(["dissect", "--out", str(tmp_path), "--device", "cuda"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no CUDA GPU" in err and "--device cpu" in err
    assert main(["dissect", "--out", str(tmp_path), "--device", "banana"]) == 2
    assert "not a torch device" in capsys.readouterr().err


def test_numbers_are_checked_first(tmp_path, capsys, no_dissection):
    for argv, text in [(["--level", "1.5"], "--level must be between 0 and 1"),
                       (["--batch-size", "0"], "--batch-size must be at least 1"),
                       (["--seg-size", "0"], "--seg-size must be positive"),
                       (["--n-images", "0"], "--n-images must be at least 1")]:
        assert main(["dissect", "--out", str(tmp_path)] + argv) == 2
        assert text in capsys.readouterr().err


def test_light_model_list_matches_the_toy_setups():
    from netdissect_widgets.__main__ import DEFAULT_LAYERS, MODELS, SEGMENTERS
    from netdissect_widgets.toyworld import setups

    assert {m: DEFAULT_LAYERS[m] for m in setups.MODELS} == setups.MODELS and set(setups.MODELS) <= set(MODELS)
    assert tuple(SEGMENTERS) == tuple(setups.SEGMENTERS)


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
    page = (out / "index.html").read_text()
    assert "<h1>Dissection of toy-classifier conv5</h1>" in page and "layer layer" not in page
    assert "runner-up" in page and 'class="sortable"' in page
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


def test_dissect_several_layers_in_one_pass(tmp_path, capsys):
    require(_toy_weights("classifier"), "the toy classifier's weights")
    from netdissect_widgets.dissection import Dissection

    rc = main(["dissect", "--model", "toy-classifier", "--layer", "conv4,conv5", "--out", str(tmp_path),
               "--n-images", "8", "--batch-size", "4", "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    for layer, units in (("conv4", 256), ("conv5", 256)):
        d = Dissection.load(tmp_path / layer / "dissection")
        assert d.layer == layer and d.num_units == units
        assert (tmp_path / layer / "index.html").is_file()
    assert (tmp_path / "toy-classifier-categories-by-layer.png").stat().st_size > 1000
    assert "conv4, conv5: 8 items" in out


def test_dissect_layer_all_names_every_conv_block(tmp_path, capsys, monkeypatch):
    require(_toy_weights("classifier"), "the toy classifier's weights")
    import netdissect_widgets.dissection as dissection

    seen = []
    monkeypatch.setattr(dissection, "dissect_layers", lambda model, layers, *a, **k: seen.append(layers) or {})
    rc = main(["dissect", "--model", "toy-classifier", "--layer", "all", "--out", str(tmp_path),
               "--n-images", "4", "--no-progress"])
    assert rc == 0 and seen == [["conv1", "conv2", "conv3", "conv4", "conv5"]]


@pytest.mark.parametrize("layer, message", [("conv4,,conv5", "empty name"), ("conv5,conv5", "named twice"),
                                            ("conv5,conv9", "conv9")])
def test_dissect_bad_layer_lists_fail_in_one_line(tmp_path, capsys, layer, message):
    require(_toy_weights("classifier"), "the toy classifier's weights")
    rc = main(["dissect", "--model", "toy-classifier", "--layer", layer, "--out", str(tmp_path),
               "--n-images", "4", "--no-progress"])
    err = capsys.readouterr().err
    assert rc == 2 and message in err and "Traceback" not in err
