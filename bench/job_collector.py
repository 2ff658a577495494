"""What Python's garbage collector costs a job that imports the training stack: as the jobs run it
(ftcompare.script_runtime), and as it runs by default.

Each repetition starts a Python process that imports what a train job imports (ftcompare.training)
after ftcompare.script_runtime, as the entry scripts do, runs an empty main through run_script, writes
two figures to a file and ends. "as the jobs run": the collector is off while the libraries import and
their objects are frozen before the job and again at its end. "default collector": the same, with the
collector switched back on before the imports and everything unfrozen at the end. The figures: the
import's seconds, and the exit's (from the time the process wrote last to its end as seen from here).

    .venv/bin/python bench/job_collector.py            # about two minutes on 2 cores
    .venv/bin/python bench/job_collector.py --quick    # one repetition that imports torch only (smoke test)

Prints a table and writes bench/results/job_collector.json (machine, versions, settings, every repetition).
"""

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import harness

SIDES = {
    "as the jobs run": {"before": "", "after": ""},
    "default collector": {"before": "gc.enable()", "after": "gc.unfreeze()"},
}
JOB = """
import gc, json, sys, time, types
sys.path.insert(0, {scripts!r})
started = time.perf_counter()
from ftcompare.script_runtime import run_script
{before}
import {stack}
imported = time.perf_counter() - started
run_script(lambda smk: None, types.SimpleNamespace(rule="bench", log=[{log!r}]))
{after}
with open({stamp!r}, "w") as stamp:  # stdout is the job's log now
    json.dump({{"import_s": imported, "written_at": time.time()}}, stamp)
"""


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one repetition importing torch only (smoke test)")
    parser.add_argument("--repetitions", type=int, default=5)
    parser.add_argument("--out-dir", type=Path, default=harness.RESULTS_DIR)
    return parser.parse_args(argv)


def job_figures(stack: str, side: dict, folder: Path) -> dict:
    """One job-like process: its import's seconds and its exit's."""
    log, stamp = folder / "job.log", folder / "stamp.json"
    stamp.unlink(missing_ok=True)
    code = JOB.format(scripts=str(harness.REPO / "scripts"), stack=stack, log=str(log), stamp=str(stamp), **side)
    returncode = subprocess.run([sys.executable, "-c", code]).returncode
    ended = time.time()
    if returncode != 0 or not stamp.is_file():
        raise SystemExit(f"the job-like process failed (exit {returncode}); its log: {log}")
    written = json.loads(stamp.read_text())
    return {"import_s": written["import_s"], "exit_s": ended - written["written_at"]}


def main(argv=None) -> dict:
    args = parse_args(argv)
    stack, repetitions = ("torch", 1) if args.quick else ("ftcompare.training", args.repetitions)
    with tempfile.TemporaryDirectory(prefix="job-collector-") as tmp:
        sides = {name: (lambda _, side=side: job_figures(stack, side, Path(tmp))) for name, side in SIDES.items()}
        runs = harness.alternate(sides, repetitions, warmup=0 if args.quick else 1)
    summary = {
        side: {figure: harness.summarise([run[figure] for run in side_runs]) for figure in ("import_s", "exit_s")}
        for side, side_runs in runs.items()
    }
    print(f"a job that imports {stack}: median (min-max) over {repetitions} repetition(s)")
    rows = [[side, harness.figure(s["import_s"], 2), harness.figure(s["exit_s"], 2)] for side, s in summary.items()]
    print(harness.table(["collector", "import s", "exit s"], rows))
    result = {
        "benchmark": "job_collector",
        "settings": {"imports": stack, "repetitions": repetitions},
        "runs": runs,
        "summary": summary,
    }
    path = harness.write_result("job_collector", result, args.out_dir)
    print(f"written to {path}")
    return result


if __name__ == "__main__":
    main()
