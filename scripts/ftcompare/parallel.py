"""How a run uses several devices (training.strategy, training.devices): its processes and global batch,
what the model loader and the trainer are told, and whether this machine has what the run asks for.

single: one process, one device. device_map: one process, the layers spread over the devices (the
Trainer sees `hf_device_map` and treats the model as model-parallel). ddp and fsdp: one process per
device, started by ftcompare.launch; fsdp shards the model with accelerate's FSDP2 plugin.
"""

import torch

from ftcompare.errors import FtcompareError

MULTI_PROCESS = ("ddp", "fsdp")
# accelerate's FSDP2 plugin as TrainingArguments.fsdp_config spells it.
FSDP_CONFIG = {
    "version": 2,
    "auto_wrap_policy": "TRANSFORMER_BASED_WRAP",  # one shard unit per decoder layer (the model's _no_split_modules)
    "state_dict_type": "SHARDED_STATE_DICT",  # checkpoints: each rank writes its own shard, none gathers it all
    "reshard_after_forward": True,
    "cpu_ram_efficient_loading": False,
}


def processes(training: dict) -> int:
    return training["devices"] if training["strategy"] in MULTI_PROCESS else 1


def check_devices(run: str, training: dict, device: str) -> None:
    """Refuse, before any model is loaded, a run this machine cannot place as its config asks."""
    strategy, wanted = training["strategy"], training["devices"]
    if device == "cpu":
        if strategy in ("fsdp", "device_map"):
            raise FtcompareError(
                f"run {run}: training.strategy: {strategy} needs GPUs, and this job runs on the CPU; use "
                f"strategy: ddp (gloo processes on the CPU) or single, or run where torch sees {wanted} GPUs"
            )
        return
    visible = torch.cuda.device_count()
    if strategy == "single" and visible > 1:
        # transformers would wrap the model in DataParallel over every visible GPU, which TRL refuses.
        raise FtcompareError(
            f"run {run}: training.strategy: single trains on one GPU, but torch sees {visible}; give the job "
            f"one (CUDA_VISIBLE_DEVICES or HIP_VISIBLE_DEVICES; the README's --resources gpu=N does it per job), "
            f"or set training.strategy: ddp, fsdp or device_map with training.devices"
        )
    if visible < wanted:
        raise FtcompareError(
            f"run {run}: training.strategy: {strategy} with training.devices: {wanted}, but torch sees "
            f"{visible} GPU{'s' if visible != 1 else ''}; give the job {wanted} or lower training.devices"
        )


def model_placement(training: dict) -> dict:
    """from_pretrained's arguments: device_map spreads the layers over the first `devices` GPUs (free memory
    as each one's budget, none on the CPU or disk, which would train hours slower); else nothing."""
    if training["strategy"] != "device_map":
        return {}
    return {
        "device_map": "auto",
        "max_memory": {index: torch.cuda.mem_get_info(index)[0] for index in range(training["devices"])},
    }


def trainer_arguments(training: dict) -> dict:
    """SFTConfig's arguments for the strategy (the processes come from the launcher, not from these)."""
    if training["strategy"] == "ddp":
        return {"ddp_find_unused_parameters": False}  # every trainable weight gets a gradient each step
    if training["strategy"] == "fsdp":
        # FSDP's own activation checkpointing: transformers' would all-gather each layer once more.
        config = {**FSDP_CONFIG, "activation_checkpointing": training["gradient_checkpointing"]}
        return {"fsdp": True, "fsdp_config": config}
    return {}


def check_strategy_applied(training: dict, trainer) -> None:
    """accelerate turns FSDP on only on GPUs, silently: a run that asked for it and would train without it stops."""
    if training["strategy"] == "fsdp" and not trainer.is_fsdp_enabled:
        raise FtcompareError(
            "training.strategy: fsdp, but accelerate did not enable FSDP "
            f"(distributed type {trainer.accelerator.distributed_type}); it needs one GPU per process"
        )


def full_state_dict(model) -> dict:
    """The whole weights of a model sharded by FSDP2, gathered to the CPU of rank 0 (empty on the other ranks),
    as accelerate gathers them; every rank must call it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
