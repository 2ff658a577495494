"""The headline table: a row for the base model and one per run, with each run's cost against
the full fine-tune."""

from ftcompare.metrics import perplexity
from ftcompare.report import costs
from ftcompare.report.inputs import RunResult
from ftcompare.report.numbers import format_number, ratio
from ftcompare.report.table import Cell, Column, Table

BASE_MODEL = "base"
# The blog's sequences per optimizer step: per-device batch 4, one process (the model spread over two GCDs), no
# gradient accumulation.
BLOG_GLOBAL_BATCH = 4
METHOD_NAMES = {"lora": "LoRA", "qlora": "QLoRA", "full": "full fine-tune"}


def headline_columns(full_name: str | None) -> list[Column]:
    against = full_name or "full"
    return [
        Column("model", "Model"),
        Column("method", "Method"),
        Column(
            "trainable_params", "Trainable parameters", "count", decimals=0, group="Trainable params", short="number"
        ),
        Column("trainable_pct", "Trainable share", "% of all", significant=3, group="Trainable params", short="share"),
        Column(
            "final_train_loss", "Final training loss", "nats/token", decimals=3, group="Training loss", short="final"
        ),
        Column("mean_train_loss", "Mean training loss", "nats/token", decimals=3, group="Training loss", short="mean"),
        Column("eval_loss", "Eval loss, held-out", "nats/token", decimals=3, group="Held-out eval", short="loss"),
        Column(
            "eval_perplexity",
            "Eval perplexity, held-out",
            "exp(loss)",
            decimals=2,
            group="Held-out eval",
            short="perplexity",
        ),
        Column("train_runtime_s", "Training runtime", "s", decimals=1, short="Runtime"),
        Column("train_samples_per_s", "Throughput", "samples/s", decimals=3, group="Throughput", short="samples"),
        Column(
            "train_tokens_per_s", "Throughput, all tokens", "tokens/s", decimals=1, group="Throughput", short="tokens"
        ),
        Column(
            "train_nonpad_tokens_per_s",
            "Throughput, non-padding",
            "tokens/s",
            decimals=1,
            group="Throughput",
            short="non-pad",
        ),
        Column(
            "peak_allocated_mb",
            "Peak memory, allocator",
            "MB",
            decimals=0,
            with_source=True,
            group="Peak memory",
            short="allocator",
        ),
        Column(
            "peak_device_memory_mb",
            "Peak memory, device-wide",
            "MB",
            decimals=0,
            with_source=True,
            group="Peak memory",
            short="device-wide",
        ),
        Column("energy_kj", "Energy", "kJ", significant=3, with_source=True),
        Column(
            "time_vs_full", f"Runtime ratio to {against}", "×", decimals=2, group=f"Ratio to {against}", short="time"
        ),
        Column(
            "memory_vs_full", f"Memory ratio to {against}", "×", decimals=2, group=f"Ratio to {against}", short="memory"
        ),
        Column(
            "energy_vs_full", f"Energy ratio to {against}", "×", decimals=2, group=f"Ratio to {against}", short="energy"
        ),
    ]


LEARNING_COLUMNS = [
    Column(
        "learning", "Learning, target sets", "nats/token", decimals=3, group="Learning, forgetting", short="learning"
    ),
    Column(
        "forgetting",
        "Forgetting, source sets",
        "nats/token",
        decimals=3,
        group="Learning, forgetting",
        short="forgetting",
    ),
]


def method_name(method: str | None) -> str | None:
    return METHOD_NAMES.get(method, method) if method else None


def base_eval_loss(runs: list[RunResult]) -> float | None:
    """The base model's held-out eval loss before training, as the first run that has it reports."""
    return next((run.metrics.eval_loss_before_training for run in _base_measured(runs)), None)


def _base_measured(runs: list[RunResult]) -> list[RunResult]:
    """The runs that measured the base model's eval loss, those that load it as it is first: a QLoRA run
    measures it in 4-bit."""
    measured = [run for run in runs if run.metrics.eval_loss_before_training is not None]
    return sorted(measured, key=lambda run: run.method == "qlora")


def headline_table(runs: list[RunResult], learning: dict | None = None) -> Table:
    """`learning` ({run: ftcompare.learning.LearningForgetting}, from the evaluate rule) adds the columns
    Learning and Forgetting (means over the target and the source sets)."""
    full = costs.full_fine_tune(runs)
    columns = headline_columns(full.name if full else None)
    if learning:
        at = [column.key for column in columns].index("eval_perplexity") + 1
        columns[at:at] = LEARNING_COLUMNS
    keys = [column.key for column in columns]
    base_loss = base_eval_loss(runs)
    base = {
        "model": Cell(BASE_MODEL),
        "eval_loss": Cell(base_loss),
        "eval_perplexity": Cell(perplexity(base_loss)),
    }
    if learning:
        base.update(learning=Cell(0.0), forgetting=Cell(0.0))
    rows = [[base.get(key, Cell()) for key in keys]]
    for run in runs:
        cells = _run_cells(run, full)
        if learning and run.name in learning:
            cells.update(
                learning=Cell(learning[run.name].mean_learning), forgetting=Cell(learning[run.name].mean_forgetting)
            )
        rows.append([cells.get(key, Cell()) for key in keys])
    notes = _notes(runs, full, base_loss)
    if learning:
        notes.append(
            "Learning: the base model's loss minus the run's, averaged over the target sets; forgetting: the "
            "run's loss minus the base model's, averaged over the source sets (section Learning and forgetting)."
        )
    return Table(columns=columns, rows=rows, notes=notes)


