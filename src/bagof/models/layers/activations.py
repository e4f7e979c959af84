"""Activations by name (REFERENCE.md "Activations"): leaky ReLU (slope 0.1), Swish, Mish, linear, logistic."""

from __future__ import annotations

import contextlib
import logging
import math
import os
import types
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

log = logging.getLogger(__name__)

# Mish on CPU: PyTorch's kernel evaluates exp, log1p and tanh per element, a large share of a cpu-scale training
# step. x * tanh(softplus(x)) == x * n / (n + 2) with n = e^x (e^x + 2), and its derivative
# t + x * sigmoid(x) * (1 - t^2), t = n / (n + 2), needs the same single exp: both are compiled once per process by
# torch.compile's CPU backend into one fused loop (no such kernel in PyTorch or a library; its speed against F.mish:
# docs/benchmarks.md). e^x saturates at x = 20, where t == 1 in float32. Elsewhere (CUDA, tracing, export, no
# compiler) F.mish is used. NHWC tensors (train.channels_last) are read and written in their own memory order,
# without a copy. After the first call the compiled kernels are called directly (`_direct`), skipping
# torch.compile's per-call guards, and small tensors run on one thread, where waking the other costs more than the
# loop: the same kernels, the same bits.
FAST_MISH = True  # `make bench` turns it off to time the previous implementation in the same invocation
_compiled: dict[object, object] = {}  # torch.compile's functions, the kernels kept from them, readiness per dtype


def _mish_forward(x):
    w = torch.exp(x.clamp(max=20.0))
    n = w * (w + 2)
    return x * n / (n + 2)


def _mish_backward(x, grad):
    w = torch.exp(x.clamp(max=20.0))
    n = w * (w + 2)
    t = n / (n + 2)
    return grad * (t + x * (w / (1 + w)) * (1 - t * t))


# Inductor decides once per dynamic-shape graph whether its loop runs on all threads, from the first input's size: on
# the 120 elements `_ready` compiles with, it chose one thread for every later layer. A chunk size of 1 makes the loop
# parallel whatever the first size (and keys a new entry in the compiler's disk cache, so serial kernels cached by
# earlier code are not reused): forward 5.2 -> 2.9 ms on 8x32x128x128 bf16, 2 threads. Below ATen's elementwise grain
# size a second kernel, compiled never to fork, serves: waking the other thread costs more there than the loop itself
# (256 elements: ~300 us a forward between other ops on a loaded machine, ~3 us called back to back). Both apply the
# same formula element by element.
_PARALLEL_FROM = 32768  # elements (at::internal::GRAIN_SIZE)
_OPTIONS = {True: {"cpp.min_chunk_size": 1}, False: {"cpp.min_chunk_size": 1 << 62}}


def _compiler_cache_per_isa() -> None:
    """Keeps the compiler's disk cache (Inductor's) in a folder per instruction set ATen runs with. Inductor's cache
    does not tell them apart: a process with ``ATEN_CPU_CAPABILITY=avx2`` on an AVX-512 machine, after one without,
    got kernels that computed garbage (Mish off by up to 4e24, NaN losses at the first step of a run; tests/
    test_activations.py). The same happens to a cache folder shared by machines of two kinds (a cluster's home)."""
    from torch._inductor.runtime.cache_dir_utils import cache_dir

    isa = torch.backends.cpu.get_cpu_capability().lower()
    base = Path(cache_dir())
    if base.name != f"isa-{isa}":
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(base / f"isa-{isa}")


def _kernel(name: str, fn, parallel: bool = True):
    key = name if parallel else f"{name}-serial"
    if key not in _compiled:
        _compiler_cache_per_isa()
        # a copy of the code for each kernel: Dynamo keeps its compilations per code object, and past 8 of them (dtypes
        # x kernels x the layouts of the tensors viewed) runs the function op by op, rounding differently, with only a
        # log line to say so
        fn = types.FunctionType(fn.__code__.replace(co_name=f"{fn.__name__}_{key}"), fn.__globals__, fn.__name__)
        _compiled[key] = torch.compile(fn, dynamic=True, backend=_keeping_inductor(key, _OPTIONS[parallel]))
    return _compiled[key]


