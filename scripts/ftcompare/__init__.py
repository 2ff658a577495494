"""ftcompare: the library behind the workflow's scripts (LoRA vs full fine-tuning study)."""
