"""benchmarks/bench_train.py, against references it does not compute itself.

The layer GEMMs are checked against the convolutions and dot products in the
jaxpr of the gradient, and by hand for the stem and the head; model_flops
against a hand count of a dense net's products; the timing arithmetic
(gemm_bound, stream_gbps, bench_model) with fake clocks and times.
"""

import collections
import math
import types

import jax
import jax.numpy as jnp
import pytest
from flax import linen as nn

import accounting
from benchmarks import bench_train, benchlib
from configs.common import load_config
from models import build_model


def _subjaxprs(params):
  for value in params.values():
    for v in value if isinstance(value, (list, tuple)) else (value,):
      if isinstance(v, jax.extend.core.ClosedJaxpr):
        yield v.jaxpr
      elif isinstance(v, jax.extend.core.Jaxpr):
        yield v


def _eqns(jaxpr):
  for eqn in jaxpr.eqns:
    yield eqn
    for sub in _subjaxprs(eqn.params):
      yield from _eqns(sub)


def _macs(eqn) -> int:
  """Multiply-adds of a dot_general or conv_general_dilated, padding taps
  included (accounting's convention): output size times the contraction."""
  out = eqn.outvars[0].aval.shape
  if eqn.primitive.name == 'dot_general':
    (contracting, _), _ = eqn.params['dimension_numbers']
    lhs = eqn.invars[0].aval.shape
    return math.prod(out) * math.prod(lhs[d] for d in contracting)
  rhs = eqn.invars[1].aval.shape
  _, in_features, *spatial = eqn.params['dimension_numbers'].rhs_spec
  return math.prod(out) * rhs[in_features] * math.prod(rhs[d] for d in spatial)


def gradient_products(config, batch: int) -> collections.Counter:
  """MACs -> count of the products in the jaxpr of the gradient of a train
  step's forward pass w.r.t. the params (the image gets no gradient), with
  XLA's own ops. For stride-1 convs only: a strided conv's input gradient
  is a conv over a dilated map, whose taps on the inserted zeros count."""
  model = build_model(config.model)
  x = jnp.zeros((batch, *accounting.input_shape(config)))
  variables = jax.eval_shape(lambda: model.init(jax.random.key(0), x))
  params = variables.pop('params')

  def loss(params, rest):
    y, _ = model.apply({'params': params, **rest}, x, train=True,
                       mutable=['batch_stats'])
    return jnp.sum(y)

  jaxpr = jax.make_jaxpr(jax.grad(loss))(params, variables).jaxpr
  return collections.Counter(
      _macs(e) for e in _eqns(jaxpr)
      if e.primitive.name in ('dot_general', 'conv_general_dilated'))


def test_layer_gemms_are_the_products_of_the_gradient():
  # configs/test.py: GoogLeNet-CIFAR to module 4a at width 0.0625 on 8x8
  # images, every conv stride 1 (the pools downsample), fused 1x1s.
  config, batch = load_config('configs/test.py'), 2
  gemms = bench_train.layer_gemms(config, batch)
  products = collections.Counter()
  for (m, k, n, _), count in gemms.items():
    products[m * k * n] += count
  assert products == gradient_products(config, batch)
  # By hand: the stem, a 3x3 conv 3 -> 12 (192 * 0.0625) over 2 x 8x8
  # positions: forward and weight gradient, no input gradient (the image's).
  assert gemms[(128, 27, 12, False)] == 1
  assert gemms[(27, 128, 12, True)] == 1
  assert (128, 12, 27, False) not in gemms
  # The head: 32 channels (module 4a's 512 * 0.0625) -> 10 classes, once
  # per image.
  assert gemms[(2, 32, 10, False)] == 1
  assert gemms[(2, 10, 32, False)] == 1
  assert gemms[(32, 2, 10, True)] == 1


@pytest.mark.slow
def test_gemm_bound_times_each_layer_gemm_once_per_use(monkeypatch):
  config, batch = load_config('configs/test.py'), 2
  timed = collections.Counter()

  def fake_time_call(bench):  # Runs the GEMM; every call takes 1 ms.
    out = bench()
    # All-ones operands: an (m, n) result whose entries are k.
    timed[(*out.shape, float(out.max()), float(out.min()))] += 1
    return 1e-3

  monkeypatch.setattr(benchlib, 'time_call', fake_time_call)
  out = bench_train.gemm_bound(config, batch, inner=2)
  gemms = bench_train.layer_gemms(config, batch)
  expected = collections.Counter()
  for (m, k, n, _), count in gemms.items():
    expected[(m, n, float(k), float(k))] += 2  # inner=2 calls per shape.
  assert timed == expected
  # Each layer GEMM counts once per use at its best time (1 ms).
  uses = sum(gemms.values())
  assert out['gemm_bound_ms'] == pytest.approx(uses * 1.0)
  flops = 2 * sum(m * c for m, c in gradient_products(config, batch).items())
  assert out['layer_gemm_gflops'] == pytest.approx(flops / (uses * 1e-3) / 1e9)


