"""What every entry script in scripts/ does around its work: log to the rule's log, fail clearly, and keep
Python's garbage collector off the objects the libraries make as they are imported.

Every entry script imports this module first. Importing torch, transformers and PEFT makes about 900,000
objects that live as long as the job; the collector walks them again and again as they pile up, and once
more as the interpreter ends: about 1 s of a job's start and 1.3 s of its exit on a CPU (bench/job_collector.py).
So the collector is off from this import until run_script starts the job, which freezes what the imports
made (frozen objects are never walked) and switches it back on; it freezes again as the job ends.
"""

import gc
import logging
import os
import sys
import traceback

from ftcompare.errors import FtcompareError

log = logging.getLogger("ftcompare")

gc.disable()


def redirect_output_to_log(log_path) -> int:
    """Send this process's stdout and stderr (Python and native code alike) to `log_path`.

    Returns a duplicate of the original stderr, where the one-line failure message goes.
    """
    console_fd = os.dup(2)
    log_fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    sys.stdout = os.fdopen(1, "w", buffering=1, closefd=False)
    sys.stderr = os.fdopen(2, "w", buffering=1, closefd=False)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
        force=True,
    )
    return console_fd


def take_job_devices(smk):
    """The job's GPUs (ftcompare.job_devices), as many as the rule's `gpu` resource: an entry script calls
    this before its other imports, since those may initialise CUDA. A refusal ends the job as run_script's do."""
    from ftcompare.job_devices import assign_job_devices

    rule = getattr(smk, "rule", "job")
    holder = " ".join([rule, *map(str, getattr(smk, "wildcards", []))])
    try:
        return assign_job_devices(
            int(getattr(smk.resources, "gpu", 0) or 0),
            holder=holder,
            on_wait=lambda text: _tell_console(2, f"ftcompare: {text}\n"),
        )
    except FtcompareError as error:
        message = f"ftcompare: rule {rule}: {error}\n"
        with open(smk.log[0], "a", encoding="utf-8") as handle:
            handle.write(message)
        _tell_console(2, f"{message}(full log: {smk.log[0]})\n")
        sys.exit(1)


def run_script(main, smk, *args) -> None:
    """Run `main(smk, *args)` with output to the rule's log; a FtcompareError exits 1 with its message."""
    rule = getattr(smk, "rule", "job")
    console_fd = redirect_output_to_log(smk.log[0])
    gc.freeze()
    gc.enable()
    try:
        main(smk, *args)
    except FtcompareError as error:
        log.error("%s", error)
        _tell_console(console_fd, f"ftcompare: rule {rule}: {error}\n(full log: {smk.log[0]})\n")
        sys.exit(1)
    except BaseException as error:
        if isinstance(error, SystemExit) and not error.code:
            raise
        traceback.print_exc()
        _tell_console(
            console_fd, f"ftcompare: rule {rule} failed: {type(error).__name__}: {error}\n(traceback in {smk.log[0]})\n"
        )
        raise
    finally:
        # What reference counting frees as the interpreter ends (open files, handlers) is still closed.
        gc.freeze()


def _tell_console(fd: int, text: str) -> None:
    try:
        os.write(fd, text.encode("utf-8", "replace"))
    except OSError:
        pass
