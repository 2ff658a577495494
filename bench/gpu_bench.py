"""GPU: the blog's recipe against the workflow's fast path on a Llama-2-7b-shaped model, tokens/s and MFU.

A Llama-2-7b-shaped model is built from its config with random weights on the GPU (nothing is
downloaded), then fine-tuned for a few steps on random token rows of --seq-len tokens, batch 4,
LoRA (the blog's LoraConfig, from config/blog.yaml) and full, each way:

  blog recipe: fp32 weights and compute, paged AdamW 32-bit (bitsandbytes; plain AdamW where it is
               not installed, and the result says so), max_grad_norm 0.3, sdpa attention.
  ours:        fp32 master weights under bf16 autocast, fused AdamW, sdpa attention: what
               config/config.yaml turns on (bf16: auto, optim: adamw_torch_fused). With every row
               --seq-len tokens long, packing changes nothing here.
  ours + compile: ours under torch.compile (inductor), which config/config.yaml leaves off
               (`torch_compile`); the warm-up steps pay the compilation, `warmup_s` says how long.

If a side runs out of GPU memory it is run again with gradient checkpointing, and the result says
so. Per side: tokens/s, model TFLOP/s and MFU (ftcompare.flops: 6·N per token for full, 4·N plus
6 per adapter weight for LoRA, plus attention; against --peak-tflops, 989 for an H200's dense bf16,
for both sides), peak memory (torch.cuda.max_memory_allocated) and the loss of the last step.

It needs torch, transformers, peft, pyyaml and jsonschema (the config check; no TRL or datasets).
From the repository root:

    python3 bench/gpu_bench.py --out "$OUT"          # a few minutes on an H200 (not yet run there)
    python3 bench/gpu_bench.py --tiny --out /tmp/x   # a tiny model on any device: checks the script runs
"""

import argparse
import gc
import json
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the model is built from its config: nothing to fetch

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

from ftcompare.adapters import add_adapter  # noqa: E402
from ftcompare.flops import H200_PEAK_BF16_FLOPS, mfu, shape_of, training_flops  # noqa: E402

LLAMA_2_7B = {
    "vocab_size": 32000,
    "hidden_size": 4096,
    "intermediate_size": 11008,
    "num_hidden_layers": 32,
    "num_attention_heads": 32,
    "num_key_value_heads": 32,
    "max_position_embeddings": 4096,
    "rms_norm_eps": 1e-5,
    "tie_word_embeddings": False,
}
TINY_LLAMA = {
    "vocab_size": 256,
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 128,
    "tie_word_embeddings": False,
}
SIDES = ("blog recipe", "ours", "ours + compile")


def parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu_bench.json")
    parser.add_argument("--methods", default="lora,full")
    parser.add_argument("--sides", default=",".join(SIDES), help=f"comma-separated, of: {', '.join(SIDES)}")
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--warmup", type=int, default=3, help="steps before timing (default 3)")
    parser.add_argument("--steps", type=int, default=10, help="timed steps per side (default 10)")
    parser.add_argument("--peak-tflops", type=float, default=H200_PEAK_BF16_FLOPS / 1e12)
    parser.add_argument("--tiny", action="store_true", help="a tiny model, seq 32, batch 2, 1+1 steps")
    return parser.parse_args(argv)


def blog_settings() -> dict:
    """The blog's TrainingArguments and LoraConfig, as config/blog.yaml records them (schema defaults filled in)."""
    from ftcompare.config import run_settings, validate_config

    blog = validate_config(yaml.safe_load((REPO / "config" / "blog.yaml").read_text(encoding="utf-8")), [REPO])
    return {
        "training": blog["training"],
        "lora": run_settings(blog, "lora")["lora"],
        "learning_rate": {name: run["training"]["learning_rate"] for name, run in blog["runs"].items()},
    }


