"""The one exception type whose message is meant for the user, not a traceback."""


class FtcompareError(Exception):
    """A refusal the user can act on: bad config, bad data, unreachable model, no GPU.

    Scripts print its message alone and exit non-zero (see ftcompare.script_runtime).
    """
