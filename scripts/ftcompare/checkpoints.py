"""Which training checkpoint a rerun may resume from.

Checkpoints live outside the rule's declared outputs (Snakemake deletes those before a rerun).
A fingerprint of what the run depends on (settings, data, base model) sits beside them; a
checkpoint made for another fingerprint is never resumed from.
"""

import json
import logging
import re
import shutil
from pathlib import Path

from ftcompare.atomic import write_json

log = logging.getLogger("ftcompare.checkpoints")

FINGERPRINT_FILE = "ftcompare_fingerprint.json"
_CHECKPOINT_NAME = re.compile(r"^checkpoint-(\d+)$")
# What the Trainer writes last when it saves; a checkpoint without it was cut off mid-save.
_COMPLETE_MARKERS = ("trainer_state.json",)
_WEIGHT_PATTERNS = ("*.safetensors", "*.bin", "*.pt")


def checkpoint_step(path: Path) -> int | None:
    match = _CHECKPOINT_NAME.match(Path(path).name)
    return int(match.group(1)) if match else None


def is_complete(checkpoint: Path) -> bool:
    if not all((checkpoint / marker).is_file() for marker in _COMPLETE_MARKERS):
        return False
    try:
        json.loads((checkpoint / "trainer_state.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return any(any(checkpoint.glob(pattern)) for pattern in _WEIGHT_PATTERNS)


def prepare_checkpoint_dir(checkpoint_dir, fingerprint: dict) -> Path | None:
    """Return the newest complete checkpoint made for `fingerprint`, or None to start from step 0.

    A folder made for another fingerprint is emptied, with the reason logged.
    """
    checkpoint_dir = Path(checkpoint_dir)
    stored_path = checkpoint_dir / FINGERPRINT_FILE
    if checkpoint_dir.exists():
        stored = _read_json(stored_path)
        if stored != fingerprint:
            changed = sorted(k for k in set(stored or {}) | set(fingerprint)
                             if (stored or {}).get(k) != fingerprint.get(k))
            if any(checkpoint_dir.glob("checkpoint-*")):
                log.warning("not resuming: the checkpoints in %s were made with a different %s; "
                            "training starts over", checkpoint_dir, ", ".join(changed) or "fingerprint")
            shutil.rmtree(checkpoint_dir)
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    write_json(stored_path, fingerprint)

    candidates = sorted((p for p in checkpoint_dir.iterdir() if checkpoint_step(p) is not None),
                        key=checkpoint_step, reverse=True)
    for candidate in candidates:
        if is_complete(candidate):
            return candidate
        log.warning("skipping %s: incomplete (cut off while saving?)", candidate)
    return None


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
