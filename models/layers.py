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

from models.pointwise import PointwiseConv
from ops import Ops
from ops import windows

NORMS = ('batch', 'none')
ACTIVATIONS: dict[str, Callable] = {'relu': nn.relu, 'gelu': nn.gelu,
                                     'linear': lambda x: x}
POOLS = ('max', 'avg')


def check_choice(name: str, value: Any, valid) -> None:
  """Raises a ValueError naming the field and listing the valid values."""
  if value not in valid:
    raise ValueError(f'{name}={value!r} is not valid; choose one of '
                     f'{", ".join(repr(v) for v in valid)}.')


class ConvBlock(nn.Module):
  """Convolution -> optional batch norm -> activation.

  kernel == 1 goes through the pointwise core (strided 1x1 = subsample, then
  pointwise). `separable` makes a depthwise kxk conv followed by a pointwise
  1x1 (no nonlinearity in between, as in Xception). `ops` computes the 1x1,
  the dense kxk conv and the batch norm (ops/); the depthwise conv is
  always lax's. `pool` > 0 max-pools the conv's output (window and stride
  `pool`, VALID) before the norm and activation, as airbench does: they then
  run on a pool**2-th of the positions, and max-pooling commutes with an
  activation that never decreases (the norm's statistics are those of the
  pooled values).
  """
  features: int
  kernel: int = 1
  stride: int = 1
  padding: str = 'SAME'
  separable: bool = False
  norm: str = 'batch'
  norm_scale: bool = True  # A learned batch-norm scale (else 1).
  act: str = 'relu'
  use_bias: bool = False
  dtype: Any = jnp.float32
  pool: int = 0  # > 0: max-pool the conv's output before the norm.
  ops: Ops = Ops()  # How the 1x1, kxk conv and norm are computed.

  def layer_type(self, in_shape) -> str:
    k = f'{self.kernel}x{self.kernel}'
    kind = 'sep_conv' if self.separable and self.kernel > 1 else 'conv'
    pool = f'+maxpool{self.pool}' if self.pool else ''
    return kind + k + (f'/{self.stride}' if self.stride > 1 else '') + pool

  def conv_positions(self, in_shape) -> int:
    """N * H_out * W_out of the conv itself (before any `pool`)."""
    pads = windows.spatial_pads(in_shape, self.kernel, self.stride,
                                self.padding)
    return math.prod(windows.out_shape(in_shape, self.kernel, self.stride,
                                       pads, 1))

  def macs(self, in_shape, out_shape) -> int:
    c_in, c_out, kk = in_shape[-1], out_shape[-1], self.kernel**2
    positions = self.conv_positions(in_shape)
    if self.kernel == 1:
      return positions * c_in * c_out
    if self.separable:  # depthwise kxk on C_in, then 1x1 C_in -> C_out.
      return positions * (kk * c_in + c_in * c_out)
    return positions * kk * c_in * c_out

  @nn.compact
  def __call__(self, x, train: bool = False):
    check_choice('norm', self.norm, NORMS)
    check_choice('act', self.act, tuple(ACTIVATIONS))
    if self.kernel == 1:
      x = x[:, ::self.stride, ::self.stride] if self.stride > 1 else x
      y = PointwiseConv(self.features, self.use_bias, self.dtype,
                        impl=self.ops.pointwise, name='pointwise')(x)
    else:
      window, strides = (self.kernel, self.kernel), (self.stride, self.stride)
      if self.separable:
        y = nn.Conv(x.shape[-1], window, strides, self.padding,
                    feature_group_count=x.shape[-1], use_bias=False,
                    dtype=self.dtype, name='depthwise')(x)
        y = PointwiseConv(self.features, self.use_bias, self.dtype,
                          impl=self.ops.pointwise, name='pointwise')(y)
      else:
        y = self.ops.conv_layer(self.features, self.kernel, self.stride,
                                self.padding, use_bias=self.use_bias,
                                dtype=self.dtype, name='conv')(x)
    if self.pool:
      y = self.ops.apply_pool(y, 'max', self.pool, self.pool, 'VALID')
    if self.norm == 'batch':
      y = self.ops.norm_layer(train, momentum=0.9, epsilon=1e-5,
                              use_scale=self.norm_scale,
                              dtype=self.dtype, name='bn')(y)
    return ACTIVATIONS[self.act](y)


class Pool(nn.Module):
  """Max or average pooling, computed by `ops`; a zero-MAC row in the
  accounting."""
  kind: str = 'max'
  window: int = 3
  stride: int = 1
  padding: str = 'SAME'
  ops: Ops = Ops()

  def layer_type(self, in_shape) -> str:
    return f'{self.kind}pool{self.window}x{self.window}/{self.stride}'

  def macs(self, in_shape, out_shape) -> int:
    return 0

  @nn.compact
  def __call__(self, x):
    check_choice('pool', self.kind, POOLS)
    return self.ops.apply_pool(x, self.kind, self.window, self.stride,
                              self.padding)
