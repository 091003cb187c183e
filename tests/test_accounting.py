"""Compute accounting: the paper's Table 1, the seed ratio, XLA cross-check."""

import fractions
import json
import math
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest

import accounting
from configs import googlenet, small_inception
from models import (ConvBlock, InceptionOptions, PointwiseConv, Pool,
                    ReducedConv, build_model)
from ops import Ops, onednn

REPO = pathlib.Path(__file__).resolve().parents[1]
K, M = 1024, 1e6


@pytest.fixture(scope='module')
def paper_table():
  config = googlenet.get_config('stem=imagenet,module=reduced')
  return accounting.account(build_model(config.model),
                            accounting.input_shape(config))


@pytest.mark.parametrize('group,params_k,macs_m', [
    ('inception_3a', 159, 128),
    ('inception_3b', 380, 304),
    ('conv2', 112, 360),  # The 3x3 conv with its 64-wide 1x1 reduce.
])
def test_googlenet_matches_table1_rows(paper_table, group, params_k, macs_m):
  g = paper_table.groups()[group]
  assert g['params'] / K == pytest.approx(params_k, rel=0.01)
  assert g['macs'] / M == pytest.approx(macs_m, rel=0.01)


def test_googlenet_totals_within_7_percent_of_paper(paper_table):
  assert paper_table.params == pytest.approx(6.8e6, rel=0.07)
  assert paper_table.macs == pytest.approx(1.5e9, rel=0.07)
  groups = paper_table.groups()
  assert list(groups)[-1] == 'head'
  assert groups['inception_5b']['out_shape'] == (7, 7, 1024)


def test_rows_cover_every_parameter(paper_table):
  assert sum(r.params for r in paper_table.rows) == paper_table.params
  assert sum(r.macs for r in paper_table.rows) == paper_table.macs
  names = [r.name for r in paper_table.rows]
  assert len(names) == len(set(names))
  for letter, count in (('3', 2), ('4', 5), ('5', 2)):
    assert len({n.split('/')[0] for n in names
                if n.startswith(f'inception_{letter}')}) == count


def test_params_match_init():
  model = build_model(small_inception.get_config('module=reduced').model)
  acc = accounting.account(model, (28, 28, 3))
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                             jax.ShapeDtypeStruct((1, 28, 28, 3), 'float32'))
  expected = sum(math.prod(x.shape) for x in jax.tree.leaves(variables['params']))
  assert acc.params == expected


def test_seed_pair_ratio_is_exactly_64_over_17():
  opts = InceptionOptions(norm='none')
  shape = (28, 28, 256)
  direct = accounting.account(opts.conv(256, 4), shape)
  reduced = accounting.account(ReducedConv(64, 256, 4, opts), shape)
  assert direct.rows[0].out_shape == reduced.rows[-1].out_shape
  assert fractions.Fraction(direct.macs, reduced.macs) == fractions.Fraction(64, 17)
  assert direct.macs / reduced.macs == pytest.approx(3.76, abs=0.005)


def test_pointwise_changes_channels_not_space():
  acc = accounting.account(PointwiseConv(48), (9, 11, 16))
  (row,) = acc.rows
  assert (row.in_shape, row.out_shape) == ((9, 11, 16), (9, 11, 48))
  assert row.macs == 9 * 11 * 16 * 48
  assert row.params == 16 * 48 + 48


@pytest.mark.parametrize('model,shape,exact', [
    (PointwiseConv(8, use_bias=False), (5, 5, 4), True),
    (ConvBlock(8, 3, padding='VALID', norm='none', act='linear'), (6, 6, 4), True),
    # SAME padding: XLA skips the taps that fall on padding.
    (ConvBlock(8, 5, norm='none', act='linear'), (7, 7, 4), False),
])
def test_xla_flops_equal_2_macs_without_padding(model, shape, exact):
  acc = accounting.account(model, shape)
  flops = accounting.xla_flops(model, shape)
  if exact:
    assert flops == 2 * acc.macs
  else:
    # Per axis 29 of the 35 taps of a 5-wide kernel over 7 outputs are inside.
    assert flops == pytest.approx(2 * acc.macs * (29 / 35)**2)


def test_a_pooled_conv_block_counts_the_convs_own_positions():
  """pool=2 pools after the conv: its MACs are those of the conv's 5x5
  outputs (3x3 VALID on 7x7), not of the pooled 2x2."""
  for pool in (0, 2):
    block = ConvBlock(8, 3, padding='VALID', norm='none', pool=pool)
    acc = accounting.account(block, (7, 7, 4))
    assert acc.macs == 5 * 5 * 9 * 4 * 8


