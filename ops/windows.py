"""Window geometry shared by the conv and pool implementations.

Spatial padding as lax computes it, and the strided slices ("taps") that pick
one position of every window. Arrays are (N, H, W, C).
"""

import jax.numpy as jnp
from jax import lax


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


def taps(xp, window, stride, out_hw):
  """The window*window shifted (strided) views, in row-major window order."""
  return [window_slice(xp, i, j, out_hw, stride)
          for i in range(window) for j in range(window)]


def shift(xp, t, axis, size, stride):
  """xp[t : t + stride*(size-1) + 1 : stride] along `axis`."""
  start, stop, step = [0] * xp.ndim, list(xp.shape), [1] * xp.ndim
  start[axis], stop[axis], step[axis] = t, t + stride * (size - 1) + 1, stride
  return lax.slice(xp, start, stop, step)


def pad_axis(x, axis, lo, hi, value):
  """lax.pad along one axis."""
  config = [(0, 0, 0)] * x.ndim
  config[axis] = (lo, hi, 0)
  return lax.pad(x, jnp.asarray(value, x.dtype), config)


def spatial_pads(shape, window, stride, padding):
  """Per spatial axis (lo, hi) padding of (N,H,W,C): lax's SAME, or none."""
  if padding == 'VALID':
    return (0, 0), (0, 0)
  return tuple(same_pads(n, window, stride) for n in shape[1:3])


def out_shape(shape, window, stride, pads, features):
  """(N,H,W,C) -> (N,Ho,Wo,features) of a window/stride op with pads."""
  return (shape[0], *[(size + lo + hi - window) // stride + 1
                      for size, (lo, hi) in zip(shape[1:3], pads)], features)
