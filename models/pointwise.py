"""PointwiseConv: the 1x1 convolution as a layer (its core: ops/pointwise.py).

A 1x1 convolution is a dense layer applied at every pixel: it changes the
channel count and leaves space alone.
"""

import math
from typing import Any

import jax.numpy as jnp
from flax import linen as nn

from ops.pointwise import onednn_pointwise, pointwise

default_kernel_init = nn.initializers.lecun_normal()


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
  impl: str = 'xla'  # How the GEMM is computed: ops.Ops.pointwise.

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
    if self.impl == 'onednn':
      y = onednn_pointwise(x, kernel)  # (..., F)
    else:
      y = pointwise(x, kernel, self.precision)
    if bias is not None:
      y = y + bias
    return y
