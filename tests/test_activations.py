"""The fast CPU Mish is Mish: values and gradients against x * tanh(softplus(x)) in float64."""

import types

import pytest
import torch
import torch.nn.functional as F

from bagof.models.layers import activations
from bagof.models.layers.activations import Mish, mish


def _reference(x64):
    x64 = x64.detach().requires_grad_()
    y = x64 * torch.tanh(F.softplus(x64))
    (g,) = torch.autograd.grad(y.sum(), x64)
    return y.detach(), g


@pytest.mark.parametrize("dtype,tol", [(torch.float32, 1e-5), (torch.bfloat16, 2e-2)])
def test_fast_mish_matches_the_formula_and_its_derivative(dtype, tol):
    x = torch.linspace(-40, 40, 20001).to(dtype).view(1, 1, 1, -1).requires_grad_()
    y = mish(x)
    y.backward(torch.ones_like(y))
    assert y.dtype == dtype and x.grad.dtype == dtype
    ref_y, ref_g = _reference(x.detach().double())
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    # relative to the magnitude (bf16 keeps ~3 significant digits), absolute near zero
    assert ((y.double() - ref_y).abs() <= tol * (1 + ref_y.abs())).all()
    assert ((x.grad.double() - ref_g).abs() <= tol * (1 + ref_g.abs())).all()
    assert y.grad_fn is not None and "OneExpMish" in type(y.grad_fn).__name__  # the compiled path ran


def test_mish_falls_back_to_torch_when_switched_off_or_traced(monkeypatch):
    x = torch.randn(2, 3, 4, 4)
    monkeypatch.setattr(activations, "FAST_MISH", False)
    assert torch.equal(Mish()(x), F.mish(x))
    monkeypatch.setattr(activations, "FAST_MISH", True)
    graph = torch.jit.trace(Mish(), x).graph  # tracing / ONNX export see the standard op, not the compiled one
    assert "aten::mish" in str(graph)


def test_first_call_from_evaluation_compiles_and_uses_the_fast_path(monkeypatch):
    monkeypatch.setattr(activations, "_compiled", {})
    x = torch.randn(2, 3, 8, 8)
    with torch.inference_mode():
        y = mish(x)
    assert activations._compiled.get("ready-torch.float32") is True
    assert torch.allclose(y, F.mish(x), atol=1e-6)


def test_a_failing_compilation_falls_back_to_the_same_formula_eagerly(monkeypatch):
    def broken(*args):
        raise RuntimeError("compiler cache race")

    monkeypatch.setattr(activations, "_kernel", broken)
    monkeypatch.setattr(activations, "_compiled", {"ready-torch.float32": True})
    x = torch.randn(2, 3, 8, 8, requires_grad=True)
    y = mish(x)
    y.backward(torch.ones_like(y))
    ref = x.detach().clone().requires_grad_()
    F.mish(ref).backward(torch.ones_like(ref))
    assert torch.allclose(y, F.mish(x), atol=1e-6) and torch.allclose(x.grad, ref.grad, atol=1e-5)
    assert activations._compiled["failed"] is True


def test_fast_precision_is_bf16_only_where_native(monkeypatch):
    from bagof.config import fast_precision

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert fast_precision() == "bf16-mixed"
    monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert fast_precision() == "32-true"


def test_head_outputs_stay_float32_and_close_under_bf16_autocast():
    from bagof.models.heads.yolo_head import YoloHead

    torch.manual_seed(0)
    head = YoloHead([8, 16], num_classes=3).eval()
    feats = [torch.randn(1, 8, 8, 8), torch.randn(1, 16, 4, 4)]
    with torch.no_grad():
        ref = head(feats)
        with torch.autocast("cpu", torch.bfloat16):
            low = head(feats)
    assert all(o.dtype == torch.float32 for o in low)
    # only the 3x3 conv ran in bf16: the logits keep ~2-3 significant digits, not bf16's rounding of the sum
    assert all(torch.allclose(a, b, atol=0.05, rtol=0.02) for a, b in zip(low, ref))


@pytest.mark.parametrize("grad_layout", [torch.channels_last, torch.contiguous_format])
def test_fast_mish_keeps_channels_last_and_reads_a_gradient_in_either_layout(grad_layout):
    # train.channels_last hands Mish NHWC tensors: its output stays NHWC (no copy to NCHW and back for the next
    # convolution), and a gradient arriving in the other layout is read element for element, not in memory order
    x = torch.randn(2, 8, 5, 6).contiguous(memory_format=torch.channels_last).requires_grad_()
    g = torch.randn(2, 8, 5, 6).contiguous(memory_format=grad_layout)
    y = mish(x)
    y.backward(g)
    assert y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous()
    ref = x.detach().clone().requires_grad_()
    F.mish(ref).backward(g)
    assert torch.allclose(y, F.mish(x.detach()), atol=1e-6) and torch.allclose(x.grad, ref.grad, atol=1e-5)
    assert "OneExpMish" in type(y.grad_fn).__name__


