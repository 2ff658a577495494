"""ftcompare: the library behind the workflow's scripts (LoRA vs full fine-tuning study)."""

import os

# TRL's trainers (and other Hugging Face libraries) send a usage ping to the Hub when built. A study's
# jobs should not phone home, and on a cluster node without network the ping only waits. huggingface_hub
# reads the switch once, when it is first imported, so it is set here, before any module of ours imports
# it; a value the user set is kept.
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
