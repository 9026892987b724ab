"""--scale and friends take simple number expressions, evaluated safely (no eval)."""

import pytest

from edgekit.core.data import parse_number, parse_preprocessing
from edgekit.core.errors import InputError
from edgekit.core.numexpr import eval_number


@pytest.mark.parametrize(("text", "value"), [("1/127.5", 1 / 127.5), ("2/255", 2 / 255), ("0.5", 0.5), ("1e-3", 1e-3),
                                             ("-1", -1.0), ("1/255*2", 2 / 255)])
def test_simple_expressions(text, value):
    assert eval_number(text) == pytest.approx(value)
    assert parse_number(text) == pytest.approx(value)


@pytest.mark.parametrize("text", ["__import__('os')", "1/0", "abc", "2**9999", "", "[1]", "True"])
def test_rejected_expressions_are_input_errors(text):
    with pytest.raises(InputError):
        parse_number(text)


def test_preprocessing_scale_expression():
    assert parse_preprocessing("1/127.5", "127.5", None).scale == pytest.approx(1 / 127.5)
