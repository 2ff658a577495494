"""`make bench`: every comparison of the performance harness, then the targets met and missed.

1. workflow overhead (builds or updates the embedded-default study in results/bench/study first),
2. training: the blog's recipe vs the workflow's default path, LoRA and full, on the study's
   embedded model and on a larger CPU-sized Llama,
3. generation: the per-prompt pipeline vs batched generation, same prompts, greedy,
4. telemetry: the sampler's cost per training step at the default interval (0.5 s).

Each writes bench/results/<name>.json (machine, versions, settings, every repetition); this script
adds bench/results/summary.json with each target's figure and whether it was met.

    .venv/bin/python bench/run_all.py            # first run builds the study: expect 15-25 minutes on 2 cores
    .venv/bin/python bench/run_all.py --quick    # tiny models, one repetition each: checks the harness runs
"""

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import generation_speed  # noqa: E402
import telemetry_overhead  # noqa: E402
import training_speed  # noqa: E402
import workflow_overhead  # noqa: E402

import harness  # noqa: E402

# Issue #6's targets, as (what, threshold); ratios are ours over the blog's.
TRAINING_SPEEDUP = 1.5
GENERATION_SPEEDUP = 3.0
NO_OP_S = 3.0
REPORT_ONLY_S = 30.0
TELEMETRY_OVERHEAD_PCT = 1.0
# Deterministic runs on the same data: the same learning gives the same losses up to rounding.
LOSS_TOLERANCE = 1e-3


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny models, one repetition each (the smoke test)")
    parser.add_argument("--study", type=Path, default=harness.REPO / "results" / "bench" / "study")
    parser.add_argument("--repetitions", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch threads for training and generation (default: every core)")
    parser.add_argument("--out-dir", type=Path, default=harness.RESULTS_DIR)
    return parser.parse_args(argv)


def training_targets(result: dict) -> list[dict]:
    rows = []
    for case in result["cases"]:
        ratios = case["ratios"].get("ours")
        if ratios is None:
            continue
        speedup, loss_change = ratios["nonpad_tokens_per_s"], ratios["eval_loss_change"]
        final_change = ratios["final_train_loss_change"]
        no_worse = all(change is not None and change <= LOSS_TOLERANCE for change in (loss_change, final_change))
        note = (
            ""
            if loss_change is None or final_change is None
            else f"final loss {final_change:+.4f}, eval loss {loss_change:+.4f}"
        )
        compiled = case["ratios"].get("ours + compile")
        if compiled is not None and compiled["nonpad_tokens_per_s"] is not None:
            first_pass = case["summary"]["ours + compile"].get("first_pass_seconds")
            note += f"; with torch_compile (off by default): x{compiled['nonpad_tokens_per_s']:.2f}" + (
                f", first pass {first_pass:.0f} s" if first_pass is not None else ""
            )
        bounds = ratio_bounds(
            case["summary"]["ours"]["nonpad_tokens_per_s"], case["summary"]["blog recipe"]["nonpad_tokens_per_s"]
        )
        rows.append(
            target(
                f"training {case['method']}, {case['model']} model: non-pad tokens/s x, losses no worse",
                speedup,
                f">= {TRAINING_SPEEDUP} and loss change <= {LOSS_TOLERANCE}",
                speedup is not None and speedup >= TRAINING_SPEEDUP and no_worse,
                note,
                _straddles(bounds, TRAINING_SPEEDUP) if no_worse else None,
            )
        )
    return rows


def generation_targets(result: dict) -> list[dict]:
    rows = []
    for case in result["cases"]:
        ours, blog = (case["summary"][side]["tokens_per_s"] for side in generation_speed.SIDES[::-1])
        rows.append(
            target(
                f"generation, {case['model']} model, {case['prompts']} prompts: batched / pipeline",
                case["speedup"],
                f">= {GENERATION_SPEEDUP} with identical texts",
                case["speedup"] is not None and case["speedup"] >= GENERATION_SPEEDUP and case["texts_identical"],
                "texts identical" if case["texts_identical"] else "texts differ",
                _straddles(ratio_bounds(ours, blog), GENERATION_SPEEDUP) if case["texts_identical"] else None,
            )
        )
    return rows


def ratio_bounds(ours: dict, theirs: dict) -> tuple[float, float] | None:
    """The lowest and highest ratio the repetitions allow: our slowest over their fastest, and back."""
    if not ours["min"] or not theirs["min"]:
        return None
    return ours["min"] / theirs["max"], ours["max"] / theirs["min"]


def _straddles(bounds, threshold: float) -> tuple[float, float] | None:
    """`bounds` when the repetitions' range of the ratio lies on both sides of the threshold, else None."""
    if bounds is None or (bounds[0] >= threshold) == (bounds[1] >= threshold):
        return None
    return bounds


def workflow_targets(result: dict) -> list[dict]:
    commands = result["commands"]
    rows = []
    if "no-op snakemake --cores all" in commands:
        no_op = commands["no-op snakemake --cores all"]["seconds"]["median"]
        rows.append(target("no-op snakemake --cores all, s", no_op, f"< {NO_OP_S}", no_op < NO_OP_S))
        report = commands["report-only rerun (--forcerun report)"]["seconds"]["median"]
        rows.append(target("report-only rerun, s", report, f"< {REPORT_ONLY_S}", report < REPORT_ONLY_S))
    return rows


def telemetry_targets(result: dict) -> list[dict]:
    """Judged on the sampler thread's CPU time per second of training: its most a step can lose (the
    GIL it holds included), and a figure that other jobs on the machine do not move. The step-time
    difference is in the note, beside the noise it has to be read against."""
    entry = result["results"]["sampler every 0.5 s"]
    share = entry.get("sampler_cpu_share_pct")
    note = f"step time {entry['overhead_pct']:+.2f} % with vs without" if entry["overhead_pct"] is not None else ""
    if result.get("noise_pct") is not None:
        note += f" (blocks without it spread {result['noise_pct']:.1f} %)"
    return [
        target(
            "telemetry every 0.5 s: sampler CPU time per training step, %",
            share,
            f"< {TELEMETRY_OVERHEAD_PCT}",
            share is not None and share < TELEMETRY_OVERHEAD_PCT,
            note,
        )
    ]


def target(what: str, figure, threshold: str, met: bool, note: str = "", straddling=None) -> dict:
    """One target's verdict from the medians; "yes?" or "no?" when the repetitions' range of the ratio
    (`straddling`, from ratio_bounds) lies on both sides of the threshold: then rerun on an idle machine."""
    verdict = "yes" if met else "no"
    if straddling is not None:
        verdict += "?"
        note = (
            f"{note}; repetitions allow x{straddling[0]:.2f} to x{straddling[1]:.2f}, either side of the threshold"
        ).lstrip("; ")
    return {"target": what, "figure": figure, "threshold": threshold, "met": verdict, "note": note}


def main(argv=None) -> dict:
    args = parse_args(argv)
    common = ["--out-dir", str(args.out_dir)] + (["--quick"] if args.quick else [])
    repetitions = ["--repetitions", str(args.repetitions)]
    threads = ["--threads", str(args.threads)] if args.threads else []
    study = ["--study", str(args.study)]
    load = os.getloadavg()[0]
    if not args.quick and load > 0.5:
        print(
            f"note: load average {load:.1f} on {os.cpu_count()} cores before starting: other work is running, "
            "and the figures will spread (a verdict the repetitions leave open is marked with '?')"
        )
    print("== workflow overhead" + ("" if args.quick else f" (study in {args.study}; built on the first run)"))
    workflow = workflow_overhead.main(common + ([] if args.quick else study + repetitions))
    print("\n== training: blog recipe vs ours")
    training = training_speed.main(common + threads + ([] if args.quick else study + repetitions))
    print("\n== generation: per-prompt pipeline vs batched")
    generation = generation_speed.main(common + threads + ([] if args.quick else study + repetitions))
    print("\n== telemetry overhead")
    telemetry = telemetry_overhead.main(
        (["--quick", "--backend", "cpu"] if args.quick else [])
        + ["--out", str(args.out_dir / "telemetry_overhead.json")]
    )

    targets = (
        training_targets(training)
        + generation_targets(generation)
        + workflow_targets(workflow)
        + telemetry_targets(telemetry)
    )
    print(
        "\n== targets (issue #6)"
        + (" -- --quick: tiny models, one repetition; not a measurement" if args.quick else "")
    )
    print(
        harness.table(
            ["target", "figure", "needs", "met", "note"],
            [[t["target"], t["figure"], t["threshold"], t["met"], t["note"]] for t in targets],
        )
    )
    summary = {"benchmark": "summary of bench/run_all.py", "quick": args.quick, "targets": targets}
    path = harness.write_result("summary", summary, args.out_dir)
    print(f"written to {path}")
    return summary


if __name__ == "__main__":
    main(sys.argv[1:])
