"""How much memory a training step's activations take: what autograd keeps from the forward for the backward.

The formula follows Korthikanti et al., "Reducing Activation Recomputation in Large Transformer Models"
(MLSys 2023, arXiv:2205.05198, section 4.1), which counts, tensor by tensor, what one transformer layer
saves for its backward (34·s·b·h + 5·a·s²·b bytes for a GPT layer in 16-bit). Here the same count is done
for the Llama decoder layer as transformers 5 writes it and torch's autograd saves it (what each op keeps
is in torch/csrc/autograd/derivatives.yaml): RMSNorm instead of LayerNorm, a SwiGLU MLP of width i, rotary
embeddings, no dropout, and SDPA attention, whose fused kernels keep q, k, v, the output and one fp32
logsumexp per head and token instead of the a·s² attention probabilities (eager attention keeps those;
a padded batch's mask, made additive, adds s per token and layer).

Per token of one layer, in elements (h hidden, i intermediate, a heads, k the width of k and v: h when
transformers repeats grouped key/value heads for a masked batch, else heads_kv · head_dim):
  full fine-tune   8h + 2k + 4i + a + 2: each norm's fp32 input, normalised value and output (6h), q, the
                   attention output, k and v (2h + 2k), the MLP's gate, SiLU, up and product (4i), one
                   logsumexp per head (a) and each norm's 1/rms (2);
  LoRA             the frozen linear layers keep nothing of their input, so 4h + 2k + 3i + a + 2: the norms'
                   inputs and 1/rms, q, k, v and the output, gate, SiLU and up, the logsumexps; plus, per
                   adapted module of input width n, its dropout mask and dropped input (2n) and its rank-r
                   output (r).
The RMSNorm statistics are fp32 (transformers computes them so); matmul, attention and MLP values are in
the compute dtype: bf16/fp16 under autocast, else the weights' dtype. Under autocast every linear layer
casts (and keeps) its own copy of a shared input. The first layer of a LoRA run keeps less: its input
comes from the frozen embeddings and needs no gradient (unless gradient checkpointing asks for one).
Outside the layers: the final norm, the LM head's input and the loss: transformers' full-logits loss keeps
the fp32 log-softmax of every token over the vocabulary, and its backward needs two more buffers of that
size at once (`logits`); TRL's chunked LM head keeps the hidden state and three floats per token.

With gradient checkpointing each layer keeps only its input (h per token), and the backward recomputes
one layer at a time, which then holds one layer's activations again (`recompute`).

Checked on the CPU (tests/test_plan.py) against the bytes of every tensor a real training step saved
(torch.autograd.graph.saved_tensors_hooks, each storage counted once): within the band stated there. On a
GPU the dropout mask is a bool (1 byte) where the CPU keeps a float; that is the one device-dependent term.
torch.compile fuses ops and usually keeps less; the estimate is for eager mode. The bf16/fp16 copies of
the weights that autocast makes and the backward keeps are counted apart from the activations, by the plan
(ftcompare.plan), since they scale with the weights, not with the batch.
"""

from dataclasses import dataclass, field

from ftcompare.meta_model import AdaptedModule

ATTENTION_INPUTS = ("q_proj", "k_proj", "v_proj")
MLP_INPUTS = ("gate_proj", "up_proj")


@dataclass(frozen=True)
class ActivationShape:
    """What the estimate reads: the model's shape, the batch, and the run's options."""

    batch: int
    seq: int
    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    vocab: int
    method: str  # "full" or "lora"
    weight_bytes: int  # the base weights' dtype: 4 for fp32, 2 for bf16/fp16
    autocast_bytes: int | None = None  # 2 under bf16/fp16 autocast over fp32 weights, else None
    attention: str = "sdpa"  # "sdpa" or "eager"
    lm_head_loss: str = "chunked"  # "chunked" or "full_logits"
    gradient_checkpointing: bool = False
    padding_mask: bool = True  # batches carry an attention mask (padded rows)
    mask_bytes: int = 1  # a dropout mask element: bool on a GPU, a float (4) on the CPU
    adapted: list[AdaptedModule] = field(default_factory=list)  # the adapters of one layer


@dataclass(frozen=True)
class ActivationEstimate:
    per_layer: int  # bytes one decoder layer keeps
    first_layer: int  # the first layer (less for LoRA without checkpointing)
    outside: int  # embeddings, final norm, LM head input and loss
    saved: int  # all autograd holds at the end of the forward
    recompute: int  # with checkpointing: one layer recomputed during the backward
    logits: int  # full-logits loss: the two logits-sized buffers its backward starts with

    @property
    def total(self) -> int:
        return self.saved + self.recompute + self.logits


