"""Activations by name (REFERENCE.md "Activations"): leaky ReLU (slope 0.1), Swish, Mish, linear, logistic."""

from __future__ import annotations

import logging

import torch
from torch import nn
from torch.nn import functional as F

log = logging.getLogger(__name__)

# Mish on CPU: PyTorch's kernel evaluates exp, log1p and tanh per element, and the profile of a cpu-scale
# training step spends ~25% of its time there. x * tanh(softplus(x)) == x * n / (n + 2) with n = e^x (e^x + 2),
# and its derivative t + x * sigmoid(x) * (1 - t^2), t = n / (n + 2), needs the same single exp: both are
# compiled once per process by torch.compile's CPU backend into one fused loop (no such kernel in PyTorch or
# a library; measured 2.3x (fp32) and 4x (bf16) faster forward + backward than F.mish). e^x saturates at
# x = 20, where t == 1 in float32. Elsewhere (CUDA, tracing, export, no compiler) F.mish is used. NHWC tensors
# (train.channels_last) are read and written in their own memory order, without a copy.
FAST_MISH = True  # `make bench` turns it off to time the previous implementation in the same invocation
_compiled: dict[str, object] = {}


def _mish_forward(x):
    w = torch.exp(x.clamp(max=20.0))
    n = w * (w + 2)
    return x * n / (n + 2)


def _mish_backward(x, grad):
    w = torch.exp(x.clamp(max=20.0))
    n = w * (w + 2)
    t = n / (n + 2)
    return grad * (t + x * (w / (1 + w)) * (1 - t * t))


def _kernel(name: str, fn):
    if name not in _compiled:
        # Inductor decides once per dynamic-shape graph whether its loop runs on all threads, from the first input's
        # size: on the 120 elements `_ready` compiles with, it chose one thread for every later layer. A chunk size of
        # 1 makes the loop parallel whatever the first size (and keys a new entry in the compiler's disk cache, so
        # serial kernels cached by earlier code are not reused): forward 5.2 -> 2.9 ms on 8x32x128x128 bf16, 2 threads.
        _compiled[name] = torch.compile(fn, dynamic=True, options={"cpp.min_chunk_size": 1})
    return _compiled[name]


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
    with torch.autocast(tensors[0].device.type, enabled=False):  # same global state in forward and backward
        if not _compiled.get("failed"):
            try:
                return _unflat(_kernel(name, fn)(*flat), tensors[0], layout)
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
    """Compiles both kernels for ``dtype`` on a small input, once: a compiler failure shows here, not mid-step."""
    key = f"ready-{dtype}"
    if key not in _compiled:
        try:
            with torch.inference_mode(False), torch.enable_grad():  # the first call may come from evaluation
                x = torch.linspace(-3, 3, 120, dtype=dtype).view(2, 3, 4, 5).requires_grad_()
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
