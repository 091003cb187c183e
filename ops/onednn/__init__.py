"""oneDNN's convolutions and max pools inside XLA:CPU programs, through jax.ffi.

oneDNN's brgemm kernels run a kxk convolution and its two gradients, a max
pool and its gradient, and (in bfloat16) a 1x1's GEMMs faster than XLA:CPU's
own code for them (benchmarks/bench_train.py; docs/performance.md).
`onednn_conv.cc` beside this file wraps them as six FFI targets; this module
builds it, registers the targets and calls them, and costs them for XLA's
cost analysis. ops/conv.py, ops/pool.py and ops/pointwise.py put the calls
together into differentiable ops.

They compute in float32, or in bfloat16 where the CPU has bfloat16
instructions (`supports`), with float32 weight gradients.

The library needs oneDNN (the pinned `onednn` and `onednn-devel` wheels put
its library, the runtimes it needs and its headers under the virtual
environment) and a C++17 compiler. `make setup` builds it:

  .venv/bin/python -m ops.onednn.build   # -> build/onednn_conv.so

Without it `--config.ops.conv` / `--config.ops.pool` 'auto' use the im2col
convolutions and shifted-slice pools, and an explicit 'onednn' is refused
with the reason.
"""

import ctypes
import functools
import math
import os
import pathlib
import re
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np


ROOT = pathlib.Path(__file__).resolve().parents[2]
SOURCE = pathlib.Path(__file__).resolve().parent / 'onednn_conv.cc'
LIBRARY = ROOT / 'build' / 'onednn_conv.so'
PREFIX = pathlib.Path(sys.prefix)  # Where pip puts the wheels' include/, lib/.
BUILD_HINT = ('build it with `make setup` (or `python -m '
              'ops.onednn.build`)')
_TARGETS = {'onednn_conv_fwd': 'OnednnConvFwd',
            'onednn_conv_bwd_data': 'OnednnConvBwdData',
            'onednn_conv_bwd_weights': 'OnednnConvBwdWeights',
            'onednn_max_pool_fwd': 'OnednnMaxPoolFwd',
            'onednn_max_pool_bwd': 'OnednnMaxPoolBwd',
            'onednn_matmul': 'OnednnMatmul'}


def compile_command(output=LIBRARY) -> list[str]:
  return ['g++', '-O2', '-std=c++17', '-shared', '-fPIC',
          f'-I{jax.ffi.include_dir()}', f'-I{PREFIX / "include"}',
          str(SOURCE), '-o', str(output), f'-L{PREFIX / "lib"}',
          '-l:libdnnl.so.3', f'-Wl,-rpath,{PREFIX / "lib"}',
          # An RPATH, not a RUNPATH: it also finds libdnnl's own libraries
          # (TBB, the SYCL runtime) beside it.
          '-Wl,--disable-new-dtags']


def build() -> pathlib.Path:
  """Compiles onednn_conv.cc into LIBRARY; RuntimeError if it can't."""
  if not (PREFIX / 'include' / 'oneapi' / 'dnnl' / 'dnnl.hpp').exists():
    raise RuntimeError(f'no oneDNN headers under {PREFIX / "include"}: '
                       'pip install -r requirements.txt (x86-64 Linux).')
  LIBRARY.parent.mkdir(exist_ok=True)
  partial = LIBRARY.with_suffix('.so.partial')  # Never a half-written library.
  try:
    done = subprocess.run(compile_command(partial), capture_output=True,
                          text=True, check=False)
  except FileNotFoundError as e:
    raise RuntimeError(f'no C++ compiler: {e}') from e
  if done.returncode:
    raise RuntimeError(f'g++ failed:\n{done.stderr[-4000:]}')
  partial.replace(LIBRARY)
  return LIBRARY


# oneDNN's ISA bit sets (dnnl_cpu_isa_t): a CPU ISA includes another when it
# has all of its bits. Either of these runs bfloat16 natively.
_BF16_ISAS = {'avx512_core_bf16': 0xe7, 'avx2_vnni_2': 0x1f}


@functools.cache
def _library() -> ctypes.CDLL | str:
  """The loaded library with its targets registered, or why it can't be."""
  if jax.default_backend() != 'cpu':
    return f'it runs on CPU only (backend: {jax.default_backend()})'
  if not LIBRARY.exists():
    return f'{LIBRARY} is not built; {BUILD_HINT}'
  if LIBRARY.stat().st_mtime < SOURCE.stat().st_mtime:
    return f'{LIBRARY} is older than {SOURCE}; {BUILD_HINT}'
  # The wheel's oneDNN runs on the CPU through SYCL's OpenCL CPU device,
  # whose driver sits beside it; the OpenCL loader reads this when it first
  # runs. A value set by the user wins.
  os.environ.setdefault('OCL_ICD_FILENAMES',
                        str(PREFIX / 'lib' / 'libintelocl.so'))
  try:
    library = ctypes.CDLL(str(LIBRARY))
  except OSError as e:
    return f'{LIBRARY} does not load ({e}); {BUILD_HINT}'
  for target, symbol in _TARGETS.items():
    jax.ffi.register_ffi_target(
        target, jax.ffi.pycapsule(getattr(library, symbol)), platform='cpu')
  return library


def unavailable_reason() -> str | None:
  """None once the targets are registered, else why they can't be."""
  library = _library()
  return library if isinstance(library, str) else None


def available() -> bool:
  return unavailable_reason() is None


