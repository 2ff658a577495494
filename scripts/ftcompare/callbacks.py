"""The trainer callbacks of a run: a step timer that survives a resume, and a clean stop on SIGTERM."""

import math
import signal
import time

import torch
import torch.distributed as dist
from transformers import TrainerCallback
from transformers.trainer_callback import ExportableState

from ftcompare.collators import TokenCountingCollator


class StepTimer(TrainerCallback, ExportableState):
    """Times each step with the samples and tokens behind it, and adds elapsed seconds to each logged row.

    elapsed_s counts training time across a resume: as an ExportableState, the elapsed time at each
    save goes into the checkpoint's trainer_state.json, and a resumed run continues from it.
    """

    def __init__(self, counter: TokenCountingCollator):
        self.counter = counter
        self.start = None
        self.elapsed_offset = 0.0
        self.steps = []  # (global_step, seconds since start, samples, tokens, nonpad tokens)
        # Non-padding tokens trained on and their sequences' squared lengths, all processes: before a resume
        # (from the checkpoint) and in this segment (as of the last step's end).
        self.trained_before = (0, 0)
        self.trained_now = (0, 0)
        self._counted_at_start = (0, 0)

    def elapsed(self) -> float:
        """Seconds of training behind the current step, the segments before a resume included."""
        return self.elapsed_offset + (time.perf_counter() - self.start if self.start is not None else 0.0)

    @property
    def tokens_seen(self) -> int:
        """Non-padding tokens trained on, all processes, all steps (a resume's earlier segments included)."""
        return self.trained_before[0] + self.trained_now[0]

    @property
    def squared_lengths_seen(self) -> int:
        """The sum of the squared lengths of the sequences behind tokens_seen (attention's FLOPs grow with it)."""
        return self.trained_before[1] + self.trained_now[1]

    def state(self) -> dict:
        return {
            "args": {},
            "attributes": {
                "elapsed_s": round(self.elapsed(), 4),
                "tokens_seen": self.tokens_seen,
                "squared_lengths_seen": self.squared_lengths_seen,
            },
        }

    def on_train_begin(self, args, state, control, **kwargs):
        self.elapsed_offset = _elapsed_at_checkpoint(state, type(self).__name__)
        # A checkpoint from before this callback saved state has no entry, and saving would fail.
        state.stateful_callbacks.setdefault(type(self).__name__, self.state())
        self.trained_before = _trained_at_checkpoint(state, type(self).__name__)
        self.trained_now = (0, 0)
        # The held-out loss before training went through the same collator: count from here.
        self._counted_at_start = (self.counter.nonpad_tokens, self.counter.squared_lengths)
        self.start = time.perf_counter()
        self._mark(state.global_step, 0.0)

    def on_step_end(self, args, state, control, **kwargs):
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            torch.cuda.synchronize()  # GPU kernels run ahead of Python: time the step, not its launch
        self._mark(state.global_step, time.perf_counter() - self.start)
        self.trained_now = sum_over_ranks(self._trained_by_this_process(state), args)

    def _trained_by_this_process(self, state) -> tuple[int, int]:
        """What this process trained on since on_train_begin. The data loader collates one batch ahead
        (accelerate's look-ahead) except after an epoch's last batch, which leaves state.epoch whole."""
        tokens = self.counter.nonpad_tokens - self._counted_at_start[0]
        squares = self.counter.squared_lengths - self._counted_at_start[1]
        if state.epoch is not None and not float(state.epoch).is_integer():
            tokens, squares = tokens - self.counter.last_batch[0], squares - self.counter.last_batch[1]
        return tokens, squares

    def on_log(self, args, state, control, logs=None, **kwargs):
        if state.log_history and self.start is not None:
            state.log_history[-1]["elapsed_s"] = round(self.elapsed(), 4)

    def _mark(self, step: int, seconds: float) -> None:
        self.steps.append((step, seconds, self.counter.samples, self.counter.tokens, self.counter.nonpad_tokens))


