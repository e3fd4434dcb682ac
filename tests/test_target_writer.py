"""Writing results over placeholders (executor/target_writer.py).

The writer reuses a replaced placeholder's inode for the next target; these tests
check every guarantee that must survive that: the right bytes, modes and times; a file
that stopped being the placeholder is never overwritten (before or during the
exchange); an inode someone else can still see (another name, an open descriptor,
other attributes) is never written over; an interrupted exchange is settled; a corrupt
blob never becomes a file; and no spare file is left behind.
"""

from __future__ import annotations

import errno
import os
import stat

import pytest

from executor import target_writer as writer_module
from executor.target_writer import TargetWriter
from executor.targets import parse_target
from ir.placeholder import read_placeholder, render, write_placeholder
from ir.store import CorruptBlob

TIMES = (1_000_000_000_000_000_000, 1_000_000_000_123_456_789)


def placeholders(store, directory, count, executable=False):
    """``count`` placeholders in ``directory`` for distinct values: [(path, value ID)]."""
    directory.mkdir(exist_ok=True)
    out = []
    for index in range(count):
        value = store.put_bytes(f"{directory.name} {index}\n".encode() * (index + 1), executable=executable)
        path = directory / f"t{index}.o"
        write_placeholder(path, value)
        os.utime(path, ns=TIMES)
        out.append((path, value))
    return out


def spares(directory) -> list[str]:
    return [name for name in os.listdir(directory) if name.startswith(".tmp-")]


def test_every_target_is_written_with_its_bytes_mode_and_times_and_inodes_are_reused(store, tmp_path):
    made = placeholders(store, tmp_path / "a", 5) + placeholders(store, tmp_path / "b", 3, executable=True)
    targets = [parse_target(str(path)) for path, _ in made]
    with TargetWriter(store) as writer:
        assert all(writer.write(target, value) for target, (_, value) in zip(targets, made, strict=True))
        assert writer.reused == 5 + 3  # one fresh spare per directory, then the placeholders
    umask = os.umask(0)
    os.umask(umask)
    for path, value in made:
        assert path.read_bytes() == store.read_bytes(value)
        st = os.stat(path)
        executable = path.parent.name == "b"
        assert stat.S_IMODE(st.st_mode) == (0o755 if executable else 0o644) & ~umask
        assert st.st_mtime_ns == TIMES[1]
        assert st.st_nlink == 1
    assert spares(tmp_path / "a") == spares(tmp_path / "b") == []


def test_a_value_shorter_or_longer_than_the_reused_placeholder_is_exact(store, tmp_path):
    """The reused inode held a placeholder: a shorter value must not keep its tail."""
    directory = tmp_path / "d"
    directory.mkdir()
    values = [store.put_bytes(b""), store.put_bytes(b"x"), store.put_bytes(os.urandom(3 << 20)), store.put_bytes(b"y")]
    paths = []
    for index, value in enumerate(values):
        paths.append(directory / f"f{index}")
        write_placeholder(paths[-1], value)
    with TargetWriter(store) as writer:
        for path, value in zip(paths, values, strict=True):
            assert writer.write(parse_target(str(path)), value)
    assert [p.read_bytes() for p in paths] == [store.read_bytes(v) for v in values]


def test_a_placeholder_rewritten_in_place_after_parsing_is_left_alone(store, tmp_path):
    """Same inode, same size and mtime, other bytes: only the check after the exchange
    can see it; the user's bytes go back under the target's name."""
    (path, value), (other, other_value) = placeholders(store, tmp_path / "d", 2)
    target = parse_target(str(path))
    digit = value[2]
    forged = render(value[:2] + ("0" if digit != "0" else "1") + value[3:], True)
    assert len(forged) == len(path.read_bytes())
    with open(path, "r+b") as handle:
        handle.write(forged)
    os.utime(path, ns=TIMES)
    with TargetWriter(store) as writer:
        assert writer.write(target, value) is False
        assert writer.write(parse_target(str(other)), other_value)  # the writer goes on normally
    assert path.read_bytes() == forged
    assert other.read_bytes() == store.read_bytes(other_value)
    assert spares(tmp_path / "d") == []


def test_a_placeholder_replaced_after_parsing_is_left_alone(store, tmp_path):
    [(path, value)] = placeholders(store, tmp_path / "d", 1)
    target = parse_target(str(path))
    path.unlink()
    path.write_bytes(b"the real thing\n")
    with TargetWriter(store) as writer:
        assert writer.write(target, value) is False
    assert path.read_bytes() == b"the real thing\n"
    assert spares(tmp_path / "d") == []


