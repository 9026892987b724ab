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