def _run_cells(run: RunResult, full: RunResult | None) -> dict[str, Cell]:
    m = run.metrics
    allocator, device, energy = costs.allocator_peak(run), costs.device_memory_peak(run), costs.energy(run)
    cells = {
        "model": Cell(run.name),
        "method": Cell(method_name(m.method)),
        "trainable_params": Cell(m.trainable_params),
        "trainable_pct": Cell(m.trainable_pct),
        "final_train_loss": Cell(m.final_train_loss),
        "mean_train_loss": Cell(m.mean_train_loss),
        "eval_loss": Cell(m.eval_loss),
        "eval_perplexity": Cell(m.eval_perplexity),
        "train_runtime_s": Cell(m.train_runtime_s),
        "train_samples_per_s": Cell(m.train_samples_per_s),
        "train_tokens_per_s": Cell(m.train_tokens_per_s),
        "train_nonpad_tokens_per_s": Cell(m.train_nonpad_tokens_per_s),
        "peak_allocated_mb": Cell(allocator.value, allocator.source) if allocator else Cell(),
        "peak_device_memory_mb": Cell(device.value, device.source) if device else Cell(),
        "energy_kj": Cell(energy.value / 1000.0, energy.source) if energy else Cell(),
    }
    if full is not None:
        full_device, full_energy = costs.device_memory_peak(full), costs.energy(full)
        cells["time_vs_full"] = Cell(ratio(m.train_runtime_s, full.metrics.train_runtime_s))
        if device and full_device and device.comparable_with(full_device):
            cells["memory_vs_full"] = Cell(ratio(device.value, full_device.value))
        if energy and full_energy:
            cells["energy_vs_full"] = Cell(ratio(energy.value, full_energy.value))
    return cells


def _notes(runs: list[RunResult], full: RunResult | None, base_loss: float | None) -> list[str]:
    notes = [
        "Losses are mean token cross-entropy in nats; perplexity is exp(loss). Eval figures are on the held-out split."
    ]
    if base_loss is not None:
        notes.append("Base row: the base model's eval loss on the same held-out split before training.")
    differing = {
        run.name: run.metrics.eval_loss_before_training
        for run in runs
        if run.metrics.eval_loss_before_training is not None
        and abs(run.metrics.eval_loss_before_training - base_loss) > 1e-6
    }
    if differing:
        shown = _base_measured(runs)[0].name
        listed = ", ".join(f"{name} {format_number(v, 4)}" for name, v in differing.items())
        quantized = [run.name for run in runs if run.name in differing and run.method == "qlora"]
        in_4_bit = f"{', '.join(quantized)} measured the base in 4-bit, as QLoRA trains it"
        if len(quantized) == len(differing):
            why = f"because {in_4_bit}"
        else:
            why = "for example because their max_seq_length differs" + (f", or because {in_4_bit}" if quantized else "")
        notes.append(f"The runs measured different base eval losses (shown: {shown}'s; also {listed}), {why}.")
    skipped = {
        run.name: run.metrics.throughput_skipped_steps
        for run in runs
        if run.metrics.throughput_skipped_steps is not None
    }
    if len(set(skipped.values())) == 1:
        steps = next(iter(skipped.values()))
        excluded = f"the first {steps} training step{'s' if steps != 1 else ''}"
    else:
        excluded = "the first steps (" + ", ".join(f"{name} {steps}" for name, steps in skipped.items()) + ")"
    if skipped:
        notes.append(
            f"Throughput in tokens/s excludes {excluded}, which pay one-off costs. Samples/s is the trainer's "
            f"figure over the whole training loop (train_samples_per_second, the figure the blog "
            f"reports); runtime is that loop too."
        )
    compiled = [run.name for run in runs if run.metrics.options.get("torch_compile") is True]
    if compiled:
        notes.append(
            f"Run{'s' if len(compiled) > 1 else ''} {', '.join(compiled)} trained under torch.compile: "
            f"runtime includes the compilation during the first steps (tens of seconds on a CPU, "
            f"less when inductor's cache already holds the kernels); tokens/s leaves it out."
        )
    other_batch = {
        run.name: run.metrics.global_batch_size
        for run in runs
        if run.metrics.global_batch_size not in (None, BLOG_GLOBAL_BATCH)
    }
    if other_batch:
        listed = ", ".join(f"{name} {batch}" for name, batch in other_batch.items())
        notes.append(
            f"Global batch differs from the blog's {BLOG_GLOBAL_BATCH} (sequences per optimizer step: per-device "
            f"batch x processes x gradient accumulation): {listed}. Steps per epoch, and what a learning rate "
            f"does, change with it; compare those runs' losses with the blog's with care."
        )
    notes.append(
        "Peak memory, allocator: torch.cuda.max_memory_allocated since the start of training. "
        "Device-wide: the highest VRAM used on the device as the vendor library reports it "
        "(amdsmi or NVML), which includes other processes and the allocator's cache; on a CPU "
        "run the process's resident memory (RSS). A letter by each figure points to its source."
    )
    if full is not None:
        notes.append(
            f"Ratios are against run {full.name} (full fine-tune): below 1 means less than it. "
            f"The memory ratio compares device-wide peaks."
        )
    else:
        notes.append("No run is a full fine-tune, so there are no ratios against one.")
    return notes
