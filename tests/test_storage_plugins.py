"""Storage backends added without editing gg: through ``register_storage`` in-process,
and through the ``gg.storage`` entry points of a separately installed distribution;
and the built-in ``file://`` backend serving a real gg-force run on the local Lambda
endpoint (its awslambdaric workers open the storage from the request's URI).
"""

from __future__ import annotations

import asyncio
import os
import stat
from pathlib import Path

import pytest

from executor.local_engine import LocalEngine
from executor.observe import RunObserver
from executor.scheduler import ForceConfig, Scheduler
from executor.trace import TraceWriter
from ir.hashing import hash_stream
from ir.ids import parse_id
from ir.storage import (
    RemoteStorage,
    StorageContext,
    StorageUriError,
    open_storage,
    register_storage,
    unregister_storage,
)
from ir.storage.registry import StorageRegistry
from ir.store import CorruptBlob, LocalStore, MissingBlob
from tests.aws_fixtures import REPO
from tests.forcing import ShellThunks
from tests.test_lambda_force import make_client, of_kind, one_line_error

PLUGIN = Path(__file__).parent / "fixtures" / "storage_plugin"

pytestmark = pytest.mark.timeout(300)


class MemStorage:
    """A toy backend: blobs in a dict of this process (written against the contract only)."""

    def __init__(self, uri: str):
        self._uri = uri
        self.objects: dict[str, tuple[bytes, bool]] = {}
        self.downloads: list[str] = []
        self.reductions: dict[str, str] = {}

    @property
    def uri(self) -> str:
        return self._uri

    async def probe(self) -> None:
        pass

    async def connect(self) -> None:
        pass

    async def has(self, ident: str) -> bool:
        return ident in self.objects

    async def upload(self, store: LocalStore, ident: str, overwrite: bool = False) -> None:
        if not store.has(ident):
            if ident in self.objects:
                return
            raise MissingBlob(ident, f"{store.blobs} (needed for {self.uri})")
        if overwrite or ident not in self.objects:
            data = store.read_bytes(ident, verify=True)
            self.objects[ident] = (data, bool(os.stat(store.blob_path(ident)).st_mode & stat.S_IXUSR))

    async def download(self, store: LocalStore, ident: str) -> None:
        if store.has(ident):
            return
        if ident not in self.objects:
            raise MissingBlob(ident, self.uri)
        data, executable = self.objects[ident]
        import io

        actual = hash_stream(io.BytesIO(data), parse_id(ident).algorithm)
        if actual != ident:
            raise CorruptBlob(ident, actual, self.uri)
        store.put_bytes(data, executable)
        self.downloads.append(ident)

    def forget(self, ident: str) -> None:
        pass

    def forget_all(self) -> None:
        pass

    def remember(self, ident: str, executable: bool = False) -> None:
        pass

    async def put_reduction(self, ref: str, result: str) -> None:
        self.reductions[ref] = result

    async def get_reductions(self, refs) -> dict[str, str]:
        return {ref: self.reductions[ref] for ref in refs if ref in self.reductions}

    async def close(self) -> None:
        pass


@pytest.fixture
def mem_scheme():
    opened: list[MemStorage] = []

    def factory(uri: str, context: StorageContext) -> MemStorage:
        opened.append(MemStorage(uri))
        return opened[-1]

    register_storage("mem", factory)
    yield opened
    unregister_storage("mem")


def test_a_registered_backend_feeds_a_forced_graph(tmp_path, mem_scheme):
    """Client A stores the sources in mem://; client B has only the thunks and forces
    them: every input comes from the toy backend, through the unchanged local engine."""
    a = LocalStore.init(tmp_path / "a" / ".gg")
    b = LocalStore.init(tmp_path / "b" / ".gg")
    sh = ShellThunks(a)
    words = "storage plug-ins\n" * 100
    count = sh.thunk("wc -l < words > out", values={"words": words})
    top = sh.thunk("cat c c > out", thunks={"c": count})
    storage = open_storage("mem://team")
    assert isinstance(storage, MemStorage) and isinstance(storage, RemoteStorage)
    inputs = {i.id for t in (count, top) for i in (*a.load_thunk(t).values, *a.load_thunk(t).executables)}

    async def run() -> dict[str, str]:
        for ident in inputs:
            await storage.upload(a, ident)
        for thunk_id in (count, top):  # the graph itself travels as thunks
            b.put_bytes(a.read_bytes(thunk_id))
        scheduler = Scheduler(b, [LocalEngine(b, 2, remote=storage)], None, ForceConfig(),
                              RunObserver(TraceWriter(None)))
        try:
            return await scheduler.force([top])
        finally:
            scheduler.observer.close()
            await storage.close()

    results = asyncio.run(run())
    assert b.read_bytes(results[top]) == b"100\n100\n"
    assert set(storage.downloads) == inputs  # nothing was local to B
    shell = a.load_thunk(count).function_hash
    assert os.stat(b.blob_path(shell)).st_mode & stat.S_IXUSR


