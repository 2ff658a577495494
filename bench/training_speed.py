"""Training throughput: the blog's recipe against the workflow's default path, same model, data and samples.

The blog's recipe is config/blog.yaml's `training:` section (fp32, group_by_length, no packing, batch
4, bitsandbytes' paged AdamW, which runs unpaged on the CPU); the workflow's default path is
config/config.yaml's. Both sides take the learning rate and max_seq_length of the embedded
default, train from the same weights on the same first N rows of the training split for one pass,
under TRL's SFTTrainer as the train rule runs it, and save no checkpoints. Two more sides, the default
with `torch_compile: true` and the default with `packing: true`, show what those options (off by
default) would buy and cost. Each repetition loads the model afresh. A side's first pass (the
warm-up, unless --quick) pays its one-off costs, the compilation among them: the table shows its time
apart ("1st pass s") from the median pass.

Each side trains in a process of its own, so that its peak memory is its own. Per side:
samples/s, tokens/s counting all tokens and non-padding tokens (the first steps excluded, as in
metrics.json), model GFLOP/s (ftcompare.flops; set beside this machine's fp32 matrix-product rate,
which bounds it), peak memory (torch's peak allocation on a GPU; on the CPU the peak RSS of the
process), the final training loss (the mean loss of the last quarter of the steps) and the held-out
loss after training, so a speed-up that changes the learning shows. Logging is every 10 steps, as
in the embedded default.

    .venv/bin/python bench/training_speed.py --study results/bench/study     # a few minutes
    .venv/bin/python bench/training_speed.py --quick                         # tiny model, one repetition
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import torch  # noqa: E402
import transformers  # noqa: E402
import yaml  # noqa: E402

import harness  # noqa: E402
from ftcompare.config import run_settings, validate_config  # noqa: E402

SIDES = ("blog recipe", "ours", "ours + compile", "ours + packing")
# The sides that show what an option off by default would buy and cost (--only-default leaves them out).
OPTIONAL_SIDES = ("ours + compile", "ours + packing")
# A Llama a CPU still trains in minutes: about 6x the embedded default's weights in matmuls.
LARGER_CPU_LLAMA = {
    "hidden_size": 256,
    "intermediate_size": 688,
    "num_hidden_layers": 6,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 512,
}
TINY_LLAMA = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 256,
}
SEED = 42


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--study",
        type=Path,
        help="a finished embedded-default study (its results/ holds the "
        "base model and data); default: results/bench/study",
    )
    parser.add_argument(
        "--models",
        default="embedded,cpu-large",
        help="comma-separated: embedded (the study's base model), cpu-large (a larger Llama "
        "built from its config with random weights)",
    )
    parser.add_argument("--methods", default="lora,full")
    parser.add_argument("--repetitions", type=int, default=3, help="measured rounds (default 3) after one warm-up")
    parser.add_argument(
        "--samples", type=int, default=None, help="training rows per repetition (default: 400 embedded, 200 cpu-large)"
    )
    parser.add_argument(
        "--only-default",
        action="store_true",
        help="leave out the sides with an option the default has off ('ours + compile', 'ours + packing')",
    )
    parser.add_argument("--quick", action="store_true", help="a tiny model, one repetition, no warm-up")
    parser.add_argument("--threads", type=int, help="torch threads (default: every core, as the workflow's jobs)")
    parser.add_argument("--out-dir", type=Path, default=harness.RESULTS_DIR)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)  # what SideProcess starts
    return parser.parse_args(argv)


def load_configs() -> tuple[dict, dict]:
    def load(name):
        return validate_config(
            yaml.safe_load((harness.REPO / "config" / name).read_text(encoding="utf-8")), search_dirs=[harness.REPO]
        )

    return load("config.yaml"), load("blog.yaml")


def side_settings(default: dict, blog: dict, method: str) -> dict:
    """{side: (training section, lora section)} for one method, with the bench's shared overrides."""
    ours = run_settings(default, method)
    theirs = run_settings(blog, method)
    shared = {
        "learning_rate": ours["training"]["learning_rate"],
        "max_seq_length": ours["training"]["max_seq_length"],
        "per_device_eval_batch_size": ours["training"]["per_device_eval_batch_size"],
        "logging_steps": ours["training"]["logging_steps"],
        "num_train_epochs": 1,
        "max_steps": -1,
        "report_to": [],
        # The bench compares recipes in one process; blog.yaml's full run spreads over two GPUs.
        "strategy": "single",
        "devices": 1,
    }
    blog_training = {**theirs["training"], **shared}
    ours_training = {**ours["training"], **shared}
    lora = ours.get("lora")
    return {
        "blog recipe": (blog_training, lora),
        "ours": (ours_training, lora),
        "ours + compile": ({**ours_training, "torch_compile": True}, lora),
        "ours + packing": ({**ours_training, "packing": True}, lora),
    }


