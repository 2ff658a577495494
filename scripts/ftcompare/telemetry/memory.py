"""The peak memory figures a run reports, each with where it came from.

Works on a telemetry summary as built or as read back from telemetry.json. With several GPUs a figure
is the sum of each device's own peak, and its source says so: the peaks need not be simultaneous,
so the sum is an upper bound on the job's combined peak.
"""

# What metrics.json's single peak_memory_mb is, in order of preference: the allocator's peak on GPU
# (what the model needed), else the device-wide figure, else the process's RSS on CPU.
PEAK_MEMORY_ORDER = ("torch_max_allocated_mb", "device_vram_used_mb", "rss_mb")


def memory_figures(summary: dict) -> dict:
    """Every peak memory figure in the summary: {name: {"value", "unit", "source"}}."""
    devices = summary.get("devices") or {}
    gpus = [(label, d) for label, d in devices.items() if d.get("kind") == "gpu"]
    processes = [(label, d) for label, d in devices.items() if d.get("kind") == "process"]
    figures = {}

    def torch_peak(key, function):
        items = [(label, d[key]) for label, d in gpus if d.get(key) is not None]
        if items:
            since = {d.get("torch_peaks_since") for label, d in gpus if d.get(key) is not None}
            suffix = f", since {since.pop()}" if len(since) == 1 and None not in since else ""
            figures[key] = _combine(items, "MiB", f"torch {function}", suffix)

    torch_peak("torch_max_allocated_mb", "max_memory_allocated")
    torch_peak("torch_max_reserved_mb", "max_memory_reserved")

    for name, column in (("device_vram_used_mb", "vram_used_mb"), ("process_vram_mb", "process_vram_mb")):
        items = [(label, _peak(d, column)) for label, d in gpus if _peak(d, column) is not None]
        if items:
            source = _shared_source(gpus, column) + ", peak of samples"
            figures[name] = _combine(items, "MiB", source, "", names={label: d.get("name") for label, d in gpus})

    used = [(label, _peak(d, "vram_used_mb"), _peak(d, "vram_total_mb")) for label, d in gpus]
    used = [(label, u, t) for label, u, t in used if u is not None and t]
    if used:
        value = 100.0 * sum(u for _, u, _ in used) / sum(t for _, _, t in used)
        labels = ", ".join(label for label, _, _ in used)
        figures["device_vram_used_pct"] = {
            "value": round(value, 1),
            "unit": "%",
            "source": f"peak device-wide VRAM used / VRAM total ({labels}); the measure the blog read off rocm-smi",
        }

    items = [(label, _peak(d, "rss_mb")) for label, d in processes if _peak(d, "rss_mb") is not None]
    if items:
        figures["rss_mb"] = {
            "value": round(items[0][1], 1),
            "unit": "MiB",
            "source": "process RSS (with children), peak of samples",
        }
    return figures


def peak_memory(summary: dict):
    """(MiB, source text) of the one figure metrics.json reports as peak_memory_mb; (None, why) if none."""
    return peak_of(memory_figures(summary), summary)


def peak_of(figures: dict, summary: dict):
    """peak_memory over `figures` (memory_figures(summary), perhaps amended)."""
    for name in PEAK_MEMORY_ORDER:
        if name in figures:
            return figures[name]["value"], figures[name]["source"]
    return None, f"no memory figure was measured (telemetry backend: {summary.get('backend', 'unknown')})"


def _peak(device, column):
    return ((device.get("figures") or {}).get(column) or {}).get("peak")


def _shared_source(gpus, column):
    texts = {(d.get("sources") or {}).get(column) for _, d in gpus if _peak(d, column) is not None}
    texts.discard(None)
    return texts.pop() if len(texts) == 1 else column


def _combine(items, unit, source, suffix, names=None):
    names = names or {}

    def where(label):
        return f"{label} {names[label]}" if names.get(label) else label

    if len(items) == 1:
        label, value = items[0]
        return {"value": round(value, 1), "unit": unit, "source": f"{source} ({where(label)}){suffix}"}
    labels = ", ".join(where(label) for label, _ in items)
    return {
        "value": round(sum(value for _, value in items), 1),
        "unit": unit,
        "source": f"sum over {labels} of each device's {source}{suffix} (per-device peaks, not simultaneous)",
    }
