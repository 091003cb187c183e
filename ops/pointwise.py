"""The pointwise (1x1) convolution core: one GEMM over every pixel.

A 1x1 convolution is a dense layer applied at every pixel:
(N, H, W, C) -> (N, H, W, F) is one GEMM over N*H*W rows. We write it as a
`lax.dot_general` that contracts the channel axis, never as
`lax.conv_general_dilated`: XLA lowers the dot to its GEMM kernel on every
backend, while its CPU convolution path runs a 1x1 kernel far slower
(benchmarks/bench_pointwise.py). `onednn_pointwise` computes the same GEMMs
in oneDNN (ops/onednn), whose bfloat16 GEMMs XLA:CPU's do not match.
"""

import math

import jax
import jax.numpy as jnp
from jax import lax

from ops import onednn


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


@jax.custom_vjp
def onednn_pointwise(x: jnp.ndarray, kernel: jnp.ndarray) -> jnp.ndarray:
  """pointwise(x, kernel) with all three GEMMs in oneDNN; the kernel's
  gradient summed and returned in float32, then cast to its dtype."""
  return _onednn_pointwise_fwd(x, kernel)[0]


def _rows(x):  # (..., C) -> (rows, C)
  return x.reshape(-1, x.shape[-1])


def _onednn_pointwise_fwd(x, kernel):
  y = onednn.matmul(_rows(x), kernel.astype(x.dtype), x.dtype)
  return y.reshape(*x.shape[:-1], kernel.shape[-1]), (x, kernel)


def _onednn_pointwise_bwd(res, g):
  x, kernel = res
  g2 = _rows(g)
  dx = onednn.matmul(g2, kernel.astype(x.dtype), x.dtype, trans_b=True)
  dw = onednn.matmul(_rows(x), g2, jnp.float32, trans_a=True)
  return dx.reshape(x.shape), dw.astype(kernel.dtype)


onednn_pointwise.defvjp(_onednn_pointwise_fwd, _onednn_pointwise_bwd)
