"""Results stay bitwise the same while the package is reshaped (issue 20's guard).

``fingerprints.json`` was written on main before the refactor; every case (every algorithm,
aggregator, attack, system effect and compressor, on both engines) must still produce the
same global model and the same round records, bit for bit. See ``fingerprint_cases.py``.
"""

import json

import pytest

from fingerprint_cases import STORE, cases, fingerprint, run_case, subset

STORED = json.loads(STORE.read_text())
CASES = cases()


@pytest.fixture(scope="module")
def small():
    return subset()


def test_every_case_has_a_stored_fingerprint():
    assert sorted(CASES) == sorted(STORED)
    assert len(STORED) >= 70


@pytest.mark.parametrize("name", sorted(CASES))
def test_fingerprint_unchanged(name, small):
    sim = run_case(CASES[name], *small)
    assert fingerprint(sim) == STORED[name], f"{name}: results changed"
