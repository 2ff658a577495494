"""A node's GPUs as a pool: a job takes k devices that no other job holds, for as long as it lives.

One lock file per device in a folder every job of this user on the node shares; a job holds a device
while it holds an exclusive flock on that device's file. The kernel drops the lock when the process
exits, however it ends (SIGKILL and the OOM killer included), so a dead job frees its devices with
nothing to clean up; the files stay behind and mean nothing on their own.

    pool = DevicePool(["0", "1", "2", "3"], default_lock_dir(os.environ))
    lease = pool.take(1, holder="train lora")   # waits while every device is held
    lease.devices                               # ("2",)
"""

import fcntl
import os
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ftcompare.errors import FtcompareError

LOCK_DIR_VARIABLE = "FTCOMPARE_GPU_LOCK_DIR"
# How often a waiting job says who holds the devices it waits for.
WAIT_REPORT_S = 60.0


def default_lock_dir(environ) -> Path:
    """$FTCOMPARE_GPU_LOCK_DIR, else /tmp/ftcompare-gpus-<uid>: node-wide, so two workflows in different
    folders still share the pool; per user, because another user's lock files could not be opened."""
    if environ.get(LOCK_DIR_VARIABLE):
        return Path(environ[LOCK_DIR_VARIABLE])
    return Path("/tmp") / f"ftcompare-gpus-{os.getuid()}"


def lock_file_name(device: str) -> str:
    """A file name for a device entry; UUIDs and MIG names (with '/') become safe characters."""
    return "gpu-" + re.sub(r"[^A-Za-z0-9._-]", "_", device) + ".lock"


@dataclass
class Lease:
    """Devices a job holds; they stay held until release() or the end of the process."""

    devices: tuple[str, ...]
    _files: list = field(default_factory=list, repr=False)

    def release(self) -> None:
        for handle in self._files:
            handle.close()  # closing the only descriptor drops its flock
        self._files.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.release()
        return False


class DevicePool:
    def __init__(self, devices: Sequence[str], lock_dir: Path):
        devices = tuple(str(d) for d in devices)
        if len(set(devices)) != len(devices):
            raise FtcompareError(f"the GPU pool lists a device twice: {','.join(devices)}")
        self.devices = devices
        self.lock_dir = Path(lock_dir)

    def try_take(self, count: int, holder: str = "") -> Lease | None:
        """The first `count` free devices in pool order, or None (holding nothing) when fewer are free."""
        if count <= 0:
            return Lease(())
        self._make_lock_dir()
        taken, files = [], []
        for device in self.devices:
            handle = self._open(device)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            taken.append(device)
            files.append(handle)
            if len(taken) == count:
                break
        if len(taken) < count:
            # Never hold some while waiting for more: two jobs of 2 GPUs on 3 free devices cannot deadlock.
            Lease((), files).release()
            return None
        for handle in files:
            handle.seek(0)
            handle.truncate()
            handle.write(f"pid {os.getpid()} {holder}".rstrip() + "\n")
            handle.flush()
        return Lease(tuple(taken), files)

    def take(
        self,
        count: int,
        holder: str = "",
        *,
        timeout_s: float | None = None,
        poll_s: float = 1.0,
        on_wait: Callable[[str], None] | None = None,
    ) -> Lease:
        """`count` devices, waiting while too few are free: up to `timeout_s` (None: as long as it takes).

        Asking for more devices than the pool has fails at once: no wait would help.
        """
        if count > len(self.devices):
            raise FtcompareError(
                f"{holder or 'this job'} asks for {count} GPU(s) but the pool has {len(self.devices)} "
                f"({','.join(self.devices) or 'none'})"
            )
        started = time.monotonic()
        reported = None
        while True:
            lease = self.try_take(count, holder)
            if lease is not None:
                return lease
            waited = time.monotonic() - started
            if timeout_s is not None and waited >= timeout_s:
                raise FtcompareError(
                    f"{holder or 'this job'} waited {waited:.0f} s for {count} free GPU(s); {self.describe_holders()}. "
                    "Run with "
                    "`--resources gpu=<number of GPUs>` so that Snakemake never starts more GPU jobs than there "
                    "are GPUs"
                )
            if on_wait is not None and (reported is None or waited - reported >= WAIT_REPORT_S):
                on_wait(f"{holder or 'a job'} waits for {count} free GPU(s): {self.describe_holders()}")
                reported = waited
            time.sleep(poll_s)

    def holders(self) -> dict[str, str | None]:
        """{device: who holds it (its lock file's last text), or None when free}, at this moment."""
        self._make_lock_dir()
        result = {}
        for device in self.devices:
            handle = self._open(device)
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                result[device] = None
            except BlockingIOError:
                handle.seek(0)
                result[device] = handle.read().strip() or "unknown process"
            finally:
                handle.close()
        return result

    def describe_holders(self) -> str:
        held = {device: who for device, who in self.holders().items() if who is not None}
        if not held:
            return f"all of {','.join(self.devices)} were just freed"
        return "held: " + "; ".join(f"GPU {device} by {who}" for device, who in held.items())

    def _open(self, device: str):
        # Read-write without truncating: the text is the holder's, whoever opens the file.
        path = self.lock_dir / lock_file_name(device)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as error:
            raise FtcompareError(
                f"cannot open the GPU lock file {path} ({error.strerror}); set {LOCK_DIR_VARIABLE} to a folder "
                "of your own that every job on this node can reach"
            ) from None
        return os.fdopen(fd, "r+", encoding="utf-8")

    def _make_lock_dir(self) -> None:
        try:
            self.lock_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        except OSError as error:
            raise FtcompareError(
                f"cannot create the GPU lock folder {self.lock_dir} ({error.strerror}); set {LOCK_DIR_VARIABLE} "
                "to a folder of your own that every job on this node can reach"
            ) from None
