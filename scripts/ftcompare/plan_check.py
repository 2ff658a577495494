"""The train job's check against the plan, before the model is loaded: a run the plan says cannot fit the
job's device stops with what would make it fit, unless plan.try_anyway."""

import logging
from dataclasses import dataclass

from ftcompare.errors import FtcompareError
from ftcompare.plan import GIB, run_plan, settings_hash, verdict

log = logging.getLogger("ftcompare.plan_check")
# How many of the changes that would not be enough alone a refusal still names.
HELPFUL_SHOWN = 3


@dataclass(frozen=True)
class Available:
    bytes: int
    name: str  # what the figure is: the GPU's name, or the config key


def available_memory(device: str, document: dict) -> Available | None:
    """The memory of the job's device: the GPU's own (torch), else plan.device_memory_gb, else None."""
    if device == "cuda":
        import torch

        properties = torch.cuda.get_device_properties(0)
        return Available(int(properties.total_memory), f"{properties.name} (cuda:0)")
    configured = document.get("device_memory_gb")
    if configured:
        return Available(int(configured * GIB), f"plan.device_memory_gb = {configured:g} (no GPU in this job)")
    return None


def check_plan(document: dict, settings: dict, available: Available | None) -> str:
    """Raise FtcompareError if the plan says the run cannot fit `available`; else return a line for the log."""
    run = settings["run"]
    plan = run_plan(document, run)
    if plan["settings_hash"] != settings_hash(settings):
        raise FtcompareError(
            f"run {run}: results/plan/plan.json was planned for other settings of this run; "
            "rerun the plan first (snakemake --forcerun plan)"
        )
    need, pageable = plan["per_device_bytes"], plan["pageable_bytes"]
    if available is None:
        return f"run {run}: plan {_gb(need)} per device; no device memory known here, nothing checked"
    outcome = verdict(need, pageable, available.bytes)
    if outcome == "unknown":
        return f"run {run}: the plan has no figure for this run ({plan.get('why') or 'an optimizer of unknown size'})"
    against = f"{_gb(need)} planned per device, {_gb(available.bytes)} on {available.name}"
    if outcome == "fits":
        return f"run {run}: fits ({against})"
    if outcome == "tight":
        return f"run {run}: tight, within the device but above {document['usable_fraction']:.0%} of it ({against})"
    if outcome == "paged":
        return (
            f"run {run}: fits only with {_gb(pageable)} of paged optimizer states moved to host memory, which "
            f"is slow ({against})"
        )
    message = refusal(run, plan, available)
    if document.get("try_anyway"):
        log.warning("%s", message.replace("Or set plan.try_anyway: true to try anyway.", "").strip())
        return f"run {run}: does not fit ({against}); plan.try_anyway is set, so trying anyway"
    raise FtcompareError(message)


def refusal(run: str, plan: dict, available: Available) -> str:
    """Why the run stops, and the changes that would make it fit (or help most), each with its figure."""
    parts = plan["bytes"]
    breakdown = ", ".join(
        f"{label} {_gb(parts[key])}"
        for key, label in (
            ("weights", "weights"),
            ("gradients", "gradients"),
            ("optimizer_states", "optimizer states"),
            ("autocast_copies", "autocast copies"),
            ("activations", "activations"),
        )
        if parts.get(key)
    )
    fitting, helping = [], []
    for option in plan["alternatives"]:
        outcome = verdict(option["per_device_bytes"], option["pageable_bytes"], available.bytes)
        text = f"{option['change']} ({_gb(option['per_device_bytes'])} per device)"
        if outcome in ("fits", "tight"):
            # FSDP is offered over 2, 4 and 8 GPUs: the fewest that fit is the one to name.
            if not (option["change"].startswith("FSDP") and any(t.startswith("FSDP") for t in fitting)):
                fitting.append(text)
        else:
            helping.append((option["per_device_bytes"], text))
    helping = [text for _, text in sorted(helping)[:HELPFUL_SHOWN]]
    advice = (
        f"What would make it fit: {'; '.join(fitting)}."
        if fitting
        else f"Nothing the plan tried fits alone; these help most: {'; '.join(helping)}."
    )
    return (
        f"run {run}: the plan needs {_gb(plan['per_device_bytes'])} per device ({breakdown}), more than the "
        f"{_gb(available.bytes)} of {available.name}; stopped before loading the model. {advice} "
        "Or set plan.try_anyway: true to try anyway. The whole plan: results/plan/plan.json (docs/plan.md)."
    )


def _gb(value) -> str:
    if value is None:
        return "unknown"
    return f"{value / GIB:.1f} GB" if value >= GIB else f"{value / 2**20:.1f} MB"