def test_a_file_swapped_in_during_the_exchange_is_exchanged_back(store, tmp_path, monkeypatch):
    """The race a plain rename loses: the user's file lands between the check and the
    exchange. It is displaced for a moment, then put back; the value is not written."""
    [(path, value)] = placeholders(store, tmp_path / "d", 1)
    target = parse_target(str(path))
    real = writer_module.load_exchange()

    def racing_exchange(old_dir, old, new_dir, new):
        path.unlink()
        path.write_bytes(b"written by a build step\n")
        real(old_dir, old, new_dir, new)

    monkeypatch.setattr(writer_module, "load_exchange", lambda: racing_exchange)
    with TargetWriter(store) as writer:
        assert writer.write(target, value) is False
    assert path.read_bytes() == b"written by a build step\n"
    assert spares(tmp_path / "d") == []


def test_an_interrupted_exchange_is_settled_by_close(store, tmp_path, monkeypatch):
    (path, value), (moved, moved_value) = placeholders(store, tmp_path / "d", 2)
    real = writer_module.load_exchange()
    user_file = {"now": False}

    def interrupted(old_dir, old, new_dir, new):
        if user_file["now"]:
            moved.unlink()
            moved.write_bytes(b"mine\n")
        real(old_dir, old, new_dir, new)
        raise KeyboardInterrupt

    monkeypatch.setattr(writer_module, "load_exchange", lambda: interrupted)
    writer = TargetWriter(store)
    with pytest.raises(KeyboardInterrupt):
        writer.write(parse_target(str(path)), value)
    writer.close()
    assert path.read_bytes() == store.read_bytes(value)  # exchanged, and checked to be the placeholder

    user_file["now"] = True
    writer = TargetWriter(store)
    with pytest.raises(KeyboardInterrupt):
        writer.write(parse_target(str(moved)), moved_value)
    writer.close()
    assert moved.read_bytes() == b"mine\n"  # the user's file, put back
    assert spares(tmp_path / "d") == []


def test_an_inode_someone_can_still_see_is_never_written_over(store, tmp_path):
    """Another name, an open descriptor, an extended attribute: the placeholder's inode
    is deleted as a rename would, not reused, and what others see stays the placeholder."""
    made = placeholders(store, tmp_path / "d", 4)
    original = [path.read_bytes() for path, _ in made]
    os.link(made[0][0], tmp_path / "d" / "other-name")
    reader = os.open(made[1][0], os.O_RDONLY)
    os.setxattr(made[2][0], "user.note", b"kept")
    try:
        with TargetWriter(store) as writer:
            for path, value in made:
                assert writer.write(parse_target(str(path)), value)
            assert writer.reused == 1  # only the last one's inode was fit for reuse
        assert (tmp_path / "d" / "other-name").read_bytes() == original[0]
        assert os.pread(reader, 4096, 0) == original[1]
    finally:
        os.close(reader)
    for path, value in made:
        assert path.read_bytes() == store.read_bytes(value)
        assert os.listxattr(path) == []
    assert spares(tmp_path / "d") == []


def test_a_corrupt_blob_never_becomes_the_file(store, tmp_path):
    made = placeholders(store, tmp_path / "d", 2)
    blob = store.blob_path(made[1][1])
    blob.chmod(0o644)
    blob.write_bytes(b"rotten\n")
    with TargetWriter(store) as writer:
        assert writer.write(parse_target(str(made[0][0])), made[0][1])
        with pytest.raises(CorruptBlob):
            writer.write(parse_target(str(made[1][0])), made[1][1])
    assert read_placeholder(made[1][0]).ref == made[1][1]
    assert not blob.exists()  # dropped: the next run rebuilds it
    assert spares(tmp_path / "d") == []


def test_without_the_exchange_the_rename_path_gives_the_same_files(store, tmp_path, monkeypatch):
    def unsupported(old_dir, old, new_dir, new):
        raise OSError(errno.EINVAL, "not here", new)

    made = placeholders(store, tmp_path / "d", 3)
    link = tmp_path / "d" / "link.o"
    link.symlink_to(made[2][0].name)
    monkeypatch.setattr(writer_module, "load_exchange", lambda: unsupported)
    with TargetWriter(store) as writer:
        for path, value in made[:2]:
            assert writer.write(parse_target(str(path)), value)
        assert writer.write(parse_target(str(link)), made[2][1])  # a symbolic link: written through
    for path, value in made[:2]:
        assert path.read_bytes() == store.read_bytes(value)
        assert os.stat(path).st_mtime_ns == TIMES[1]
    assert link.is_symlink() and made[2][0].read_bytes() == store.read_bytes(made[2][1])
    assert spares(tmp_path / "d") == []
