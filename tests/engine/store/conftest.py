"""Fixtures for the store tests: an empty store, a local server, a registry of test artifacts."""

from __future__ import annotations

import pytest

from fakeserver import FakeServer


@pytest.fixture
def store(tmp_path, monkeypatch):
    """An empty GENCBM_HOME, online, without mirror or extra registry."""
    home = tmp_path / "store"
    monkeypatch.setenv("GENCBM_HOME", str(home))
    for var in ("GENCBM_OFFLINE", "GENCBM_MIRROR", "GENCBM_REGISTRY", "GENCBM_GDRIVE_ENDPOINT", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(var, raising=False)
    return home


@pytest.fixture
def server():
    with FakeServer() as srv:
        yield srv
