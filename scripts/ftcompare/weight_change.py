"""What fine-tuning did to the weights: per weight matrix, the change against the base model's.

Three measures, each after a paper that compared LoRA with full fine-tuning this way:
- the Frobenius norm of the change relative to the base weight's;
- the rank that holds a given share (90%) of the change's energy, its squared singular values
  (Biderman et al., "LoRA Learns Less and Forgets Less", TMLR 2024, Sec. 5: a full fine-tune's
  change needs a rank 10-100 times LoRA's);
- intruder dimensions (Shuttleworth et al., "LoRA vs Full Fine-tuning: An Illusion of
  Equivalence", arXiv:2410.21228): top singular vectors of the tuned matrix that resemble no
  singular vector of the base matrix.
Every decomposition runs in float32 on the job's device (float64 for small matrices on the CPU).
"""

import csv
import io
import json
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors import safe_open

from ftcompare.adapters import ADAPTER_METHODS
from ftcompare.errors import FtcompareError
from ftcompare.generation import load_generation_model

# Singular values of each change kept for the spectrum figure.
SPECTRUM_VALUES = 32
# Matrices up to this many elements are decomposed in float64 on the CPU: exact and still instant.
FLOAT64_ELEMENTS = 1 << 20


@dataclass(frozen=True)
class AnalysisSettings:
    """The config's `weight_analysis` section (its schema says what each key means)."""

    k: int = 10
    epsilon: float = 0.5
    energy: float = 0.9
    modules: list[str] | None = None  # module types (q_proj, ...); None: every module analysed by default

    @classmethod
    def from_config(cls, section: dict) -> "AnalysisSettings":
        modules = section.get("modules")
        return cls(
            k=int(section["k"]),
            epsilon=float(section["epsilon"]),
            energy=float(section["energy"]),
            modules=list(modules) if modules is not None else None,
        )


@dataclass(frozen=True)
class ModuleChange:
    """One weight matrix's change: a row of results/analysis/{run}.csv."""

    module: str  # the weight's module name in the base model, e.g. model.layers.0.self_attn.q_proj
    layer: int | None  # decoder layer index; None outside the decoder layers
    module_type: str  # the module's own name: q_proj, v_proj, down_proj, ...
    rows: int
    cols: int
    base_norm: float  # ||W0||_F
    change_norm: float  # ||W1 - W0||_F
    relative_change: float  # ||W1 - W0||_F / ||W0||_F
    rank90: int  # smallest rank that holds `energy` of the change's squared singular values
    rank90_fraction: float  # rank90 / min(rows, cols)
    intruders: int  # of the tuned matrix's top-k left singular vectors
    top_k_max_cosine: list[float] = field(default_factory=list)  # each one's largest |cos| with a base vector
    change_singular_values: list[float] = field(default_factory=list)  # the change's largest, descending
    change_energy: float = 0.0  # sum of all squared singular values of the change (= change_norm ** 2)

    def csv_row(self) -> dict:
        """The scalar fields, as the CSV holds them."""
        return {
            key: getattr(self, key)
            for key in (
                "module",
                "layer",
                "module_type",
                "rows",
                "cols",
                "base_norm",
                "change_norm",
                "relative_change",
                "rank90",
                "rank90_fraction",
                "intruders",
            )
        }


CSV_COLUMNS = list(ModuleChange("", None, "", 0, 0, 0.0, 0.0, 0.0, 0, 0.0, 0).csv_row())


def _working_copy(matrix: torch.Tensor) -> torch.Tensor:
    """`matrix` in the precision its decomposition runs in: float64 when small and on the CPU, else float32."""
    if matrix.device.type == "cpu" and matrix.numel() <= FLOAT64_ELEMENTS:
        return matrix.detach().to(torch.float64)
    return matrix.detach().to(torch.float32)


