"""FSDP2 on a CPU, two gloo processes: `torchrun --nproc-per-node 2 tests/helpers/fsdp_cpu.py <folder>`.

A tiny Llama sharded with torch's own fully_shard (one unit per decoder layer, as accelerate's
TRANSFORMER_BASED_WRAP), one optimizer step on the same batch in every rank, beside an unsharded copy
that takes the same step. Rank 0 writes <folder>/result.json: how the parameters were sharded, how far
the gathered weights (ftcompare.parallel.full_state_dict, what the fsdp strategy saves as the model) lie
from the unsharded copy's, and how far a sharded checkpoint saved as accelerate saves one
(checkpoint-1/pytorch_model_fsdp_0, torch.distributed.checkpoint) lies from it once consolidated.
"""

import copy
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_model_state_dict
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.fsdp import fully_shard

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for helpers
from ftcompare.parallel import full_state_dict  # noqa: E402
from helpers.tiny_llama import tiny_llama  # noqa: E402


def one_step(model, batch) -> None:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model(input_ids=batch, labels=batch).loss.backward()
    optimizer.step()


def largest_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys(), sorted(set(a) ^ set(b))
    return max((a[key].float() - b[key].float()).abs().max().item() for key in a)


def main(folder: Path) -> None:
    dist.init_process_group("gloo")
    rank, world = dist.get_rank(), dist.get_world_size()
    model = tiny_llama(hidden_size=32, num_hidden_layers=2, seed=3)
    reference = copy.deepcopy(model)
    batch = torch.randint(4, 40, (4, 12), generator=torch.Generator().manual_seed(7))

    mesh = init_device_mesh("cpu", (world,))
    for layer in model.model.layers:
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    weight = model.model.layers[0].mlp.up_proj.weight
    sharded = type(weight).__name__ == "DTensor" and weight.to_local().shape[0] * world == weight.shape[0]

    one_step(model, batch)
    one_step(reference, batch)
    gathered = full_state_dict(model)  # every rank takes part; rank 0 gets the weights

    checkpoint = folder / "checkpoint-1" / "pytorch_model_fsdp_0"
    dcp.save({"model": get_model_state_dict(model)}, storage_writer=dcp.FileSystemWriter(str(checkpoint)))
    dist.barrier()
    if rank == 0:
        from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

        dcp_to_torch_save(str(checkpoint), str(folder / "consolidated.pt"))
        consolidated = torch.load(folder / "consolidated.pt", weights_only=True)["model"]
        expected = reference.state_dict()
        result = {
            "world": world,
            "sharded": sharded,
            "gathered_vs_unsharded": largest_difference(gathered, expected),
            "consolidated_vs_unsharded": largest_difference(consolidated, expected),
            "moved": largest_difference(expected, tiny_llama(hidden_size=32, num_hidden_layers=2, seed=3).state_dict()),
        }
        (folder / "result.json").write_text(json.dumps(result), encoding="utf-8")
    dist.destroy_process_group()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
