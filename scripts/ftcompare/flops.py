"""Model FLOPs of a training step and model FLOPs utilisation (MFU), by the usual accounting.

Per token, the weight matmuls cost 2 FLOPs per weight forward, 2 more for the input gradients and 2
more for the weight gradients: 6·N for full fine-tuning. LoRA freezes the base weights, so they skip
the weight gradients: 4·N for the base plus 6 per adapter parameter; QLoRA the same (dequantizing its
4-bit weights is not counted). Attention (QKᵀ and AV, which
hold no weights) costs 4·d·s per token and layer forward for a sequence of s tokens and three times
that with its backward, in either method, since the gradients flow through it to the earlier layers:
12·layers·d·s (as in PaLM, Chowdhery et al. 2022, appendix B; the causal mask's skipped half is
counted, as there). N is every weight a matmul uses: all parameters but the input embedding table,
which is a lookup (an untied LM head is a matmul and counts).
"""

from dataclasses import dataclass

from ftcompare.parameters import count_parameters

# Dense bf16 tensor-core peak (without sparsity) of an NVIDIA H200 SXM, from NVIDIA's data sheet.
H200_PEAK_BF16_FLOPS = 989e12


@dataclass(frozen=True)
class ModelShape:
    """What the FLOPs depend on: the weights in matmuls, layers and hidden size."""

    matmul_params: int  # N: all parameters but the input embedding table
    num_layers: int
    hidden_size: int
    adapter_params: int = 0  # trainable LoRA parameters (0 for full fine-tuning)


def shape_of(model) -> ModelShape:
    """The ModelShape of a transformers causal LM, or of a PEFT model wrapping one."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    embedding = base.get_input_embeddings().weight
    adapter = sum(p.numel() for name, p in model.named_parameters() if "lora_" in name)
    total = count_parameters(model).total  # a 4-bit weight's numel() is half its parameters
    config = base.config.get_text_config() if hasattr(base.config, "get_text_config") else base.config
    return ModelShape(
        matmul_params=total - adapter - embedding.numel(),
        num_layers=config.num_hidden_layers,
        hidden_size=config.hidden_size,
        adapter_params=adapter,
    )


def training_flops(shape: ModelShape, sequence_lengths, method: str) -> float:
    """Model FLOPs of one forward and backward over sequences of these lengths (packed or padded alike).

    Padding is not counted: a padded position does no useful work.
    """
    if method not in ("full", "lora", "qlora"):
        raise ValueError(f"method must be 'full', 'lora' or 'qlora', not {method!r}")
    lengths = [int(s) for s in sequence_lengths]
    return training_flops_of_counts(shape, sum(lengths), sum(s * s for s in lengths), method)


def training_flops_of_counts(shape: ModelShape, tokens: int, squared_lengths: int, method: str) -> float:
    """training_flops from what a run counts as it trains: its tokens and the sum of its sequences' squared lengths."""
    if method not in ("full", "lora", "qlora"):
        raise ValueError(f"method must be 'full', 'lora' or 'qlora', not {method!r}")
    if method == "full":
        per_token = 6 * shape.matmul_params
    else:
        per_token = 4 * shape.matmul_params + 6 * shape.adapter_params
    attention = 12 * shape.num_layers * shape.hidden_size * squared_lengths
    return float(per_token * tokens + attention)


def training_flops_per_token(shape: ModelShape, sequence_length: int, method: str) -> float:
    """Model FLOPs per token when every sequence is `sequence_length` tokens long."""
    return training_flops(shape, [sequence_length], method) / sequence_length


def mfu(flops_per_second: float, peak_flops: float) -> float:
    """Model FLOPs utilisation: achieved model FLOPs per second over the device's peak, as a fraction."""
    if peak_flops <= 0:
        raise ValueError("peak_flops must be positive")
    return flops_per_second / peak_flops
