"""Convolutions computed faster on CPU than XLA's own: same params and values.

- `conv`: lax.conv forward; backward with the weight gradient as chunked
  im2col 2-D GEMMs and a col2im input gradient for strided convs (XLA:CPU's
  own weight-gradient and lhs-dilated convolutions are slow).
- `onednn_conv`: forward and both gradients in oneDNN (ops/onednn).
- `Conv`: nn.Conv's params and init, computed by either.
Checked against lax in tests/test_ops.py; timed by benchmarks/bench_train.py.
"""

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax import lax

from ops import onednn
from ops.windows import out_shape, pad_spatial, shift, spatial_pads

_DIMS = ('NHWC', 'HWIO', 'NHWC')


def lax_conv(x, kernel, stride=1, padding='SAME'):
  """nn.Conv's convolution: (N,H,W,C) * (k,k,C,F) -> (N,Ho,Wo,F)."""
  return lax.conv_general_dilated(x, kernel, (stride, stride), padding,
                                  dimension_numbers=_DIMS)


def _divisor_at_most(n: int, m: int) -> int:
  m = max(1, min(n, m))
  while n % m:
    m -= 1
  return m


def weight_grad_method(x_shape, kernel_shape, stride) -> str:
  """Which weight gradient to use for a shape (chosen by timing each on a
  2-core AVX-512 CPU, benchmarks/bench_train.py).

  'input': patches of x, k*k*C wide: the default.
  'output': patches of dy, k*k*F wide: for outputs narrower than half the
    input (F < C/2), at stride 1 on maps of 8x8 or more.
  'xla': XLA's own convolution: narrow outputs on smaller or strided maps,
    where both patch forms lose.
  """
  c, f = kernel_shape[2:]
  if 2 * f >= c:
    return 'input'
  return 'output' if stride == 1 and min(x_shape[1:3]) >= 8 else 'xla'


