"""What TelemetrySampler costs a training step: no sampler vs sampling every 0.5 s and every 0.1 s.

A small MLP trains on random data; its batch is sized during warm-up so that one step takes about
`--step-ms` on this machine (CPU or GPU). Each round runs the three conditions back to back, in an
order that rotates from round to round; a condition's overhead is the median over rounds of its
median step time divided by the no-sampler median of the same round, so that slow drifts of a shared
machine cancel. The spread of the no-sampler blocks is printed as the noise to judge it against.

    .venv/bin/python bench/telemetry_overhead.py            # about a minute
    .venv/bin/python bench/telemetry_overhead.py --quick    # one tiny repetition (smoke test)

Prints a table and writes bench/results/telemetry_overhead.json (machine, versions, settings, results).
"""

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from ftcompare.atomic import write_json  # noqa: E402
from ftcompare.telemetry import TelemetrySampler  # noqa: E402

DEFAULT_OUT = REPO / "bench" / "results" / "telemetry_overhead.json"
CONDITIONS = (None, 0.5, 0.1)  # sampling interval in s; None: no sampler


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one tiny repetition, to check the script runs")
    parser.add_argument("--repetitions", type=int, default=12, help="rounds of the three conditions (default 12)")
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per condition and round")
    parser.add_argument("--step-ms", type=float, default=200.0, help="target duration of one step (default 200)")
    parser.add_argument("--backend", default="auto", help="telemetry backend (default auto)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"JSON result (default {DEFAULT_OUT})")
    return parser.parse_args(argv)


class TrainingStep:
    """Forward, backward and an AdamW update of a 3-layer MLP on one random batch."""

    def __init__(self, device, width, batch):
        self.device = device
        self.model = torch.nn.Sequential(
            torch.nn.Linear(width, 4 * width),
            torch.nn.GELU(),
            torch.nn.Linear(4 * width, 4 * width),
            torch.nn.GELU(),
            torch.nn.Linear(4 * width, width),
        ).to(device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.width = width
        self.resize(batch)

    def resize(self, batch):
        self.batch = batch
        self.inputs = torch.randn(batch, self.width, device=self.device)
        self.targets = torch.randn(batch, self.width, device=self.device)

    def __call__(self) -> float:
        started = time.perf_counter()
        self.optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(self.model(self.inputs), self.targets)
        loss.backward()
        self.optimizer.step()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        else:
            loss.item()
        return time.perf_counter() - started


def calibrate(step: TrainingStep, target_s: float, max_batch: int) -> None:
    """Warm up, then scale the batch so that one step takes about `target_s`."""
    for _ in range(3):
        step()
    for _ in range(4):
        took = statistics.median(step() for _ in range(3))
        if abs(took - target_s) < 0.15 * target_s:
            return
        wanted = int(step.batch * target_s / max(took, 1e-6))
        step.resize(max(8, min(max_batch, wanted)))
        step()


def run_condition(step: TrainingStep, interval_s, steps: int, backend: str, workdir: Path):
    """Step times for one block; with a sampler running when `interval_s` is set."""
    if interval_s is None:
        return [step() for _ in range(steps)], None
    with TelemetrySampler(
        workdir / "telemetry.csv",
        workdir / "telemetry.json",
        backend=backend,
        interval_s=interval_s,
        job="telemetry overhead bench",
    ) as sampler:
        sampler.set_phase("train")
        times = [step() for _ in range(steps)]
    return times, sampler.summary


def machine_info(device) -> dict:
    info = {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "device": str(device),
    }
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
        info["runtime"] = f"ROCm/HIP {torch.version.hip}" if torch.version.hip else f"CUDA {torch.version.cuda}"
    return info


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.quick:
        args.repetitions, args.steps = 1, 2
    device = torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    if args.quick:
        step = TrainingStep(device, width=64, batch=32)
        step()
    else:
        step = TrainingStep(device, width=512 if device.type == "cpu" else 4096, batch=64)
        calibrate(step, args.step_ms / 1000, max_batch=65536)

    times = {interval: [] for interval in CONDITIONS}
    block_medians = {interval: [] for interval in CONDITIONS}
    summaries = {}
    with tempfile.TemporaryDirectory(prefix="telemetry-bench-") as tmp:
        for repetition in range(args.repetitions):
            shift = repetition % len(CONDITIONS)
            for interval in CONDITIONS[shift:] + CONDITIONS[:shift]:
                block, summary = run_condition(step, interval, args.steps, args.backend, Path(tmp))
                times[interval] += block
                block_medians[interval].append(statistics.median(block))
                if summary is not None:
                    summaries[interval] = summary

    baseline = statistics.median(times[None])
    results = {}
    for interval in CONDITIONS:
        median = statistics.median(times[interval])
        ratios = [mine / base for mine, base in zip(block_medians[interval], block_medians[None])]
        name = "no sampler" if interval is None else f"sampler every {interval} s"
        results[name] = {
            "interval_s": interval,
            "median_step_s": round(median, 5),
            "steps": len(times[interval]),
            "block_median_step_s": [round(t, 5) for t in block_medians[interval]],
            "overhead_pct": None if interval is None else round(100 * (statistics.median(ratios) - 1), 2),
            "pooled_overhead_pct": None if interval is None else round(100 * (median / baseline - 1), 2),
            "sampling_cost_ms": summaries[interval]["sampling_cost_ms"] if interval in summaries else None,
            # The sampler thread's own CPU time as a share of one core: what it can take from training
            # at most when every core is busy, and a figure the machine's noise does not move.
            "sampler_cpu_share_pct": (
                round(100 * summaries[interval]["sampling_cost_ms"]["cpu_mean"] / (1000 * interval), 3)
                if interval in summaries
                else None
            ),
            "telemetry_backend": summaries[interval]["backend"] if interval in summaries else None,
        }
    spread = block_medians[None]
    overhead_note = (
        "overhead_pct: median over rounds of (median step with sampler / median step without, same "
        "round) - 1; pooled_overhead_pct: the same from all steps pooled"
    )
    result = {
        "benchmark": "telemetry sampler overhead on a training step",
        "machine": machine_info(device),
        "settings": {
            "quick": args.quick,
            "repetitions": args.repetitions,
            "steps_per_block": args.steps,
            "model": f"MLP {step.width}-{4 * step.width}-{4 * step.width}-{step.width}, AdamW",
            "batch": step.batch,
            "backend_requested": args.backend,
        },
        "noise_pct": round(100 * (max(spread) - min(spread)) / baseline, 2) if len(spread) > 1 else None,
        "method": overhead_note,
        "results": results,
    }
    write_json(args.out, result)
    print(
        f"telemetry overhead on {result['machine']['device']} ({result['settings']['model']}, batch {step.batch}, "
        f"{args.repetitions} x {args.steps} steps per condition)"
    )
    for name, entry in results.items():
        overhead = (
            ""
            if entry["overhead_pct"] is None
            else (
                f"  overhead {entry['overhead_pct']:+.2f} %  (sampler thread CPU "
                f"{entry['sampling_cost_ms']['cpu_mean']:.2f} ms per sample = "
                f"{entry['sampler_cpu_share_pct']:.2f} % of a core)"
            )
        )
        print(f"  {name:<24} median step {1000 * entry['median_step_s']:8.1f} ms{overhead}")
    if args.quick:
        print("  (--quick: one tiny repetition without warm-up; these figures only show that the script runs)")
    if result["noise_pct"] is not None:
        print(f"  noise: the no-sampler blocks spread over {result['noise_pct']:.2f} % of their median step")
    print(f"written to {args.out}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
