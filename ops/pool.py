"""Max and average pools computed faster on CPU than XLA's own: same values.

- `max_pool` / `avg_pool`: maxima / sums of shifted slices, with a cheap
  gradient (no select-and-scatter, which XLA:CPU expands into index arrays).
- `onednn_max_pool`: oneDNN's max pool, forward and backward (ops/onednn).
Checked against nn.max_pool / nn.avg_pool in tests/test_ops.py.
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax

from ops import onednn
from ops.windows import (out_shape, pad_axis, pad_spatial, shift,
                         spatial_pads, taps)


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
                     "--config.ops.pool=slices.")
  pads = spatial_pads(x.shape, window, stride, padding)
  out = out_shape(x.shape, window, stride, pads, x.shape[-1])
  y, where = onednn.call('onednn_max_pool_fwd',
                         (jax.ShapeDtypeStruct(out, x.dtype),
                          jax.ShapeDtypeStruct(out, jnp.uint8)),
                         x, window=window, stride=stride, pads=pads)
  return y, (where, x.shape)


def _onednn_max_pool_bwd(window, stride, padding, res, g):
  where, shape = res
  pads = spatial_pads(shape, window, stride, padding)
  return (onednn.call('onednn_max_pool_bwd',
                      jax.ShapeDtypeStruct(shape, g.dtype), g, where,
                      window=window, stride=stride, pads=pads),)


onednn_max_pool.defvjp(_onednn_max_pool_fwd, _onednn_max_pool_bwd)


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
  # produces x (or g) into the k*k taps, computing it k*k times, which made
  # the train step slower than XLA's own pool.
  x = lax.optimization_barrier(x)
  xp, out_hw = pad_spatial(x, window, stride, padding, -jnp.inf)
  views = taps(xp, window, stride, out_hw)
  y = functools.reduce(jnp.maximum, views)
  index = jnp.int8 if window**2 <= 127 else jnp.int32
  first = jnp.full(y.shape, len(views) - 1, index)
  for t in range(len(views) - 2, -1, -1):
    first = jnp.where(views[t] == y, index(t), first)
  return y, (first, x.shape)


def _max_pool_bwd(window, stride, padding, res, g):
  """dx[p] = sum_t [first[o] == t] g[o] over the o whose tap t is p.

  Gathered, for one fused loop: g and `first` are dilated by the stride
  (holes: 0 and k*k, no tap) and padded once; tap (i, j) reads them shifted
  back.
  """
  first, (n, h, w, c) = res
  k, out_hw = window, g.shape[1:3]
  lo = [p[0] for p in spatial_pads((n, h, w, c), k, stride, padding)]
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
  xp = pad_axis(x, axis, *pads, 0.0)
  size = (xp.shape[axis] - window) // stride + 1
  return functools.reduce(jnp.add, [shift(xp, t, axis, size, stride)
                                    for t in range(window)])


def avg_pool(x, window=3, stride=1, padding='SAME'):
  """nn.avg_pool (padding counted in the mean) as sums of shifted slices."""
  ph, pw = spatial_pads(x.shape, window, stride, padding)
  y = _sum_1d(_sum_1d(x, 2, window, stride, pw), 1, window, stride, ph)
  return y / (window * window)

