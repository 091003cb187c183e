"""The pointwise (1x1) convolution core: one GEMM over every pixel.

A 1x1 convolution is a dense layer applied at every pixel:
(N, H, W, C) -> (N, H, W, F) is one GEMM over N*H*W rows. We write it as a
`lax.dot_general` that contracts the channel axis, never as
`lax.conv_general_dilated`: XLA lowers the dot to its GEMM kernel on every
backend, while its CPU convolution path runs a 1x1 kernel far slower
(benchmarks/bench_pointwise.py).
"""

import math

import jax.numpy as jnp
from jax import lax


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
