"""Which checkpoint a rerun resumes from."""

import json

from ftcompare.checkpoints import FINGERPRINT_FILE, checkpoint_step, is_complete, prepare_checkpoint_dir


def make_checkpoint(folder, step, complete=True):
    path = folder / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"weights")
    if complete:
        (path / "trainer_state.json").write_text(json.dumps({"global_step": step}))
    return path


def test_first_run_starts_from_step_zero_and_records_the_fingerprint(tmp_path):
    folder = tmp_path / "ckpt"
    assert prepare_checkpoint_dir(folder, {"a": 1}) is None
    assert json.loads((folder / FINGERPRINT_FILE).read_text()) == {"a": 1}


def test_resumes_from_the_newest_complete_checkpoint(tmp_path):
    folder = tmp_path / "ckpt"
    prepare_checkpoint_dir(folder, {"a": 1})
    make_checkpoint(folder, 5)
    make_checkpoint(folder, 10)
    make_checkpoint(folder, 15, complete=False)
    resume = prepare_checkpoint_dir(folder, {"a": 1})
    assert resume.name == "checkpoint-10"
    assert checkpoint_step(resume) == 10


def test_a_truncated_state_file_is_not_complete(tmp_path):
    path = make_checkpoint(tmp_path, 3)
    assert is_complete(path)
    (path / "trainer_state.json").write_text('{"global_st')
    assert not is_complete(path)


def test_checkpoints_of_another_config_are_discarded(tmp_path, caplog):
    folder = tmp_path / "ckpt"
    prepare_checkpoint_dir(folder, {"settings": {"lr": 1}, "data": "x"})
    make_checkpoint(folder, 5)
    with caplog.at_level("WARNING"):
        assert prepare_checkpoint_dir(folder, {"settings": {"lr": 2}, "data": "x"}) is None
    assert "different settings" in caplog.text
    assert not (folder / "checkpoint-5").exists()
