"""What each model wrote: the base model's answer to every prompt beside each run's, and a
summary of generation time and memory per model."""

from dataclasses import dataclass

from ftcompare.report.inputs import Generation, ModelGenerations
from ftcompare.report.numbers import ratio
from ftcompare.report.table import Cell, Column, Table

FOLD_CHARACTERS = 600
FOLD_LINES = 10
PREVIEW_CHARACTERS = 240


@dataclass(frozen=True)
class Answer:
    model: str
    text: str | None  # None: this model has no answer to the prompt
    new_tokens: int | None
    seconds: float | None
    folded: bool
    preview: str


@dataclass(frozen=True)
class PromptComparison:
    prompt_id: str
    prompt: str
    formatted_prompt: str
    answers: list[Answer]


def prompt_comparisons(models: list[ModelGenerations]) -> list[PromptComparison]:
    """One entry per prompt, in the order prompts first appear; answers in model order."""
    by_model = [{g.prompt_id: g for g in model.generations} for model in models]
    prompts: dict[str, Generation] = {}
    for model in models:
        for generation in model.generations:
            prompts.setdefault(generation.prompt_id, generation)
    comparisons = []
    for prompt_id, first in prompts.items():
        answers = [_answer(model.label, answers.get(prompt_id)) for model, answers in zip(models, by_model)]
        comparisons.append(PromptComparison(prompt_id, first.prompt, first.formatted_prompt, answers))
    return comparisons


def generation_summary_table(models: list[ModelGenerations]) -> Table:
    columns = [
        Column("model", "Model"),
        Column("prompts", "Prompts", "count", decimals=0),
        Column("new_tokens", "New tokens", "count", decimals=0),
        Column("generation_s", "Generation time", "s", decimals=2),
        Column("tokens_per_s", "Throughput", "tokens/s", decimals=1),
        Column("peak_memory_mb", "Peak memory, device-wide", "MB", decimals=0, with_source=True),
    ]
    rows = []
    for model in models:
        tokens = [g.new_tokens for g in model.generations if g.new_tokens is not None]
        seconds = [g.seconds for g in model.generations if g.seconds is not None]
        total_tokens = sum(tokens) if tokens else None
        total_seconds = sum(seconds) if seconds else None
        memory = model.telemetry.peak("vram_used_mb")
        kind = "VRAM used"
        if memory is None:
            memory, kind = model.telemetry.peak("rss_mb"), "process RSS"
        source = f"{kind} ({model.telemetry.peak_origin(memory)})" if memory else None
        rows.append(
            [
                Cell(model.label),
                Cell(len(model.generations)),
                Cell(total_tokens),
                Cell(total_seconds),
                Cell(ratio(total_tokens, total_seconds)),
                Cell(memory.value if memory else None, source),
            ]
        )
    notes = [
        "Generation time is the sum of the per-prompt times the generation job measured; "
        "throughput is new tokens over that time. Peak memory: the generation job's telemetry."
    ]
    notes += [
        f"{model.model} is {model.picked_run}: of its method's sweep points, the run with the lowest held-out loss."
        for model in models
        if model.picked_run
    ]
    return Table(columns=columns, rows=rows, notes=notes)


def _answer(model: str, generation: Generation | None) -> Answer:
    if generation is None:
        return Answer(model, None, None, None, False, "")
    text = generation.output
    folded = len(text) > FOLD_CHARACTERS or text.count("\n") >= FOLD_LINES
    return Answer(model, text, generation.new_tokens, generation.seconds, folded, _preview(text) if folded else text)


def _preview(text: str) -> str:
    head = " ".join(text[: PREVIEW_CHARACTERS + 1].split())
    if len(head) > PREVIEW_CHARACTERS:
        head = head[:PREVIEW_CHARACTERS].rsplit(" ", 1)[0]
    return head + " …"
