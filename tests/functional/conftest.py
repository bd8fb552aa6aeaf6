"""Fixtures for functional tests: labs of simulated hosts that are always torn down."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from ovsvnet.lab import Lab


@pytest.fixture
def lab_factory() -> Iterator[Callable[..., Lab]]:
    """Make labs with ``lab_factory(**Lab kwargs)``; every one is torn down after the test,
    also when it fails. Tests using it are marked ``root`` (tests/conftest.py skips them
    without root or Open vSwitch)."""
    labs: list[Lab] = []

    def make(**kwargs: Any) -> Lab:
        lab = Lab(**kwargs)
        labs.append(lab)
        return lab

    yield make
    errors = []
    for lab in reversed(labs):
        try:
            lab.down()
        except Exception as err:  # tear down the others first, then report
            errors.append(err)
    if errors:
        raise errors[0]


@pytest.fixture
def lab(lab_factory: Callable[..., Lab]) -> Lab:
    """An empty lab (no segment, host or guest yet)."""
    return lab_factory()