def _keeping_inductor(key: str, options: dict):
    """torch.compile's default backend, Inductor with ``options`` (so the same kernels and disk-cache entries), that
    also keeps each dtype's dynamic-shape kernel for direct calls. A call through torch.compile costs ~35 us in
    Dynamo's guards and wrappers against ~3 us for the kernel's own entry point on a small tensor; YOLOv4 makes 92
    Mish calls a training step. The kernel and its inputs are the same either way, so are the results, bit for bit."""

    def backend(gm, example_inputs):
        from torch._inductor.compile_fx import compile_fx, compile_fx_inner

        def inner(graph, inputs, *args, **kwargs):
            compiled = compile_fx_inner(graph, inputs, *args, **kwargs)
            symbolic = [isinstance(v, torch.SymInt) for v in inputs]
            tensors = [v for v in inputs if isinstance(v, torch.Tensor)]
            # every input is a 1-D tensor of the same length (`_flat`), or that length: keep only a graph of that form
            # whose length is symbolic (a graph specialised to one length, e.g. 1 element, serves no other)
            if any(symbolic) and tensors and len(tensors) + sum(symbolic) == len(inputs):
                if "no-direct" not in _compiled:
                    _compiled.setdefault(("direct", key, *(t.dtype for t in tensors)), (compiled, symbolic))
            return compiled

        # AOTAutograd's cache would hand back a cached graph without calling `inner` (Inductor's own cache still does);
        # a torch without that cache, or without the setting, calls `inner` or keeps no kernel (torch.compile's calls)
        aot_config = torch._functorch.config
        no_aot_cache = (
            aot_config.patch(enable_autograd_cache=False)
            if hasattr(aot_config, "enable_autograd_cache")
            else contextlib.nullcontext()
        )
        with no_aot_cache:
            return compile_fx(gm, example_inputs, inner_compile=inner, config_patches=options)

    return backend


def _direct(key: str, flat: list[torch.Tensor]) -> torch.Tensor | None:
    """The kept kernel's output for ``flat``, or None where there is none (before the first compilation, 1 element)."""
    entry = _compiled.get(("direct", key, *(t.dtype for t in flat)))
    if entry is None or flat[0].numel() < 2:
        return None
    compiled, symbolic = entry
    n, tensors = flat[0].numel(), iter(flat)
    try:
        return compiled([n if s else next(tensors) for s in symbolic])[0]
    except Exception as e:  # an Inductor whose calling convention differs: torch.compile's own call, same kernel
        log.warning(
            "fast CPU Mish: calling the %s kernel directly failed (%s: %s); calling it through torch.compile",
            key,
            type(e).__name__,
            e,
        )
        for k in [k for k in _compiled if isinstance(k, tuple)]:
            del _compiled[k]
        _compiled["no-direct"] = True
        return None


def _layout(t: torch.Tensor) -> torch.memory_format:
    """NHWC when ``t`` is (and is not also plain contiguous, as at one channel or one pixel), else NCHW."""
    nhwc = t.dim() == 4 and not t.is_contiguous() and t.is_contiguous(memory_format=torch.channels_last)
    return torch.channels_last if nhwc else torch.contiguous_format


def _flat(t: torch.Tensor, layout: torch.memory_format) -> torch.Tensor:
    """A 1-D, offset-free view (or copy) in ``layout``'s memory order: one compiled graph serves every layer's shape
    and stride, and an elementwise formula needs no NHWC -> NCHW copy (under ``train.channels_last``)."""
    t = t.detach().contiguous(memory_format=layout)
    t = t.permute(0, 2, 3, 1).reshape(-1) if layout == torch.channels_last else t.reshape(-1)
    return t.clone() if t.storage_offset() else t