def test_fast_mish_kernels_run_on_every_thread(monkeypatch):
    # The kernels are compiled once for every shape, on `_ready`'s small input: they must still loop on all threads
    # (they ran on one: the compiler sized its parallelism from that first input; the forward took ~2x its time).
    from torch._inductor.utils import run_and_get_code

    monkeypatch.setattr(activations, "_compiled", {})
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # a loop is made parallel only where there are threads to share it (CI has 2 cores)

    def first_use():
        x = torch.randn(2, 8, 16, 16, requires_grad=True)
        mish(x).sum().backward()

    try:
        _, sources = run_and_get_code(first_use)
    finally:
        torch.set_num_threads(threads)
    kernels = [s for s in sources if "exp" in s]
    assert len(kernels) == 4  # forward and backward, each for small tensors (one thread) and for the others
    assert sum("#pragma omp parallel" in k for k in kernels) == 2


def _kernels_as_compiled_before(name):
    fn = {"forward": activations._mish_forward, "backward": activations._mish_backward}[name]
    fn = types.FunctionType(fn.__code__.replace(co_name=f"{name}_before"), fn.__globals__)  # Dynamo's cache of its own
    return torch.compile(fn, dynamic=True, options={"cpp.min_chunk_size": 1})


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_direct_calls_give_the_torch_compile_kernels_results_bit_for_bit(monkeypatch, dtype):
    # The kernels are called without torch.compile's guards and wrappers (and small tensors on one thread): cached
    # runs stay reproducible only if every output is the one the torch.compile call gave, on every input. Every bf16
    # value (NaN payloads aside), an odd length so that the vector loop's tail runs, and some wider float32 values.
    monkeypatch.setattr(activations, "_compiled", {})
    assert activations._ready(dtype)
    x = torch.arange(-(2**15), 2**15, dtype=torch.int32).to(torch.int16).view(torch.bfloat16).to(dtype)
    x = torch.cat([x, (torch.randn(40_001, generator=torch.Generator().manual_seed(0)) * 30).to(dtype)])
    grad = torch.randn(x.numel(), generator=torch.Generator().manual_seed(1)).to(dtype)
    for name, args in (("forward", [x]), ("backward", [x, grad])):
        ref = _kernels_as_compiled_before(name)(*args)
        for key in (name, f"{name}-serial"):
            out = activations._direct(key, args)
            torch.testing.assert_close(out, ref, rtol=0, atol=0, equal_nan=True, msg=key)


def test_calls_after_the_first_do_not_go_through_torch_compile(monkeypatch):
    monkeypatch.setattr(activations, "_compiled", {})
    assert activations._ready(torch.float32)

    def guarded(*args):
        raise AssertionError("called through torch.compile")

    monkeypatch.setattr(activations, "_kernel", guarded)
    used = []
    for key, (compiled, symbolic) in [(k, v) for k, v in activations._compiled.items() if isinstance(k, tuple)]:
        activations._compiled[key] = (lambda args, c=compiled, k=key[1]: used.append(k) or c(args), symbolic)
    for shape, kernels in (
        ((2, 8, 4, 4), ["forward-serial", "backward-serial"]),
        ((2, 8, 64, 64), ["forward", "backward"]),
    ):
        used.clear()  # below and above the size where the kernel forks (256 and 65,536 elements)
        x = torch.randn(shape, requires_grad=True)
        y = mish(x)
        y.backward(torch.ones_like(y))
        ref = x.detach().clone().requires_grad_()
        F.mish(ref).backward(torch.ones_like(ref))
        assert torch.allclose(y, F.mish(x.detach()), atol=1e-6) and torch.allclose(x.grad, ref.grad, atol=1e-5)
        assert used == kernels
    assert "failed" not in activations._compiled


_MISH_CHECK = """
import torch
from bagof.models.layers import activations as A
errs = []
for shape in [(256,), (4, 16, 32, 32)]:
    x = torch.randn(*shape, requires_grad=True)
    y = A.Mish()(x)
    g, = torch.autograd.grad(y.sum(), x)
    ref = torch.nn.functional.mish(x)
    gr, = torch.autograd.grad(ref.sum(), x)
    errs += [(y - ref).abs().max().item(), (g - gr).abs().max().item()]
print(max(errs))
"""


@pytest.mark.slow  # ~50 s of kernel compiles; the default run is at its 15-minute ceiling
@pytest.mark.skipif(
    not torch.backends.cpu.get_cpu_capability().startswith("AVX512"), reason="needs a CPU with two instruction sets"
)
def test_the_mish_kernels_of_two_instruction_sets_do_not_share_a_compiler_cache(tmp_path):
    """Inductor's disk cache does not tell ATen's instruction sets apart: a process with ATEN_CPU_CAPABILITY=avx2
    after a native one, on one cache folder, ran kernels that computed garbage (Mish off by up to 4e24; the other
    order crashed in malloc). Each set now has its own folder (activations._compiler_cache_per_isa)."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=str(tmp_path))
    for extra in ({}, {"ATEN_CPU_CAPABILITY": "avx2"}, {}):
        out = subprocess.run(
            [sys.executable, "-c", _MISH_CHECK], env=env | extra, capture_output=True, text=True, timeout=600
        )
        assert out.returncode == 0, out.stderr[-2000:]
        assert float(out.stdout.split()[-1]) < 1e-5, (extra, out.stdout)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["isa-avx2", "isa-avx512"]
