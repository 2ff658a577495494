"""A run's model built on PyTorch's meta device from its config.json: every parameter's shape, dtype and
whether it trains, with no weights in memory and nothing downloaded.

The model is made the way the train job makes it (transformers' class for the config, then the run's
adapter through ftcompare.adapters), so the parameter counts are PEFT's and transformers' own.
"""

import warnings
from dataclasses import dataclass

from ftcompare.errors import FtcompareError

DTYPE_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}


@dataclass(frozen=True)
class ParameterInfo:
    name: str
    shape: tuple[int, ...]
    dtype: str  # "float32", "bfloat16", ...
    trainable: bool
    # "linear": a weight of one of the base model's linear layers, the output head excepted: what a 4-bit
    # load (bitsandbytes through transformers, which keeps lm_head as it is) quantizes; "head": the output
    # head's weight; "adapter": a LoRA parameter; "other": embeddings, norms, biases.
    role: str

    @property
    def numel(self) -> int:
        count = 1
        for size in self.shape:
            count *= size
        return count

    @property
    def bytes(self) -> int:
        return self.numel * DTYPE_BYTES[self.dtype]


@dataclass(frozen=True)
class AdaptedModule:
    """A linear layer a LoRA adapter sits on: its kind (q_proj, down_proj, ...) and widths."""

    kind: str
    in_features: int
    out_features: int
    r: int
    dropout: float


@dataclass(frozen=True)
class MetaModel:
    model_type: str
    dtype: str  # the dtype the base weights load in (base_model.dtype, `auto` resolved from the config)
    parameters: list[ParameterInfo]
    adapted: list[AdaptedModule]  # one per adapted module, every layer
    config: dict  # the config.json values the model was built from

    @property
    def total(self) -> int:
        return sum(p.numel for p in self.parameters)

    @property
    def trainable(self) -> int:
        return sum(p.numel for p in self.parameters if p.trainable)


def resolve_dtype(dtype: str, config_values: dict) -> str:
    """base_model.dtype with `auto` read as transformers reads it: the config's own dtype, else float32."""
    if dtype != "auto":
        return dtype
    own = config_values.get("dtype") or config_values.get("torch_dtype")
    return own if own in DTYPE_BYTES else "float32"


def build_meta_model(
    config_values: dict, method: str, lora: dict | None, dtype: str, trust_remote_code: bool = False
) -> MetaModel:
    """The run's model on the meta device: `config_values` (a config.json) with `method`'s adapter on it."""
    import torch
    import transformers

    from ftcompare.adapters import add_adapter

    load_dtype = resolve_dtype(dtype, config_values)
    values = dict(config_values)
    model_type = values.pop("model_type")
    try:
        config = transformers.AutoConfig.for_model(model_type, **values)
        with torch.device("meta"):
            model = transformers.AutoModelForCausalLM.from_config(
                config, dtype=getattr(torch, load_dtype), trust_remote_code=trust_remote_code
            )
    except (ValueError, KeyError) as error:
        raise FtcompareError(
            f"the plan cannot build a {model_type!r} model from its config.json ({error}); "
            "transformers does not know this architecture without the model's own code"
        ) from None
    head = model.get_output_embeddings()
    with torch.device("meta"), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # PEFT asks transformers a deprecated question
        model = add_adapter(model, method, lora)
    roles = {}
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.Linear) and "lora_" not in name:
            roles[id(module.weight)] = "head" if module is head else "linear"
    parameters = [
        ParameterInfo(
            name=name,
            shape=tuple(parameter.shape),
            dtype=str(parameter.dtype).removeprefix("torch."),
            trainable=parameter.requires_grad,
            role="adapter" if "lora_" in name else roles.get(id(parameter), "other"),
        )
        for name, parameter in model.named_parameters()
    ]
    return MetaModel(model_type, load_dtype, parameters, _adapted_modules(model), dict(config_values))


def _adapted_modules(model) -> list[AdaptedModule]:
    adapted = []
    for name, module in model.named_modules():
        lora_a = getattr(module, "lora_A", None)
        if not lora_a or "default" not in lora_a:
            continue
        dropout = module.lora_dropout["default"]
        adapted.append(
            AdaptedModule(
                kind=name.rsplit(".", 1)[-1],
                in_features=module.in_features,
                out_features=module.out_features,
                r=module.r["default"],
                dropout=float(getattr(dropout, "p", 0.0)),
            )
        )
    return adapted
