"""One module per ``udpm`` command, each with ``register(subparsers)``."""
