"""Batch norm over the last axis with a hand-written backward.

Same variables, statistics and outputs as `nn.BatchNorm(momentum, epsilon)`
(params 'scale', 'bias'; batch_stats 'mean', 'var'; the variance as
E[x^2] - E[x]^2, clipped at 0; statistics and normalization in float32),
so checkpoints and numerics carry over. What differs is the gradient:
autodiff of nn.BatchNorm's training forward makes XLA:CPU write x - mean and
the cotangent back out and re-read them; `batch_norm`'s backward needs two
per-channel sums (of g and g * x) and one elementwise pass,
dx = a * g + b * x + c per channel. Checked against nn.BatchNorm in
tests/test_norm.py. `--config.ops.norm` picks it: 'custom_vjp', or 'xla'
(nn.BatchNorm, differentiated by XLA); ops.resolve decides 'auto'.
"""

import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import linen as nn
from jax import lax

def _normalize(x, mean, var, scale, bias, epsilon):
  """(x - mean) * rsqrt(var + eps) * scale + bias, in float32."""
  return (x - mean) * (lax.rsqrt(var + epsilon) * scale) + bias


def _sums(*ts):
  """Per-channel sums of each (..., C) array over all leading axes."""
  return [jnp.sum(t, axis=tuple(range(t.ndim - 1))) for t in ts]


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def batch_norm(x, scale, bias, epsilon=1e-5):
  """Training-mode batch norm of float32 (..., C): (y, batch mean, batch var)."""
  return _batch_norm_fwd(x, scale, bias, epsilon)[0]


def _batch_norm_fwd(x, scale, bias, epsilon):
  rows = x.size // x.shape[-1]
  s1, s2 = _sums(x, x * x)
  mean = s1 / rows
  var = jnp.maximum(s2 / rows - mean * mean, 0.0)
  y = _normalize(x, mean, var, scale, bias, epsilon)
  return (y, mean, var), (x, mean, var, scale)


def _batch_norm_bwd(epsilon, res, cotangents):
  x, mean, var, scale = res
  g, g_mean, g_var = cotangents  # g_mean, g_var: zero unless stats are used.
  rows = x.size // x.shape[-1]
  rstd = lax.rsqrt(var + epsilon)
  sum_g, sum_gx = _sums(g, g * x)
  sum_g_xhat = (sum_gx - mean * sum_g) * rstd  # sum of g * (x - mean) * rstd.
  # dx = a g - a/rows (sum_g + xhat sum_g_xhat) + g_mean/rows
  #      + 2 g_var (x - mean)/rows, with a = scale * rstd and xhat the
  # normalized x; collected as a * g + x * b + c per channel.
  a = scale * rstd
  b = (2 * g_var - a * rstd * sum_g_xhat) / rows
  c = (g_mean - a * sum_g) / rows - mean * b
  return a * g + x * b + c, sum_g_xhat, sum_g


batch_norm.defvjp(_batch_norm_fwd, _batch_norm_bwd)


class BatchNorm(nn.Module):
  """nn.BatchNorm over the last axis (same fields and variables), using
  `batch_norm`.

  use_running_average=True normalizes with the running averages; False with
  the batch's statistics, and (outside init) updates the running averages:
  avg <- momentum * avg + (1 - momentum) * batch value. use_scale=False:
  no 'scale' param (a scale of 1), as nn.BatchNorm.
  """
  use_running_average: bool = False
  momentum: float = 0.99
  epsilon: float = 1e-5
  dtype: Any = None  # Output dtype; None keeps the input's.
  use_scale: bool = True

  @nn.compact
  def __call__(self, x):  # (..., C) -> (..., C)
    features = (x.shape[-1],)
    scale = (self.param('scale', nn.initializers.ones, features, jnp.float32)
             if self.use_scale else jnp.ones(features, jnp.float32))
    bias = self.param('bias', nn.initializers.zeros, features, jnp.float32)
    avg_mean = self.variable('batch_stats', 'mean', jnp.zeros, features,
                             jnp.float32)
    avg_var = self.variable('batch_stats', 'var', jnp.ones, features,
                            jnp.float32)
    dtype = self.dtype or x.dtype
    x = x.astype(jnp.float32)
    if self.use_running_average:
      y = _normalize(x, avg_mean.value, avg_var.value, scale, bias,
                     self.epsilon)
      return y.astype(dtype)
    y, mean, var = batch_norm(x, scale, bias, self.epsilon)
    if not self.is_initializing():
      m = self.momentum
      avg_mean.value = m * avg_mean.value + (1 - m) * mean
      avg_var.value = m * avg_var.value + (1 - m) * var
    return y.astype(dtype)