def relative_change_norm(base: torch.Tensor, tuned: torch.Tensor) -> float:
    """||W1 - W0||_F / ||W0||_F (inf when the base weight is zero and the tuned one is not)."""
    base, tuned = _working_copy(base), _working_copy(tuned)
    base_norm = torch.linalg.matrix_norm(base).item()
    change_norm = torch.linalg.matrix_norm(tuned - base).item()
    if base_norm == 0.0:
        return 0.0 if change_norm == 0.0 else float("inf")
    return change_norm / base_norm


def rank_for_energy(delta: torch.Tensor, fraction: float = 0.9, singular_values: torch.Tensor | None = None) -> int:
    """The smallest r whose top-r squared singular values hold at least `fraction` of the total (0 for a zero change).

    Biderman et al. (2024) report this rank at 90% for the change a fine-tune made to a weight matrix.
    """
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    values = singular_values if singular_values is not None else torch.linalg.svdvals(_working_copy(delta))
    energy = values.to(torch.float64) ** 2
    total = energy.sum()
    if total.item() == 0.0:
        return 0
    held = torch.cumsum(energy, dim=0) / total
    # A relative tolerance: a change of exact rank r must not need r + 1 for float rounding.
    reached = torch.nonzero(held >= fraction * (1.0 - 1e-12))
    return int(reached[0].item()) + 1 if reached.numel() else int(values.numel())


def top_k_max_cosines(base: torch.Tensor, tuned: torch.Tensor, k: int = 10) -> list[float]:
    """For each of the tuned matrix's top-k left singular vectors (by singular value), its largest
    |cosine similarity| with any left singular vector of the base matrix.

    Singular vectors are unit vectors defined up to sign, so the cosine is the absolute dot product.
    """
    base, tuned = _working_copy(base), _working_copy(tuned)
    base_u, _, _ = torch.linalg.svd(base, full_matrices=False)
    tuned_u, _, _ = torch.linalg.svd(tuned, full_matrices=False)
    top = tuned_u[:, : min(k, tuned_u.shape[1])]
    cosines = (top.T @ base_u).abs()  # (k, every base singular vector)
    return [float(value) for value in cosines.max(dim=1).values]


def intruder_dimensions(base: torch.Tensor, tuned: torch.Tensor, k: int = 10, epsilon: float = 0.5) -> int:
    """How many intruder dimensions the tuned matrix has, after Shuttleworth et al. (2024), Definition 1.

    "A singular vector y_j from the fine-tuned weight matrix W_tuned is an intruder dimension if and
    only if max_i(cos(y_j, x_i)) < epsilon, where epsilon is a similarity threshold and x_i is a
    singular vector in W_0." As in the paper, y_j runs over the top k (10) left singular vectors of
    the tuned matrix, ranked by singular value, x_i over every left singular vector of the base
    matrix, and the cosine is taken in absolute value (a singular vector's sign is arbitrary); the
    paper's threshold is epsilon = 0.5. A full fine-tune rotates the base's top singular vectors only
    a little, so it has almost none; LoRA at low rank adds new, high-ranking ones.
    """
    return sum(cosine < epsilon for cosine in top_k_max_cosines(base, tuned, k))


def module_change(
    name: str, base: torch.Tensor, tuned: torch.Tensor, settings: AnalysisSettings, device: str = "cpu"
) -> ModuleChange:
    """Every measure of one weight matrix's change, computed on `device`."""
    if base.shape != tuned.shape or base.dim() != 2:
        shapes = f"base {tuple(base.shape)}, tuned {tuple(tuned.shape)}"
        raise ValueError(f"{name}: {shapes}: not two matrices of one shape")
    base = _working_copy(base.to(device))
    tuned = _working_copy(tuned.to(device))
    delta = tuned - base
    values = torch.linalg.svdvals(delta)
    base_norm = torch.linalg.matrix_norm(base).item()
    change_norm = torch.linalg.matrix_norm(delta).item()
    cosines = top_k_max_cosines(base, tuned, settings.k)
    rank90 = rank_for_energy(delta, settings.energy, singular_values=values)
    rows, cols = base.shape
    layer, module_type = module_position(name)
    return ModuleChange(
        module=name,
        layer=layer,
        module_type=module_type,
        rows=rows,
        cols=cols,
        base_norm=base_norm,
        change_norm=change_norm,
        relative_change=change_norm / base_norm if base_norm else float("nan"),
        rank90=rank90,
        rank90_fraction=rank90 / min(rows, cols),
        intruders=sum(cosine < settings.epsilon for cosine in cosines),
        top_k_max_cosine=cosines,
        change_singular_values=[float(v) for v in values[:SPECTRUM_VALUES]],
        change_energy=float((values.to(torch.float64) ** 2).sum()),
    )


