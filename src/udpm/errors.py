"""The one exception type that the command line turns into a one-line message."""


class UDPMError(ValueError):
    """A problem with the user's input (a file, a size, a flag), not a bug.

    It subclasses ``ValueError`` so that library callers can catch it the usual way. The
    message must fit on one line and name the problem (the file, the value, the limit).
    """


def check_shape(tensor, expected, what: str) -> None:
    """Raise a one-line :class:`UDPMError` unless ``tensor`` has shape ``expected``."""
    if tuple(tensor.shape) != tuple(expected):
        raise UDPMError(f"{what} has shape {tuple(tensor.shape)}, expected {tuple(expected)}")
