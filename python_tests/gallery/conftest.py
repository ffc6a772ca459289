"""Fixtures of the gallery tests: a tiny generator's SVD directions, one named like markup."""

from __future__ import annotations

import pytest

from navcuda.discover import discover

EVIL = '<script>alert("x")</script> & "q"'


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    """Every gallery test runs with one intra-op thread (the top-level ``one_thread``)."""


@pytest.fixture
def evil_name():
    """A direction name that looks like markup."""
    return EVIL


@pytest.fixture
def svd_set(tiny_generator):
    ds = discover(tiny_generator, 3, method="svd", k=4)
    ds.names[3] = EVIL
    return ds


@pytest.fixture
def scores():
    # Direction 3 has no scores: sorted last in either order.
    return {
        0: {"disentanglement": 0.1, "toy: hue": 0.5},
        1: {"disentanglement": 0.9},
        2: {"disentanglement": 0.5, "toy: hue": -0.25},
    }