class _DenseNet(nn.Module):
  """flatten -> Dense(HIDDEN) -> ReLU -> Dense(10); no batch norm."""
  hidden: int

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    x = nn.relu(nn.Dense(self.hidden)(x.reshape(x.shape[0], -1)))
    return nn.Dense(10)(x)


def test_model_flops_counts_the_step_products_with_xla_ops(monkeypatch):
  config = load_config('configs/test.py')
  config.image_size = 32
  config.ops.conv = 'im2col'  # Ignored: model_flops uses XLA's own ops.
  batch, d, h, c = 128, 32 * 32 * 3, 512, 10
  built = []

  def fake_build_model(model_config, *rest, **kw):
    built.append((rest, kw))
    return _DenseNet(h)

  monkeypatch.setattr(bench_train, 'build_model', fake_build_model)
  flops = bench_train.model_flops(config, batch)
  assert built == [((), {})]  # build_model's default ops: XLA's.
  # XLA counts a dot as 2 flops per multiply-add. Forward and weight
  # gradient of the first layer (the image gets no input gradient); forward,
  # input and weight gradient of the second.
  products = 2 * batch * (2 * d * h + 3 * h * c)
  # Everything else is elementwise: about ten flops per parameter (weight
  # decay, Nesterov momentum, the update, the two norms in the metrics) and
  # a few per activation (augmentation of the 32x32x3 source, ReLU, the
  # loss). With a batch of 128 on 3072 inputs that is under 5% of the
  # products; a step counted without its backward pass would be near 1/2.
  assert products <= flops <= 1.05 * products


def test_stream_gbps_counts_bytes_read_and_written(monkeypatch):
  # Three calls of 1, 5 and 2 ms on a fake clock: the median is 2 ms.
  ticks = iter([0.0, 0.001, 1.0, 1.005, 2.0, 2.002])
  monkeypatch.setattr(bench_train, 'time', types.SimpleNamespace(
      perf_counter=lambda: next(ticks)))
  gbps = bench_train.stream_gbps(megabytes=8, calls=3)
  # 8 MiB read and written again in 2 ms.
  assert gbps == pytest.approx(2 * 8 * 2**20 / 0.002 / 1e9)


def test_variant_config_sets_config_ops_and_refuses_bad_entries():
  config = load_config('configs/test.py')
  v = bench_train.variant_config(config, 'xla:slices')
  assert (v.ops.conv, v.ops.pool) == ('xla', 'slices')
  assert v.ops.norm == config.ops.norm  # Left as configured.
  assert (config.ops.conv, config.ops.pool) == ('auto', 'auto')  # A copy.
  v = bench_train.variant_config(config, 'im2col:xla:custom_vjp')
  assert (v.ops.conv, v.ops.pool, v.ops.norm) == ('im2col', 'xla',
                                                   'custom_vjp')
  assert v.model == config.model
  v = bench_train.variant_config(config, 'im2col:slices:xla:xla:bfloat16')
  assert (v.ops.norm, v.ops.pointwise, v.model.dtype) == ('xla', 'xla',
                                                           'bfloat16')
  assert config.model.dtype == 'float32'
  for bad in ('xla', 'xla:xla:xla:xla:bfloat16:x', 'xla::xla'):
    with pytest.raises(ValueError, match='CONV:POOL'):
      bench_train.variant_config(config, bad)
  with pytest.raises(ValueError, match=r'ops\.norm'):
    bench_train.variant_config(config, 'xla:xla:fused')
  with pytest.raises(ValueError, match=r'ops\.conv'):
    bench_train.variant_config(config, 'winograd:xla')


