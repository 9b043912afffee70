"""McMahan et al. (2017), Table 1, 2NN IID row, as a regression test.

The paper needs 87 rounds to reach 97% test accuracy with E=1, B=10, C=0.1,
K=100 on IID MNIST; we require at most 1.3 x 87 = 113 rounds with the lr chosen
by the grid search in ``bench/mcmahan.py`` (seed 0 reaches it in 34 rounds, so
the margin absorbs float-rounding differences between engines and torch
versions). About 15 s with the sequential engine on an idle 2-core machine.
"""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "bench"))

from mcmahan import CHOSEN_LR, PAPER_ROUNDS, rounds_to_target  # noqa: E402

MAX_ROUNDS = int(1.3 * PAPER_ROUNDS["iid"])  # 113


@pytest.mark.slow
def test_2nn_iid_reaches_97_percent_within_1_3x_the_paper():
    rounds = rounds_to_target("iid", CHOSEN_LR["iid"], max_rounds=MAX_ROUNDS, seed=0)
    assert rounds is not None, f"97% not reached within {MAX_ROUNDS} rounds"
    assert rounds <= MAX_ROUNDS