def module_position(name: str) -> tuple[int | None, str]:
    """(decoder layer, module type) of a module name such as model.layers.3.self_attn.q_proj → (3, q_proj)."""
    parts = name.split(".")
    layer = None
    for index, part in enumerate(parts[:-1]):
        if part.isdigit() and index > 0 and parts[index - 1] in DECODER_LAYER_LISTS:
            layer = int(part)
    return layer, parts[-1]


# The attribute that holds the decoder layers (Llama, Mistral, Qwen, Gemma: `layers`; GPT-2 style: `h`).
DECODER_LAYER_LISTS = ("layers", "h", "blocks")


# --- The weight matrices of one run, each paired with the base model's -------------------------------------------

# Where the attention and MLP linears of a decoder layer live (Llama and most decoder-only models).
BLOCK_PARENTS = ("self_attn", "mlp")
PEFT_PREFIX = "base_model.model."


def wanted(module_type: str, module_types: list[str] | None) -> bool:
    return module_types is None or module_type in module_types


def adapted_weight_pairs(peft_model, module_types: list[str] | None = None):
    """(name, base weight, tuned weight) for each module the run's adapter adapted, the adapter merged
    by PEFT itself (LoRA, rsLoRA and DoRA alike): the base weight is read before the merge, which then
    writes a new tensor (safe_merge), so both stay as they were."""
    from peft.tuners.lora import LoraLayer  # here, not above: see ftcompare.adapters

    for peft_name, module in list(peft_model.named_modules()):
        if not isinstance(module, LoraLayer) or not hasattr(module, "base_layer"):
            continue
        name = peft_name.removeprefix(PEFT_PREFIX)
        if not wanted(module_position(name)[1], module_types):
            continue
        base_layer = module.get_base_layer()
        before = base_layer.weight.detach()
        module.merge(safe_merge=True)
        yield name, before, base_layer.weight.detach()


def block_linear_names(model, module_types: list[str] | None = None) -> list[str]:
    """Every nn.Linear in the attention and MLP blocks of the decoder layers: what a full fine-tune changed."""
    names = []
    for name, module in model.named_modules():
        parts = name.split(".")
        layer, module_type = module_position(name)
        if (
            isinstance(module, torch.nn.Linear)
            and layer is not None
            and len(parts) >= 2
            and parts[-2] in BLOCK_PARENTS
            and wanted(module_type, module_types)
        ):
            names.append(name)
    return names


class CheckpointWeights:
    """Tensors of a save_pretrained folder, read one at a time by name (safetensors, sharded or not), so the
    base of a 7B model never sits in memory whole beside the tuned one."""

    def __init__(self, folder, dtype: torch.dtype | None = None):
        self.folder, self.dtype = Path(folder), dtype
        index = self.folder / "model.safetensors.index.json"
        if index.is_file():
            weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
            self.files = {name: self.folder / file for name, file in weight_map.items()}
        elif (self.folder / "model.safetensors").is_file():
            with safe_open(self.folder / "model.safetensors", framework="pt") as handle:
                self.files = {name: self.folder / "model.safetensors" for name in handle.keys()}
        else:
            raise FtcompareError(f"{self.folder}: no model.safetensors (or its index): cannot read the base weights")

    def get(self, name: str) -> torch.Tensor:
        """The tensor `name`, in `dtype` (the dtype the run trained in) when one is given."""
        if name not in self.files:
            raise FtcompareError(f"{self.folder}: the base model has no weight {name!r} to compare the run's with")
        with safe_open(self.files[name], framework="pt") as handle:
            tensor = handle.get_tensor(name)
        return tensor.to(self.dtype) if self.dtype is not None else tensor


