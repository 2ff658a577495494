"""Generation: the blog's way (a text-generation pipeline, one prompt at a time) against the batched path.

Both sides: the same model, the fixed prompts of config/prompts.yaml in the Llama-2 chat format, and
the same greedy GenerationConfig, built from config/config.yaml's `generation:` section. The blog
called `pipeline("text-generation", max_length=200)`, which counts the prompt in the 200; here both
sides generate up to the same number of new tokens, so that the texts can be compared one to one.
The workflow's side is ftcompare.generation.generate_outputs: left-padded batches, with the KV cache
(the pipeline also keeps one). Tokens/s counts the new tokens up to and including the end of
sequence, which are the same on both sides when the texts are.

    .venv/bin/python bench/generation_speed.py --study results/bench/study
    .venv/bin/python bench/generation_speed.py --quick
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import training_speed  # noqa: E402
import transformers  # noqa: E402

import harness  # noqa: E402
from ftcompare.generation import build_generation_config, format_prompt, generate_outputs  # noqa: E402
from ftcompare.prompts import load_prompts  # noqa: E402

SIDES = ("blog: pipeline, one prompt at a time", "ours: batched")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--study", type=Path, help="a finished embedded-default study (default results/bench/study)")
    parser.add_argument("--models", default="embedded,cpu-large")
    parser.add_argument("--repetitions", type=int, default=3, help="measured rounds (default 3) after one warm-up")
    parser.add_argument("--quick", action="store_true", help="a tiny model, two prompts, one repetition")
    parser.add_argument("--threads", type=int, help="torch threads (default: every core, as the workflow's jobs)")
    parser.add_argument("--out-dir", type=Path, default=harness.RESULTS_DIR)
    return parser.parse_args(argv)


def pipeline_side(model, tokenizer, prompts: list[str], config: transformers.GenerationConfig):
    """The blog's way: one pipeline, called once per prompt."""
    pipe = transformers.pipeline("text-generation", model=model, tokenizer=tokenizer)

    def run(repetition):
        started = time.perf_counter()
        texts = [
            pipe(format_prompt(p), generation_config=config, return_full_text=False)[0]["generated_text"]
            for p in prompts
        ]
        return {"seconds": time.perf_counter() - started, "texts": [t.strip() for t in texts]}

    return run


def batched_side(model, tokenizer, prompts: list[str], settings: dict, seed: int):
    def run(repetition):
        started = time.perf_counter()
        records = generate_outputs(model, tokenizer, prompts, settings, seed, "bench")
        return {
            "seconds": time.perf_counter() - started,
            "texts": [r["output"] for r in records],
            "new_tokens": sum(r["new_tokens"] for r in records),
        }

    return run


def compare(
    model_name: str,
    model_dir: Path,
    prompts: list[str],
    settings: dict,
    seed: int,
    device: str,
    repetitions: int,
    warmup: int,
) -> dict:
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(model_dir))
    model = transformers.AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32)
    model.to("cuda" if device == "cuda" else "cpu").eval()
    config = build_generation_config(settings, tokenizer)
    blog, ours = SIDES
    measured = harness.alternate(
        {
            blog: pipeline_side(model, tokenizer, prompts, config),
            ours: batched_side(model, tokenizer, prompts, settings, seed),
        },
        repetitions,
        warmup,
    )
    new_tokens = measured[ours][0]["new_tokens"]
    reference = measured[ours][0]["texts"]
    mismatches = sorted(
        {
            index
            for side in SIDES
            for rep in measured[side]
            for index, text in enumerate(rep["texts"])
            if text != reference[index]
        }
    )
    summary = {
        side: {
            "seconds": harness.summarise([r["seconds"] for r in measured[side]]),
            "tokens_per_s": harness.summarise([new_tokens / r["seconds"] for r in measured[side]]),
        }
        for side in SIDES
    }
    return {
        "model": model_name,
        "prompts": len(prompts),
        "new_tokens": new_tokens,
        "batch_size": settings["batch_size"],
        "max_new_tokens": settings["max_new_tokens"],
        "texts_identical": not mismatches,
        "mismatched_prompts": mismatches,
        "summary": summary,
        "speedup": harness.ratio(summary[ours]["tokens_per_s"], summary[blog]["tokens_per_s"]),
        "seconds_per_repetition": {side: [r["seconds"] for r in measured[side]] for side in SIDES},
        "texts": {"batched": reference, "pipeline": measured[blog][0]["texts"]},
    }


def print_comparison(case: dict) -> None:
    print(
        f"\ngeneration, {case['model']} model: {case['prompts']} prompts, greedy, up to {case['max_new_tokens']} new "
        f"tokens ({case['new_tokens']} in all), batch {case['batch_size']}; median (min-max)"
    )
    rows = [
        [side, harness.figure(s["seconds"], 2), harness.figure(s["tokens_per_s"], 1)]
        for side, s in case["summary"].items()
    ]
    print(harness.table(["side", "seconds", "new tokens/s"], rows))
    same = "identical" if case["texts_identical"] else f"DIFFERENT for prompts {case['mismatched_prompts']}"
    speedup = "n/a" if case["speedup"] is None else f"x{case['speedup']:.2f}"
    print(f"  batched / pipeline: {speedup}; texts {same}")


def main(argv=None) -> dict:
    args = parse_args(argv)
    from ftcompare.devices import resolve_device

    device = resolve_device("auto")
    # As the generate rule: every core, unless --threads. --quick takes one, so that a busy machine cannot stall it.
    torch.set_num_threads(1 if args.quick else args.threads or os.cpu_count() or 1)
    harness.quiet_libraries()
    default, _ = training_speed.load_configs()
    settings = dict(default["generation"])
    prompts = load_prompts(harness.REPO / default["generation"]["prompts"])
    repetitions, warmup = (1, 0) if args.quick else (args.repetitions, 1)
    cases = []
    with tempfile.TemporaryDirectory(prefix="generation-bench-") as tmp:
        tmp = Path(tmp)
        if args.quick:
            model_dir, _, _ = training_speed.quick_study(tmp)
            models = {"tiny": model_dir}
            prompts = prompts[:2]
            settings["max_new_tokens"] = 4
        else:
            study = args.study or harness.REPO / "results" / "bench" / "study"
            base_dir = study / "results" / "models" / "base"
            models = {}
            for name in [m for m in args.models.split(",") if m]:
                if name == "embedded":
                    models[name] = base_dir
                elif name == "cpu-large":
                    models[name] = training_speed.build_random_llama(
                        training_speed.LARGER_CPU_LLAMA, base_dir, tmp / "cpu-large"
                    )
                else:
                    raise SystemExit(f"--models: unknown model {name!r} (embedded, cpu-large)")
        for name, model_dir in models.items():
            case = compare(name, model_dir, prompts, settings, default["seed"], device, repetitions, warmup)
            print_comparison(case)
            cases.append(case)
    result = {
        "benchmark": "generation: per-prompt pipeline (the blog's way) vs batched generation",
        "settings": {
            "quick": args.quick,
            "repetitions": repetitions,
            "warmup": warmup,
            "device": device,
            "generation": settings,
            "seed": default["seed"],
        },
        "method": __doc__,
        "cases": cases,
    }
    path = harness.write_result("generation_speed", result, args.out_dir)
    print(f"written to {path}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
