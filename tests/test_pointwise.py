"""The pointwise (1x1) core against XLA's own convolution.

`PointwiseConv` writes a 1x1 convolution as a `lax.dot_general` over the
channel axis (impl 'xla'), or as oneDNN GEMMs (impl 'onednn'). Here both are
checked against `lax.conv_general_dilated` with the
same kernel reshaped to (1, 1, C, F) (NHWC / HWIO): outputs and gradients
w.r.t. the input, the kernel and the bias, in float32 and bfloat16 compute.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from models.layers import ConvBlock
from models.pointwise import PointwiseConv, pointwise
from ops import onednn

DIMS = ('NHWC', 'HWIO', 'NHWC')
HI = lax.Precision.HIGHEST


def conv1x1_reference(x, kernel, bias=None, stride=1, padding='SAME'):
  """A 1x1 convolution the slow, obvious way: XLA's conv op."""
  y = lax.conv_general_dilated(
      x, kernel.reshape(1, 1, *kernel.shape), (stride, stride), padding,
      dimension_numbers=DIMS, precision=HI)
  return y if bias is None else y + bias


def random_inputs(shape, features, seed=0):
  rng = np.random.default_rng(seed)
  x = rng.standard_normal(shape).astype(np.float32)
  kernel = rng.standard_normal((shape[-1], features)).astype(np.float32)
  bias = rng.standard_normal((features,)).astype(np.float32)
  cotangent = rng.standard_normal((*shape[:-1], features)).astype(np.float32)
  return map(jnp.asarray, (x, kernel, bias, cotangent))


def assert_close(actual, expected, dtype):
  actual, expected = np.asarray(actual, np.float32), np.asarray(expected, np.float32)
  assert actual.shape == expected.shape
  if dtype == jnp.float32:
    np.testing.assert_allclose(actual, expected, rtol=1e-5, atol=1e-5)
  else:  # bfloat16 keeps 8 bits of mantissa: ~1e-2 relative to the scale.
    scale = np.abs(expected).max()
    np.testing.assert_allclose(actual, expected, rtol=2e-2, atol=2e-2 * scale)


SHAPES = [((2, 5, 7, 3), 4), ((1, 8, 8, 16), 8), ((3, 1, 1, 5), 2)]


@pytest.mark.parametrize('impl', [
    'xla', pytest.param('onednn', marks=pytest.mark.skipif(
        not onednn.available(), reason=f'oneDNN: {onednn.unavailable_reason()}'))])
@pytest.mark.parametrize('use_bias', [True, False], ids=['bias', 'nobias'])
@pytest.mark.parametrize('dtype', [jnp.float32, jnp.bfloat16],
                         ids=['f32', 'bf16'])
@pytest.mark.parametrize('shape,features', SHAPES,
                         ids=[f'{s}->{f}' for s, f in SHAPES])
def test_pointwise_conv_matches_lax_conv(shape, features, dtype, use_bias,
                                         impl):
  x, kernel, bias, cotangent = random_inputs(shape, features)
  module = PointwiseConv(features, use_bias=use_bias, dtype=dtype, impl=impl)
  if impl == 'onednn' and not onednn.supports(dtype):  # bf16 without bf16 ISA.
    with pytest.raises(ValueError, match='bfloat16 instructions'):
      module.init(jax.random.PRNGKey(0), x)
    return
  params = {'kernel': kernel, **({'bias': bias} if use_bias else {})}
  # The module's own init creates exactly these params, in float32.
  init = jax.eval_shape(module.init, jax.random.PRNGKey(0), x)['params']
  assert jax.tree.map(lambda a: (a.shape, a.dtype), init) == jax.tree.map(
      lambda a: (a.shape, a.dtype), params)

  def ours(x, params):
    return module.apply({'params': params}, x)

  def reference(x, params):  # Same casts as the module: compute in `dtype`.
    b = params['bias'].astype(dtype) if use_bias else None
    return conv1x1_reference(x.astype(dtype), params['kernel'].astype(dtype), b)

  y, y_ref = jax.jit(ours)(x, params), jax.jit(reference)(x, params)
  assert y.dtype == y_ref.dtype == dtype
  assert y.shape == (*shape[:-1], features)
  assert_close(y, y_ref, dtype)

  def loss(f):
    return lambda x, p: jnp.sum(f(x, p).astype(jnp.float32) * cotangent)

  (gx, gp) = jax.jit(jax.grad(loss(ours), argnums=(0, 1)))(x, params)
  (gx_ref, gp_ref) = jax.jit(jax.grad(loss(reference), argnums=(0, 1)))(x, params)
  assert gx.dtype == jnp.float32 and gp['kernel'].dtype == jnp.float32
  assert_close(gx, gx_ref, dtype)
  assert set(gp) == set(gp_ref) == set(params)
  for name in params:
    assert_close(gp[name], gp_ref[name], dtype)
  # And the closed forms: dL/dk = x^T ct, dL/db = sum ct, dL/dx = ct k^T.
  if dtype == jnp.float32:
    x2, ct2 = x.reshape(-1, shape[-1]), cotangent.reshape(-1, features)
    assert_close(gp['kernel'], np.asarray(x2).T @ np.asarray(ct2), dtype)
    assert_close(gx.reshape(-1, shape[-1]),
                 np.asarray(ct2) @ np.asarray(kernel).T, dtype)
    if use_bias:
      assert_close(gp['bias'], np.asarray(ct2).sum(0), dtype)


