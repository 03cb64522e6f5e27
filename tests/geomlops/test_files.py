"""The one atomic-write helper: whole or nothing, for files, folders and links."""

from __future__ import annotations

from pathlib import Path

import pytest

from geomlops.files import PARTIAL, atomic_path, write_atomic


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if PARTIAL in p.name)


def test_a_file_is_replaced_whole_and_keeps_its_suffix(tmp_path: Path) -> None:
    target = tmp_path / "item.json"
    target.write_text("old")
    with atomic_path(target) as tmp:
        assert tmp.parent == tmp_path and tmp.suffix == ".json" and tmp.name.startswith(".item.json")
        tmp.write_text("new")
        assert target.read_text() == "old"  # readers see the old file until the end
    assert target.read_text() == "new"
    assert _leftovers(tmp_path) == []


def test_a_failure_leaves_the_target_as_it_was_and_nothing_beside_it(tmp_path: Path) -> None:
    target = tmp_path / "mask.tif"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="disk full"), atomic_path(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("disk full")
    assert target.read_bytes() == b"old"
    assert _leftovers(tmp_path) == []


def test_writing_nothing_is_an_error_not_an_empty_target(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nothing was written"), atomic_path(tmp_path / "x"):
        pass
    assert list(tmp_path.iterdir()) == []


def test_a_folder_replaces_a_full_folder(tmp_path: Path) -> None:
    target = tmp_path / "objects"
    (target / "a").mkdir(parents=True)
    (target / "a" / "old.txt").write_text("old")
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "new.txt").write_text("new")
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert _leftovers(tmp_path) == []


def test_a_failed_folder_is_removed_with_its_content(tmp_path: Path) -> None:
    with pytest.raises(KeyboardInterrupt), atomic_path(tmp_path / "env") as tmp:
        (tmp / "lib").mkdir(parents=True)
        raise KeyboardInterrupt
    assert list(tmp_path.iterdir()) == []


def test_a_link_is_swapped_atomically(tmp_path: Path) -> None:
    (tmp_path / "v1").mkdir()
    (tmp_path / "v2").mkdir()
    link = tmp_path / "current"
    link.symlink_to(tmp_path / "v1")
    with atomic_path(link) as tmp:
        tmp.symlink_to(tmp_path / "v2", target_is_directory=True)
    assert link.resolve() == tmp_path / "v2"


def test_write_atomic_text_and_bytes(tmp_path: Path) -> None:
    write_atomic(tmp_path / "a.txt", "héllo")
    write_atomic(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "a.txt").read_text() == "héllo"
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"


def test_a_missing_folder_is_reported(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        write_atomic(tmp_path / "no" / "such" / "file.txt", "x")
