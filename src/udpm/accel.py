"""Faster network calls for sampling: bf16 autocast, channels_last, torch.compile, CUDA graphs.

Everything here wraps a network ``f(x, t, class_labels)`` and returns a module with the
same call signature, so samplers need no change: :func:`accelerate` for the first three,
:class:`CUDAGraphed` for graph capture (CUDA only). The wrapped output is always float32
in the standard layout, so the process math around the network (posterior draws, DDIM
updates) stays in full precision whatever runs inside.

References: PyTorch automatic mixed precision (``torch.autocast``), channels-last memory
format, ``torch.compile`` (Ansel et al., "PyTorch 2", ASPLOS 2024) and CUDA graphs
(``torch.cuda.graphs``).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from udpm.errors import UDPMError

# --precision NAME -> the autocast dtype (None: plain float32).
PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16}


def precision_dtype(name: str) -> torch.dtype | None:
    """The autocast dtype of ``--precision NAME``."""
    if name not in PRECISIONS:
        raise UDPMError(f"precision must be one of {', '.join(PRECISIONS)}, got {name!r}")
    return PRECISIONS[name]


class Accelerated(nn.Module):
    """``network`` called under autocast and in channels_last; returns float32, contiguous.

    Args:
        network: ``f(x, t, class_labels)``.
        autocast_dtype: ``torch.bfloat16`` (or ``float16``) to autocast to; None for fp32.
        channels_last: feed ``x`` in the channels-last layout (the network's weights
            should be in it too, see :func:`accelerate`).
    """

    def __init__(self, network: nn.Module, autocast_dtype=None, channels_last: bool = False):
        super().__init__()
        self.network = network
        self.autocast_dtype, self.channels_last = autocast_dtype, channels_last

    def forward(self, x: torch.Tensor, t, class_labels: torch.Tensor | None = None):
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.autocast_dtype is None:
            out = self.network(x, t, class_labels)
        else:
            # cache_enabled=False: autocast's weight-cast cache must stay off under CUDA
            # graph capture (PyTorch's CUDA-graph notes); a forward uses each weight once.
            with torch.autocast(x.device.type, dtype=self.autocast_dtype, cache_enabled=False):
                out = self.network(x, t, class_labels)
        return out.to(torch.float32, memory_format=torch.contiguous_format)


def accelerate(
    network: nn.Module,
    *,
    compile: bool = False,
    channels_last: bool = False,
    autocast_dtype: torch.dtype | None = None,
    compile_mode: str | None = None,
    cuda_graph: bool = False,
) -> nn.Module:
    """``network`` made faster for inference; the same call signature and float32 output.

    Args:
        network: ``f(x, t, class_labels)``; it is not modified (channels_last converts a
            copy of it).
        compile: wrap in ``torch.compile`` (inductor; one compilation per input shape).
        channels_last: weights and inputs in the NHWC layout (faster convolutions with
            cuDNN and oneDNN, especially in bf16).
        autocast_dtype: ``torch.bfloat16`` to run under autocast; None keeps fp32.
        compile_mode: ``torch.compile``'s ``mode`` (e.g. ``"max-autotune"``).
        cuda_graph: capture one CUDA graph per input shape (:class:`CUDAGraphed`).
    """
    if not (compile or channels_last or autocast_dtype is not None or cuda_graph):
        return network
    if channels_last:
        network = copy.deepcopy(network).to(memory_format=torch.channels_last)
    out: nn.Module = Accelerated(network, autocast_dtype, channels_last)
    if compile:
        out = compile_network(out, mode=compile_mode)
    if cuda_graph:
        out = CUDAGraphed(out)
    return out.train(network.training)  # new wrappers start in train mode; keep the net's


def compile_network(network: nn.Module, mode: str | None = None) -> nn.Module:
    """``torch.compile(network)`` with static shapes (inductor, ``mode`` as torch's)."""
    # dynamic=False: UDPM calls the network at L fixed sizes, so L static graphs beat one
    # symbolic-shape graph; it also keeps CUDA-graph capture of the result possible.
    return torch.compile(network, mode=mode, dynamic=False)


class CUDAGraphed(nn.Module):
    """Replays one captured CUDA graph per input signature (shapes, dtypes) of ``network``.

    The first call with a new signature warms the network up on a side stream and
    captures it (``torch.cuda.graph``); later calls copy the inputs into the graph's static
    buffers, replay it and return a copy of its static output. Capture happens lazily, so
    UDPM's ``L`` sizes give ``L`` graphs per batch size. All graphs share one memory pool:
    they are replayed one at a time on the current stream, and every tensor that outlives
    a replay (static inputs and outputs) stays allocated, so none overwrites another.

    Inference only: call under ``torch.no_grad()``. Random ops inside the network (dropout
    in train mode) would replay fixed noise, so the network must be in eval mode.
    """

    def __init__(self, network: nn.Module, warmup: int = 3, max_graphs: int = 64):
        super().__init__()
        self.network, self.warmup, self.max_graphs = network, warmup, max_graphs
        self.graphs: dict[tuple, tuple] = {}
        self.pool = None

    def forward(self, x: torch.Tensor, t, class_labels: torch.Tensor | None = None):
        self._check(x)
        t = torch.as_tensor(t, dtype=torch.float32, device=x.device).reshape(-1)
        t = t.expand(x.shape[0]) if t.numel() == 1 else t
        inputs = (x, t, class_labels)
        key = tuple(None if v is None else (tuple(v.shape), v.dtype) for v in inputs)
        if key not in self.graphs:
            if len(self.graphs) >= self.max_graphs:
                raise UDPMError(f"more than {self.max_graphs} input shapes: too many CUDA graphs")
            self.graphs[key] = self._capture(inputs)
        graph, static_inputs, static_out = self.graphs[key]
        for static, value in zip(static_inputs, inputs):
            if static is not None:
                static.copy_(value)
        graph.replay()
        return static_out.clone()

    def _check(self, x: torch.Tensor) -> None:
        self._check_device(x)
        if torch.is_grad_enabled():
            raise UDPMError("CUDA-graph replay is for sampling only: call it under torch.no_grad()")
        if self.network.training:
            raise UDPMError("CUDA-graph capture needs the network in eval mode (dropout)")

    def _check_device(self, x: torch.Tensor) -> None:
        if x.device.type != "cuda":
            raise UDPMError(f"CUDA graphs need a CUDA device; the input is on {x.device}")

    def _capture(self, inputs: tuple) -> tuple:
        """``(graph, static inputs, static output)`` for inputs shaped like ``inputs``."""
        static = tuple(None if v is None else v.clone() for v in inputs)
        graph, out = self._record(static)
        return graph, static, out

    def _record(self, static: tuple):
        device = static[0].device
        # Warm-up on a side stream, as torch.cuda.graphs asks: lazy initialisation
        # (cuDNN autotuning, compilation) must not happen during capture.
        side = torch.cuda.Stream(device=device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(self.warmup):
                self.network(*static)
        torch.cuda.current_stream(device).wait_stream(side)
        if self.pool is None:
            self.pool = torch.cuda.graph_pool_handle()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, pool=self.pool):
            out = self.network(*static)
        return graph, out
