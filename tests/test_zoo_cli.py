"""The command line with real models: face-gan, efficientnet-lite0 and torchvision:ARCH with a local file."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest
import torch

from netdissect_widgets.__main__ import main
from tests.conftest import require


def _need_real() -> None:
    for module in ("gan_face_generate", "mediapipe"):
        require(importlib.util.find_spec(module) is not None,
                f"{module} is not installed (the [real] extra: bash scripts/setup.sh)")


def test_face_gan_cli_dissects_with_the_face_segmenter(tmp_path, capsys):
    _need_real()
    out = tmp_path / "face"
    assert main(["dissect", "--model", "face-gan", "--n-images", "30", "--batch-size", "15", "--no-progress",
                 "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "face-gan layer3: 30 items" in text
    assert (out / "index.html").is_file() and (out / "dissection").is_dir()
    from netdissect_widgets import Dissection

    d = Dissection.load(out / "dissection")
    assert d.num_units == 128 and d.kind == "generator" and "lips" in d.concepts and "red" in d.concepts


def test_torchvision_model_from_a_local_file_on_a_folder(tmp_path, capsys):
    tv = pytest.importorskip("torchvision")
    from PIL import Image

    weights = tmp_path / "resnet18.pth"
    torch.save(tv.models.resnet18(weights=None, num_classes=5).state_dict(), weights)
    folder = tmp_path / "pictures"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (80, 100, 3), dtype=np.uint8)).save(folder / f"p{i}.png")
    out = tmp_path / "out"
    args = ["dissect", "--model", "torchvision:resnet18", "--weights", str(weights), "--images", str(folder),
            "--n-images", "6", "--no-progress", "--out", str(out)]
    # a head of 5 classes: the loader says which keys do not fit and how to fix it
    assert main(args) == 2
    assert "num_classes" in capsys.readouterr().err
    torch.save(tv.models.resnet18(weights=None).state_dict(), weights)
    from netdissect_widgets._io import sha256_file

    assert main(args + ["--sha256", "0" * 64]) == 2
    assert "SHA-256 mismatch" in capsys.readouterr().err
    assert main(args + ["--sha256", sha256_file(weights)]) == 0
    assert "torchvision:resnet18 layer4: 6 items" in capsys.readouterr().out


@pytest.mark.parametrize("extra, message", [
    ([], "needs --weights FILE"),
    (["--weights", "/no/such.pth", "--images", "."], "no such file"),
])
def test_torchvision_model_options_checked_up_front(tmp_path, capsys, extra, message):
    assert main(["dissect", "--model", "torchvision:resnet18", "--out", str(tmp_path / "o"), *extra]) == 2
    assert message in capsys.readouterr().err


def test_segmenters_fit_their_models(tmp_path, capsys):
    assert main(["dissect", "--model", "toy-gan", "--segmenter", "face", "--out", str(tmp_path / "o")]) == 2
    assert "for real models" in capsys.readouterr().err
    assert main(["dissect", "--model", "face-gan", "--segmenter", "truth", "--out", str(tmp_path / "o")]) == 2
    assert "for the toy models" in capsys.readouterr().err
    assert main(["dissect", "--model", "face-gan", "--weights", "x.pth", "--out", str(tmp_path / "o")]) == 2
    assert "torchvision:ARCH only" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["dissect", "--model", "face-gun", "--out", str(tmp_path / "o")])
    assert "face-gan" in capsys.readouterr().err  # the list of models names it


def test_light_model_list_matches_the_real_setups():
    from netdissect_widgets.__main__ import DEFAULT_LAYERS, MODEL_PREFIXES, REAL_SEGMENTERS
    from netdissect_widgets.zoo import setups

    assert {m: DEFAULT_LAYERS[m] for m in setups.REAL_MODELS} == setups.REAL_MODELS
    assert tuple(REAL_SEGMENTERS) == tuple(setups.REAL_SEGMENTERS)
    assert setups.TORCHVISION_PREFIX in MODEL_PREFIXES
