"""The one exception type users see: a message that names the bad input and what to do."""


class ProxylessError(Exception):
    """A user-facing error. The CLI prints its message (no traceback) and exits with code 2."""