def peak_memory_mb(device: str) -> tuple[float, str]:
    """This process's peak: torch's peak allocation on a GPU (reset before training), else its peak RSS."""
    if device == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20, "torch.cuda.max_memory_allocated"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "peak RSS of the process (ru_maxrss)"


class SideProcess:
    """One side's training passes, run in a process of its own, so that its peak memory is that side's alone.

    It speaks JSON lines: a pass's spec on its stdin, the result (or the error) on its stdout.
    """

    def __init__(self, workdir: Path):
        workdir.mkdir(parents=True, exist_ok=True)
        self.log = (workdir / "process.log").open("w+", encoding="utf-8")
        self.process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
        )

    def run(self, spec: dict) -> dict:
        self.process.stdin.write(json.dumps(spec) + "\n")
        self.process.stdin.flush()
        line = self.process.stdout.readline()
        if not line:
            self.log.seek(0)
            raise RuntimeError(f"the training process ended early:\n{self.log.read()[-4000:]}")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"training pass failed:\n{reply['error']}")
        return reply

    def close(self) -> None:
        self.process.stdin.close()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def serve() -> None:
    """`--serve`: run the passes SideProcess sends, one per line; libraries' prints go to stderr."""
    import datasets

    replies = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    harness.quiet_libraries()
    for line in sys.stdin:
        spec = json.loads(line)
        try:
            torch.set_num_threads(spec["threads"])
            result = train_in_this_process(
                Path(spec["model_dir"]),
                spec["method"],
                spec["training"],
                spec["lora"],
                datasets.Dataset.from_dict({"text": spec["train_texts"]}),
                datasets.Dataset.from_dict({"text": spec["eval_texts"]}),
                spec["device"],
                Path(spec["output_dir"]),
                spec["evaluate"],
            )
        except Exception:  # reported to the parent, which stops the bench with it
            result = {"error": traceback.format_exc()[-4000:]}
        replies.write(json.dumps(result) + "\n")
        replies.flush()


