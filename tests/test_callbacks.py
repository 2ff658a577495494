"""The run's trainer callbacks (ftcompare.callbacks): steady throughput, elapsed time across a resume,
and the SIGTERM handler put back after training."""

import signal

import pytest
from transformers import TrainerControl, TrainerState

from ftcompare.callbacks import StepTimer, StopOnSigterm, steady_throughput
from ftcompare.collators import TokenCountingCollator


def test_steady_throughput_skips_the_first_steps():
    # step, seconds, samples, tokens, nonpad: a slow first step, then 1 step/s of 4 samples
    steps = [(0, 0.0, 0, 0, 0), (1, 5.0, 4, 400, 300)]
    steps += [(i, 5.0 + (i - 1), 4 * i, 400 * i, 300 * i) for i in range(2, 12)]
    result = steady_throughput(steps)
    assert result["skipped_steps"] == 2
    assert result["samples_per_s"] == pytest.approx(4.0)
    assert result["tokens_per_s"] == pytest.approx(400.0)
    assert result["nonpad_tokens_per_s"] == pytest.approx(300.0)
    assert steady_throughput([(0, 0.0, 0, 0, 0)])["samples_per_s"] is None


def test_elapsed_time_continues_from_the_checkpoint():
    recorder = StepTimer(TokenCountingCollator(lambda features: features))
    fresh = TrainerState(stateful_callbacks=[recorder])
    assert fresh.stateful_callbacks["StepTimer"] == {
        "args": {},
        "attributes": {"elapsed_s": 0.0, "tokens_seen": 0, "squared_lengths_seen": 0},
    }

    saved = {"elapsed_s": 81.5, "tokens_seen": 640, "squared_lengths_seen": 9000}
    resumed = TrainerState(
        stateful_callbacks={"StepTimer": {"args": {}, "attributes": saved}},
        log_history=[{"step": 5, "loss": 2.0, "elapsed_s": 70.0}],
    )
    recorder.on_train_begin(None, resumed, None)
    assert recorder.elapsed_offset == 81.5
    assert recorder.state()["attributes"]["elapsed_s"] >= 81.5
    assert (recorder.tokens_seen, recorder.squared_lengths_seen) == (640, 9000)  # the tokens before the resume

    older = TrainerState(log_history=[{"step": 5, "loss": 2.0, "elapsed_s": 70.0}, {"eval_loss": 1.0}])
    recorder = StepTimer(TokenCountingCollator(lambda features: features))
    recorder.on_train_begin(None, older, None)
    assert recorder.elapsed_offset == 70.0
    assert "StepTimer" in older.stateful_callbacks  # so the Trainer can save its state there


def test_sigterm_asks_for_a_checkpoint_and_a_stop_and_the_old_handler_comes_back():
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        stop = StopOnSigterm()
        stop.on_train_begin(None, TrainerState(), TrainerControl())
        assert signal.getsignal(signal.SIGTERM) == stop._on_sigterm
        control = TrainerControl()
        stop.on_step_end(None, TrainerState(), control)
        assert not control.should_save and not control.should_training_stop
        signal.raise_signal(signal.SIGTERM)
        stop.on_step_end(None, TrainerState(), control)
        assert stop.received and control.should_save and control.should_training_stop
        stop.on_train_end(None, TrainerState(), control)
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, previous)
