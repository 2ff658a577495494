"""Bytes of optimizer state per `training.optim`, tensor by tensor, as each optimizer allocates it.

Per trainable tensor of n elements:
- torch's AdamW family keeps exp_avg and exp_avg_sq like the parameter: 2 x n x (the parameter's bytes),
  8 bytes per parameter for fp32 weights.
- bitsandbytes' 32-bit optimizers (adamw_bnb, the paged_* 32-bit ones, lion_32bit, rmsprop_bnb) keep
  their states in fp32 whatever the parameter's dtype. Their 8-bit ones keep uint8 states plus one fp32
  absmax per block of 256 elements, for tensors of at least 4,096 elements (`min_8bit_size`); smaller
  tensors keep fp32 states (bitsandbytes/optim/optimizer.py, Optimizer8bit.init_state).
- paged_* optimizers allocate the same bytes in unified memory, which the driver may move to host
  memory under pressure (slowly): the plan counts them on the device and says they are pageable.
- torchao's low-bit AdamW (adamw_torch_8bit / _4bit): 1 byte or half a byte per state and element plus
  one fp32 scale per block of 256 / 128, for tensors of at least 4,096 elements; approximate.
- transformers' Adafactor (no first moment, as the Trainer configures it) keeps factored second
  moments in fp32: rows + columns of each matrix, the whole of each vector.
- sgd: transformers passes no momentum, so SGD keeps no state.
GaLore, APOLLO, LOMO and AdaLomo keep states whose size depends on their own projections or fuse the
update into the backward; the plan calls them unknown rather than guess.
"""

from dataclasses import dataclass

from ftcompare.meta_model import DTYPE_BYTES, ParameterInfo

BNB_BLOCK = 256
MIN_8BIT_SIZE = 4096


@dataclass(frozen=True)
class StateLayout:
    states: int  # state tensors per parameter tensor
    kind: str  # "like_param" | "fp32" | "blockwise" | "factored"
    bits: int = 32  # for blockwise: bits per element
    block: int = BNB_BLOCK
    approximate: bool = False


LIKE_PARAM_2 = StateLayout(2, "like_param")
FP32_2 = StateLayout(2, "fp32")

LAYOUTS: dict[str, StateLayout | None] = {
    "adamw_torch": LIKE_PARAM_2,
    "adamw_torch_fused": LIKE_PARAM_2,
    "adamw_torch_xla": LIKE_PARAM_2,
    "adamw_torch_npu_fused": LIKE_PARAM_2,
    "adamw_anyprecision": FP32_2,  # transformers' defaults: fp32 momentum and variance, no Kahan buffer
    "stable_adamw": LIKE_PARAM_2,
    "grokadamw": StateLayout(3, "like_param"),  # exp_avg, exp_avg_sq and the gradient's EMA
    "schedule_free_adamw": LIKE_PARAM_2,  # z and exp_avg_sq
    "schedule_free_radam": LIKE_PARAM_2,
    "schedule_free_sgd": StateLayout(1, "like_param"),  # z
    "adagrad": StateLayout(1, "like_param"),  # the sum of squares
    "rmsprop": StateLayout(1, "like_param"),  # square_avg (no momentum, not centred: the defaults)
    "sgd": StateLayout(0, "like_param"),
    "adafactor": StateLayout(1, "factored"),
    "adamw_bnb_8bit": StateLayout(2, "blockwise", bits=8),
    "adamw_8bit": StateLayout(2, "blockwise", bits=8),
    "paged_adamw_32bit": FP32_2,
    "paged_adamw_8bit": StateLayout(2, "blockwise", bits=8),
    "ademamix": StateLayout(3, "fp32"),  # two EMAs of the gradient and one of its square
    "ademamix_8bit": StateLayout(3, "blockwise", bits=8),
    "paged_ademamix_32bit": StateLayout(3, "fp32"),
    "paged_ademamix_8bit": StateLayout(3, "blockwise", bits=8),
    "lion_32bit": StateLayout(1, "fp32"),
    "lion_8bit": StateLayout(1, "blockwise", bits=8),
    "paged_lion_32bit": StateLayout(1, "fp32"),
    "paged_lion_8bit": StateLayout(1, "blockwise", bits=8),
    "rmsprop_bnb": StateLayout(1, "fp32"),
    "rmsprop_bnb_32bit": StateLayout(1, "fp32"),
    "rmsprop_bnb_8bit": StateLayout(1, "blockwise", bits=8),
    "adamw_torch_8bit": StateLayout(2, "blockwise", bits=8, block=256, approximate=True),
    "adamw_torch_4bit": StateLayout(2, "blockwise", bits=4, block=128, approximate=True),
    "galore_adamw": None,
    "galore_adamw_8bit": None,
    "galore_adafactor": None,
    "galore_adamw_layerwise": None,
    "galore_adamw_8bit_layerwise": None,
    "galore_adafactor_layerwise": None,
    "apollo_adamw": None,
    "apollo_adamw_layerwise": None,
    "lomo": None,
    "adalomo": None,
}


@dataclass(frozen=True)
class OptimizerStates:
    optim: str
    bytes: int | None  # None: unknown
    pageable: bool  # paged_*: unified memory the driver may move to the host
    note: str

    @property
    def pageable_bytes(self) -> int:
        return self.bytes if self.pageable and self.bytes else 0


def optimizer_states(optim: str, parameters: list[ParameterInfo]) -> OptimizerStates:
    """The state `optim` allocates for the trainable tensors among `parameters` (after its first step)."""
    layout = LAYOUTS.get(optim)
    pageable = optim.startswith("paged_")
    if layout is None:
        why = "not in the plan's table" if optim not in LAYOUTS else "depends on its own projections or fused update"
        return OptimizerStates(optim, None, pageable, f"{optim}: state size unknown ({why})")
    total = sum(_tensor_state_bytes(layout, p) for p in parameters if p.trainable)
    note = f"{layout.states} state{'s' if layout.states != 1 else ''} per parameter, {_describe(layout)}"
    if layout.approximate:
        note += " (approximate)"
    if pageable:
        note += "; paged: the driver may move it to host memory"
    return OptimizerStates(optim, total, pageable, note)


def _tensor_state_bytes(layout: StateLayout, parameter: ParameterInfo) -> int:
    n = parameter.numel
    if layout.kind == "like_param":
        return layout.states * n * DTYPE_BYTES[parameter.dtype]
    if layout.kind == "fp32":
        return layout.states * n * 4
    if layout.kind == "factored":
        shape = parameter.shape
        if len(shape) < 2:
            return n * 4
        rows, columns = n // shape[-1], n // shape[-2]
        return (rows + columns) * 4
    if n < MIN_8BIT_SIZE:
        return layout.states * n * 4
    blocks = -(-n // layout.block)
    return layout.states * (-(-n * layout.bits // 8) + blocks * 4)


def _describe(layout: StateLayout) -> str:
    return {
        "like_param": "in the parameter's dtype",
        "fp32": "in fp32",
        "factored": "factored in fp32: rows + columns of each matrix",
        "blockwise": f"{layout.bits}-bit with an fp32 scale per {layout.block} elements",
    }[layout.kind]
