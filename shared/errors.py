"""The one exception type for mistakes a user can fix.

The CLI and the Flower apps turn a `FedrecError` into a one-line message and a non-zero exit;
anything else is a bug and keeps its traceback.
"""


class FedrecError(Exception):
    """Bad input: a wrong name, a missing file, a malformed row. The message says what and where."""
