"""Write outputs under a temporary name and rename them into place, so no reader sees half a file."""

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

from ftcompare import strict_json


@contextlib.contextmanager
def atomic_path(path, is_dir: bool = False):
    """Yield a temporary sibling of `path`; on success it replaces `path`, on error it is removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if is_dir:
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(name)
    # mkstemp/mkdtemp make owner-only files; outputs get the usual permissions (umask applies).
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod((0o777 if is_dir else 0o666) & ~umask)
    try:
        yield tmp
        if is_dir:
            _widen_to_umask(tmp, umask)
        if is_dir and path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise


def _widen_to_umask(folder: Path, umask: int) -> None:
    """Give what a library wrote owner-only inside `folder` (safetensors' weights, made 0600) the permissions
    the umask allows, so that a group sharing the results can read the models; nothing is narrowed."""
    for root, dirs, files in os.walk(folder):
        for name in dirs:
            entry = Path(root, name)
            entry.chmod(entry.stat().st_mode & 0o7777 | (0o777 & ~umask))
        for name in files:
            entry = Path(root, name)
            if not entry.is_symlink():
                entry.chmod(entry.stat().st_mode & 0o7777 | (0o666 & ~umask))


def write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")


def write_json(path, obj) -> None:
    """Strict JSON (ftcompare.strict_json), indented, written atomically."""
    write_text(path, strict_json.dumps(obj, indent=2) + "\n")
