"""Handing tensors to the native kernels: dtype codes, pointers, strides and CUDA streams."""
from __future__ import annotations

import torch

from ..backends import is_decomposing, select, warn_forced_ignored

# Must match csrc/include/avfast/common.h::DType.
DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2, torch.float64: 3}


def dtype_code(t: torch.Tensor) -> int:
    return DTYPE_CODES[t.dtype]


def accumulator_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 accumulation for the 16-bit formats and fp32, fp64 for fp64 (gradcheck)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def stream_of(t: torch.Tensor) -> int:
    return torch.cuda.current_stream(t.device).cuda_stream


def plain_eager(*tensors: torch.Tensor) -> bool:
    """True when the native kernels may be called directly instead of through torch.ops: plain
    tensors in eager mode. The custom-op dispatch costs ~10-20 us a call, a large share of small
    kernels. Whatever must see the registered op (torch.compile / export, jit tracing, dispatch and
    function modes, functorch transforms, tensor subclasses such as FakeTensor) still goes
    through torch.ops."""
    return (all(type(t) is torch.Tensor for t in tensors)
            and not torch.compiler.is_compiling() and not torch.jit.is_tracing()
            and torch._C._len_torch_dispatch_stack() == 0 and not torch._C._is_torch_function_mode_enabled()
            and not under_functorch(*tensors))


NATIVE_BACKENDS = ("cpu", "cuda")


def eager_native_backend(op: str, kernels: dict, *tensors: torch.Tensor) -> str | None:
    """The backend to call directly, without torch.ops: the one `select` picks, when it is a native
    (cpu/cuda) kernel and the call is plain eager (see `plain_eager`); None otherwise."""
    if not plain_eager(*tensors):
        return None
    backend = select(op, tensors[0].device, tensors[0].dtype, kernels)
    return backend if backend in NATIVE_BACKENDS else None


def reference_instead(*tensors: torch.Tensor) -> bool:
    """True where a public function must run its PyTorch reference: inside `avfast.decomposed()` (and
    ONNX export), whose graphs must be standard operators, and under torch.func transforms (see
    `under_functorch`). A backend forced there is not used, and a warning says so once."""
    if is_decomposing():
        warn_forced_ignored("inside avfast.decomposed() or an ONNX export")
        return True
    if under_functorch(*tensors):
        warn_forced_ignored("under torch.func transforms (grad, vmap, jacrev, ...)")
        return True
    return False


def under_functorch(*tensors: torch.Tensor) -> bool:
    """True inside torch.func transforms (grad, vmap, jacrev, ...). torch's custom-op autograd does
    not support them (it raises), so the public functions run their PyTorch reference there:
    transforms work, at the reference's speed."""
    if torch.compiler.is_compiling():  # dynamo cannot trace the check; compiled code sees the ops
        return False
    return any(isinstance(t, torch.Tensor) and torch._C._functorch.is_functorch_wrapped_tensor(t) for t in tensors)
