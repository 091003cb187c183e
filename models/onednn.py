"""oneDNN's convolutions and max pools inside XLA:CPU programs, through jax.ffi.

XLA:CPU runs a kxk convolution and its two gradients at 100-260 GF/s on this
project's CPUs; oneDNN's brgemm kernels run the same passes at 400-580
(scripts/bench_train.py measures the difference). Its stride-1 max pool,
forward and backward, is 2-3x faster than fast_ops.max_pool. The library
csrc/onednn_conv.cc wraps them as five FFI targets; this module builds it,
registers the targets and calls them. fast_ops.onednn_conv and
fast_ops.onednn_max_pool put the calls together into differentiable ops.

The library needs oneDNN (the pinned `onednn-cpu-gomp` and
`onednn-devel-cpu-gomp` wheels put its library and headers under the
virtual environment) and a C++17 compiler. `make setup` builds it:

  .venv/bin/python scripts/build_onednn.py   # -> build/onednn_conv.so

Without it `conv_impl` / `pool_impl` 'auto' use the im2col convolutions and
shifted-slice pools, and an explicit 'onednn' is refused with the reason.
"""

import ctypes
import functools
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
SOURCE = ROOT / 'csrc' / 'onednn_conv.cc'
LIBRARY = ROOT / 'build' / 'onednn_conv.so'
PREFIX = pathlib.Path(sys.prefix)  # Where pip puts the wheels' include/, lib/.
BUILD_HINT = ('build it with `make setup` (or `python '
              'scripts/build_onednn.py`)')
_TARGETS = {'onednn_conv_fwd': 'OnednnConvFwd',
            'onednn_conv_bwd_data': 'OnednnConvBwdData',
            'onednn_conv_bwd_weights': 'OnednnConvBwdWeights',
            'onednn_max_pool_fwd': 'OnednnMaxPoolFwd',
            'onednn_max_pool_bwd': 'OnednnMaxPoolBwd'}


def compile_command(output=LIBRARY) -> list[str]:
  return ['g++', '-O2', '-std=c++17', '-shared', '-fPIC',
          f'-I{jax.ffi.include_dir()}', f'-I{PREFIX / "include"}',
          str(SOURCE), '-o', str(output), f'-L{PREFIX / "lib"}',
          '-l:libdnnl.so.3', f'-Wl,-rpath,{PREFIX / "lib"}']


def build() -> pathlib.Path:
  """Compiles csrc/onednn_conv.cc into LIBRARY; RuntimeError if it can't."""
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


@functools.cache
def unavailable_reason() -> str | None:
  """None once the targets are registered, else why they can't be."""
  if jax.default_backend() != 'cpu':
    return f'it runs on CPU only (backend: {jax.default_backend()})'
  if not LIBRARY.exists():
    return f'{LIBRARY} is not built; {BUILD_HINT}'
  if LIBRARY.stat().st_mtime < SOURCE.stat().st_mtime:
    return f'{LIBRARY} is older than {SOURCE}; {BUILD_HINT}'
  # oneDNN's OpenMP workers share the cores with XLA's own threads: workers
  # that sleep when a convolution ends, instead of spinning for the next one,
  # leave them to XLA (GoogLeNet-CIFAR 0.5 step 2-3% faster). Read by libgomp
  # when the library loads it; a value set by the user wins.
  os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
  try:
    library = ctypes.cdll.LoadLibrary(str(LIBRARY))
  except OSError as e:
    return f'{LIBRARY} does not load ({e}); {BUILD_HINT}'
  for target, symbol in _TARGETS.items():
    jax.ffi.register_ffi_target(
        target, jax.ffi.pycapsule(getattr(library, symbol)), platform='cpu')
  return None


def available() -> bool:
  return unavailable_reason() is None


def require(dtype='float32') -> None:
  """Raises a ValueError that says why the oneDNN ops (conv_impl or
  pool_impl 'onednn') can't run here, or can't compute in `dtype` (float32
  only)."""
  if jnp.dtype(dtype) != jnp.float32:
    raise ValueError("conv_impl / pool_impl 'onednn' computes in float32, "
                     f"not dtype={jnp.dtype(dtype).name!r}; use 'auto'.")
  reason = unavailable_reason()
  if reason:
    raise ValueError("conv_impl / pool_impl 'onednn' is not available: "
                     f"{reason}. 'auto' falls back by itself (convs to "
                     "'im2col', pools to 'slices').")


def call(target: str, results, *operands, stride: int, pads, **attrs):
  """One pass (a _TARGETS key) on float32 operands -> `results` (a
  jax.ShapeDtypeStruct, or a tuple of them).

  pads: ((top, bottom), (left, right)) spatial padding of the input; attrs:
  further integer attributes (a pool's window).
  """
  require()
  (top, bottom), (left, right) = pads
  ints = dict(stride=stride, pad_top=top, pad_bottom=bottom, pad_left=left,
              pad_right=right, **attrs)
  return jax.ffi.ffi_call(target, results, vmap_method='sequential')(
      *operands, **{k: np.int64(v) for k, v in ints.items()})
