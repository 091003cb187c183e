"""The Inception module and the networks built from it.

Sibling fusion (one GEMM for the 1x1 convs that read the same input) against
the unfused module with the same weights, channel bookkeeping of the naive and
reduced modules, the ablation knobs, their error messages, and the MAC / param
counts the write-up quotes.
"""

import fractions
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import linen as nn
from jax import lax

import accounting
from models import build_model
from models.googlenet import GoogLeNet
from models.inception import CHOICES, InceptionModule, InceptionOptions, ReducedConv
from models.layers import ConvBlock, Pool
from models.small_inception import SmallInception
from tests.helpers import assert_trees_close, random_variables

KEY = jax.random.PRNGKey(0)
HEADS = ('b1x1', 'b3x3_reduce', 'b5x5_reduce')  # The 1x1s that read x, in order.


# ----------------------------------------------------------------- helpers --

def shapes_of(tree):
  return jax.tree.map(lambda a: (tuple(a.shape), jnp.dtype(a.dtype)), tree)


def params_count(tree) -> int:
  """Number of parameters in a tree of arrays or of shape tuples."""
  shapes = jax.tree.leaves(tree, is_leaf=lambda a: isinstance(a, tuple))
  return sum(math.prod(getattr(a, 'shape', a)) for a in shapes)


def fuse(tree):
  """Unfused variables (params, stats or their grads) -> the fused layout.

  The present heads among b1x1, b3x3_reduce, b5x5_reduce are concatenated
  along their output axis (the last one of every leaf: kernel (C, F), bias,
  BN scale/bias/mean/var (F,)) into `fused_1x1`; the rest is shared as is.
  """
  heads = [n for n in HEADS if n in tree]
  out = {k: v for k, v in tree.items() if k not in heads}
  out['fused_1x1'] = jax.tree.map(lambda *a: jnp.concatenate(a, axis=-1),
                                  *[tree[n] for n in heads])
  return out


def out_shape(module, x_shape, **kwargs):
  x = jax.ShapeDtypeStruct(x_shape, jnp.float32)
  return jax.eval_shape(
      lambda x: module.init_with_output(KEY, x, **kwargs)[0], x).shape


def param_shapes(module, x_shape):
  x = jax.ShapeDtypeStruct(x_shape, jnp.float32)
  return jax.tree.map(lambda a: a.shape,
                      jax.eval_shape(module.init, KEY, x)['params'])


WIDTHS = dict(c1=4, r3=3, c3=5, r5=2, c5=3, pool_proj=2)
X_SHAPE = (2, 6, 6, 5)


# ---------------------------------------------------------- sibling fusion --

FUSION_CASES = [  # (norm, use_bias, reduce_act, train)
    ('batch', False, 'relu', True),
    ('batch', False, 'linear', True),
    ('batch', False, 'relu', False),
    ('none', True, 'relu', False),
    ('none', True, 'linear', False),
]


