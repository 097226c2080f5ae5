"""A refactor moves no figure: a dozen configurations' JSON equal the values recorded before it."""
import json

import pytest

from tests.golden import CONFIGS, GOLDEN, run

RECORDED = json.loads(GOLDEN.read_text())


@pytest.mark.parametrize("argv", CONFIGS, ids=lambda argv: " ".join(argv[1:4]))
def test_prediction_is_bit_identical_to_the_recorded_one(argv):
    assert run(argv) == RECORDED[" ".join(argv)]