@functools.cache
def has_native_bf16() -> bool:
  """Whether the ISA oneDNN dispatches to (ONEDNN_MAX_CPU_ISA caps it) has
  bfloat16 instructions (AVX512_BF16, AMX, AVX2-VNNI-2); False where the
  library is unavailable."""
  if not available():
    return False
  isa = _library().dnnl_get_effective_cpu_isa()
  return any(isa & bits == bits for bits in _BF16_ISAS.values())


def supports(dtype) -> bool:
  """Whether the oneDNN ops are available and run `dtype` natively."""
  dtype = jnp.dtype(dtype)
  return available() and (dtype == jnp.float32 or
                          dtype == jnp.bfloat16 and has_native_bf16())


def require(dtype='float32') -> None:
  """Raises a ValueError that says why the oneDNN ops (ops.conv, ops.pool or
  ops.pointwise 'onednn') can't run here, or can't compute in `dtype`."""
  reason = unavailable_reason()
  if reason:
    raise ValueError("ops.conv / ops.pool / ops.pointwise 'onednn' is not "
                     f"available: {reason}. 'auto' falls back by itself "
                     "(convs to 'im2col', pools to 'slices', 1x1s to 'xla').")
  dtype = jnp.dtype(dtype)
  if dtype not in (jnp.float32, jnp.bfloat16):
    raise ValueError("ops.conv / ops.pool / ops.pointwise 'onednn' computes "
                     f"in float32 or bfloat16, not dtype={dtype.name!r}; use "
                     "'auto'.")
  if not supports(dtype):
    raise ValueError("ops.conv / ops.pool / ops.pointwise 'onednn' in "
                     'bfloat16 needs a CPU with bfloat16 instructions '
                     "(AVX512_BF16 or AMX); this one has none. Use 'auto', "
                     'or model.dtype=float32.')


def call(target: str, results, *operands, stride: int, pads, **attrs):
  """One pass (a _TARGETS key) on float32 or bfloat16 operands -> `results`
  (a jax.ShapeDtypeStruct, or a tuple of them).

  pads: ((top, bottom), (left, right)) spatial padding of the input; attrs:
  further integer attributes (a pool's window).
  """
  (top, bottom), (left, right) = pads
  ints = dict(stride=stride, pad_top=top, pad_bottom=bottom, pad_left=left,
              pad_right=right, **attrs)
  return _ffi_call(target, results, operands,
                   {k: np.int64(v) for k, v in ints.items()})


def matmul(a, b, out_dtype, trans_a=False, trans_b=False):
  """op(a) @ op(b) -> (M, N) in out_dtype (float32 or a's dtype), op a
  transpose where asked: a (M,K) or (K,M), b (K,N) or (N,K), float32 or
  bfloat16, summed in float32."""
  m = a.shape[1] if trans_a else a.shape[0]
  n = b.shape[0] if trans_b else b.shape[1]
  return _ffi_call('onednn_matmul', jax.ShapeDtypeStruct((m, n), out_dtype),
                   (a, b), dict(trans_a=trans_a, trans_b=trans_b))


def _ffi_call(target: str, results, operands, attrs: dict):
  """The call of `target`, once require() has passed for its operands'
  dtype."""
  require(operands[0].dtype)
  return jax.ffi.ffi_call(target, results, vmap_method='sequential')(
      *operands, **attrs)


_CUSTOM_CALL = re.compile(
    r'= (.*) custom-call\(.*custom_call_target="onednn_(\w+)", '
    r'operand_layout_constraints=\{(.*)\}, api_version.*'
    r'backend_config=\{([^}]*)\}')
_SHAPE = re.compile(r'(f32|bf16|u8)\[([\d,]+)\]')
_ITEMSIZE = {'f32': 4, 'bf16': 2, 'u8': 1}


def _valid_taps(size: int, k: int, stride: int, lo: int, out: int) -> int:
  """(output, tap) pairs of one axis whose input falls inside the image."""
  return sum(0 <= o * stride + t - lo < size
             for o in range(out) for t in range(k))


def call_costs(hlo: str):
  """{'flops', 'bytes accessed'} of each oneDNN pass in compiled `hlo`, as
  XLA would count them: a matmul's as 2*M*K*N, a convolution's as XLA
  counts its own (taps that fall on padding skipped), a max pool's forward
  as a reduce-window max (k*k - 1 per output), its backward as one add per
  output."""
  for m in _CUSTOM_CALL.finditer(hlo):
    results, operands = _SHAPE.findall(m[1]), _SHAPE.findall(m[3])
    attrs = {k: int(v) for k, v in re.findall(r'(\w+) = (-?\d+)', m[4])}
    shapes = [[int(d) for d in dims.split(',')] for _, dims in
              results + operands]
    nbytes = sum(_ITEMSIZE[t] * math.prod(s) for (t, _), s in
                 zip(results + operands, shapes))
    out, a = shapes[0], shapes[len(results)]
    if m[2] == 'matmul':  # out (M,N), a (M,K) or (K,M).
      flops = 2.0 * math.prod(out) * math.prod(a) / out[0]
    elif m[2].startswith('max_pool'):
      fwd = m[2] == 'max_pool_fwd'
      flops = math.prod(out if fwd else a) * (attrs['window']**2 - 1 if fwd
                                              else 1)
    else:
      b = shapes[len(results) + 1]
      x, y, w = {'conv_fwd': (a, out, b), 'conv_bwd_data': (out, a, b),
                 'conv_bwd_weights': (a, b, out)}[m[2]]
      s = attrs['stride']
      taps = (_valid_taps(x[1], w[0], s, attrs['pad_top'], y[1]) *
              _valid_taps(x[2], w[1], s, attrs['pad_left'], y[2]))
      flops = 2.0 * x[0] * taps * w[2] * w[3]
    yield {'flops': float(flops), 'bytes accessed': float(nbytes)}