class _FakeStepper:
  """bench_train.Stepper's figures, known per program, without compiling:
  program k (base, ours, the variant) has k GFLOP, 10 k GB, k MiB peak and
  takes k ms of user and 0.1 k ms of system CPU time per call."""

  def __init__(self, model, config, batch):
    del batch
    self.name = ('base' if type(model).__name__.startswith('Base') else
                 'ours' if config.ops.conv == 'auto' else
                 f'{config.ops.conv}:{config.ops.pool}')
    self.k = _PROGRAMS.index(self.name) + 1
    self.flops, self.bytes, self.peak_bytes = (
        self.k * 1e9, self.k * 1e10, self.k * 2**20)
    self.cpu_seconds = []

  def __call__(self):
    self.cpu_seconds.append((self.k * 1e-3, self.k * 1e-4))


class _FakeGemmProbe:
  rates = []

  def __call__(self):
    self.rates = [*self.rates, 0.0]

  def gflops(self):
    return 100.0


_PROGRAMS = ('base', 'ours', 'xla:slices')


@pytest.mark.parametrize('bounds', [False, True])
def test_bench_model_puts_each_programs_figures_in_its_row(bounds, monkeypatch,
                                                           capsys):
  # Known step times, flops and bytes per program, a 100 GF/s GEMM, layer
  # GEMMs that take 10 ms and a 50 GB/s memory, in place of the measured
  # ones: each figure must come from its own program.
  seconds = {'base': 0.05, 'ours': 0.02, 'xla:slices': 0.04}
  real = benchlib.time_interleaved

  def fake_time_interleaved(fns, repeats, warmup):
    assert set(fns) == {*_PROGRAMS, 'gemm'}
    real(fns, repeats, warmup)  # Calls each warmup + repeats times.
    return {n: [seconds.get(n, 1.0)] * repeats for n in fns}

  monkeypatch.setattr(bench_train, 'Stepper', _FakeStepper)
  monkeypatch.setattr(bench_train, 'GemmProbe', _FakeGemmProbe)
  monkeypatch.setattr(benchlib, 'time_interleaved', fake_time_interleaved)
  monkeypatch.setattr(bench_train, 'model_flops', lambda config, batch: 4e9)
  monkeypatch.setattr(bench_train, 'gemm_bound', lambda config, batch: {
      'gemm_bound_ms': 10.0, 'layer_gemm_gflops': 5.0})
  monkeypatch.setattr(bench_train, 'stream_gbps', lambda: 50.0)
  config = load_config('configs/test.py')
  row = bench_train.bench_model(config, repeats=3, batch=2, baseline=True,
                                variants=('xla:slices',), bounds=bounds)
  assert (row['gemm_bound_ms'], row['layer_gemm_gflops'],
          row['stream_gbps']) == ((10.0, 5.0, 50.0) if bounds else
                                  (None, None, None))
  assert (row['batch'], row['model_gflops'], row['gemm_gflops']) == (
      2, 4.0, 100.0)
  for k, prog in enumerate(_PROGRAMS, 1):
    t, p = seconds[prog], row[prog]
    assert p['step_ms'] == pytest.approx(t * 1e3)
    assert p['images_per_s'] == pytest.approx(2 / t)
    assert p['step_gflops'] == pytest.approx(k)
    assert p['achieved_gflops'] == pytest.approx(4 / t)  # The model's work.
    assert p['utilization'] == pytest.approx(4 / t / 100)
    assert p['step_gbytes'] == pytest.approx(10 * k)
    assert p['cpu_user_ms'] == pytest.approx(k)
    assert p['cpu_sys_ms'] == pytest.approx(0.1 * k)
    assert p['peak_mb'] == pytest.approx(k)
    assert p['spread'] == 0
    if bounds:
      assert p['gemm_bound_fraction'] == pytest.approx(10e-3 / t)
      # 10 k GB at 50 GB/s over the step time.
      assert p['memory_bound_fraction'] == pytest.approx(10 * k / 50 / t)
    else:
      assert p['gemm_bound_fraction'] is None
      assert p['memory_bound_fraction'] is None
  assert row['speedup_vs_baseline'] == pytest.approx(2.5)
  assert row['paired_speedup'] == pytest.approx(2.5)
  assert row['xla:slices']['time_vs_ours'] == pytest.approx(2.0)
  assert row['xla:slices']['speedup_vs_baseline'] == pytest.approx(1.25)
  bench_train.print_table({'device': 'cpu', 'batch': 2, 'glibc_tunables': '',
                           'ld_preload': 'libjemalloc.so.2',
                           'variants': ['xla:slices'], 'models': {'t': row}})
  table = capsys.readouterr().out
  assert 'xla:slices' in table
  assert ('bound:' in table) == bounds
  assert "LD_PRELOAD='libjemalloc.so.2'" in table  # The malloc is recorded.
