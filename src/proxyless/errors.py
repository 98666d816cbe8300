"""The one exception type users see: a message that names the bad input and what to do."""


class ProxylessError(Exception):
    """A user-facing error. The CLI prints its message (no traceback) and exits with code 2."""


class ProxylessWarning(UserWarning):
    """Something a user should know that does not stop the work (an image skipped). The CLI
    prints it as one plain line, once per run; library callers filter it by category."""
