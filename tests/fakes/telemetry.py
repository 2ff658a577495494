"""A stand-in for the TelemetrySampler a training run reports its phases to."""


class FakeTelemetry:
    """Records what train_run tells the sampler: the phases it enters and each reset of the peaks."""

    def __init__(self):
        self.phases: list[str] = []
        self.peak_resets = 0

    def set_phase(self, phase: str) -> None:
        self.phases.append(phase)

    def reset_peaks(self) -> None:
        self.peak_resets += 1
