"""bench/telemetry_overhead.py runs and writes its result (one tiny repetition)."""

import importlib.util
import json
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "telemetry_overhead.py"


def test_the_overhead_benchmark_runs_quick(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("telemetry_overhead", BENCH)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    result = bench.main(["--quick", "--backend", "cpu", "--out", str(tmp_path / "overhead.json")])
    written = json.loads((tmp_path / "overhead.json").read_text())
    assert (
        written["results"].keys()
        == result["results"].keys()
        == {"no sampler", "sampler every 0.5 s", "sampler every 0.1 s"}
    )
    assert written["machine"]["torch"] and written["settings"]["quick"] is True
    assert written["results"]["sampler every 0.5 s"]["telemetry_backend"] == "cpu"
    assert "overhead" in capsys.readouterr().out
