"""User-facing errors: the CLI prints these as one line and exits non-zero."""

import threading

# set when SIGTERM arrives while a Ray driver runs (``distributed.connect``): Ray turns the exit
# raised inside its waits into SystemExit(1), which the CLI then reports as the termination it is
SIGTERM_RECEIVED = threading.Event()


class UserError(Exception):
    """An error caused by the user's input, with a message that names what is wrong."""


class InputError(UserError, ValueError):
    """Bad input: a file, frame, prompt, argument or option that is not what was expected."""


class CheckpointError(UserError, RuntimeError):
    """A checkpoint is missing, unreadable, or does not fit the model."""


class SequencesFailed(Exception):
    """Some sequences of a run failed, after their retries; the others finished and were saved.
    The CLI prints the message (one line per failed sequence) and exits with status 1."""


class WorkerFailed(Exception):
    """A Ray worker could not set up for a reason other than the user's input (out of memory,
    a broken install on its node) before any sequence ran; the CLI prints the message and exits
    with status 1."""


class OutputError(UserError, OSError):
    """An output cannot be written (a full disk, no permission), naming the file."""
