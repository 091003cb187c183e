"""How layers are computed: one implementation per op, chosen in one place.

Models (models/) describe architecture; this package computes it. `Ops`
holds the implementation of each op kind a model asks for (a dense kxk
convolution, a pool, a batch norm) and builds it. Every implementation has
the same params and math as flax's, so a checkpoint written under one
resumes under another.

`resolve(config)` is the one place where 'auto' is decided, from
`config.ops` (see configs/base.py), the compute dtype and the backend.
CHOICES holds each op kind's implementations (and CPU_VECTOR_WIDTHS the
vector widths): 'xla' is flax's own layer (nn.Conv, nn.max_pool,
nn.BatchNorm, lax.dot_general), 'im2col' ops/conv.py, 'slices'
ops/pool.py, 'custom_vjp' ops/norm.py's batch-norm backward and 'onednn'
the kernels of ops/onednn (max pools and the 1x1s' GEMMs among them).

On CPU 'auto' is oneDNN where its library is built and runs the compute
dtype natively (float32 always; bfloat16 where the CPU has bfloat16
instructions), else im2col convs, shifted-slice pools and XLA's GEMMs;
elsewhere XLA's own ops (cuDNN and the TPU compiler handle those well). The
hand-written batch-norm backward is 'auto' on CPU and GPU, flax's on TPU.
`compiler_options(config)` gives the XLA options of the jitted steps
(`config.ops.cpu_vector_width`).
"""

import dataclasses
import functools
from typing import Any, Mapping

import jax
import jax.numpy as jnp
from absl import logging
from flax import linen as nn

from ops import conv as conv_ops, cpu, norm as norm_ops, onednn
from ops import pool as pool_ops

# The valid values of each config.ops key, 'auto' first: the one list of
# them (configs/base.py and the README point here).
CHOICES = {
    'conv': ('auto', 'xla', 'im2col', 'onednn'),
    'pool': ('auto', 'xla', 'slices', 'onednn'),
    'norm': ('auto', 'xla', 'custom_vjp'),
    'pointwise': ('auto', 'xla', 'onednn'),
}
CPU_VECTOR_WIDTHS = ('auto', '256', '512')


def _check(key: str, value: Any, valid) -> None:
  if value not in valid:
    raise ValueError(f'ops.{key}={value!r} is not valid; choose one of '
                     f'{", ".join(repr(v) for v in valid)}.')


@dataclasses.dataclass(frozen=True)
class Ops:
  """The implementation of each op kind; never 'auto' (see `resolve`).

  The default is XLA's own ops through flax: the reference the others are
  tested against.
  """
  conv: str = 'xla'
  pool: str = 'xla'
  norm: str = 'xla'
  pointwise: str = 'xla'

  def __post_init__(self):
    for key, valid in CHOICES.items():
      _check(key, getattr(self, key), valid[1:])

  def conv_layer(self, features: int, kernel: int, stride: int = 1,
                 padding: str = 'SAME', **kw) -> nn.Module:
    """A dense kxk convolution with nn.Conv's params and init."""
    window, strides = (kernel, kernel), (stride, stride)
    if self.conv == 'xla':
      return nn.Conv(features, window, strides, padding, **kw)
    return conv_ops.Conv(features, window, strides, padding, impl=self.conv,
                         **kw)

  def norm_layer(self, train: bool, **kw) -> nn.Module:
    """A batch norm with nn.BatchNorm's variables: batch statistics when
    training, the running averages otherwise."""
    cls = nn.BatchNorm if self.norm == 'xla' else norm_ops.BatchNorm
    return cls(use_running_average=not train, **kw)

  def apply_pool(self, x, kind: str, window: int, stride: int,
                 padding: str):
    """(N,H,W,C) -> (N,Ho,Wo,C): a 'max' or 'avg' pool."""
    if self.pool == 'onednn' and kind == 'max':
      return pool_ops.onednn_max_pool(x, window, stride, padding)
    if self.pool != 'xla':  # oneDNN's average pools are not wired: slices.
      fn = pool_ops.max_pool if kind == 'max' else pool_ops.avg_pool
      return fn(x, window, stride, padding)
    fn = nn.max_pool if kind == 'max' else nn.avg_pool
    return fn(x, (window, window), (stride, stride), padding)


def resolve(config, backend: str | None = None) -> Ops:
  """The Ops for `config` (its `ops` block and `model.dtype`) on `backend`
  (default: JAX's). Raises a ValueError naming the key for an unknown
  choice, or for 'onednn' where it can't run; before anything compiles."""
  choices: Mapping[str, Any] = config.get('ops') or {}
  dtype = jnp.dtype(config.get('model', {}).get('dtype', 'float32'))
  backend = backend or jax.default_backend()
  for key, valid in CHOICES.items():
    _check(key, choices.get(key, 'auto'), valid)
  fast = 'onednn' if backend == 'cpu' and onednn.supports(dtype) else None
  if backend == 'cpu' and dtype == jnp.bfloat16 and not fast:
    _warn_slow_bfloat16()
  auto = {'conv': 'xla' if backend != 'cpu' else fast or 'im2col',
          'pool': 'xla' if backend != 'cpu' else fast or 'slices',
          'norm': 'custom_vjp' if backend in ('cpu', 'gpu') else 'xla',
          'pointwise': fast or 'xla'}
  chosen = {key: auto[key] if choices.get(key, 'auto') == 'auto'
            else choices[key] for key in CHOICES}
  if 'onednn' in (chosen['conv'], chosen['pool'], chosen['pointwise']):
    onednn.require(dtype)
  return Ops(**chosen)


@functools.cache
def _warn_slow_bfloat16() -> None:
  logging.warning(
      'model.dtype=bfloat16 on a CPU without bfloat16 instructions (or '
      'without the oneDNN ops): XLA emulates it, so this run will be slower '
      'than float32 here.')


def compiler_options(config) -> dict:
  """XLA options for the jitted steps. On CPU: the vector width XLA's own
  loops (batch norm, pools, ReLU, concatenation) are compiled for; 'auto'
  is 512 bits where the CPU has AVX-512, else XLA's default 256. Raises a
  ValueError for an unknown `ops.cpu_vector_width`."""
  width = str((config.get('ops') or {}).get('cpu_vector_width', 'auto'))
  _check('cpu_vector_width', width, CPU_VECTOR_WIDTHS)
  if jax.default_backend() != 'cpu':
    return {}
  if width == 'auto':
    width = '512' if cpu.has_avx512() else '256'
  return {'xla_cpu_prefer_vector_width': int(width)}