@pytest.mark.slow
def test_xla_cross_check_on_a_network():
  config = small_inception.get_config('module=reduced')
  config.model.width = 0.25
  total = accounting.summarize(config)['total']
  assert 0.8 < total['xla_flops'] / (2 * total['macs']) < 1.1


@pytest.mark.slow
def test_cost_analysis_counts_onednn_convs_and_1x1s_as_xla_does():
  """XLA counts a custom call as -1 flop and byte; accounting.cost_entry
  counts the oneDNN convolutions and GEMMs as XLA counts its own: equal
  totals."""
  if not onednn.available():
    pytest.skip(f'oneDNN: {onednn.unavailable_reason()}')
  config = small_inception.get_config('module=reduced')
  config.model.width = 0.25

  def costs(impl):
    model = build_model(config.model, Ops(conv=impl, pointwise=impl))
    x = jax.ShapeDtypeStruct((2, 28, 28, 3), jnp.float32)
    v = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
    loss = lambda v, x: model.apply(v, x).sum()
    compiled = jax.jit(jax.grad(loss)).lower(v, x).compile()
    return [accounting.cost_entry(compiled, k)
            for k in ('flops', 'bytes accessed')]

  xla_flops, _ = costs('xla')
  flops, nbytes = costs('onednn')
  assert flops == pytest.approx(xla_flops, rel=0.01) and nbytes > 0


@pytest.mark.parametrize('window', [3, 5])
def test_cost_analysis_counts_onednn_max_pools(window):
  """Forward: as XLA counts a reduce-window max (k*k - 1 per output), and
  every byte of x, y and the one-byte index; backward: one add per output."""
  if not onednn.available():
    pytest.skip(f'oneDNN: {onednn.unavailable_reason()}')
  x = jnp.ones((2, 7, 9, 3))
  n = x.size  # Stride 1, SAME: as many outputs as inputs.
  cost = lambda f: [accounting.cost_entry(jax.jit(f).lower(x).compile(), k)
                    for k in ('flops', 'bytes accessed')]
  pool = lambda impl: lambda x: Pool('max', window, ops=Ops(pool=impl)).apply(
      {}, x)
  xla_flops, _ = cost(pool('xla'))
  flops, nbytes = cost(pool('onednn'))
  assert flops == xla_flops == n * (window**2 - 1)
  assert nbytes == n * (4 + 4 + 1)
  grad_flops, _ = cost(jax.grad(lambda x: pool('onednn')(x).sum()))
  assert grad_flops == flops + n  # The sum's gradient is a constant.


@pytest.mark.slow
def test_model_table_json_compare():
  out = subprocess.run(
      [sys.executable, 'scripts/model_table.py',
       '--config=configs/small_inception.py:bn=False', '--compare', '--json'],
      cwd=REPO, capture_output=True, text=True, check=True).stdout
  result = json.loads(out)
  naive, reduced = result['naive'], result['reduced']
  assert naive['total']['params'] == 1_649_402
  for s in (naive, reduced):
    assert {'name', 'params', 'macs'} <= set(s['layers'][0])
    assert {'params', 'macs', 'xla_flops'} <= set(s['total'])
    assert sum(r['params'] for r in s['layers']) == s['total']['params']
  ratio = result['naive_over_reduced']['macs']
  assert ratio == pytest.approx(naive['total']['macs'] / reduced['total']['macs'])
  assert ratio > 1


@pytest.mark.parametrize('overrides, fused, unfused', [
    ({}, 3, 0),                                 # configs/test.py: 3 modules.
    ({'model.fuse_pointwise': False}, 0, 3),    # Same net, heads apart.
    ({'model.module': 'naive'}, 0, 0),          # b1x1 alone: nothing to fuse.
])
def test_implementation_counts_fused_and_unfused_modules(overrides, fused,
                                                         unfused):
  # Issue 25: a knob's runs went unfused, slower, and nothing recorded it.
  from configs import test as test_config  # pylint: disable=import-outside-toplevel
  config = test_config.get_config()
  config.update_from_flattened_dict({'ops.conv': 'im2col', **overrides})
  model = build_model(config.model, Ops())
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0),
                          jnp.zeros((1, 8, 8, 3)))['params']
  impl = accounting.implementation(config, params)
  assert (impl['fused_1x1'], impl['unfused_1x1']) == (fused, unfused)
  assert impl['conv'] == 'im2col' and impl['norm'] in ('xla', 'custom_vjp')
  assert impl['cpu_vector_width'] in (256, 512, None)
