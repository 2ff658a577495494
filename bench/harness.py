"""What every comparison in bench/ shares: alternating repetitions, medians and spreads, the machine.

Both sides of a comparison run in one process, one repetition of each after the other, in an order
that flips from round to round, so that a slow drift of a shared machine (other jobs starting or
ending) reaches both alike; the load average before and after is recorded to judge the noise by.
"""

import os
import platform
import statistics
import sys
import time
import warnings
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
# Nothing here may reach the Hugging Face hub; TRL's trainers also send a usage ping unless told not to.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
if str(REPO / "scripts") not in sys.path:
    sys.path.insert(0, str(REPO / "scripts"))

from ftcompare.atomic import write_json  # noqa: E402
from ftcompare.report.provenance import git_state  # noqa: E402

CPUINFO = Path("/proc/cpuinfo")
RESULTS_DIR = REPO / "bench" / "results"
PACKAGES = ("torch", "transformers", "trl", "peft", "accelerate", "datasets", "tokenizers", "snakemake")


def alternate(sides: dict, repetitions: int, warmup: int = 1) -> dict:
    """Run each side's callable `warmup` times, then `repetitions` rounds of all sides, order flipping.

    Returns {side: [result of each measured call]}; warm-up results are dropped. A callable gets the
    0-based index of the measured repetition (-1 during warm-up).
    """
    names = list(sides)
    for _ in range(warmup):
        for name in names:
            sides[name](-1)
    results = {name: [] for name in names}
    for repetition in range(repetitions):
        order = names if repetition % 2 == 0 else names[::-1]
        for name in order:
            results[name].append(sides[name](repetition))
    return results


def summarise(values: list[float]) -> dict:
    """Median, min and max of the measured values (None-free), and the spread as % of the median."""
    values = [v for v in values if v is not None]
    if not values:
        return {"median": None, "min": None, "max": None, "spread_pct": None, "n": 0}
    median = statistics.median(values)
    spread = 100 * (max(values) - min(values)) / median if median else None
    return {"median": median, "min": min(values), "max": max(values), "spread_pct": spread, "n": len(values)}


def ratio(ours: dict, theirs: dict) -> float | None:
    """The ratio of two summaries' medians (ours over theirs)."""
    if not ours["median"] or not theirs["median"]:
        return None
    return ours["median"] / theirs["median"]


def machine() -> dict:
    """The machine the figures came from, and how busy it was when they were taken."""
    import torch

    info = {
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_vector_flags": cpu_vector_flags(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch_build": f"CUDA {torch.version.cuda}"
        if torch.version.cuda
        else (f"ROCm {torch.version.hip}" if getattr(torch.version, "hip", None) else "CPU"),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "load_average_1m_5m_15m": [round(x, 2) for x in os.getloadavg()],
    }
    return info


def matmul_gflops(device: str = "cpu", size: int = 512, seconds: float = 1.0) -> float:
    """fp32 GFLOP/s of back-to-back size^3 matrix products on this device: a ceiling for training's rate."""
    import torch

    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    for _ in range(3):
        a @ b
    count, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        a @ b
        count += 1
    if device == "cuda":
        torch.cuda.synchronize()
    return 2 * size**3 * count / (time.perf_counter() - started) / 1e9


def versions() -> dict:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    found["git"] = git_state(REPO).description
    return found


def write_result(name: str, result: dict, out_dir: Path = RESULTS_DIR) -> Path:
    """bench/results/<name>.json (or under out_dir): after the result's `benchmark`, the machine and the
    package versions; at the end, the machine's load then and the time."""
    result = {
        "benchmark": result["benchmark"],
        "machine": machine(),
        "versions": versions(),
        **result,
        "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "written_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    path = Path(out_dir) / f"{name}.json"
    write_json(path, result)
    return path


def quiet_libraries() -> None:
    """No progress bars or per-step log lines from datasets and transformers: the tables are the output."""
    import datasets
    import transformers

    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
    datasets.disable_progress_bars()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()


def table(headers: list[str], rows: list[list]) -> str:
    """A plain-text table, columns right-aligned except the first."""
    cells = [[str(h) for h in headers]] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = []
    for index, row in enumerate(cells):
        lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
        if index == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


def figure(summary: dict, digits: int = 1) -> str:
    """ "median (min-max)" of a summary."""
    if summary["median"] is None:
        return "n/a"
    if summary["n"] == 1:
        return f"{summary['median']:.{digits}f}"
    return f"{summary['median']:.{digits}f} ({summary['min']:.{digits}f}-{summary['max']:.{digits}f})"


def _cell(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 100 else f"{value:,.0f}"
    return str(value)


def cpu_vector_flags(cpuinfo: Path = CPUINFO) -> list[str]:
    """The CPU's vector and matrix extensions (AVX, AVX-512, AMX, bf16, FMA), which bound the matmul rates."""
    flags = (_cpuinfo_field("flags", cpuinfo) or "").split()
    return sorted(f for f in flags if f.startswith(("avx", "amx", "fma")) or "bf16" in f)


def _cpu_model() -> str:
    return _cpuinfo_field("model name") or platform.processor() or platform.machine()


def _cpuinfo_field(name: str, cpuinfo: Path = CPUINFO) -> str | None:
    """The first CPU's `name` field in /proc/cpuinfo, or None (no such field, or no /proc)."""
    try:
        for line in cpuinfo.read_text().splitlines():
            if line.startswith(name):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None