def recipe(side: str, device: torch.device) -> dict:
    """What one side runs with: autocast dtype (None = fp32) and the optimizer."""
    if side == "blog recipe":
        return {
            "autocast": None,
            "optimizer": "paged_adamw_32bit" if _has_bitsandbytes(device) else "adamw_torch",
            "compile": False,
        }
    bf16 = device.type == "cpu" or torch.cuda.is_bf16_supported()
    return {
        "autocast": torch.bfloat16 if bf16 else None,
        "optimizer": "adamw_torch_fused",
        "compile": side == "ours + compile",
    }


def _has_bitsandbytes(device) -> bool:
    if device.type != "cuda":
        return False
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        return False
    return True


def make_optimizer(name: str, parameters, learning_rate: float, weight_decay: float):
    parameters = [p for p in parameters if p.requires_grad]
    if name == "paged_adamw_32bit":
        import bitsandbytes

        return bitsandbytes.optim.PagedAdamW32bit(parameters, lr=learning_rate, weight_decay=weight_decay)
    return torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=weight_decay, fused=name == "adamw_torch_fused")


def random_batches(count: int, batch: int, seq_len: int, vocab: int, device) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    return [torch.randint(3, vocab, (batch, seq_len), generator=generator).to(device) for _ in range(count)]


def train_side(
    model, method: str, side: str, settings: dict, batches, warmup: int, device, peak_flops: float, checkpointing: bool
) -> dict:
    if checkpointing:
        model.gradient_checkpointing_enable()
    try:
        return _train_steps(model, method, side, settings, batches, warmup, device, peak_flops, checkpointing)
    finally:
        if checkpointing:
            model.gradient_checkpointing_disable()


