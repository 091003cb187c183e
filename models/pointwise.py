"""The pointwise (1x1) convolution core.

A 1x1 convolution is a dense layer applied at every pixel:
(N, H, W, C) -> (N, H, W, F) is one GEMM over N*H*W rows. We write it as a
`lax.dot_general` that contracts the channel axis, never as
`lax.conv_general_dilated`: XLA lowers the dot to its GEMM kernel on every
backend, while its CPU convolution path runs a 1x1 kernel several times
slower (see scripts/bench_pointwise.py).
"""

import math
from typing import Any

import jax.numpy as jnp
from flax import linen as nn
from jax import lax

default_kernel_init = nn.initializers.lecun_normal()


def pointwise(x: jnp.ndarray, kernel: jnp.ndarray, precision=None) -> jnp.ndarray:
  """(..., C) x (C, F) -> (..., F), contracting the last axis of x.

  The leading axes are flattened first, so XLA sees one 2-D GEMM
  (rows, C) x (C, F); the reshapes are free (bitcasts). Contracting the last
  axis of the N-D array directly gives the same forward pass, but its kernel
  gradient is a dot_general contracting N, H and W together, which XLA's CPU
  backend canonicalises by physically transposing the (..., F) cotangent to
  (F, rows) first: an extra copy of the output-gradient every step.
  """
  lead = x.shape[:-1]
  x2 = x.reshape(math.prod(lead), x.shape[-1])
  y = lax.dot_general(x2, kernel, (((1,), (0,)), ((), ())), precision=precision)
  return y.reshape(*lead, kernel.shape[-1])


class PointwiseConv(nn.Module):
  """1x1 convolution / per-pixel dense layer: (..., C) -> (..., F).

  Also used as the classifier head: a dense layer is a pointwise conv on a
  tensor with no spatial axes.
  """
  features: int
  use_bias: bool = True
  dtype: Any = None  # Compute dtype; None keeps the input's.
  param_dtype: Any = jnp.float32
  precision: Any = None
  kernel_init: Any = default_kernel_init
  bias_init: Any = nn.initializers.zeros_init()

  def layer_type(self, in_shape) -> str:
    return 'conv1x1' if len(in_shape) > 2 else 'dense'

  def macs(self, in_shape, out_shape) -> int:  # One MAC per (row, C, F).
    return math.prod(out_shape[:-1]) * in_shape[-1] * self.features

  @nn.compact
  def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
    kernel = self.param('kernel', self.kernel_init,
                        (x.shape[-1], self.features), self.param_dtype)
    bias = (self.param('bias', self.bias_init, (self.features,),
                       self.param_dtype) if self.use_bias else None)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    y = pointwise(x, kernel, self.precision)  # (..., F)
    if bias is not None:
      y = y + bias
    return y
