"""One sentence per run saying whether training moved its losses below the base model's eval
loss before training, and one saying what it cost against the full fine-tune."""

from dataclasses import dataclass

from ftcompare.report import costs
from ftcompare.report.inputs import RunResult
from ftcompare.report.numbers import format_number, ratio


@dataclass(frozen=True)
class Verdict:
    run: str
    final_below_base: bool | None
    eval_below_base: bool | None
    sentence: str
    cost_sentence: str | None


def run_verdict(run: RunResult, full: RunResult | None) -> Verdict:
    m = run.metrics
    base = m.eval_loss_before_training
    final_below = None if base is None or m.final_train_loss is None else m.final_train_loss < base
    eval_below = None if base is None or m.eval_loss is None else m.eval_loss < base
    return Verdict(
        run.name, final_below, eval_below, _loss_sentence(run, final_below, eval_below), _cost_sentence(run, full)
    )


def _loss_sentence(run: RunResult, final_below: bool | None, eval_below: bool | None) -> str:
    m = run.metrics
    base = m.eval_loss_before_training
    if base is None:
        return (
            f"{run.name}: cannot say whether training helped: the base model's eval loss before "
            f"training was not recorded."
        )
    final = f"final training loss {_loss(m.final_train_loss)}"
    held_out = f"held-out eval loss {_loss(m.eval_loss)}"
    base_model = "the 4-bit base model's" if run.method == "qlora" else "the base model's"
    against = f"{base_model} eval loss before training ({_loss(base)})"
    if final_below is None and eval_below is None:
        return f"{run.name}: no final training loss or eval loss was recorded to compare with {against}."
    if final_below is None:
        return (
            f"{run.name}: {held_out} is {'below' if eval_below else 'not below'} {against}; "
            f"no final training loss was recorded."
        )
    if eval_below is None:
        return f"{run.name}: {final} is {'below' if final_below else 'not below'} {against}; no eval loss was recorded."
    if final_below and eval_below:
        return f"{run.name}: {final} and {held_out} are both below {against}."
    if not final_below and not eval_below:
        return f"{run.name}: neither its {final} nor its {held_out} is below {against}."
    below, above = (final, held_out) if final_below else (held_out, final)
    return f"{run.name}: {below} is below {against}, but its {above} is not."


def _cost_sentence(run: RunResult, full: RunResult | None) -> str | None:
    if full is None or run.name == full.name:
        return None
    parts = []
    time_ratio = ratio(run.metrics.train_runtime_s, full.metrics.train_runtime_s)
    if time_ratio is not None:
        parts.append(f"{format_number(time_ratio, 2)}× the training time")
    memory, full_memory = costs.device_memory_peak(run), costs.device_memory_peak(full)
    if memory and full_memory and memory.comparable_with(full_memory):
        parts.append(f"{format_number(ratio(memory.value, full_memory.value), 2)}× the peak device-wide memory")
    energy, full_energy = costs.energy(run), costs.energy(full)
    if energy and full_energy:
        parts.append(f"{format_number(ratio(energy.value, full_energy.value), 2)}× the energy")
    if not parts:
        return None
    listed = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    return f"Against {full.name}, {run.name} took {listed}."


def _loss(value) -> str:
    return format_number(value, 3) if value is not None else "—"