def test_pointwise_function_is_a_channel_contraction():
  x, kernel, _, _ = random_inputs((2, 3, 4, 5), 6)
  y = pointwise(x, kernel, precision=HI)
  np.testing.assert_allclose(y, np.einsum('nhwc,cf->nhwf', x, kernel),
                             rtol=1e-5, atol=1e-5)
  assert_close(y, conv1x1_reference(x, kernel), jnp.float32)


@pytest.mark.parametrize('dtype', [None, jnp.float32, jnp.bfloat16])
def test_output_dtype_follows_dtype_and_params_stay_float32(dtype):
  x = jnp.ones((2, 4, 4, 3), jnp.float32)
  module = PointwiseConv(5, dtype=dtype)
  variables = module.init(jax.random.PRNGKey(0), x)
  assert {a.dtype for a in jax.tree.leaves(variables)} == {jnp.dtype(jnp.float32)}
  y = module.apply(variables, x)
  assert y.dtype == (dtype or jnp.float32)
  # dtype=None keeps the input's dtype (promoted with the float32 params).
  y16 = module.apply(variables, x.astype(jnp.bfloat16))
  assert y16.dtype == (jnp.float32 if dtype is None else dtype)


def test_dense_head_on_2d_input():
  x, kernel, bias, _ = random_inputs((4, 7), 3)
  module = PointwiseConv(3)
  assert module.layer_type(x.shape) == 'dense'
  assert module.macs(x.shape, (4, 3)) == 4 * 7 * 3
  y = module.apply({'params': {'kernel': kernel, 'bias': bias}}, x)
  assert y.shape == (4, 3)
  np.testing.assert_allclose(
      y, np.asarray(x) @ np.asarray(kernel) + np.asarray(bias),
      rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize('shape', [(1, 9, 5, 3), (2, 1, 1, 8), (2, 6, 6, 1)])
def test_1x1_changes_only_channels(shape):
  module = PointwiseConv(11)
  assert module.layer_type(shape) == 'conv1x1'
  out = jax.eval_shape(
      lambda x: module.init_with_output(jax.random.PRNGKey(0), x)[0],
      jax.ShapeDtypeStruct(shape, jnp.float32))
  assert out.shape == (*shape[:-1], 11)
  assert module.macs(shape, out.shape) == shape[0] * shape[1] * shape[2] * shape[3] * 11


@pytest.mark.parametrize('padding', ['SAME', 'VALID'])
@pytest.mark.parametrize('shape', [(2, 7, 6, 3), (1, 8, 8, 4), (1, 1, 5, 2)])
@pytest.mark.parametrize('act', ['linear', 'relu'])
def test_strided_1x1_conv_block_is_a_strided_conv(shape, padding, act):
  features = 5
  x, kernel, bias, _ = random_inputs(shape, features, seed=1)
  block = ConvBlock(features, kernel=1, stride=2, padding=padding, norm='none',
                    act=act, use_bias=True)
  y = block.apply({'params': {'pointwise': {'kernel': kernel, 'bias': bias}}}, x)
  y_ref = conv1x1_reference(x, kernel, bias, stride=2, padding=padding)
  y_ref = jax.nn.relu(y_ref) if act == 'relu' else y_ref
  assert y.shape == y_ref.shape == (shape[0], -(-shape[1] // 2),
                                     -(-shape[2] // 2), features)
  assert_close(y, y_ref, jnp.float32)
  assert block.layer_type(shape) == 'conv1x1/2'
  assert block.macs(shape, y.shape) == np.prod(y.shape[:-1]) * shape[-1] * features


@pytest.mark.parametrize('shape', [(5,), (2, 3, 5), (2, 1, 3, 2, 5)])
def test_pointwise_any_rank(shape):
  x, kernel, bias, _ = random_inputs(shape, 4, seed=2)
  y = PointwiseConv(4).apply({'params': {'kernel': kernel, 'bias': bias}}, x)
  assert y.shape == (*shape[:-1], 4)
  np.testing.assert_allclose(
      y, np.einsum('...c,cf->...f', x, kernel) + np.asarray(bias),
      rtol=1e-5, atol=1e-5)
