"""Fast CPU forms of convolution and pooling: same math, better-shaped HLO.

- `conv`: lax.conv forward; backward with the weight gradient as chunked
  im2col 2-D GEMMs (XLA:CPU's own weight-gradient conv runs 2-5x slower).
- `onednn_conv`: all three passes in oneDNN (models/onednn.py), 2-4x faster
  again on CPU where its library is built; the default there.
- `max_pool` / `avg_pool`: maxima / sums of shifted slices, with a cheap
  gradient (no select-and-scatter).
- `onednn_max_pool`: oneDNN's max pool, forward and backward, 1.5-3x
  faster again than `max_pool`.
`resolve('auto', ...)` picks these on CPU and the lax ops on GPU/TPU.
Checked against lax in tests/test_fast_ops.py; timed by scripts/bench_train.py.
"""

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax import lax

from models import onednn

CONV_IMPLS = ('auto', 'xla', 'im2col', 'onednn')
POOL_IMPLS = ('auto', 'xla', 'slices', 'onednn')
_FAST_BACKENDS = ('cpu',)


def resolve(impl: str, fast: str, backends=_FAST_BACKENDS) -> str:
  """'auto' -> `fast` on `backends` (CPU), 'xla' elsewhere; others unchanged."""
  if impl != 'auto':
    return impl
  return fast if jax.default_backend() in backends else 'xla'


