"""Image folders: crop-to-aspect (default), stretch or pad, then a bilinear resize."""

from __future__ import annotations

import numpy as np
import pytest


def _wide_image():
    from PIL import Image

    # 40x20 (w x h): left quarter black, middle half white, right quarter black
    arr = np.zeros((20, 40), np.uint8)
    arr[:, 10:30] = 255
    return Image.fromarray(arr, "L")


def test_crop_keeps_the_centre():
    from edgekit.core.data import fit_image

    out = np.asarray(fit_image(_wide_image(), 10, 10, "crop"))
    assert out.shape == (10, 10) and out[:, 1:-1].min() == 255 and out.min() > 200  # the centre 20x20 (white)


def test_stretch_keeps_everything_distorted():
    from edgekit.core.data import fit_image

    out = np.asarray(fit_image(_wide_image(), 10, 10, "stretch"))
    assert out.shape == (10, 10) and out[:, 0].max() < 64 and out[:, 5].min() == 255


def test_pad_adds_black_bars():
    from edgekit.core.data import fit_image

    out = np.asarray(fit_image(_wide_image(), 10, 10, "pad"))
    assert out.shape == (10, 10)
    assert out[:2].max() == 0 and out[-2:].max() == 0  # bars above and below
    assert out[5, 5] == 255


def test_unknown_method_is_an_input_error():
    from edgekit.core.data import fit_image
    from edgekit.core.errors import InputError

    with pytest.raises(InputError, match="crop, stretch, pad"):
        fit_image(_wide_image(), 10, 10, "squash")


def test_resize_option_is_recorded_and_reapplied(tiny, runner, cli, tmp_path):
    """--resize pad on an image folder: the manifest records it, validate fits the images the same way."""
    import json

    from PIL import Image

    for cls, value in (("a", 40), ("b", 220)):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        for i in range(3):
            Image.fromarray(np.full((16, 32), value + i, np.uint8)).save(tmp_path / "imgs" / cls / f"{i}.png")
    art = tmp_path / "m.tflite"
    result = runner.invoke(cli, ["quantize", str(tiny["model"]), "--mode", "int8", "--data", str(tmp_path / "imgs"), "--scale", "1/255",
                                 "--resize", "pad", "-o", str(art)])
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "m.json").read_text())
    assert manifest["preprocessing"]["resize"] == "pad"
    rep = tmp_path / "r.json"
    done = runner.invoke(cli, ["validate", str(art), "--data", str(tmp_path / "imgs"), "--runs", "2", "--report", str(rep)])
    assert done.exit_code == 0, done.output
    assert json.loads(rep.read_text())["preprocessing"]["resize"] == "pad"
    default = runner.invoke(cli, ["quantize", str(tiny["model"]), "--mode", "int8", "--data", str(tmp_path / "imgs"), "-o",
                                  str(tmp_path / "d.tflite")])
    assert default.exit_code == 0 and json.loads((tmp_path / "d.json").read_text())["preprocessing"]["resize"] == "crop"
