"""Shared pytest set-up: the real local AWS stand-ins and a fresh store per test."""

import pytest

from ir.store import LocalStore
from tests.forcing import ShellThunks

pytest_plugins = ["tests.aws_fixtures"]


@pytest.fixture
def store(tmp_path):
    """A fresh .gg store (modules that need another kind of store define their own)."""
    return LocalStore.init(tmp_path / ".gg")


@pytest.fixture
def sh(store):
    """Builds /bin/sh thunks in ``store``."""
    return ShellThunks(store)
