"""Building blocks shared by every network: conv blocks and pools.

Layers that appear as one row of the compute accounting (accounting.py)
define `layer_type(in_shape)` and `macs(in_shape, out_shape)`. Multiply-adds of a
convolution are counted as H_out * W_out * k * k * C_in * C_out (/ groups),
per the input's batch.
"""

import math
from typing import Any, Callable

import jax.numpy as jnp
from flax import linen as nn

from models import fast_ops, norm as norm_ops
from models.pointwise import PointwiseConv

NORMS = ('batch', 'none')
ACTIVATIONS: dict[str, Callable] = {'relu': nn.relu, 'linear': lambda x: x}
POOLS = ('max', 'avg')


def check_choice(name: str, value: Any, valid) -> None:
  """Raises a ValueError naming the field and listing the valid values."""
  if value not in valid:
    raise ValueError(f'{name}={value!r} is not valid; choose one of '
                     f'{", ".join(repr(v) for v in valid)}.')


def _spatial(shape) -> int:
  """Number of output positions, batch included: N * H * W."""
  return math.prod(shape[:-1])


class ConvBlock(nn.Module):
  """Convolution -> optional batch norm -> activation.

  kernel == 1 goes through the pointwise core (strided 1x1 = subsample, then
  pointwise). `separable` makes a depthwise kxk conv followed by a pointwise
  1x1 (no nonlinearity in between, as in Xception). `impl` picks how a dense
  kxk conv is computed (fast_ops.Conv for 'im2col': the lax forward and input
  gradient, a chunked im2col GEMM for the kernel gradient; for 'onednn': all
  three in oneDNN); the depthwise conv always uses lax. Params are the same
  either way. `norm_impl` picks the batch norm's form (models/norm.py); its
  variables are the same either way too.
  """
  features: int
  kernel: int = 1
  stride: int = 1
  padding: str = 'SAME'
  separable: bool = False
  norm: str = 'batch'
  act: str = 'relu'
  use_bias: bool = False
  dtype: Any = jnp.float32
  impl: str = 'auto'  # kxk conv: auto | xla | im2col | onednn (fast_ops).
  norm_impl: str = 'auto'  # Batch norm: auto | xla | custom_vjp (norm.py).

  def layer_type(self, in_shape) -> str:
    k = f'{self.kernel}x{self.kernel}'
    kind = 'sep_conv' if self.separable and self.kernel > 1 else 'conv'
    return kind + k + (f'/{self.stride}' if self.stride > 1 else '')

  def macs(self, in_shape, out_shape) -> int:
    c_in, c_out, kk = in_shape[-1], out_shape[-1], self.kernel**2
    if self.kernel == 1:
      return _spatial(out_shape) * c_in * c_out
    if self.separable:  # depthwise kxk on C_in, then 1x1 C_in -> C_out.
      return _spatial(out_shape) * (kk * c_in + c_in * c_out)
    return _spatial(out_shape) * kk * c_in * c_out

  @nn.compact
  def __call__(self, x, train: bool = False):
    check_choice('norm', self.norm, NORMS)
    check_choice('act', self.act, tuple(ACTIVATIONS))
    if self.kernel == 1:
      x = x[:, ::self.stride, ::self.stride] if self.stride > 1 else x
      y = PointwiseConv(self.features, self.use_bias, self.dtype,
                        name='pointwise')(x)
    else:
      window, strides = (self.kernel, self.kernel), (self.stride, self.stride)
      if self.separable:
        y = nn.Conv(x.shape[-1], window, strides, self.padding,
                    feature_group_count=x.shape[-1], use_bias=False,
                    dtype=self.dtype, name='depthwise')(x)
        y = PointwiseConv(self.features, self.use_bias, self.dtype,
                          name='pointwise')(y)
      else:
        check_choice('impl', self.impl, fast_ops.CONV_IMPLS)
        fast = fast_ops.fast_impl('im2col', self.dtype)
        impl = fast_ops.resolve(self.impl, fast)
        kw = dict(use_bias=self.use_bias, dtype=self.dtype, name='conv')
        y = (nn.Conv(self.features, window, strides, self.padding, **kw)
             if impl == 'xla' else
             fast_ops.Conv(self.features, window, strides, self.padding,
                           impl=impl, **kw))(x)
    if self.norm == 'batch':
      check_choice('norm_impl', self.norm_impl, norm_ops.NORM_IMPLS)
      bn = dict(momentum=0.9, epsilon=1e-5, dtype=self.dtype, name='bn')
      if fast_ops.resolve(self.norm_impl, 'custom_vjp',
                          norm_ops.AUTO_BACKENDS) == 'xla':
        y = nn.BatchNorm(use_running_average=not train, **bn)(y)
      else:
        y = norm_ops.BatchNorm(**bn)(y, train)
    return ACTIVATIONS[self.act](y)


class Pool(nn.Module):
  """Max or average pooling; a zero-MAC row in the accounting.

  impl='slices' (fast_ops.max_pool / avg_pool): maxima / sums of shifted
  slices, whose gradient avoids XLA:CPU's slow select-and-scatter.
  impl='onednn': max pools in oneDNN (fast_ops.onednn_max_pool); average
  pools as 'slices'.
  """
  kind: str = 'max'
  window: int = 3
  stride: int = 1
  padding: str = 'SAME'
  impl: str = 'auto'  # auto | xla | slices | onednn (models/fast_ops.py).

  def layer_type(self, in_shape) -> str:
    return f'{self.kind}pool{self.window}x{self.window}/{self.stride}'

  def macs(self, in_shape, out_shape) -> int:
    return 0

  @nn.compact
  def __call__(self, x):
    check_choice('pool', self.kind, POOLS)
    check_choice('impl', self.impl, fast_ops.POOL_IMPLS)
    impl = fast_ops.resolve(self.impl, fast_ops.fast_impl('slices', x.dtype))
    if impl == 'onednn' and self.kind == 'max':
      return fast_ops.onednn_max_pool(x, self.window, self.stride,
                                      self.padding)
    if impl != 'xla':
      pool = fast_ops.max_pool if self.kind == 'max' else fast_ops.avg_pool
      return pool(x, self.window, self.stride, self.padding)
    pool = nn.max_pool if self.kind == 'max' else nn.avg_pool
    return pool(x, (self.window, self.window), (self.stride, self.stride),
                self.padding)