def same_pads(size: int, window: int, stride: int) -> tuple[int, int]:
  """lax's SAME padding (low, high) of one spatial axis."""
  out = -(-size // stride)
  total = max((out - 1) * stride + window - size, 0)
  return total // 2, total - total // 2


def pad_spatial(x, window, stride, padding, value=0.0):
  """(N,H,W,C) -> padded (N,H',W',C) and the output size (Ho, Wo)."""
  if padding == 'VALID':
    h, w = x.shape[1:3]
    return x, ((h - window) // stride + 1, (w - window) // stride + 1)
  ph = same_pads(x.shape[1], window, stride)
  pw = same_pads(x.shape[2], window, stride)
  x = jnp.pad(x, ((0, 0), ph, pw, (0, 0)), constant_values=value)
  return x, (-(-(x.shape[1] - sum(ph)) // stride),
             -(-(x.shape[2] - sum(pw)) // stride))


def window_slice(x, i, j, out_hw, stride):
  """x[:, i::stride, j::stride] cut to out_hw: one tap of every window."""
  ho, wo = out_hw
  return lax.slice(x, (0, i, j, 0),
                   (x.shape[0], i + stride * (ho - 1) + 1,
                    j + stride * (wo - 1) + 1, x.shape[3]),
                   (1, stride, stride, 1))


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
  """Which weight gradient is fastest here (measured on a 2-core AVX-512 CPU).

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
  accumulated. Small patches stay in cache and cost no page faults; the whole
  patch matrix at once (k*k times the activations) runs 2-4x slower here.
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
    taps = [_shift(_shift(xb, i, 2, ho, stride), j, 3, wo, stride)
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
    taps = [_shift(_shift(gb, k - 1 - i, 2, hp, 1), k - 1 - j, 3, wp, 1)
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
  at their strided offsets in one fused loop; XLA's lhs-dilated convolution
  runs 2-3x slower here.
  """
  if stride == 1:
    x = jax.ShapeDtypeStruct(x_shape, g.dtype)
    return jax.linear_transpose(
        lambda x: lax_conv(x, kernel, stride, padding), x)(g)[0]
  n, h, w, c = x_shape
  k, f = kernel.shape[0], kernel.shape[-1]
  (top, _), (left, _) = _pads(x_shape, k, stride, padding)
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
  """lax_conv's values, all three passes in oneDNN (models/onednn.py)."""
  return _onednn_conv_fwd(x, kernel, stride, padding)[0]


def _onednn_conv_fwd(x, kernel, stride, padding):
  onednn.require(x.dtype)
  onednn.require(kernel.dtype)
  k, f = kernel.shape[0], kernel.shape[-1]
  pads = _pads(x.shape, k, stride, padding)
  out = _out_shape(x.shape, k, stride, pads, f)
  y = onednn.call('onednn_conv_fwd', _f32(out), x, kernel, stride=stride,
                  pads=pads)
  return y, (x, kernel)


def _onednn_conv_bwd(stride, padding, res, g):
  x, kernel = res
  pads = _pads(x.shape, kernel.shape[0], stride, padding)
  kw = dict(stride=stride, pads=pads)
  dx = onednn.call('onednn_conv_bwd_data', _f32(x.shape), g, kernel, **kw)
  dw = onednn.call('onednn_conv_bwd_weights', _f32(kernel.shape), x, g, **kw)
  return dx, dw


onednn_conv.defvjp(_onednn_conv_fwd, _onednn_conv_bwd)


def _f32(shape):
  return jax.ShapeDtypeStruct(shape, jnp.float32)


def _out_shape(shape, window, stride, pads, features):
  """(N,H,W,C) -> (N,Ho,Wo,features) of a window/stride op with pads."""
  return (shape[0], *[(size + lo + hi - window) // stride + 1
                      for size, (lo, hi) in zip(shape[1:3], pads)], features)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def onednn_max_pool(x, window=3, stride=1, padding='SAME'):
  """nn.max_pool's values and gradient in oneDNN: the forward saves each
  output's window position of its first maximum (one byte, the same index
  as max_pool's), the backward adds the output gradient there."""
  return _onednn_max_pool_fwd(x, window, stride, padding)[0]


def _onednn_max_pool_fwd(x, window, stride, padding):
  onednn.require(x.dtype)
  if window * window > 255:  # The index is one byte.
    raise ValueError(f'onednn_max_pool: window={window} is over 15; use '
                     "pool_impl='slices'.")
  pads = _pads(x.shape, window, stride, padding)
  out = _out_shape(x.shape, window, stride, pads, x.shape[-1])
  y, where = onednn.call('onednn_max_pool_fwd',
                         (_f32(out), jax.ShapeDtypeStruct(out, jnp.uint8)),
                         x, window=window, stride=stride, pads=pads)
  return y, (where, x.shape)


def _onednn_max_pool_bwd(window, stride, padding, res, g):
  where, shape = res
  pads = _pads(shape, window, stride, padding)
  return (onednn.call('onednn_max_pool_bwd', _f32(shape), g, where,
                      window=window, stride=stride, pads=pads),)


onednn_max_pool.defvjp(_onednn_max_pool_fwd, _onednn_max_pool_bwd)


def fast_impl(fallback: str, dtype=jnp.float32) -> str:
  """What impl='auto' means on CPU: 'onednn' where its library is built and
  the compute is float32, else `fallback` ('im2col' convs, 'slices' pools)."""
  return ('onednn' if jnp.dtype(dtype) == jnp.float32 and onednn.available()
          else fallback)


def _taps(xp, window, stride, out_hw):
  """The window*window shifted (strided) views, in row-major window order."""
  return [window_slice(xp, i, j, out_hw, stride)
          for i in range(window) for j in range(window)]


def _shift(xp, t, axis, size, stride):
  """xp[t : t + stride*(size-1) + 1 : stride] along `axis`."""
  start, stop, step = [0] * xp.ndim, list(xp.shape), [1] * xp.ndim
  start[axis], stop[axis], step[axis] = t, t + stride * (size - 1) + 1, stride
  return lax.slice(xp, start, stop, step)


def _pad_axis(x, axis, lo, hi, value):
  """lax.pad along one axis."""
  config = [(0, 0, 0)] * x.ndim
  config[axis] = (lo, hi, 0)
  return lax.pad(x, jnp.asarray(value, x.dtype), config)


def _pads(shape, window, stride, padding):
  """Per spatial axis (lo, hi) padding of (N,H,W,C): lax's SAME, or none."""
  if padding == 'VALID':
    return (0, 0), (0, 0)
  return tuple(same_pads(n, window, stride) for n in shape[1:3])


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2, 3))
def max_pool(x, window=3, stride=1, padding='SAME'):
  """(N,H,W,C) -> (N,Ho,Wo,C), nn.max_pool's values: the max of the
  window**2 shifted (strided) slices, one fused loop.

  The gradient goes to the first maximum of each window in row-major order,
  exactly as XLA's select-and-scatter routes it, but is computed from a
  small-int "first tap" per output, saved by the forward, as one fused sum
  of shifted, masked copies of the output gradient (no select-and-scatter,
  which XLA:CPU expands into iota/scatter index arrays).
  """
  return _max_pool_fwd(x, window, stride, padding)[0]


def _max_pool_fwd(x, window, stride, padding):
  # The barriers (here and in the backward) keep XLA from fusing the op that
  # produces x (or g) into the k*k taps, computing it k*k times: without them
  # the GoogLeNet width 0.5 step ran 16% slower instead of 21% faster.
  x = lax.optimization_barrier(x)
  xp, out_hw = pad_spatial(x, window, stride, padding, -jnp.inf)
  taps = _taps(xp, window, stride, out_hw)
  y = functools.reduce(jnp.maximum, taps)
  index = jnp.int8 if window**2 <= 127 else jnp.int32
  first = jnp.full(y.shape, len(taps) - 1, index)
  for t in range(len(taps) - 2, -1, -1):
    first = jnp.where(taps[t] == y, index(t), first)
  return y, (first, x.shape)


def _max_pool_bwd(window, stride, padding, res, g):
  """dx[p] = sum_t [first[o] == t] g[o] over the o whose tap t is p.

  Gathered, for one fused loop: g and `first` are dilated by the stride
  (holes: 0 and k*k, no tap) and padded once; tap (i, j) reads them shifted
  back.
  """
  first, (n, h, w, c) = res
  k, out_hw = window, g.shape[1:3]
  lo = [p[0] for p in _pads((n, h, w, c), k, stride, padding)]
  config = [(0, 0, 0)] + [
      (k - 1, max(0, l + size - (stride * (o - 1) + 1)), stride - 1)
      for l, size, o in zip(lo, (h, w), out_hw)] + [(0, 0, 0)]
  g, first = lax.optimization_barrier((g, first))
  gd = lax.pad(g, jnp.zeros((), g.dtype), config)
  fd = lax.pad(first, jnp.asarray(k * k, first.dtype), config)
  zero = jnp.zeros((), g.dtype)
  parts = []
  for i in range(k):
    for j in range(k):
      start = (0, k - 1 + lo[0] - i, k - 1 + lo[1] - j, 0)
      stop = (n, start[1] + h, start[2] + w, c)
      parts.append(jnp.where(lax.slice(fd, start, stop) == i * k + j,
                             lax.slice(gd, start, stop), zero))
  return (functools.reduce(jnp.add, parts),)


max_pool.defvjp(_max_pool_fwd, _max_pool_bwd)


def _sum_1d(x, axis, window, stride, pads):
  xp = _pad_axis(x, axis, *pads, 0.0)
  size = (xp.shape[axis] - window) // stride + 1
  return functools.reduce(jnp.add, [_shift(xp, t, axis, size, stride)
                                    for t in range(window)])


def avg_pool(x, window=3, stride=1, padding='SAME'):
  """nn.avg_pool (padding counted in the mean) as sums of shifted slices."""
  ph, pw = _pads(x.shape, window, stride, padding)
  y = _sum_1d(_sum_1d(x, 2, window, stride, pw), 1, window, stride, ph)
  return y / (window * window)


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
      raise ValueError(f'fast_ops.Conv needs a square kernel and equal '
                       f'strides, got {self.kernel_size}, {self.strides}.')
    kernel = self.param('kernel', self.kernel_init,
                        (kh, kw, x.shape[-1], self.features), self.param_dtype)
    bias = (self.param('bias', self.bias_init, (self.features,),
                       self.param_dtype) if self.use_bias else None)
    x, kernel, bias = nn.dtypes.promote_dtype(x, kernel, bias, dtype=self.dtype)
    fn = onednn_conv if self.impl == 'onednn' else conv
    y = fn(x, kernel, self.strides[0], self.padding)
    return y if bias is None else y + bias