def _unflat(flat: torch.Tensor, like: torch.Tensor, layout: torch.memory_format) -> torch.Tensor:
    if layout == torch.channels_last:
        n, c, h, w = like.shape
        return flat.view(n, h, w, c).permute(0, 3, 1, 2)
    return flat.view(like.shape)


def _call(name: str, fn, *tensors: torch.Tensor) -> torch.Tensor:
    layout = _layout(tensors[0])  # every operand is read in the first one's memory order
    flat = [_flat(t, layout) for t in tensors]
    parallel = flat[0].numel() >= _PARALLEL_FROM
    out = _direct(name if parallel else f"{name}-serial", flat)
    if out is not None:
        return _unflat(out, tensors[0], layout)
    with torch.autocast(tensors[0].device.type, enabled=False):  # same global state in forward and backward
        if not _compiled.get("failed"):
            try:
                return _unflat(_kernel(name, fn, parallel)(*flat), tensors[0], layout)
            except Exception as e:  # a later recompilation failed (e.g. a compiler cache race between processes)
                _compiled["failed"] = True
                log.warning(
                    "fast CPU Mish: compiling %s failed (%s: %s); evaluating it eagerly", name, type(e).__name__, e
                )
        return _unflat(fn(*flat), tensors[0], layout)  # the same formula, op by op


class _OneExpMish(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return _call("forward", _mish_forward, x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return _call("backward", _mish_backward, x, grad)


def _ready(dtype: torch.dtype) -> bool:
    """Compiles the kernels for ``dtype`` (forward and backward, serial and parallel), once: a compiler failure shows
    here, not mid-step."""
    key = f"ready-{dtype}"
    if key not in _compiled:
        try:
            with torch.inference_mode(False), torch.enable_grad():  # the first call may come from evaluation
                for shape in ((2, 3, 4, 5), (2, 4, 64, _PARALLEL_FROM // 512)):
                    x = torch.linspace(-3, 3, math.prod(shape), dtype=dtype).view(shape).requires_grad_()
                    y = _OneExpMish.apply(x)  # as in a network: a 4-D input, a dense incoming gradient
                    y.backward(torch.ones_like(y))
            _compiled[key] = True
        except Exception as e:  # no C++ compiler, an unsupported platform: the result is the same with F.mish
            _compiled[key] = False
            log.warning("fast CPU Mish unavailable for %s (%s: %s); using torch's F.mish", dtype, type(e).__name__, e)
    return _compiled[key]


def _fast_mish_usable(x: torch.Tensor) -> bool:
    return (
        FAST_MISH
        and x.device.type == "cpu"
        and x.is_floating_point()
        and not torch.jit.is_scripting()
        and not torch.jit.is_tracing()
        and not torch.onnx.is_in_onnx_export()
        and not torch.compiler.is_compiling()
    )


def mish(x: torch.Tensor) -> torch.Tensor:
    """Mish (Misra 2019), x * tanh(softplus(x)); the one-exp compiled kernel on CPU, F.mish elsewhere."""
    if _fast_mish_usable(x) and _ready(x.dtype):
        return _OneExpMish.apply(x)
    return F.mish(x)


class Mish(nn.Module):
    def forward(self, x):
        return mish(x)


_ACTS = {
    "leaky": lambda: nn.LeakyReLU(0.1, inplace=True),
    "swish": lambda: nn.SiLU(inplace=True),
    "mish": Mish,
    "relu": lambda: nn.ReLU(inplace=True),
    "logistic": nn.Sigmoid,
    "linear": nn.Identity,
}


def create_act(name: str) -> nn.Module:
    try:
        return _ACTS[name]()
    except KeyError:
        raise ValueError(f"unknown activation {name!r}; choose one of {sorted(_ACTS)}") from None


__all__ = ["FAST_MISH", "Mish", "create_act", "mish"]