def _train_steps(model, method, side, settings, batches, warmup, device, peak_flops, checkpointing) -> dict:
    chosen = recipe(side, device)
    training = settings["training"]
    optimizer = make_optimizer(
        chosen["optimizer"], model.parameters(), settings["learning_rate"][method], training["weight_decay"]
    )
    shape = shape_of(model)
    batch, seq_len = batches[0].shape
    step_flops = training_flops(shape, [seq_len] * batch, method)
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    forward = torch.compile(model) if chosen["compile"] else model
    times, loss, began = [], None, time.perf_counter()
    warmup_s = 0.0
    for index, input_ids in enumerate(batches):
        started = time.perf_counter()
        with torch.autocast(device.type, dtype=chosen["autocast"], enabled=chosen["autocast"] is not None):
            loss = forward(input_ids=input_ids, labels=input_ids, use_cache=False).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], training["max_grad_norm"])
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if index >= warmup:
            times.append(time.perf_counter() - started)
        elif index == warmup - 1:
            warmup_s = time.perf_counter() - began
    step_s = sorted(times)[len(times) // 2]
    del optimizer
    return {
        "autocast": "bf16" if chosen["autocast"] is torch.bfloat16 else "fp32",
        "optimizer": chosen["optimizer"],
        "torch_compile": chosen["compile"],
        "warmup_s": warmup_s,
        "gradient_checkpointing": checkpointing,
        "median_step_s": step_s,
        "tokens_per_s": batch * seq_len / step_s,
        "model_tflops_per_s": step_flops / step_s / 1e12,
        "mfu_pct": 100 * mfu(step_flops / step_s, peak_flops),
        "model_flops_per_step": step_flops,
        "peak_memory_mib": torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else None,
        "last_loss": float(loss.detach()),
        "timed_steps": len(times),
    }


def run_side(model, method, side, settings, batches, warmup, device, peak_flops) -> dict:
    """One side; on running out of GPU memory, once more with gradient checkpointing, then it is recorded."""
    failures = []
    for checkpointing in (False, True):
        try:
            result = train_side(model, method, side, settings, batches, warmup, device, peak_flops, checkpointing)
        except torch.OutOfMemoryError as error:
            failures.append(str(error).splitlines()[0])
            _free(model)
            continue
        if failures:
            result["first_try"] = f"out of memory without gradient checkpointing: {failures[0]}"
        return result
    return {
        "out_of_memory": failures,
        "autocast": "bf16" if recipe(side, device)["autocast"] else "fp32",
        "optimizer": recipe(side, device)["optimizer"],
    }


def _free(model) -> None:
    model.zero_grad(set_to_none=True)
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def build_model(spec: dict, device):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(**spec, attn_implementation="sdpa", use_cache=False)
    with torch.device(device):
        return LlamaForCausalLM(config)


def main(argv=None) -> dict:
    args = parse_args(argv)

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    spec, seq_len, batch, warmup, steps = LLAMA_2_7B, args.seq_len, args.batch, args.warmup, args.steps
    if args.tiny:
        spec, seq_len, batch, warmup, steps = TINY_LLAMA, 32, 2, 1, 1
    settings = blog_settings()
    peak_flops = args.peak_tflops * 1e12
    began = time.perf_counter()
    model = build_model(spec, device)
    build_s = time.perf_counter() - began
    batches = random_batches(warmup + steps, batch, seq_len, spec["vocab_size"], device)
    results = {}
    for method in [m for m in args.methods.split(",") if m]:
        for side in [s for s in args.sides.split(",") if s]:
            if side not in SIDES:
                raise SystemExit(f"--sides: unknown side {side!r} ({', '.join(SIDES)})")
            if method == "lora":
                adapted = add_adapter(model, method, settings["lora"])
                results[f"{method}, {side}"] = run_side(
                    adapted, method, side, settings, batches, warmup, device, peak_flops
                )
                model = adapted.unload()
            else:
                model.requires_grad_(True)
                results[f"{method}, {side}"] = run_side(
                    model, method, side, settings, batches, warmup, device, peak_flops
                )
            _free(model)
            print_row(f"{method}, {side}", results[f"{method}, {side}"], flush=True)
    result = {
        "benchmark": "GPU: blog recipe vs the workflow's fast path, Llama-2-7b shape, random weights",
        "device": torch.cuda.get_device_name(0) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "model": "tiny Llama (--tiny)" if args.tiny else "Llama-2-7b shape",
        "model_spec": spec,
        "seq_len": seq_len,
        "batch": batch,
        "warmup_steps": warmup,
        "timed_steps": steps,
        "peak_tflops": args.peak_tflops,
        "model_build_s": build_s,
        "method": __doc__,
        "results": results,
        "ratios_ours_over_blog": {method: _ratio(results, method) for method in args.methods.split(",") if method},
        "ratios_ours_compile_over_blog": {
            method: _ratio(results, method, "ours + compile") for method in args.methods.split(",") if method
        },
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "gpu_bench.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    print(
        f"tokens/s ours / blog: {json.dumps(result['ratios_ours_over_blog'])}; ours + compile / blog: "
        f"{json.dumps(result['ratios_ours_compile_over_blog'])}"
    )
    print(f"written to {args.out / 'gpu_bench.json'}")
    return result


def _ratio(results: dict, method: str, side: str = "ours"):
    blog, ours = results.get(f"{method}, blog recipe", {}), results.get(f"{method}, {side}", {})
    if "tokens_per_s" not in blog or "tokens_per_s" not in ours:
        return None
    return ours["tokens_per_s"] / blog["tokens_per_s"]


def print_row(name: str, r: dict, flush: bool = False) -> None:
    if "out_of_memory" in r:
        print(
            f"{name:<26} {r['autocast']:>5} {r['optimizer']:<18} out of memory, with and without gradient "
            f"checkpointing: {r['out_of_memory'][-1]}",
            flush=flush,
        )
        return
    memory = "n/a" if r["peak_memory_mib"] is None else f"{r['peak_memory_mib']:,.0f} MiB"
    extra = " (gradient checkpointing after OOM)" if r.get("first_try") else ""
    print(
        f"{name:<26} {r['autocast']:>5} {r['optimizer']:<18} {r['tokens_per_s']:>10,.0f} tokens/s  "
        f"{r['model_tflops_per_s']:7.1f} TFLOP/s  MFU {r['mfu_pct']:5.1f} %  peak {memory}  "
        f"loss {r['last_loss']:.3f}  warm-up {r['warmup_s']:.1f} s{extra}",
        flush=flush,
    )


if __name__ == "__main__":
    main(sys.argv[1:])
