"""Which checkpoint a rerun resumes from (ftcompare.checkpoints), and what the log says when it cannot."""

import json
import logging

from helpers.checkpoints import make_checkpoint

from ftcompare.checkpoints import (
    FINGERPRINT_FILE,
    FINISHED_FILE,
    changed_keys,
    checkpoint_step,
    is_complete,
    mark_finished,
    prepare_checkpoint_dir,
)


def test_first_run_starts_from_step_zero_and_records_the_fingerprint(tmp_path):
    folder = tmp_path / "ckpt"
    assert prepare_checkpoint_dir(folder, {"a": 1}) is None
    assert json.loads((folder / FINGERPRINT_FILE).read_text()) == {"a": 1}


def test_resumes_from_the_newest_complete_checkpoint(tmp_path):
    folder = tmp_path / "ckpt"
    prepare_checkpoint_dir(folder, {"a": 1})
    make_checkpoint(folder, 5)
    make_checkpoint(folder, 10)
    make_checkpoint(folder, 15, state="missing")
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


def test_a_finished_run_trains_again_from_step_zero(tmp_path, caplog):
    folder = tmp_path / "ckpt"
    prepare_checkpoint_dir(folder, {"a": 1})
    make_checkpoint(folder, 10)
    mark_finished(folder, keep_checkpoints=True)
    with caplog.at_level(logging.WARNING):
        assert prepare_checkpoint_dir(folder, {"a": 1}) is None
    assert "they belong to a run that finished, and this job trains it again; training starts over" in caplog.text
    assert not (folder / "checkpoint-10").exists() and not (folder / FINISHED_FILE).exists()


def test_a_finished_run_s_checkpoints_go_unless_kept(tmp_path):
    for keep in (False, True):
        folder = tmp_path / f"keep-{keep}"
        prepare_checkpoint_dir(folder, {"a": 1})
        make_checkpoint(folder, 5)
        make_checkpoint(folder, 10)
        mark_finished(folder, keep_checkpoints=keep)
        assert (folder / FINISHED_FILE).is_file()
        assert sorted(p.name for p in folder.glob("checkpoint-*")) == (
            ["checkpoint-10", "checkpoint-5"] if keep else []
        )


def test_the_log_names_what_changed_and_what_cannot_be_known(tmp_path, caplog):
    folder = tmp_path / "ckpt"
    before = {"settings": {"training": {"learning_rate": 1e-4, "max_steps": 10}, "lora": {"r": 8}}, "data": "x"}
    prepare_checkpoint_dir(folder, before)
    make_checkpoint(folder, 5)
    after = {"settings": {"training": {"learning_rate": 2e-4, "max_steps": 10}, "lora": {"r": 8}}, "data": "y"}
    with caplog.at_level(logging.WARNING):
        assert prepare_checkpoint_dir(folder, after) is None
    assert (
        f"not resuming from the checkpoints in {folder}: they were made with different data, "
        "settings.training.learning_rate; training starts over from step 0" in caplog.text
    )

    make_checkpoint(folder, 5)
    (folder / "ftcompare_fingerprint.json").unlink()
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert prepare_checkpoint_dir(folder, after) is None
    assert "they have no readable ftcompare_fingerprint.json" in caplog.text


def test_changed_keys_are_dotted_paths():
    assert changed_keys({"a": {"b": 1, "c": 2}, "d": 3}, {"a": {"b": 1, "c": 4}, "e": 3}) == ["a.c", "d", "e"]
    assert changed_keys({"a": 1}, {"a": 1}) == []
    assert changed_keys({"a": [1]}, {"a": [2]}) == ["a"]


def test_a_half_written_checkpoint_is_removed_and_the_one_before_used(tmp_path, caplog):
    folder = tmp_path / "ckpt"
    prepare_checkpoint_dir(folder, {"a": 1})
    make_checkpoint(folder, 5)
    make_checkpoint(folder, 10, state="truncated")
    with caplog.at_level(logging.WARNING):
        resume = prepare_checkpoint_dir(folder, {"a": 1})
    assert checkpoint_step(resume) == 5
    assert "skipping" in caplog.text and "checkpoint-10: incomplete" in caplog.text
    assert not (folder / "checkpoint-10").exists()
