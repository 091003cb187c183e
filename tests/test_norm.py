"""ops/norm.py against flax's nn.BatchNorm and a plain-jnp reference.

Same variables, outputs, updated statistics and gradients (through a ReLU
and a random cotangent, as in the networks), in training and eval mode,
for 2-D and 4-D inputs and float32 / bfloat16 outputs; and gradients that
flow through the returned batch statistics themselves.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn

import ops
from models.layers import ConvBlock
from ops import Ops, norm
from tests.helpers import (assert_close, assert_trees_close, normal,
                           ops_config, run_with_grads)

KEY = jax.random.PRNGKey(0)


def inputs(shape):
  """An input with a channel-dependent offset and spread, as after a conv."""
  c = shape[-1]
  return normal(1, shape) * (1 + jnp.arange(c) / c) + jnp.linspace(-2, 3, c)


def variables(shape):
  """Random params and running statistics for a BatchNorm over shape[-1]."""
  c = (shape[-1],)
  return {'params': {'scale': 1 + 0.3 * normal(2, c), 'bias': normal(3, c)},
          'batch_stats': {'mean': normal(4, c), 'var': 1 + normal(5, c) ** 2}}


def run(module, v, x, train):
  """relu(module(x)), its updated statistics, and the gradients of
  sum(relu(y) * g) with respect to params and x."""
  module = module.clone(use_running_average=not train)

  def loss(params, x):
    y, state = module.apply({**v, 'params': params}, x, mutable=['batch_stats'])
    y = nn.relu(y)
    return jnp.sum(y.astype(jnp.float32) * normal(6, y.shape)), (y, state)
  (_, (y, state)), grads = jax.jit(jax.value_and_grad(
      loss, argnums=(0, 1), has_aux=True))(v['params'], x)
  return y, state, grads


@pytest.mark.parametrize('train', [True, False])
@pytest.mark.parametrize('shape', [(4, 5, 5, 3), (2, 7, 6, 16), (32, 9)])
def test_batch_norm_matches_flax(shape, train):
  x, v = inputs(shape), variables(shape)
  ref = nn.BatchNorm(momentum=0.9, epsilon=1e-5)
  ours = norm.BatchNorm(momentum=0.9, epsilon=1e-5)
  # Same variable tree: checkpoints carry over between the two.
  tree = lambda m: jax.tree.map(jnp.shape, jax.eval_shape(
      lambda: m.clone(use_running_average=not train).init(KEY, x)))
  assert tree(ours) == tree(ref)
  y_ref, state_ref, grads_ref = run(ref, v, x, train)
  y, state, grads = run(ours, v, x, train)
  assert_close(y, y_ref, rtol=1e-5)
  assert_trees_close(state, state_ref, rtol=1e-5)
  if train:  # The running averages moved toward the batch's statistics.
    mean = state['batch_stats']['mean']
    assert not np.allclose(mean, v['batch_stats']['mean'])
  assert_trees_close(grads, grads_ref)


def test_batch_norm_bfloat16_output_matches_flax():
  shape = (4, 6, 6, 8)
  x, v = inputs(shape).astype(jnp.bfloat16), variables(shape)
  y_ref, state_ref, grads_ref = run(
      nn.BatchNorm(momentum=0.9, dtype=jnp.bfloat16), v, x, True)
  y, state, grads = run(norm.BatchNorm(momentum=0.9, dtype=jnp.bfloat16),
                        v, x, True)
  assert y.dtype == y_ref.dtype == jnp.bfloat16
  assert grads[1].dtype == jnp.bfloat16  # dx in the input's dtype.
  assert_close(y.astype(jnp.float32), y_ref.astype(jnp.float32), rtol=1e-2,
               atol=1e-2)
  assert_trees_close(state, state_ref, rtol=1e-5)
  f32 = lambda t: jax.tree.map(lambda a: a.astype(jnp.float32), t)
  assert_trees_close(f32(grads), f32(grads_ref), rtol=2e-2, atol=2e-2)


def reference(x, scale, bias, epsilon=1e-5):
  """Training batch norm in plain jnp, differentiated by JAX."""
  axes = tuple(range(x.ndim - 1))
  mean = jnp.mean(x, axes)
  var = jnp.maximum(jnp.mean(x * x, axes) - mean * mean, 0.0)
  return (x - mean) * jax.lax.rsqrt(var + epsilon) * scale + bias, mean, var


@pytest.mark.parametrize('shape', [(3, 4, 4, 5), (64, 2)])
def test_batch_norm_gradients_through_statistics(shape):
  """Cotangents on all three outputs, the batch mean and variance included."""
  x = inputs(shape)
  scale, bias = 1 + 0.3 * normal(2, shape[-1:]), normal(3, shape[-1:])
  outs, vjp = jax.vjp(norm.batch_norm, x, scale, bias)
  outs_ref, vjp_ref = jax.vjp(reference, x, scale, bias)
  cot = tuple(normal(7 + i, o.shape) for i, o in enumerate(outs))
  assert_trees_close(outs + vjp(cot), outs_ref + vjp_ref(cot))


def test_conv_block_norms_agree():
  """ConvBlock with either ops.norm: same variables, outputs, gradients."""
  x = inputs((2, 6, 6, 3))
  blocks = {i: ConvBlock(5, 3, ops=Ops(norm=i)) for i in ('xla', 'custom_vjp')}
  v = blocks['xla'].init(KEY, x, train=True)
  v = jax.tree.map(lambda p: p + 0.1 * normal(8, p.shape), v)
  assert_trees_close(run_with_grads(blocks['custom_vjp'], v, x, True),
                     run_with_grads(blocks['xla'], v, x, True))
  with pytest.raises(ValueError, match="'xla', 'custom_vjp'"):
    ConvBlock(5, 3, ops=Ops(norm='fused')).init(KEY, x)


@pytest.mark.parametrize('backend,custom', [('cpu', True), ('gpu', True),
                                            ('tpu', False)])
def test_auto_norm_per_backend(backend, custom):
  """'auto' is the hand-written backward on CPU and GPU, flax's on TPU."""
  x = inputs((2, 6, 6, 3))
  chosen = ops.resolve(ops_config(conv='xla', pool='xla'), backend)
  jaxpr = jax.make_jaxpr(lambda x: ConvBlock(5, 3, ops=chosen).init_with_output(
      KEY, x, train=True))(x)
  assert ('custom_vjp' in str(jaxpr)) == custom
