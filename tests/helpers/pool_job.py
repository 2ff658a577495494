"""A stand-in for a train or generate job: takes its GPUs as the entry scripts do, says which, and holds
them until its stdin closes (or it is killed).

    python tests/helpers/pool_job.py COUNT OUT_JSON [HOLDER]   (environment: FTCOMPARE_GPUS and the lock dir)
"""

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts"))

from ftcompare.job_devices import assign_job_devices  # noqa: E402

count, out = int(sys.argv[1]), Path(sys.argv[2])
holder = sys.argv[3] if len(sys.argv) > 3 else f"job {out.stem}"
job = assign_job_devices(count, holder=holder, poll_s=0.05)
visible = os.environ.get(job.variable or "CUDA_VISIBLE_DEVICES")
record = {"pid": os.getpid(), "devices": list(job.devices), "visible": visible}
tmp = out.with_suffix(".tmp")
tmp.write_text(json.dumps(record), encoding="utf-8")
tmp.replace(out)
sys.stdin.read()  # hold the devices until the test closes stdin