@pytest.mark.parametrize('norm,use_bias,reduce_act,train', FUSION_CASES)
def test_fused_pointwise_equals_unfused(norm, use_bias, reduce_act, train):
  opts = dict(module='reduced', norm=norm, use_bias=use_bias,
              reduce_act=reduce_act)
  unfused = InceptionModule(**WIDTHS, opts=InceptionOptions(
      **opts, fuse_pointwise=False))
  fused = InceptionModule(**WIDTHS, opts=InceptionOptions(
      **opts, fuse_pointwise=True))
  rng = np.random.default_rng(1)
  x = jnp.asarray(rng.standard_normal(X_SHAPE), jnp.float32)

  v_unfused = random_variables(unfused, x)
  assert set(HEADS) <= set(v_unfused['params'])
  v_fused = {k: fuse(v) for k, v in v_unfused.items()}
  # The hand-built fused variables have exactly the fused module's layout.
  assert shapes_of(v_fused) == shapes_of(jax.eval_shape(fused.init, KEY, x))
  assert 'fused_1x1' in v_fused['params']
  assert not set(HEADS) & set(v_fused['params'])
  assert ('batch_stats' in v_fused) == (norm == 'batch')

  y_shape = (*X_SHAPE[:-1], 4 + 5 + 3 + 2)
  cotangent = jnp.asarray(rng.standard_normal(y_shape), jnp.float32)

  def run(module, variables):
    def loss(params):
      y, state = module.apply({**variables, 'params': params}, x, train=train,
                              mutable=['batch_stats'])
      return jnp.sum(y * cotangent), (y, state)
    return jax.jit(jax.value_and_grad(loss, has_aux=True))(variables['params'])

  (loss_u, (y_u, state_u)), grads_u = run(unfused, v_unfused)
  (loss_f, (y_f, state_f)), grads_f = run(fused, v_fused)

  assert y_u.shape == y_f.shape == y_shape
  np.testing.assert_allclose(y_f, y_u, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(loss_f, loss_u, rtol=1e-5)
  # The fused kernel's gradient is the three kernels' gradients side by side;
  # every other parameter's gradient is unchanged.
  assert_trees_close(grads_f, fuse(grads_u), rtol=1e-4, atol=1e-5,
                     absolute=True)
  fk = grads_f['fused_1x1']['pointwise']['kernel']
  assert fk.shape == (5, 4 + 3 + 2)
  np.testing.assert_allclose(
      fk[:, 4:7], grads_u['b3x3_reduce']['pointwise']['kernel'],
      rtol=1e-4, atol=1e-5)
  if norm == 'batch':
    new_u, new_f = state_u['batch_stats'], state_f['batch_stats']
    assert_trees_close(new_f, fuse(new_u), rtol=1e-5, atol=1e-5,
                       absolute=True)
    # In train mode the running statistics moved; in eval mode they did not.
    moved = not np.allclose(new_u['b1x1']['bn']['mean'],
                            v_unfused['batch_stats']['b1x1']['bn']['mean'])
    assert moved == train
  else:
    assert 'batch_stats' not in state_u and 'batch_stats' not in state_f


# --------------------------------------------------------- channel counts --

@pytest.mark.parametrize('pool', ['max', 'avg'])
def test_naive_output_is_c1_c3_c5_plus_input(pool):
  module = InceptionModule(**WIDTHS, opts=InceptionOptions(module='naive',
                                                           pool=pool))
  assert out_shape(module, (2, 7, 5, 6)) == (2, 7, 5, 4 + 5 + 3 + 6)
  # Naive: no reductions, no pool projection, r3/r5/pool_proj ignored.
  assert set(param_shapes(module, (2, 7, 5, 6))) == {'b1x1', 'b3x3', 'b5x5'}


def test_naive_pool_branch_passes_the_pooled_input_through():
  module = InceptionModule(**WIDTHS, opts=InceptionOptions(module='naive'))
  x = jnp.asarray(np.random.default_rng(2).standard_normal((2, 5, 5, 6)),
                  jnp.float32)
  y = module.apply(random_variables(module, x), x)
  pooled = nn.max_pool(x, (3, 3), (1, 1), 'SAME')
  np.testing.assert_array_equal(y[..., -6:], pooled)
  assert (y[..., :4] >= 0).all()  # The 1x1 branch is a ReLU conv.


@pytest.mark.parametrize('fuse_pointwise', [True, False])
def test_reduced_output_is_c1_c3_c5_pool_proj(fuse_pointwise):
  module = InceptionModule(**WIDTHS, opts=InceptionOptions(
      module='reduced', fuse_pointwise=fuse_pointwise))
  assert out_shape(module, (2, 7, 5, 6)) == (2, 7, 5, 4 + 5 + 3 + 2)
  p = param_shapes(module, (2, 7, 5, 6))
  heads = {'fused_1x1'} if fuse_pointwise else set(HEADS)
  assert set(p) == heads | {'b3x3', 'b5x5', 'pool_proj'}
  assert p['pool_proj']['pointwise']['kernel'] == (6, 2)
  assert p['b3x3']['conv']['kernel'] == (3, 3, 3, 5)
  assert p['b5x5']['conv']['kernel'] == (5, 5, 2, 3)
  if fuse_pointwise:
    assert p['fused_1x1']['pointwise']['kernel'] == (6, 4 + 3 + 2)


ABSENT_CASES = [
    # (module, fuse, widths override, expected channels, expected param keys)
    ('reduced', True, dict(c1=0), 5 + 3 + 2,
     {'fused_1x1': 3 + 2, 'b3x3': None, 'b5x5': None, 'pool_proj': None}),
    ('reduced', True, dict(c3=0), 4 + 3 + 2,
     {'fused_1x1': 4 + 2, 'b5x5': None, 'pool_proj': None}),
    ('reduced', True, dict(c5=0), 4 + 5 + 2,
     {'fused_1x1': 4 + 3, 'b3x3': None, 'pool_proj': None}),
    ('reduced', True, dict(pool_proj=0), 4 + 5 + 3,
     {'fused_1x1': 4 + 3 + 2, 'b3x3': None, 'b5x5': None}),
    ('reduced', True, dict(c1=0, c5=0), 5 + 2,  # One head left: not fused.
     {'b3x3_reduce': 3, 'b3x3': None, 'pool_proj': None}),
    ('reduced', False, dict(c3=0, r3=0), 4 + 3 + 2,
     {'b1x1': 4, 'b5x5_reduce': 2, 'b5x5': None, 'pool_proj': None}),
    ('naive', True, dict(c3=0), 4 + 3 + 6, {'b1x1': 4, 'b5x5': None}),
    ('naive', True, dict(c1=0, c5=0), 5 + 6, {'b3x3': None}),
]


@pytest.mark.parametrize('module,fuse_pointwise,override,channels,keys',
                         ABSENT_CASES)
def test_zero_width_branch_is_absent(module, fuse_pointwise, override,
                                     channels, keys):
  m = InceptionModule(**{**WIDTHS, **override}, opts=InceptionOptions(
      module=module, fuse_pointwise=fuse_pointwise))
  assert out_shape(m, (1, 4, 4, 6)) == (1, 4, 4, channels)
  p = param_shapes(m, (1, 4, 4, 6))
  assert set(p) == set(keys)
  for name, width in keys.items():
    if width is not None:
      assert p[name]['pointwise']['kernel'] == (6, width)


@pytest.mark.parametrize('module,channels', [('naive', 4 + 5 + 3),
                                             ('reduced', 4 + 5 + 3)])
def test_pool_none_drops_the_pool_branch(module, channels):
  m = InceptionModule(**WIDTHS, opts=InceptionOptions(module=module,
                                                      pool='none'))
  assert out_shape(m, (2, 5, 3, 6)) == (2, 5, 3, channels)
  assert 'pool_proj' not in param_shapes(m, (2, 5, 3, 6))


def test_all_zero_widths_or_missing_reduction_raise():
  x = jnp.zeros((1, 4, 4, 3))
  empty = InceptionModule(0, 0, 0, 0, 0, 0, InceptionOptions(module='reduced'))
  with pytest.raises(ValueError, match='no branches'):
    jax.eval_shape(empty.init, KEY, x)
  no_r3 = InceptionModule(**{**WIDTHS, 'r3': 0})
  with pytest.raises(ValueError, match='r3=0'):
    jax.eval_shape(no_r3.init, KEY, x)
  no_r5 = InceptionModule(**{**WIDTHS, 'r5': 0})
  with pytest.raises(ValueError, match='r5=0'):
    jax.eval_shape(no_r5.init, KEY, x)
  # The naive module ignores reductions, so zero ones are fine there.
  naive = InceptionModule(4, 0, 5, 0, 3, 0, InceptionOptions(module='naive'))
  assert out_shape(naive, (1, 4, 4, 3)) == (1, 4, 4, 4 + 5 + 3 + 3)


class Stack(nn.Module):
  """`depth` identical Inception modules; returns every module's output."""
  depth: int
  opts: InceptionOptions

  @nn.compact
  def __call__(self, x):
    outs = []
    for i in range(self.depth):
      x = InceptionModule(**WIDTHS, opts=self.opts, name=f'm{i}')(x)
      outs.append(x)
    return outs


@pytest.mark.parametrize('module', ['naive', 'reduced'])
def test_width_through_a_stack(module):
  c_in, s = 6, 4 + 5 + 3
  stack = Stack(4, InceptionOptions(module=module))
  x = jax.ShapeDtypeStruct((2, 5, 5, c_in), jnp.float32)
  outs = jax.eval_shape(lambda x: stack.init_with_output(KEY, x)[0], x)
  channels = [o.shape[-1] for o in outs]
  assert all(o.shape[:-1] == (2, 5, 5) for o in outs)
  if module == 'naive':  # C -> C + s -> C + 2s -> ...: width grows.
    assert channels == [c_in + s, c_in + 2 * s, c_in + 3 * s, c_in + 4 * s]
  else:
    assert channels == [s + 2] * 4


# ------------------------------------------------------------ reduce act --

def _reduce_outputs(fuse_pointwise, reduce_act):
  """(b3x3_reduce output, input of b3x3, module output) on random data."""
  module = InceptionModule(**WIDTHS, opts=InceptionOptions(
      module='reduced', reduce_act=reduce_act, fuse_pointwise=fuse_pointwise))
  x = jnp.asarray(np.random.default_rng(3).standard_normal(X_SHAPE),
                  jnp.float32)
  variables = random_variables(module, x)
  b3x3_inputs = []

  def grab(next_fun, args, kwargs, context):
    if context.method_name == '__call__' and context.module.name == 'b3x3':
      b3x3_inputs.append(args[0])
    return next_fun(*args, **kwargs)

  with nn.intercept_methods(grab):
    y, state = module.apply(variables, x, capture_intermediates=True,
                            mutable=['intermediates'])
  inter = state['intermediates']
  reduce_out = (inter['b3x3_reduce']['__call__'][0] if not fuse_pointwise
                else None)
  assert len(b3x3_inputs) == 1
  return reduce_out, b3x3_inputs[0], y


@pytest.mark.parametrize('fuse_pointwise', [False, True])
def test_reductions_carry_a_relu_by_default(fuse_pointwise):
  assert InceptionOptions().reduce_act == 'relu'
  reduce_out, b3x3_in, y = _reduce_outputs(fuse_pointwise, 'relu')
  if reduce_out is not None:
    assert reduce_out.shape == (*X_SHAPE[:-1], 3)
    assert (reduce_out >= 0).all() and (reduce_out > 0).any()
    np.testing.assert_array_equal(reduce_out, b3x3_in)
  assert (b3x3_in >= 0).all() and (b3x3_in > 0).any()
  assert (y[..., :4] >= 0).all()  # b1x1 keeps its ReLU either way.


@pytest.mark.parametrize('fuse_pointwise', [False, True])
def test_linear_reductions_have_no_relu(fuse_pointwise):
  reduce_out, b3x3_in, y = _reduce_outputs(fuse_pointwise, 'linear')
  if reduce_out is not None:
    assert (reduce_out < 0).any()
    np.testing.assert_array_equal(reduce_out, b3x3_in)
  assert (b3x3_in < 0).any()
  assert (y[..., :4] >= 0).all()  # Only the reductions lose the ReLU.


# ------------------------------------------------------- branch variants --

@pytest.mark.parametrize('branch5', ['5x5', '3x3x2', 'separable'])
@pytest.mark.parametrize('branch3', ['standard', 'separable'])
def test_branch_variants_param_shapes(branch3, branch5):
  opts = InceptionOptions(module='reduced', branch3=branch3, branch5=branch5,
                          fuse_pointwise=False)
  m = InceptionModule(**WIDTHS, opts=opts)
  r3, c3, r5, c5 = WIDTHS['r3'], WIDTHS['c3'], WIDTHS['r5'], WIDTHS['c5']
  p = param_shapes(m, X_SHAPE)
  if branch3 == 'standard':
    assert p['b3x3'] == {'conv': {'kernel': (3, 3, r3, c3)},
                         'bn': {'scale': (c3,), 'bias': (c3,)}}
  else:  # Depthwise 3x3 over r3 channels (one filter per channel), then 1x1.
    assert p['b3x3'] == {'depthwise': {'kernel': (3, 3, 1, r3)},
                         'pointwise': {'kernel': (r3, c3)},
                         'bn': {'scale': (c3,), 'bias': (c3,)}}
  if branch5 == '5x5':
    assert p['b5x5']['conv']['kernel'] == (5, 5, r5, c5)
    assert not {'b5x5_a', 'b5x5_b'} & set(p)
  elif branch5 == '3x3x2':
    assert 'b5x5' not in p
    assert p['b5x5_a']['conv']['kernel'] == (3, 3, r5, c5)
    assert p['b5x5_b']['conv']['kernel'] == (3, 3, c5, c5)
  else:
    assert p['b5x5']['depthwise']['kernel'] == (5, 5, 1, r5)
    assert p['b5x5']['pointwise']['kernel'] == (r5, c5)
  x = jnp.asarray(np.random.default_rng(4).standard_normal(X_SHAPE),
                  jnp.float32)
  y = m.apply(random_variables(m, x), x)
  assert y.shape == (*X_SHAPE[:-1], 4 + 5 + 3 + 2)
  assert np.isfinite(np.asarray(y)).all()


@pytest.mark.parametrize('k', [3, 5])
def test_separable_conv_block_is_depthwise_then_pointwise(k):
  c, f = 4, 6
  block = ConvBlock(f, k, separable=True, norm='none', act='linear',
                    use_bias=True)
  rng = np.random.default_rng(5)
  x = jnp.asarray(rng.standard_normal((2, 7, 6, c)), jnp.float32)
  variables = random_variables(block, x)
  dw = variables['params']['depthwise']['kernel']
  pw = variables['params']['pointwise']
  assert dw.shape == (k, k, 1, c)
  ref = lax.conv_general_dilated(x, dw, (1, 1), 'SAME',
                                 dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                 feature_group_count=c,
                                 precision=lax.Precision.HIGHEST)
  # Depthwise: output channel i only sees input channel i.
  for i in range(c):
    one = lax.conv_general_dilated(x[..., i:i + 1], dw[..., i:i + 1], (1, 1),
                                   'SAME',
                                   dimension_numbers=('NHWC', 'HWIO', 'NHWC'),
                                   precision=lax.Precision.HIGHEST)
    np.testing.assert_allclose(ref[..., i:i + 1], one, rtol=1e-5, atol=1e-5)
  ref = jnp.einsum('nhwc,cf->nhwf', ref, pw['kernel'],
                   precision=lax.Precision.HIGHEST) + pw['bias']
  np.testing.assert_allclose(block.apply(variables, x), ref, rtol=1e-5,
                             atol=1e-5)


# ---------------------------------------------------------- knob errors --

@pytest.mark.parametrize('knob', sorted(CHOICES))
def test_unknown_knob_raises_listing_valid_values(knob):
  with pytest.raises(ValueError) as e:
    InceptionOptions(**{knob: 'bogus'})
  message = str(e.value)
  assert knob in message and "'bogus'" in message
  for valid in CHOICES[knob]:
    assert repr(valid) in message
  for valid in CHOICES[knob]:  # Every listed value is accepted.
    assert getattr(InceptionOptions(**{knob: valid}), knob) == valid


def test_the_dtype_knob_sets_the_compute_dtype():
  assert InceptionOptions(dtype='bfloat16').compute_dtype == jnp.bfloat16


def test_layer_level_knobs_raise():
  x = jnp.zeros((1, 4, 4, 3))
  for block, match in [(ConvBlock(2, norm='no_such_norm'), "'batch', 'none'"),
                       (ConvBlock(2, act='no_such_act'), "'relu', 'gelu', 'linear'"),
                       (Pool('no_such_pool'), "'max', 'avg'")]:
    with pytest.raises(ValueError, match=match):
      jax.eval_shape(block.init, KEY, x)
  with pytest.raises(ValueError, match="'imagenet', 'cifar'"):
    jax.eval_shape(GoogLeNet(stem='no_such_stem').init, KEY,
                   jnp.zeros((1, 32, 32, 3)))


def test_build_model_unknown_name():
  for cfg in ({'name': 'resnet'}, {}):
    with pytest.raises(ValueError) as e:
      build_model(cfg)
    assert 'googlenet' in str(e.value) and 'small_inception' in str(e.value)
  with pytest.raises(ValueError, match="'resnet'"):
    build_model({'name': 'resnet'})


def test_build_model_unknown_key():
  with pytest.raises(ValueError) as e:
    build_model({'name': 'googlenet', 'widht': 0.5, 'module': 'naive'})
  message = str(e.value)
  assert "'widht'" in message and "'googlenet'" in message
  for valid in ('width', 'stem', 'num_classes', 'module', 'branch5', 'pool'):
    assert valid in message
  assert 'reduce_ratio' not in message  # A small_inception key.
  with pytest.raises(ValueError, match='reduce_scale'):
    build_model({'name': 'small_inception', 'reduce_scale': 0.5})


def test_build_model_unknown_knob_value():
  with pytest.raises(ValueError, match="'3x3x2'"):
    build_model({'name': 'googlenet', 'branch5': 'no_such_branch'})


@pytest.mark.parametrize('cfg', [
    {'name': 'googlenet', 'width': 0},
    {'name': 'googlenet', 'width': -0.5},
    {'name': 'googlenet', 'reduce_scale': 0},
    {'name': 'small_inception', 'width': 0},
    {'name': 'small_inception', 'reduce_ratio': -1},
])
def test_build_model_nonpositive_width(cfg):
  key = [k for k in cfg if k != 'name'][0]
  # Raised when the model is built, before any tracing.
  with pytest.raises(ValueError, match='must be > 0') as e:
    build_model(cfg)
  assert f'{key}={cfg[key]!r}' in str(e.value)
  assert f'--config.model.{key}=' in str(e.value)


def test_build_model_splits_knobs_from_fields():
  m = build_model({'name': 'small_inception', 'module': 'naive', 'width': 0.5})
  assert isinstance(m, SmallInception) and m.width == 0.5
  assert m.opts.module == 'naive'
  assert m.opts.pool == 'none'  # The network's own default knobs are kept.
  g = build_model({'name': 'googlenet', 'stem': 'cifar', 'num_classes': 10,
                   'fuse_pointwise': False})
  assert isinstance(g, GoogLeNet) and g.stem == 'cifar'
  assert g.opts == InceptionOptions(fuse_pointwise=False)


# ----------------------------------------------------- MACs and params --

@pytest.mark.parametrize('norm,use_bias,extra', [('none', False, 0),
                                                 ('none', True, 1),
                                                 ('batch', False, 2)])
@pytest.mark.parametrize('k,c,f', [(3, 8, 16), (5, 6, 4)])
def test_separable_macs_and_params(k, c, f, norm, use_bias, extra):
  h, w = 7, 9
  block = ConvBlock(f, k, separable=True, norm=norm, use_bias=use_bias)
  assert block.layer_type((1, h, w, c)) == f'sep_conv{k}x{k}'
  assert block.macs((1, h, w, c), (1, h, w, f)) == h * w * (k * k * c + c * f)
  acc = accounting.account(block, (h, w, c))
  assert acc.macs == h * w * (k * k * c + c * f)
  assert acc.params == k * k * c + c * f + extra * f
  assert params_count(param_shapes(block, (1, h, w, c))) == acc.params
  dense = ConvBlock(f, k, norm=norm, use_bias=use_bias)
  dense_acc = accounting.account(dense, (h, w, c))
  assert dense_acc.macs == h * w * k * k * c * f
  assert dense_acc.params == k * k * c * f + extra * f


def test_seed_example_mac_ratio_is_64_over_17():
  shape = (8, 8, 256)
  reduced = accounting.account(ReducedConv(64, 256, 4), shape)
  direct = accounting.account(ConvBlock(256, 4), shape)
  assert fractions.Fraction(direct.macs, reduced.macs) == fractions.Fraction(64, 17)
  assert [r.type for r in reduced.rows] == ['conv1x1', 'conv4x4']
  assert reduced.macs == 8 * 8 * (256 * 64 + 16 * 64 * 256)
  assert direct.macs == 8 * 8 * 16 * 256 * 256
  # The same from the blocks' own .macs().
  n = (1, 8, 8)
  r = (ConvBlock(64, 1).macs((*n, 256), (*n, 64))
       + ConvBlock(256, 4).macs((*n, 64), (*n, 256)))
  assert fractions.Fraction(ConvBlock(256, 4).macs((*n, 256), (*n, 256)),
                            r) == fractions.Fraction(64, 17)


SMALL_OPTS = dict(use_bias=True, norm='none', pool='none')


def test_small_inception_naive_parameter_count():
  model = SmallInception(opts=InceptionOptions(module='naive', **SMALL_OPTS))
  variables = jax.eval_shape(model.init, KEY, jnp.zeros((1, 28, 28, 3)))
  assert set(variables) == {'params'}  # norm='none': no batch statistics.
  assert params_count(variables['params']) == 1_649_402
  assert accounting.account(model, (28, 28, 3)).params == 1_649_402


def test_small_inception_reduced_has_fewer_macs_than_naive():
  accs = {m: accounting.account(SmallInception(opts=InceptionOptions(
      module=m, **SMALL_OPTS)), (28, 28, 3)) for m in ('naive', 'reduced')}
  assert accs['reduced'].macs < accs['naive'].macs
  assert accs['reduced'].params < accs['naive'].params
  # Same widths out of every module: the reduction changes only the inside.
  for name, shape in accs['naive'].out_shapes.items():
    assert accs['reduced'].out_shapes[name] == shape
  assert accs['naive'].out_shapes['head'] == (10,)


@pytest.mark.slow
def test_googlenet_cifar_forward():
  model = GoogLeNet(num_classes=10, stem='cifar', width=0.25)
  rng = np.random.default_rng(6)
  x = jnp.asarray(rng.standard_normal((2, 32, 32, 3)), jnp.float32)
  variables = random_variables(model, x)
  assert variables['params']['conv1']['conv']['kernel'].shape == (3, 3, 3, 48)
  logits = jax.jit(model.apply)(variables, x)
  assert logits.shape == (2, 10) and logits.dtype == jnp.float32
  assert np.isfinite(np.asarray(logits)).all()
  assert not np.allclose(logits[0], logits[1])  # Depends on the input.


def test_googlenet_num_modules_keeps_the_first_modules():
  full = accounting.account(GoogLeNet(10, 'cifar', 0.25), (32, 32, 3))
  cut = accounting.account(GoogLeNet(10, 'cifar', 0.25, num_modules=3),
                           (32, 32, 3))
  assert list(cut.out_shapes)[:-2] == [
      'conv1', 'inception_3a', 'inception_3b', 'pool3', 'inception_4a']
  # The kept layers are the full net's, shape for shape and param for param.
  full_rows = {r.name: r for r in full.rows}
  for row in cut.rows[:-1]:  # All but the head, whose input is narrower.
    assert row == full_rows[row.name]
  assert cut.out_shapes['head'] == (10,)
  assert cut.rows[-1].in_shape == full.out_shapes['inception_4a'][-1:]
  for bad in (0, 10):
    with pytest.raises(ValueError, match='1 to 9 Inception modules'):
      GoogLeNet(num_modules=bad)


@pytest.mark.parametrize('width', [0.25, 1.0])
def test_googlenet_imagenet_stem_reaches_7x7(width):
  acc = accounting.account(GoogLeNet(stem='imagenet', width=width),
                           (224, 224, 3))
  s = acc.out_shapes
  w = lambda c: max(1, round(c * width))
  assert s['conv1'] == (112, 112, w(64))
  assert s['pool1'][:2] == (56, 56)
  assert s['conv2'] == (56, 56, w(192))
  assert s['pool2'][:2] == (28, 28)
  assert s['inception_3a'][:2] == (28, 28)
  assert s['pool3'][:2] == (14, 14)
  assert s['inception_4e'][:2] == (14, 14)
  assert s['pool4'][:2] == (7, 7)
  assert s['inception_5b'] == (7, 7, w(384) + w(384) + w(128) + w(128))
  assert s['head'] == (1000,)
  if width == 1.0:  # Table 1's output widths.
    assert [s[f'inception_{n}'][-1] for n in
            ('3a', '3b', '4a', '4b', '4c', '4d', '4e', '5a', '5b')] == [
                256, 480, 512, 512, 512, 528, 832, 832, 1024]
