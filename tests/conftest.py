"""One skip rule for the whole suite: a test marked ``root`` (pyproject.toml) runs only where
a lab can be built (root, and the Open vSwitch and iproute2 binaries)."""

from __future__ import annotations

import pytest

from ovsvnet.lab import have_root_and_ovs

ROOT_SKIP_REASON = "needs root and the Open vSwitch binaries (ovs-vswitchd, ovsdb-server, ip)"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if have_root_and_ovs():
        return
    skip = pytest.mark.skip(reason=ROOT_SKIP_REASON)
    for item in items:
        if item.get_closest_marker("root") is not None:
            item.add_marker(skip)
