"""The fixed columns of telemetry.csv: their order, unit and meaning (docs/telemetry.md repeats them)."""

SCHEMA_VERSION = "ftcompare.telemetry/1"

# MB in every column name means MiB (2**20 bytes): the unit amdsmi and rocm-smi report in.
MIB = 2**20

CSV_COLUMNS = (
    "time_s",
    "phase",
    "device",
    "backend",
    "vram_used_mb",
    "vram_total_mb",
    "process_vram_mb",
    "torch_allocated_mb",
    "torch_reserved_mb",
    "util_pct",
    "mem_util_pct",
    "power_w",
    "temp_c",
    "energy_j",
    "rss_mb",
    "cpu_pct",
)

# The measured columns (everything after the four that say when, where and by what).
FIGURES = CSV_COLUMNS[4:]

UNITS = {
    "time_s": "s",
    "vram_used_mb": "MiB",
    "vram_total_mb": "MiB",
    "process_vram_mb": "MiB",
    "torch_allocated_mb": "MiB",
    "torch_reserved_mb": "MiB",
    "util_pct": "%",
    "mem_util_pct": "%",
    "power_w": "W",
    "temp_c": "°C",
    "energy_j": "J",
    "rss_mb": "MiB",
    "cpu_pct": "% of one core",
}

DESCRIPTIONS = {
    "time_s": "seconds since the sampler started (monotonic clock)",
    "phase": "the job phase marked by set_phase() when the sample was taken (load, train, save, generate)",
    "device": "cuda:N for the N-th GPU this job sees (torch's name, also on ROCm); cpu for the process row",
    "backend": "the libraries whose figures fill the row, joined by '+' (e.g. nvml+torch)",
    "vram_used_mb": "device-wide memory in use, all processes (amdsmi vram_used, NVML used, or "
    "torch.cuda.mem_get_info total - free when no vendor library works)",
    "vram_total_mb": "device memory size as the same source reports it",
    "process_vram_mb": "this process's memory on the device, from the vendor's process list",
    "torch_allocated_mb": "torch.cuda.memory_allocated: bytes in live tensors",
    "torch_reserved_mb": "torch.cuda.memory_reserved: bytes the caching allocator holds (allocated + cached)",
    "util_pct": "busy percentage of the compute engine (amdsmi gfx_activity, NVML gpu)",
    "mem_util_pct": "busy percentage of the memory controller (amdsmi umc_activity, NVML memory)",
    "power_w": "board or socket power",
    "temp_c": "GPU temperature (amdsmi hotspot/junction, else edge; NVML GPU core)",
    "energy_j": "device energy since the sampler started, from the energy counter or integrated power "
    "(telemetry.json says which)",
    "rss_mb": "resident set size of this process plus its child processes",
    "cpu_pct": "CPU time of this process and its running children over the last interval",
}