def _elapsed_at_checkpoint(state, callback_name: str) -> float:
    """The elapsed time a resumed checkpoint saved (0 on a fresh start); for a checkpoint without it,
    the last elapsed_s logged before it."""
    saved = state.stateful_callbacks.get(callback_name)
    if isinstance(saved, dict) and isinstance(saved.get("attributes", {}).get("elapsed_s"), (int, float)):
        return float(saved["attributes"]["elapsed_s"])
    logged = [row["elapsed_s"] for row in state.log_history if row.get("elapsed_s") is not None]
    return logged[-1] if logged else 0.0


def _trained_at_checkpoint(state, callback_name: str) -> tuple[int, int]:
    """The tokens (and squared lengths) a resumed checkpoint had trained on; (0, 0) on a fresh start."""
    attributes = (state.stateful_callbacks.get(callback_name) or {}).get("attributes", {})
    return int(attributes.get("tokens_seen") or 0), int(attributes.get("squared_lengths_seen") or 0)


def sum_over_ranks(counts: tuple[int, int], args) -> tuple[int, int]:
    """`counts` summed over the processes of the run (the counts themselves when only one process runs).
    Every process calls this at every step's end, so that a checkpoint saved at any step has the totals."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return counts
    values = torch.tensor(counts, dtype=torch.int64, device=args.device)
    dist.all_reduce(values)
    return tuple(int(v) for v in values.tolist())


class StopOnSigterm(TrainerCallback):
    """On SIGTERM (what SLURM sends before a kill) the trainer saves a checkpoint at the end of the current
    step and stops; the caller then exits non-zero so the job is not taken as finished.

    Under several processes the ranks agree at each step's end (one all-reduce of a flag): a rank that
    stopped alone would leave the others waiting forever in their next collective.
    """

    def __init__(self):
        self.received = False
        self._installed = False
        self._previous_handler = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._previous_handler = signal.signal(signal.SIGTERM, self._on_sigterm)
        self._installed = True

    def _on_sigterm(self, signum, frame):
        self.received = True

    def on_step_end(self, args, state, control, **kwargs):
        self.received = received_by_any_rank(self.received, args)
        if self.received:
            control.should_save = True
            control.should_training_stop = True

    def on_train_end(self, args, state, control, **kwargs):
        self.restore_handler()

    def restore_handler(self) -> None:
        if self._installed:
            # None: the previous handler was not set from Python; the default is the nearest equivalent.
            signal.signal(signal.SIGTERM, self._previous_handler or signal.SIG_DFL)
            self._installed = False


def received_by_any_rank(flag: bool, args) -> bool:
    """`flag` or'ed over every process of the run (the flag itself when only one process runs)."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return flag
    value = torch.tensor([int(flag)], device=args.device)
    dist.all_reduce(value, op=dist.ReduceOp.MAX)
    return bool(value.item())


def steady_throughput(steps: list[tuple]) -> dict:
    """Samples/s and tokens/s over a StepTimer's steps after the first few, which pay one-off costs."""
    measured = len(steps) - 1
    rates = {"samples_per_s": None, "tokens_per_s": None, "nonpad_tokens_per_s": None, "skipped_steps": 0}
    if measured < 1:
        return rates
    skipped = min(5, measured // 5)
    first, last = steps[skipped], steps[-1]
    seconds = last[1] - first[1]
    rates["skipped_steps"] = skipped
    if seconds <= 0:
        return rates
    return {
        "samples_per_s": (last[2] - first[2]) / seconds,
        "tokens_per_s": (last[3] - first[3]) / seconds,
        "nonpad_tokens_per_s": (last[4] - first[4]) / seconds,
        "skipped_steps": skipped,
    }


def steady_throughput_of_all_ranks(steps: list[tuple], device) -> dict:
    """steady_throughput summed over the processes of a run, each of which counts only the batches it trained."""
    rates = steady_throughput(steps)
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return rates
    keys = ("samples_per_s", "tokens_per_s", "nonpad_tokens_per_s")
    mine = [math.nan if rates[key] is None else rates[key] for key in keys]
    values = torch.tensor(mine, dtype=torch.float64, device=device)
    dist.all_reduce(values)
    return {**rates, **{k: None if math.isnan(v) else v for k, v in zip(keys, values.tolist(), strict=True)}}
