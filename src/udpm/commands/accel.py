"""``--compile``, ``--channels-last`` and ``--precision``: shared by sample and bench."""

from __future__ import annotations


def add_accel_arguments(p) -> None:
    """The flags of :func:`udpm.accel.accelerate`; all off by default."""
    p.add_argument(
        "--compile",
        action="store_true",
        help="run the network through torch.compile (compiles once per input size first)",
    )
    p.add_argument(
        "--channels-last",
        action="store_true",
        help="network weights and inputs in the channels-last (NHWC) layout",
    )
    p.add_argument(
        "--precision",
        default="fp32",
        choices=["fp32", "bf16"],
        help="bf16: the network runs under bfloat16 autocast, the sampler math in fp32 "
        "(default fp32)",
    )


def accel_options(args) -> dict:
    """Keyword arguments of ``Pipeline.accelerate`` from the parsed flags."""
    from udpm.accel import precision_dtype

    return {
        "compile": args.compile,
        "channels_last": args.channels_last,
        "autocast_dtype": precision_dtype(args.precision),
    }
