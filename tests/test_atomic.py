"""Outputs appear whole or not at all."""

import os

import pytest

from ftcompare.atomic import atomic_path, write_json


def test_a_failed_write_leaves_nothing_behind(tmp_path):
    target = tmp_path / "out.json"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_a_folder_replaces_the_old_one_whole(tmp_path):
    target = tmp_path / "model"
    target.mkdir()
    (target / "old.bin").write_text("old")
    with atomic_path(target, is_dir=True) as tmp:
        (tmp / "new.bin").write_text("new")
    assert [p.name for p in target.iterdir()] == ["new.bin"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_outputs_get_the_usual_permissions(tmp_path):
    umask = os.umask(0o022)
    try:
        write_json(tmp_path / "m.json", {"a": 1})
    finally:
        os.umask(umask)
    assert (tmp_path / "m.json").stat().st_mode & 0o777 == 0o644


def test_files_a_library_wrote_owner_only_in_a_folder_output_become_readable(tmp_path):
    umask = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "model", is_dir=True) as folder:
            (folder / "sub").mkdir(mode=0o700)
            for name in ("model.safetensors", "sub/config.json"):
                (folder / name).write_bytes(b"x")
                (folder / name).chmod(0o600)  # as safetensors writes its weights
            (folder / "run.sh").write_bytes(b"")
            (folder / "run.sh").chmod(0o700)
    finally:
        os.umask(umask)
    modes = {
        path.relative_to(tmp_path / "model").as_posix(): path.stat().st_mode & 0o777
        for path in (tmp_path / "model").rglob("*")
    }
    assert modes == {"model.safetensors": 0o644, "sub": 0o755, "sub/config.json": 0o644, "run.sh": 0o744}
