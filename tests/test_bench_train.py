"""scripts/bench_train.py: the model's own GEMMs, the bound it reports."""

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), 'scripts'))

import accounting  # noqa: E402
import bench_train  # noqa: E402
from configs.common import load_config  # noqa: E402
from models import build_model  # noqa: E402


@pytest.mark.parametrize('spec', ['configs/test.py', 'configs/cifar_cpu.py'])
def test_layer_gemms_cover_three_products_per_layer(spec):
  config, batch = load_config(spec), 4
  gemms = bench_train.layer_gemms(config, batch)
  acc = accounting.account(build_model(config.model),
                           accounting.input_shape(config))
  first = next(r.macs for r in acc.rows if r.macs)
  # Forward, input gradient and weight gradient of every layer, no input
  # gradient for the first: 3 * MACs - first layer's MACs, per image.
  total = sum(c * m * k * n for (m, k, n, _), c in gemms.items())
  assert total == batch * (3 * acc.macs - first)
  # The weight gradients contract over the batch's positions.
  assert all(k % batch == 0 for (m, k, n, t) in gemms if t)


def test_gemm_bound_times_every_shape():
  config = load_config('configs/test.py')
  batch, gemms = 2, bench_train.layer_gemms(config, 2)
  out = bench_train.gemm_bound(config, batch, inner=1)
  flops = sum(c * 2 * m * k * n for (m, k, n, _), c in gemms.items())
  assert out['gemm_bound_ms'] > 0
  # The rate is the flops of the shapes it timed over the time they took.
  assert out['layer_gemm_gflops'] == pytest.approx(
      flops / 1e9 / (out['gemm_bound_ms'] / 1e3), rel=1e-9)


def test_stream_bandwidth_is_measured():
  # 8 MB: x <- 0.5 x + 1 reads and writes 16 MB per call.
  assert bench_train.stream_gbps(megabytes=8, calls=3) > 0.1


def test_variant_config_sets_the_impls_and_refuses_bad_entries():
  config = load_config('configs/test.py')
  v = bench_train.variant_config(config, 'xla:slices')
  assert (v.model.conv_impl, v.model.pool_impl) == ('xla', 'slices')
  assert (config.model.conv_impl, config.model.pool_impl) == ('auto', 'auto')
  assert v.model.norm_impl == 'auto'  # Left as configured.
  v = bench_train.variant_config(config, 'im2col:xla:custom_vjp')
  assert (v.model.conv_impl, v.model.pool_impl,
          v.model.norm_impl) == ('im2col', 'xla', 'custom_vjp')
  for bad in ('xla', 'xla:xla:xla:xla', 'xla::xla'):
    with pytest.raises(ValueError, match='CONV:POOL'):
      bench_train.variant_config(config, bad)
  with pytest.raises(ValueError, match='norm_impl'):
    bench_train.variant_config(config, 'xla:xla:fused')
  with pytest.raises(ValueError, match='conv_impl'):
    bench_train.variant_config(config, 'winograd:xla')


def test_bench_model_without_bounds_reports_ratios_of_its_times(capsys):
  config = load_config('configs/test.py')
  row = bench_train.bench_model(config, repeats=1, batch=2, baseline=True,
                                variants=('xla:xla',), bounds=False)
  assert row['gemm_bound_ms'] is None and row['stream_gbps'] is None
  for prog in ('base', 'ours', 'xla:xla'):
    assert row[prog]['gemm_bound_fraction'] is None
    assert row[prog]['images_per_s'] == pytest.approx(
        2e3 / row[prog]['step_ms'])
  assert row['speedup_vs_baseline'] == pytest.approx(
      row['base']['step_ms'] / row['ours']['step_ms'])
  assert row['xla:xla']['time_vs_ours'] == pytest.approx(
      row['xla:xla']['step_ms'] / row['ours']['step_ms'])
  bench_train.print_table({'device': 'cpu', 'batch': 2, 'glibc_tunables': '',
                           'ld_preload': 'libjemalloc.so.2',
                           'variants': ['xla:xla'], 'models': {'t': row}})
  table = capsys.readouterr().out
  assert 'xla:xla' in table and 'bound:' not in table
  assert "LD_PRELOAD='libjemalloc.so.2'" in table  # The malloc is recorded.