def full_weight_pairs(tuned_model, base_weights: CheckpointWeights, module_types: list[str] | None = None):
    """(name, base weight, tuned weight) for every attention and MLP linear of a fully fine-tuned model."""
    modules = dict(tuned_model.named_modules())
    for name in block_linear_names(tuned_model, module_types):
        tuned = modules[name].weight.detach()
        yield name, base_weights.get(f"{name}.weight").to(tuned.device), tuned


def analyse_run(
    base_model,
    run_model,
    method: str,
    settings: AnalysisSettings,
    device: str,
    dtype: str = "float32",
    quantization: dict | None = None,
    trust_remote_code: bool = False,
) -> list[ModuleChange]:
    """The change of every weight matrix the run trained (lora, qlora: the adapted modules, adapter merged;
    full: every attention and MLP linear), against the base weights it started from.

    The model is loaded in `dtype` (the dtype it trained in) as the generate rule loads it (a qlora run's
    base in 4-bit, dequantized: the weights its adapter trained against), then cast to float32 whole, so
    that a merge in bfloat16 cannot round a small change away.
    """
    model, _ = load_generation_model(
        base_model, run_model, method, False, dtype, trust_remote_code, device, quantization
    )
    model = model.float()
    if method in ADAPTER_METHODS:
        pairs = adapted_weight_pairs(model, settings.modules)
    else:
        trained_dtype = None if dtype == "auto" else getattr(torch, dtype)
        pairs = full_weight_pairs(model, CheckpointWeights(base_model, trained_dtype), settings.modules)
    changes = []
    with torch.inference_mode():
        for name, base, tuned in pairs:
            changes.append(module_change(name, base, tuned, settings, device))
    return changes


# --- What results/analysis/{run}.json and .csv hold ----------------------------------------------------------------

BASE_WEIGHTS = {
    "lora": "the base model's weights",
    "qlora": "the base model's weights in 4-bit as the run trained on them (quantization), dequantized",
    "full": "the base model's weights",
}


def analysis_summary(changes: list[ModuleChange]) -> dict:
    """Per run: the mean relative change, the median rank at the energy share and the intruders in all."""
    relative = [c.relative_change for c in changes if c.relative_change == c.relative_change]
    return {
        "modules": len(changes),
        "mean_relative_change": sum(relative) / len(relative) if relative else None,
        "median_rank90": _median([c.rank90 for c in changes]),
        "median_rank90_fraction": _median([c.rank90_fraction for c in changes]),
        "total_intruders": sum(c.intruders for c in changes),
        "modules_with_intruders": sum(c.intruders > 0 for c in changes),
    }


def analysis_document(
    run: str, method: str, settings: AnalysisSettings, changes: list[ModuleChange], device: str, seconds: float
) -> dict:
    return {
        "run": run,
        "method": method,
        "settings": asdict(settings),
        "base_weights": BASE_WEIGHTS[method],
        "precision": "float32 (float64 for matrices up to 2^20 elements on the CPU)",
        "device": device,
        "seconds": seconds,
        "summary": analysis_summary(changes),
        "modules": [asdict(change) for change in changes],
    }


def changes_csv(changes: list[ModuleChange]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for change in changes:
        writer.writerow({key: "" if value is None else value for key, value in change.csv_row().items()})
    return buffer.getvalue()


def _median(values: list[float]) -> float | None:
    return float(statistics.median(values)) if values else None