def train_in_this_process(
    model_dir: Path,
    method: str,
    training: dict,
    lora: dict | None,
    train_rows,
    eval_rows,
    device: str,
    output_dir: Path,
    evaluate: bool,
) -> dict:
    """One training pass as the train rule runs it (the workflow's trainer builder), without checkpoints."""
    from ftcompare.callbacks import steady_throughput
    from ftcompare.trainer_builder import TrainerSpec, build_trainer

    # The train rule's trainer for the bench's model, data and settings, fp32, seeded as the bench, no checkpoints.
    spec = TrainerSpec(model_dir, method, training, lora, SEED, device, "float32", output_dir, save_checkpoints=False)
    built = build_trainer(spec, train_rows, eval_rows)
    trainer, counter = built.trainer, built.tokens
    trainer.remove_callback(transformers.trainer_callback.PrinterCallback)  # the log rows, printed per step
    step_losses = record_step_losses(trainer)
    flops_per_token = _model_flops_per_token(trainer.model, method, trainer.train_dataset)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    peak_mb, peak_source = peak_memory_mb(device)
    steady = steady_throughput(built.timer.steps)
    last_quarter = [float(loss) for loss in step_losses[-max(1, len(step_losses) // 4) :]]
    result = {
        "steps": int(trainer.state.global_step),
        "samples": counter.samples,
        "seconds": built.timer.steps[-1][1],
        "samples_per_s": steady["samples_per_s"],
        "tokens_per_s": steady["tokens_per_s"],
        "nonpad_tokens_per_s": steady["nonpad_tokens_per_s"],
        "model_gflops_per_s": (
            flops_per_token * steady["nonpad_tokens_per_s"] / 1e9 if steady["nonpad_tokens_per_s"] else None
        ),
        "skipped_steps": steady["skipped_steps"],
        "padding_pct": 100 * (1 - counter.nonpad_tokens / counter.tokens) if counter.tokens else None,
        "peak_memory_mb": peak_mb,
        "peak_memory_source": peak_source,
        "final_train_loss": statistics.fmean(last_quarter) if last_quarter else None,
        "eval_loss": trainer.evaluate()["eval_loss"] if evaluate else None,
    }
    return result


def record_step_losses(trainer) -> list:
    """The loss of every training step, as the trainer computes it (the logs hold only window means)."""
    losses = []
    compute_loss = trainer.compute_loss

    def recording(model, inputs, return_outputs=False, num_items_in_batch=None):
        output = compute_loss(model, inputs, return_outputs=return_outputs, num_items_in_batch=num_items_in_batch)
        if model.training:
            losses.append((output[0] if return_outputs else output).detach())
        return output

    trainer.compute_loss = recording
    return losses


def _model_flops_per_token(model, method: str, dataset) -> float:
    """Model FLOPs (ftcompare.flops) per non-padding token of the training rows as the trainer holds them."""
    from ftcompare.flops import shape_of, training_flops

    if "seq_lengths" in dataset.column_names:
        lengths = [n for row in dataset["seq_lengths"] for n in row]
    else:
        lengths = [len(ids) for ids in dataset["input_ids"]]
    return training_flops(shape_of(model), lengths, method) / sum(lengths)


def build_random_llama(spec: dict, tokenizer_dir: Path, out_dir: Path) -> Path:
    """A Llama of this shape with seeded random weights and the given tokenizer, saved like a hub model."""
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(tokenizer_dir))
    torch.manual_seed(SEED)
    config = transformers.LlamaConfig(
        vocab_size=len(tokenizer),
        tie_word_embeddings=False,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **spec,
    )
    transformers.LlamaForCausalLM(config).save_pretrained(str(out_dir))
    tokenizer.save_pretrained(str(out_dir))
    return out_dir


def quick_study(workdir: Path) -> tuple[Path, list[str], list[str]]:
    """A tiny model and a few dozen rows of the embedded data, made in seconds (for --quick)."""
    from ftcompare.embedded_data import build_embedded_texts
    from ftcompare.embedded_model import train_tokenizer

    texts = build_embedded_texts(48, SEED)
    tokenizer_dir = workdir / "tokenizer"
    train_tokenizer(texts, 400).save_pretrained(str(tokenizer_dir))
    model_dir = build_random_llama(TINY_LLAMA, tokenizer_dir, workdir / "tiny")
    return model_dir, texts[:40], texts[40:]


def study_data(study: Path) -> tuple[Path, list[str], list[str]]:
    import datasets

    results = study / "results"
    train = datasets.Dataset.from_parquet(str(results / "data" / "train.parquet"))["text"]
    held_out = datasets.Dataset.from_parquet(str(results / "data" / "eval.parquet"))["text"]
    return results / "models" / "base", list(train), list(held_out)


def compare(
    model_name: str,
    model_dir: Path,
    method: str,
    sides: dict,
    train_texts,
    eval_texts,
    device: str,
    repetitions: int,
    warmup: int,
    workdir: Path,
    processes: dict | None = None,
) -> dict:
    """One model and method, every side; in `processes` (one per side) if given, else in processes of its own."""
    own = processes is None
    if own:
        processes = {side: SideProcess(workdir / f"side-{index}") for index, side in enumerate(sides)}

    first_pass_seconds = {}

    def run(side):
        training, lora = sides[side]

        def once(repetition):
            # The losses do not change between repetitions (same seed, same data): evaluate once.
            result = processes[side].run(
                {
                    "model_dir": str(model_dir),
                    "method": method,
                    "training": training,
                    "lora": lora,
                    "train_texts": train_texts,
                    "eval_texts": eval_texts,
                    "device": device,
                    "evaluate": repetition == 0,
                    "output_dir": str(workdir / "trainer"),
                    "threads": torch.get_num_threads(),
                }
            )
            # The side's first pass pays one-off costs (torch.compile's compilation) that later passes in the
            # same process do not: keep it apart, so the cost shows beside the steady rate.
            first_pass_seconds.setdefault(side, result["seconds"])
            return result

        return once

    try:
        measured = harness.alternate({side: run(side) for side in sides}, repetitions, warmup)
    finally:
        if own:
            for process in processes.values():
                process.close()
    summary = {}
    for side, reps in measured.items():
        summary[side] = {
            key: harness.summarise([r[key] for r in reps])
            for key in (
                "samples_per_s",
                "tokens_per_s",
                "nonpad_tokens_per_s",
                "model_gflops_per_s",
                "peak_memory_mb",
                "seconds",
            )
        }
        first = reps[0]
        summary[side].update(
            {
                "steps": first["steps"],
                "samples": first["samples"],
                "padding_pct": first["padding_pct"],
                "final_train_loss": first["final_train_loss"],
                "eval_loss": first["eval_loss"],
                "peak_memory_source": first["peak_memory_source"],
                "skipped_steps": first["skipped_steps"],
                "first_pass_seconds": first_pass_seconds.get(side),
            }
        )
    ratios = {}
    for side in sides:
        if side == "blog recipe":
            continue
        ratios[side] = {
            key: harness.ratio(summary[side][key], summary["blog recipe"][key])
            for key in ("samples_per_s", "tokens_per_s", "nonpad_tokens_per_s")
        }
        ratios[side]["final_train_loss_change"] = _difference(
            summary[side]["final_train_loss"], summary["blog recipe"]["final_train_loss"]
        )
        ratios[side]["eval_loss_change"] = _difference(summary[side]["eval_loss"], summary["blog recipe"]["eval_loss"])
    return {
        "model": model_name,
        "method": method,
        "repetitions": measured,
        "summary": summary,
        "ratios": ratios,
        "settings": {side: {"training": training, "lora": lora} for side, (training, lora) in sides.items()},
    }


def _difference(mine, theirs):
    return None if mine is None or theirs is None else mine - theirs


def print_comparison(case: dict) -> None:
    print(
        f"\ntraining, {case['model']} model, {case['method']}: median (min-max) over "
        f"{len(next(iter(case['repetitions'].values())))} repetition(s)"
    )
    rows = []
    for side, s in case["summary"].items():
        rows.append(
            [
                side,
                s["steps"],
                s["samples"],
                harness.figure(s["samples_per_s"], 2),
                harness.figure(s["tokens_per_s"], 0),
                harness.figure(s["nonpad_tokens_per_s"], 0),
                f"{s['padding_pct']:.1f}",
                harness.figure(s["model_gflops_per_s"], 1),
                harness.figure(s["peak_memory_mb"], 0),
                f"{s['first_pass_seconds']:.1f}",
                harness.figure(s["seconds"], 1),
                _loss(s["final_train_loss"]),
                _loss(s["eval_loss"]),
            ]
        )
    print(
        harness.table(
            [
                "side",
                "steps",
                "samples",
                "samples/s",
                "tokens/s",
                "non-pad tok/s",
                "pad %",
                "model GFLOP/s",
                "peak MiB",
                "1st pass s",
                "pass s",
                "final loss",
                "eval loss",
            ],
            rows,
        )
    )
    for side, r in case["ratios"].items():
        print(
            f"  {side} / blog recipe: samples/s x{_x(r['samples_per_s'])}, tokens/s x{_x(r['tokens_per_s'])}, "
            f"non-pad tokens/s x{_x(r['nonpad_tokens_per_s'])}; final loss {_signed(r['final_train_loss_change'])}, "
            f"eval loss {_signed(r['eval_loss_change'])}"
        )


def _loss(value):
    return "n/a" if value is None else f"{value:.4f}"


def _x(value):
    return "n/a" if value is None else f"{value:.2f}"


def _signed(value):
    return "n/a" if value is None else f"{value:+.4f}"


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.serve:
        serve()
        return {}
    from ftcompare.devices import resolve_device

    device = resolve_device("auto")
    # As the train rule: every core, unless --threads. --quick takes one, so that a busy machine cannot stall it.
    torch.set_num_threads(1 if args.quick else args.threads or os.cpu_count() or 1)
    harness.quiet_libraries()
    default, blog = load_configs()
    methods = [m for m in args.methods.split(",") if m]
    repetitions, warmup = (1, 0) if args.quick else (args.repetitions, 1)
    matmul_gflops = harness.matmul_gflops(device)
    print(
        f"this machine's fp32 matrix-product rate ({device}, {torch.get_num_threads()} threads, 512x512x512): "
        f"{matmul_gflops:.0f} GFLOP/s, the ceiling for the model GFLOP/s below"
    )
    cases = []
    with tempfile.TemporaryDirectory(prefix="training-bench-") as tmp:
        tmp = Path(tmp)
        if args.quick:
            model_dir, train_texts, eval_texts = quick_study(tmp)
            models = {"tiny": (model_dir, args.samples or 16)}
        else:
            study = args.study or harness.REPO / "results" / "bench" / "study"
            base_dir, train_texts, eval_texts = study_data(study)
            models = {}
            for name in [m for m in args.models.split(",") if m]:
                if name == "embedded":
                    models[name] = (base_dir, args.samples or 400)
                elif name == "cpu-large":
                    models[name] = (
                        build_random_llama(LARGER_CPU_LLAMA, base_dir, tmp / "cpu-large"),
                        args.samples or 200,
                    )
                else:
                    raise SystemExit(f"--models: unknown model {name!r} (embedded, cpu-large)")
        # --quick: one process per side for everything (its memory figures then mix methods; it measures nothing).
        shared = {side: SideProcess(tmp / f"side-{index}") for index, side in enumerate(SIDES)} if args.quick else None
        try:
            for model_name, (model_dir, samples) in models.items():
                for method in methods:
                    sides = side_settings(default, blog, method)
                    if args.only_default:
                        for side in OPTIONAL_SIDES:
                            sides.pop(side)
                    case = compare(
                        model_name,
                        model_dir,
                        method,
                        sides,
                        train_texts[:samples],
                        eval_texts,
                        device,
                        repetitions,
                        warmup,
                        tmp,
                        processes=shared,
                    )
                    case["samples_per_repetition"] = samples
                    print_comparison(case)
                    cases.append(case)
        finally:
            for process in (shared or {}).values():
                process.close()
    result = {
        "benchmark": "training: the blog's recipe vs the workflow's default path",
        "fp32_matmul_gflops": matmul_gflops,
        "settings": {
            "quick": args.quick,
            "repetitions": repetitions,
            "warmup": warmup,
            "device": device,
            "larger_cpu_llama": LARGER_CPU_LLAMA,
            "seed": SEED,
        },
        "method": __doc__,
        "cases": cases,
    }
    path = harness.write_result("training_speed", result, args.out_dir)
    print(f"written to {path}")
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
