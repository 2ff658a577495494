"""The workflow's own overhead: a no-op `snakemake --cores all`, `snakemake -n`, a report-only rerun.

All three run on a finished study of the embedded default in a folder of its own (default
results/bench/study, with copies of config/ and profiles/ as in a clone), through the snakemake of
this environment, as a user would type them. Before measuring, the study is brought up to date
(the first time this builds it: the whole default study, minutes); each job's own time then comes
from the Snakemake benchmark files the rules write.

    .venv/bin/python bench/workflow_overhead.py          # builds the study once, then ~1 minute
    .venv/bin/python bench/workflow_overhead.py --fresh  # the whole default study from nothing, timed, first
    .venv/bin/python bench/workflow_overhead.py --quick  # `snakemake -n` on an empty folder only
"""

import argparse
import csv
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

NOTHING_TO_DO = "Nothing to be done"
COMMANDS = {
    "no-op snakemake --cores all": ["--cores", "all"],
    "snakemake -n": ["-n"],
    "report-only rerun (--forcerun report)": ["--cores", "all", "--forcerun", "report"],
}
QUICK_COMMANDS = {"snakemake -n (empty folder)": ["-n", "--cores", "all"]}


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--study",
        type=Path,
        default=harness.REPO / "results" / "bench" / "study",
        help="the study folder (default results/bench/study)",
    )
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="only time `snakemake -n` on an empty folder")
    parser.add_argument(
        "--fresh",
        action="store_true",
        help="delete the study's results/ and .snakemake/ first: its update is then the whole default study from "
        "nothing, as on a fresh clone (the study's time in README.md)",
    )
    parser.add_argument("--out-dir", type=Path, default=harness.RESULTS_DIR)
    return parser.parse_args(argv)


def snakemake(workdir: Path, args: list[str], timeout_s: float = 3600) -> dict:
    """Run the workflow's snakemake in `workdir`; its wall time, exit status and the tail of its output."""
    command = [sys.executable, "-m", "snakemake", "-s", str(harness.REPO / "Snakefile"), *args]
    started = time.perf_counter()
    done = subprocess.run(
        command,
        cwd=workdir,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    output = done.stdout + done.stderr
    return {
        "seconds": time.perf_counter() - started,
        "returncode": done.returncode,
        "did_nothing": NOTHING_TO_DO in output,
        "output_tail": output[-3000:],
    }


def prepare_study(study: Path) -> dict:
    """Copy the repository's config/ and profiles/ into `study` and bring the study up to date."""
    study.mkdir(parents=True, exist_ok=True)
    for folder in ("config", "profiles"):
        shutil.copytree(harness.REPO / folder, study / folder, dirs_exist_ok=True)
    run = snakemake(study, ["--cores", "all"])
    if run["returncode"] != 0:
        raise SystemExit(f"the bench study in {study} failed:\n{run['output_tail']}")
    return run


def wipe_study(study: Path) -> None:
    """What a run of the study left in `study` (its results and Snakemake's state), not its config."""
    for folder in ("results", ".snakemake"):
        shutil.rmtree(study / folder, ignore_errors=True)


def job_seconds(study: Path) -> dict:
    """Each job's wall time from the rules' Snakemake benchmark files (results/benchmarks/**.tsv)."""
    seconds = {}
    root = study / "results" / "benchmarks"
    for path in sorted(root.rglob("*.tsv")):
        with path.open(newline="") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
        if rows:
            seconds[str(path.relative_to(root).with_suffix(""))] = float(rows[-1]["s"])
    return seconds


def measure(workdir: Path, commands: dict, repetitions: int) -> dict:
    runs = {name: [] for name in commands}
    for _ in range(repetitions):
        for name, args in commands.items():
            run = snakemake(workdir, args)
            if run["returncode"] != 0:
                raise SystemExit(f"`snakemake {' '.join(args)}` failed in {workdir}:\n{run['output_tail']}")
            runs[name].append(run)
    return {
        name: {
            "seconds": harness.summarise([r["seconds"] for r in reps]),
            "did_nothing": all(r["did_nothing"] for r in reps),
        }
        for name, reps in runs.items()
    }


def print_result(result: dict) -> None:
    print(f"\nworkflow overhead ({result['where']}): median (min-max) over {result['repetitions']} repetition(s)")
    rows = [[name, harness.figure(entry["seconds"], 2)] for name, entry in result["commands"].items()]
    print(harness.table(["command", "seconds"], rows))
    if result.get("study_update_s") is not None:
        if result.get("study_fresh"):
            what = "the whole default study from nothing"
        else:
            what = "nothing to do" if result["study_was_current"] else "jobs ran"
        print(f"  bringing the study up to date first took {result['study_update_s']:.1f} s ({what})")
    if result.get("job_seconds"):
        jobs = ", ".join(f"{name} {seconds:.1f}" for name, seconds in result["job_seconds"].items())
        print(f"  each job of the study, s (Snakemake benchmark files): {jobs}")


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.quick:
        with tempfile.TemporaryDirectory(prefix="workflow-bench-") as tmp:
            shutil.copytree(harness.REPO / "config", Path(tmp) / "config")
            commands = measure(Path(tmp), QUICK_COMMANDS, 1)
        result = {"where": "empty folder, DAG only", "repetitions": 1, "commands": commands}
    else:
        if args.fresh:
            wipe_study(args.study)
        update = prepare_study(args.study)
        commands = measure(args.study, COMMANDS, args.repetitions)
        no_op = commands["no-op snakemake --cores all"]
        if not no_op["did_nothing"]:
            raise SystemExit(f"a second `snakemake --cores all` in {args.study} did work: the no-op is not one")
        result = {
            "where": str(args.study),
            "repetitions": args.repetitions,
            "commands": commands,
            "study_update_s": update["seconds"],
            "study_was_current": update["did_nothing"],
            "study_fresh": args.fresh,
            "job_seconds": job_seconds(args.study),
        }
    settings = {"quick": args.quick, "fresh": args.fresh}
    result = {"benchmark": "workflow overhead", "settings": settings, "method": __doc__, **result}
    print_result(result)
    path = harness.write_result("workflow_overhead", result, args.out_dir)
    print(f"written to {path}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