def test_builtin_schemes_cannot_be_replaced_and_unknown_ones_are_one_line():
    registry = StorageRegistry()
    for scheme in ("s3", "file", "S3"):
        with pytest.raises(ValueError):
            registry.register(scheme, lambda uri, context: None)
    registry.register("mine", lambda uri, context: ("opened", uri))
    assert registry.open("mine://x") == ("opened", "mine://x")
    with pytest.raises(ValueError):
        registry.register("mine", lambda uri, context: None)
    with pytest.raises(StorageUriError) as caught:
        registry.open("gs://bucket/x")
    assert "unknown storage scheme 'gs://'" in str(caught.value) and "s3://" in str(caught.value)
    with pytest.raises(StorageUriError):
        registry.open("no-scheme-here")
    assert registry.schemes()[:0] == [] and {"file", "mine", "s3"} <= set(registry.schemes())


def test_an_installed_plugin_is_found_by_its_entry_point(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGIN))
    import importlib

    importlib.invalidate_caches()
    storage = open_storage("toy:///srv/toy")
    assert type(storage).__name__ == "ToyStorage" and storage.uri == "toy:///srv/toy"
    assert isinstance(storage, RemoteStorage)


def _graph(client) -> tuple[str, str, str]:
    """A value too large for the request, a program, and a thunk that makes a value
    only the worker ever holds (``double``): (top, double, big)."""
    sh = ShellThunks(client.store)
    big = os.urandom(300_000)
    size = sh.thunk("wc -c < big > out", values={"big": big})
    double = sh.thunk("cat big big > out", values={"big": big})
    top = sh.thunk("wc -c < d > out; cat s >> out", thunks={"d": double, "s": size})
    return top, double, client.store.put_bytes(big)


def _force_on_lambda(client, top: str, tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    forced = client.force("--print", top, trace=trace)
    assert forced.returncode == 0, forced.stderr
    assert client.value(forced, top).split() == [b"600000", b"300000"]
    assert {e["engine"] for e in of_kind(trace, "started")} == {"lambda"}
    assert not of_kind(trace, "fallback")


def test_file_storage_serves_gg_force_on_lambda(tmp_path, lambda_endpoint):
    shared = tmp_path / "team-cache"
    shared.mkdir()
    client = make_client(tmp_path / "client", f"file://{shared}", lambda_endpoint.url, GG_LAMBDA_INLINE_MAX="0")
    top, double, big = _graph(client)
    _force_on_lambda(client, top, tmp_path)
    stored = {p.name for p in shared.iterdir()}
    assert big in stored  # uploaded by gg-force
    # Made and uploaded by the worker only: gg-force never held it.
    double_value = client.store.get_reduction(double)
    assert double_value in stored and not client.store.has(double_value)
    assert not [p for p in shared.iterdir() if p.name.startswith(".tmp-")]


def test_wrong_file_storage_is_one_line_before_anything_runs(tmp_path, lambda_endpoint):
    client = make_client(tmp_path / "client", f"file://{tmp_path}/nowhere", lambda_endpoint.url)
    sh = ShellThunks(client.store)
    trace = tmp_path / "trace.jsonl"
    forced = client.force(sh.thunk("echo hi > out"), trace=trace)
    assert forced.returncode == 1
    line = one_line_error(forced.stderr)
    assert "does not exist" in line and f"GG_STORAGE_URI=file://{tmp_path}/nowhere" in line, line
    assert not of_kind(trace, "started")


def test_plugin_storage_serves_gg_force_on_lambda(tmp_path, lambda_endpoint_factory):
    """toy:// comes from a separate distribution on the path of gg-force and of the
    workers: no line of gg names it, and both sides go through it."""
    path = f"{PLUGIN}:{REPO}"
    endpoint = lambda_endpoint_factory(extra=["--env", f"PYTHONPATH={path}"])  # the function's own setting
    root = tmp_path / "toy"
    root.mkdir()
    client = make_client(tmp_path / "client", f"toy://{root}", endpoint.url, GG_LAMBDA_INLINE_MAX="0",
                         PYTHONPATH=path)
    top, double, big = _graph(client)
    _force_on_lambda(client, top, tmp_path)
    log = [line.split() for line in (root / "log").read_text().splitlines()]
    uploads = {entry[1]: entry[2] for entry in log if entry[0] == "upload"}
    double_value = client.store.get_reduction(double)
    assert big in uploads and double_value in uploads
    assert uploads[big] != uploads[double_value]  # gg-force's process, then a worker's