def estimate_activations(shape: ActivationShape) -> ActivationEstimate:
    tokens = shape.batch * shape.seq
    checkpointing = shape.gradient_checkpointing
    per_layer = round(tokens * _layer_bytes_per_token(shape, input_needs_grad=True))
    first = per_layer
    if shape.method != "full" and not checkpointing:
        first = round(tokens * _layer_bytes_per_token(shape, input_needs_grad=False))
    outside = round(tokens * _outside_bytes_per_token(shape))
    if checkpointing:
        saved = shape.layers * tokens * shape.hidden * shape.weight_bytes + outside
        recompute = per_layer
    else:
        saved = first + (shape.layers - 1) * per_layer + outside
        recompute = 0
    logits = 2 * tokens * shape.vocab * 4 if shape.lm_head_loss == "full_logits" else 0
    return ActivationEstimate(per_layer, first, outside, saved, recompute, logits)


def _layer_bytes_per_token(s: ActivationShape, input_needs_grad: bool) -> float:
    h, i, a = s.hidden, s.intermediate, s.heads
    full = s.method == "full"
    autocast = s.autocast_bytes is not None
    c = s.autocast_bytes or s.weight_bytes  # matmul, attention and MLP values
    w = s.weight_bytes
    # PEFT runs an adapter in its own dtype (fp32): under autocast its linear layers keep compute-dtype copies.
    lora_bytes = c if autocast else 4
    adapted = {m.kind: m for m in s.adapted}
    repeated = s.kv_heads < s.heads and (s.padding_mask or s.attention == "eager")
    kv = h if repeated else s.kv_heads * s.head_dim
    total = 0.0

    # input_layernorm: the fp32 input of x², 1/rms, and (trained) the normalised value before the weight.
    if input_needs_grad:
        total += 4 * h + 4
    if full:
        total += w * h
    total += _linear_inputs(s, h, ATTENTION_INPUTS, adapted, input_needs_grad, full, lora_bytes)

    attention_needs_grad = input_needs_grad or full or any(kind in adapted for kind in ATTENTION_INPUTS)
    if s.attention == "eager":
        total += c * (h + 2 * kv) + 4 * a * s.seq + (c * a * s.seq if c != 4 else 0) + c * h
    else:
        total += c * (h + 2 * kv) + c * h + 4 * a  # q, k, v, the output, one fp32 logsumexp per head
        if s.padding_mask:  # the boolean padding mask, turned into an additive one for the kernel
            total += c * s.seq
    if "o_proj" in adapted:  # the attention output is kept anyway; only a dropout copy is new
        total += _adapter_bytes(adapted["o_proj"], h, attention_needs_grad, s.mask_bytes, lora_bytes, shared=True)

    # post_attention_layernorm, then the MLP.
    total += 4 * h + 4
    if full:
        total += w * h
    total += _linear_inputs(s, h, MLP_INPUTS, adapted, True, full, lora_bytes)
    total += 3 * c * i  # gate (kept by SiLU), SiLU(gate) and up (kept by their product)
    if full:
        total += c * i  # the product, kept by down_proj
    if "down_proj" in adapted:
        total += _adapter_bytes(adapted["down_proj"], i, True, s.mask_bytes, lora_bytes, shared=full)
    return total


def _linear_inputs(
    s: ActivationShape,
    width: int,
    kinds: tuple[str, ...],
    adapted: dict,
    input_needs_grad: bool,
    full: bool,
    lora_bytes: int,
) -> float:
    """What the linear layers reading one normalised value keep of it (q/k/v, or gate/up)."""
    autocast = s.autocast_bytes is not None
    c = s.autocast_bytes or s.weight_bytes
    total = 0.0
    if full:  # each trained layer keeps its input: shared, or one autocast copy each
        total += c * width * (len(kinds) if autocast else 1)
    undropped = 0
    for kind in kinds:
        if kind in adapted:
            module = adapted[kind]
            total += _adapter_bytes(module, width, input_needs_grad, s.mask_bytes, lora_bytes, shared=True)
            undropped += module.dropout == 0
    if undropped and not full:  # adapters without dropout keep the input itself: one fp32 tensor, or copies
        total += lora_bytes * width * (1 if lora_bytes == s.weight_bytes and not autocast else undropped)
    return total


def _adapter_bytes(
    module: AdaptedModule, width: int, input_needs_grad: bool, mask_bytes: int, lora_bytes: int, shared: bool
) -> float:
    """A LoRA adapter on an input of `width`: dropout mask and dropped input (or the input itself), rank-r output."""
    total = lora_bytes * module.r
    if module.dropout > 0:
        if input_needs_grad:
            total += mask_bytes * width
        total += lora_bytes * width
    elif not shared:
        total += lora_bytes * width
    return total


def _outside_bytes_per_token(s: ActivationShape) -> float:
    h = s.hidden
    full = s.method == "full"
    c = s.autocast_bytes or s.weight_bytes
    total = 2 * s.head_dim * s.weight_bytes  # the rotary cos and sin
    if full:
        total += 8  # the token ids, kept by the embedding
        total += s.weight_bytes * h  # the final norm's normalised value
    total += 4 * h + 4  # the final norm's fp32 input and 1/rms
    if s.lm_head_loss == "full_logits":
        if full:
            total += c * h  # the LM head's input
        total += 4 * s.vocab + 8  # the fp32 log-softmax and the shifted labels
    else:
        total += s.weight_bytes * h + 8 + 4 + 4  # the hidden state, the labels, logsumexp and entropy
    return total