def weight_grad(x, g, window, stride=1, padding='SAME', rows=1024,
                method=None):
  """dL/dkernel (k,k,C,F) of lax_conv(x, kernel), from x (N,H,W,C) and
  g = dL/dy (N,Ho,Wo,F), as 2-D GEMMs over im2col patches.

  A chunk of images at a time (about `rows` pixels), inside a loop: the k*k
  shifted slices of the chunk, transposed, are concatenated into a contiguous
  patch matrix and one GEMM with a long contraction (the pixels) is
  accumulated. Small patches stay in cache and cost no page faults, which
  the whole patch matrix at once (k*k times the activations) does not.
  """
  method = method or weight_grad_method(x.shape, (window, window,
                                                  x.shape[-1], g.shape[-1]),
                                        stride)
  if method == 'output':
    return _weight_grad_output_patches(x, g, window, padding, rows)
  if method == 'xla':
    kernel = jax.ShapeDtypeStruct((window, window, x.shape[-1], g.shape[-1]),
                                  x.dtype)
    return jax.linear_transpose(
        lambda k: lax_conv(x, k, stride, padding), kernel)(g)[0]
  n, c, f = x.shape[0], x.shape[-1], g.shape[-1]
  xp, (ho, wo) = pad_spatial(x, window, stride, padding)
  chunk = _divisor_at_most(n, rows // (ho * wo))
  dt = jnp.promote_types(x.dtype, jnp.float32)

  def body(b, acc):
    xb = lax.dynamic_slice_in_dim(xp, b * chunk, chunk).transpose(3, 0, 1, 2)
    gb = lax.dynamic_slice_in_dim(g, b * chunk, chunk).reshape(-1, f)
    taps = [shift(shift(xb, i, 2, ho, stride), j, 3, wo, stride)
            for i in range(window) for j in range(window)]  # (C,B,Ho,Wo) each
    patches = jnp.concatenate(taps, axis=0).reshape(window * window * c, -1)
    return acc + lax.dot(patches, gb, preferred_element_type=dt)  # (kkC, F)

  acc = lax.fori_loop(0, n // chunk, body,
                      jnp.zeros((window * window * c, f), dt))
  return acc.reshape(window, window, c, f)


def _weight_grad_output_patches(x, g, window, padding, rows):
  """Stride 1: dW[t] = sum_p xp[p]^T dy[p - t] over the padded input grid,
  with dy zero outside its (Ho, Wo): patches of dy, k*k*F wide."""
  n, c, f, k = x.shape[0], x.shape[-1], g.shape[-1], window
  xp, (ho, wo) = pad_spatial(x, k, 1, padding)
  hp, wp = xp.shape[1:3]
  gq = jnp.pad(g, ((0, 0), (k - 1, hp - ho), (k - 1, wp - wo), (0, 0)))
  chunk = _divisor_at_most(n, rows // (hp * wp))
  dt = jnp.promote_types(x.dtype, jnp.float32)

  def body(b, acc):
    xb = lax.dynamic_slice_in_dim(xp, b * chunk, chunk).reshape(-1, c)
    gb = lax.dynamic_slice_in_dim(gq, b * chunk, chunk).transpose(3, 0, 1, 2)
    taps = [shift(shift(gb, k - 1 - i, 2, hp, 1), k - 1 - j, 3, wp, 1)
            for i in range(k) for j in range(k)]  # (F,B,Hp,Wp) each
    patches = jnp.concatenate(taps, axis=0).reshape(k * k * f, -1)
    return acc + lax.dot_general(xb, patches, (((0,), (1,)), ((), ())),
                                 preferred_element_type=dt)  # (C, kkF)

  acc = lax.fori_loop(0, n // chunk, body, jnp.zeros((c, k * k * f), dt))
  return acc.reshape(c, k, k, f).transpose(1, 2, 0, 3)


def input_grad(x_shape, kernel, g, stride=1, padding='SAME', rows=1024):
  """dL/dx (N,H,W,C) of lax_conv(x, kernel) from g = dL/dy (N,Ho,Wo,F).

  Stride 1: XLA's own (a convolution of g with the flipped kernel, which
  runs near GEMM speed). Strided: col2im, a chunk of images at a time: one
  GEMM g (rows, F) x kernel^T (F, k*k*C), then the k*k column blocks added
  at their strided offsets in one fused loop (XLA:CPU runs the strided case
  as a slower lhs-dilated convolution).
  """
  if stride == 1:
    x = jax.ShapeDtypeStruct(x_shape, g.dtype)
    return jax.linear_transpose(
        lambda x: lax_conv(x, kernel, stride, padding), x)(g)[0]
  n, h, w, c = x_shape
  k, f = kernel.shape[0], kernel.shape[-1]
  (top, _), (left, _) = spatial_pads(x_shape, k, stride, padding)
  ho, wo = g.shape[1:3]
  chunk = _divisor_at_most(n, rows // (ho * wo))
  kernel_t = kernel.reshape(k * k * c, f).T.astype(g.dtype)

  def body(b, _):
    gb = lax.dynamic_slice_in_dim(g, b * chunk, chunk).reshape(-1, f)
    cols = (gb @ kernel_t).reshape(chunk, ho, wo, k, k, c)
    dx = [_unslice(cols[:, :, :, i, j], i - top, j - left, stride, (h, w))
          for i in range(k) for j in range(k)]
    return b + 1, functools.reduce(jnp.add, dx)

  _, dx = lax.scan(body, 0, None, length=n // chunk)  # (n/chunk, chunk, ...)
  return dx.reshape(x_shape)


def _unslice(v, top, left, stride, hw):
  """The transpose of taking x[top::stride, left::stride] (one tap of every
  window of x, an (H, W) map; top / left < 0 are padding): v put back."""
  ho, wo = v.shape[1:3]
  span_h, span_w = stride * (ho - 1) + 1, stride * (wo - 1) + 1
  return lax.pad(v, jnp.zeros((), v.dtype),
                 ((0, 0, 0), (top, hw[0] - top - span_h, stride - 1),
                  (left, hw[1] - left - span_w, stride - 1), (0, 0, 0)))


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def conv(x, kernel, stride=1, padding='SAME'):
  """lax_conv with a faster CPU backward; same forward HLO and values."""
  return lax_conv(x, kernel, stride, padding)


def _conv_fwd(x, kernel, stride, padding):
  return lax_conv(x, kernel, stride, padding), (x, kernel)


def _conv_bwd(stride, padding, res, g):
  x, kernel = res
  dx = input_grad(x.shape, kernel, g, stride, padding)
  dw = weight_grad(x, g, kernel.shape[0], stride, padding)
  return dx, dw.astype(kernel.dtype)


conv.defvjp(_conv_fwd, _conv_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def onednn_conv(x, kernel, stride=1, padding='SAME'):
  """lax_conv's values, all three passes in oneDNN (ops/onednn)."""
  return _onednn_conv_fwd(x, kernel, stride, padding)[0]


def _onednn_conv_fwd(x, kernel, stride, padding):
  k, f = kernel.shape[0], kernel.shape[-1]
  pads = spatial_pads(x.shape, k, stride, padding)
  out = out_shape(x.shape, k, stride, pads, f)
  y = onednn.call('onednn_conv_fwd', jax.ShapeDtypeStruct(out, x.dtype), x,
                  kernel.astype(x.dtype), stride=stride, pads=pads)
  return y, (x, kernel)


def _onednn_conv_bwd(stride, padding, res, g):
  """dx in the activations' dtype; dw accumulated and returned in float32,
  then cast to the kernel's."""
  x, kernel = res
  pads = spatial_pads(x.shape, kernel.shape[0], stride, padding)
  kw = dict(stride=stride, pads=pads)
  dx = onednn.call('onednn_conv_bwd_data',
                   jax.ShapeDtypeStruct(x.shape, x.dtype), g,
                   kernel.astype(x.dtype), **kw)
  dw = onednn.call('onednn_conv_bwd_weights',
                   jax.ShapeDtypeStruct(kernel.shape, jnp.float32), x, g,
                   **kw)
  return dx, dw.astype(kernel.dtype)


onednn_conv.defvjp(_onednn_conv_fwd, _onednn_conv_bwd)


class Conv(nn.Module):
  """nn.Conv (square kernel, equal strides, no groups or dilation) computed
  by `conv`: same params ('kernel' (k,k,C,F), 'bias' (F,)), init and values."""
  features: int
  kernel_size: tuple
  strides: tuple = (1, 1)
  padding: str = 'SAME'
  use_bias: bool = True
  dtype: Any = None
  param_dtype: Any = jnp.float32
  kernel_init: Any = nn.initializers.lecun_normal()
  bias_init: Any = nn.initializers.zeros_init()
  impl: str = 'im2col'  # im2col (`conv`) | onednn (`onednn_conv`).

  @nn.compact
  def __call__(self, x):
    kh, kw = self.kernel_size
    if kh != kw or self.strides[0] != self.strides[1]:
      raise ValueError(f'ops.conv.Conv needs a square kernel and equal '
                       f'strides, got {self.kernel_size}, {self.strides}.')
    kernel = self.param('kernel', self.kernel_init,
                        (kh, kw, x.shape[-1], self.features), self.param_dtype)
    bias = (self.param('bias', self.bias_init, (self.features,),
                       self.param_dtype) if self.use_bias else None)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    fn = onednn_conv if self.impl == 'onednn' else conv
    y = fn(x, kernel, self.strides[0], self.padding)
    return y if bias is None else y + bias
