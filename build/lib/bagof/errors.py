"""User-facing errors: bad input or options. run.py prints their message alone, without a traceback."""


class BagofError(ValueError):
    """A file or option is unusable; the message names it and says what to do."""
