"""Shared pytest set-up: the real local AWS stand-ins and a fresh store per test."""

import os

import pytest

from ir.store import LocalStore
from tests.forcing import ShellThunks

pytest_plugins = ["tests.aws_fixtures"]

# gg-infer's warm model server outlives a run by GG_INFER_SERVER_IDLE (default 10 min);
# a test's store is thrown away, so its server need not wait that long
os.environ.setdefault("GG_INFER_SERVER_IDLE", "15")

CORPUS_REPORT = pytest.StashKey[list[str]]()


@pytest.fixture
def corpus_report(request) -> list[str]:
    """Lines for the session summary (tests/test_corpus.py: thunk shares and timings)."""
    return request.config.stash.setdefault(CORPUS_REPORT, [])


def pytest_terminal_summary(terminalreporter, config) -> None:
    lines = config.stash.get(CORPUS_REPORT, [])
    if lines:
        terminalreporter.section("gg-infer on the corpus")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture
def store(tmp_path):
    """A fresh .gg store (modules that need another kind of store define their own)."""
    return LocalStore.init(tmp_path / ".gg")


@pytest.fixture
def file_storage_uri(tmp_path) -> str:
    """A GG_STORAGE_URI for a fresh shared directory: remote storage without S3, for
    tests of remote execution that are not about S3 (the local Lambda endpoint's
    workers see the same directory)."""
    shared = tmp_path / "shared-storage"
    shared.mkdir()
    return f"file://{shared}"


@pytest.fixture
def sh(store):
    """Builds /bin/sh thunks in ``store``."""
    return ShellThunks(store)
