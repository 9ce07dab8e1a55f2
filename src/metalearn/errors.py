"""The errors a user can fix. A stage prints such an error as one line that names the cause and
the fix, and exits 1; every other exception is a bug and keeps its traceback."""


class StageError(Exception):
    """Base of the errors whose message says what is wrong and what to do about it."""


class DataError(StageError, ValueError):
    """Data that cannot be read, or cannot make the tasks the parameters ask for."""


class MissingInputError(StageError, FileNotFoundError):
    """A file a stage reads is not there; the message names the stage that writes it."""


class InterruptedStage(StageError):
    """The stage was stopped by a signal (Ctrl-C, SIGTERM, or its parent ``dvc`` ending)."""

    def __init__(self, message: str, signum: int) -> None:
        super().__init__(message)
        self.signum = signum


class TrackingError(StageError, ValueError):
    """The MLflow store cannot be reached or used."""
