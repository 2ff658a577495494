"""One rank of a run trained by several processes: `python -m ftcompare.train_worker <spec.json>`, started
by torchrun for the train job (ftcompare.launch). Every rank trains; rank 0 alone writes the run's files
and the result the job reads. A rank that fails leaves its message where the job finds it."""

import dataclasses
import logging
import os
import sys
import traceback
from pathlib import Path

import torch
import torch.distributed as dist

from ftcompare.atomic import write_json, write_text
from ftcompare.devices import set_cpu_threads
from ftcompare.errors import FtcompareError
from ftcompare.launch import PhaseRelay, die_with_parent
from ftcompare.metrics import MemoryFigure
from ftcompare.strict_json import read_json_object
from ftcompare.training import RunPaths, train_run

log = logging.getLogger("ftcompare.train_worker")


def main(spec_path: str) -> int:
    die_with_parent()
    rank = int(os.environ["RANK"])
    logging.basicConfig(
        level=logging.INFO if rank == 0 else logging.WARNING,
        format=f"%(asctime)s %(levelname)s [rank {rank}] %(name)s: %(message)s",
        stream=sys.stderr,
    )
    spec = read_json_object(Path(spec_path))
    set_cpu_threads(spec["threads"])
    settings, device = spec["settings"], spec["device"]
    try:
        metrics, rows = train_run(
            settings,
            RunPaths(**{name: Path(path) for name, path in spec["paths"].items()}),
            device,
            spec["dtype"],
            spec["trust_remote_code"],
            None,
            PhaseRelay(Path(spec["phases"]), writer=rank == 0, device=device),
            resume_from=Path(spec["resume_from"]) if spec["resume_from"] else None,
        )
        memory = device_peaks(device)
    except FtcompareError as error:
        return _failed(spec, rank, str(error))
    except Exception as error:
        traceback.print_exc()
        return _failed(spec, rank, f"run {settings['run']}: rank {rank} failed: {type(error).__name__}: {error}")
    if rank == 0:
        metrics = dataclasses.replace(metrics, memory=memory)
        write_json(spec["result"], {"metrics": metrics.to_json(), "rows": rows})
    dist.destroy_process_group()
    return 0


def device_peaks(device: str) -> dict[str, MemoryFigure]:
    """The torch allocator's peaks since training began, each rank on its own GPU, summed over the ranks:
    the job's sampler runs in another process and sees none of them. Nothing on the CPU."""
    if device != "cuda":
        return {}
    mib = 2**20
    mine = (torch.cuda.max_memory_allocated() / mib, torch.cuda.max_memory_reserved() / mib)
    every = [None] * dist.get_world_size()
    dist.all_gather_object(every, mine)
    source = f"sum over {len(every)} processes, each on its own GPU, since training began"
    return {
        "torch_max_allocated_mb": MemoryFigure(
            round(sum(a for a, _ in every), 1), "MiB", f"torch max_memory_allocated ({source})"
        ),
        "torch_max_reserved_mb": MemoryFigure(
            round(sum(r for _, r in every), 1), "MiB", f"torch max_memory_reserved ({source})"
        ),
    }


def _failed(spec: dict, rank: int, message: str) -> int:
    log.error("%s", message)
    write_text(Path(spec["errors"]) / f"rank{rank}.txt", message)
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
