"""Times the full jitted train step against a plain linen baseline.

  python benchmarks/bench_train.py                       # every model, a table
  python benchmarks/bench_train.py --json --models=g025,small --repeats=7

The step is trainer.py's `train_step` (augmentation included: reflect-pad,
random crop, flip, normalise; forward, softmax cross-entropy, backward,
optax weight decay + Nesterov SGD-momentum, batch-norm statistics), jitted
with the state donated, on a random uint8 batch of --batch (128) images,
in float32.

--config=FILE[:ARGS] (as train.py's, with --config.KEY=VALUE overrides)
times that one config instead, at its batch_size unless --batch is given
and in its model.dtype (the base program stays float32). Models
(--models picks a subset):
  g025, g05, g10  GoogLeNet-CIFAR, reduced modules, width 0.25 / 0.5 / 1.0;
  naive025        GoogLeNet-CIFAR, naive modules, width 0.25;
  small           the small Inception net (configs/small_inception.py, 28x28).
For each, two programs run round-robin in one process (so machine load hits
them alike): `ours`, the repo's model as configured (config.ops 'auto', as
ops.resolve decides: on CPU the oneDNN convolutions and max pools of
ops/onednn where available, else the im2col backward and the shifted-slice
pools of ops/conv.py and ops/pool.py; the batch norms with ops/norm.py's
hand-written backward), and
`base`, a straightforward linen net of the same architecture kept in this
file: nn.Conv for every kxk conv, nn.Dense for the 1x1s, nn.max_pool,
nn.BatchNorm.

Prints one table row per model and program, then a line each on the GEMM
bound and the bandwidth (with --json, one JSON object: the device, batch,
malloc setting and variants, then per model the figures below). Figures,
per model and program:
  step_ms          median step time;  images_per_s = batch / step time;
  step_gflops      XLA cost_analysis() flops of that compiled step, with
                   the oneDNN convolutions added (accounting.cost_entry; XLA
                   counts a while loop's body once, so a step whose im2col
                   weight gradients loop over image chunks reads low);
  model_gflops     the useful work, the same for both programs: the
                   cost_analysis() of the repo model's step with
                   ops.conv, ops.pool and ops.norm 'xla';
  achieved_gflops  model_gflops / step time;
  gemm_gflops      plain 2-D float32 GEMMs timed in the same rounds (median
                   over three shapes like the network's 1x1s and im2col
                   GEMMs, best of 3 calls each): the machine's limit under
                   the same load;
  utilization      achieved_gflops / gemm_gflops;
  gemm_bound_ms    the model's own GEMMs timed alone: every conv, 1x1 and
                   dense layer's forward, input-gradient and weight-gradient
                   product as a plain 2-D GEMM of that layer's shape (best of
                   3 calls each), summed; layer_gemm_gflops is their rate.
                   It is what a step would take if only its matrix products
                   cost time, at the speed these (often narrow) shapes get;
  gemm_bound_fraction  gemm_bound_ms / step_ms (1.0: nothing but GEMMs);
  step_gbytes      XLA cost_analysis() 'bytes accessed' of the compiled step:
                   every instruction's operand and output bytes (a while
                   loop's body counted once, so it reads low for ours);
  stream_gbps      memory bandwidth: x <- 0.5 x + 1 in place over 256 MB,
                   median of 15 calls;
  memory_bound_fraction  step_gbytes / stream_gbps / step time: the share
                   of the step that moving its tensors through memory once
                   per instruction takes at that bandwidth (near 1.0: the
                   step is memory-bound, whatever its GEMMs do);
  cpu_user_ms, cpu_sys_ms  median CPU time of one step, all threads, from
                   getrusage: user, and kernel (page faults on freshly
                   allocated temporaries, thread wake-ups);
  peak_mb          compiled.memory_analysis(): temp + argument + output bytes;
  speedup_vs_baseline = base step time / ours step time.
--variants=CONV:POOL[:NORM[:POINTWISE[:DTYPE]]],... adds programs of the
repo model with those ops.conv / ops.pool [/ ops.norm [/ ops.pointwise
[/ model.dtype]]], timed in the same rounds, named by the entry
(auto:auto:auto:auto:float32 beside a bfloat16 --config is float32 against
bfloat16); each one's time_vs_ours = its step time / ours' (above 1: auto chose
better).
--nobounds skips gemm_bound_ms and stream_gbps (and their fractions: null),
which time a GEMM for every distinct layer shape, for a quick check (e.g. on
a GPU). Each model's step times go to stderr as it finishes, so a run cut
short keeps them.

Memory: XLA:CPU allocates the step's temporaries afresh every call. Under
glibc's malloc the largest (over its 32 MiB mmap threshold) are mapped,
zeroed by the kernel and unmapped again every step, which shows in
cpu_sys_ms; like the CLIs, this benchmark runs under mimalloc, which keeps
them (allocator.py; POINTWISE_MALLOC=system for glibc's). The output records
LD_PRELOAD and GLIBC_TUNABLES: the GEMM reference and both steps move with
the allocator (docs/performance.md has the figures).
"""

import allocator
if __name__ == '__main__':  # Before anything allocates (allocator.py).
  allocator.use_mimalloc()

import collections
import functools
import os
import resource
import sys
import time
from typing import Any

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn
from ml_collections import config_flags

import accounting
from benchmarks import benchlib
import ops
import optim
import trainer
from configs.common import load_config
from models import build_model
from models.googlenet import WIDTHS
from models.inception import scaled
from models.small_inception import LAYOUT, SmallInception

config_flags.DEFINE_config_file('config', None, 'Config file[:args] to time '
                                'instead of --models.', lock_config=True)
flags.DEFINE_list('models', ['g025', 'g05', 'small', 'naive025', 'g10'],
                  'Subset of: g025, g05, g10, naive025, small.')
flags.DEFINE_integer('repeats', 5, 'Timed rounds (median reported); width '
                     '1.0 uses min(repeats, 3).',
                     allow_override=True)  # bench_pointwise.py's default: 15.
flags.DEFINE_integer('batch', 128, 'Batch size; with --config and no '
                     '--batch, the config\'s batch_size.')
flags.DEFINE_bool('baseline', True, 'Also time the plain linen baseline.')
flags.DEFINE_bool('bounds', True, 'Also time the model\'s own GEMMs and the '
                  'memory bandwidth (the bound and mem columns: one timed '
                  'GEMM per layer shape); --nobounds for a quick check.')
flags.DEFINE_list('variants', [], 'Also time the repo model with other '
                  'ops or dtype, each CONV:POOL[:NORM[:POINTWISE[:DTYPE]]] '
                  '(ops.conv:ops.pool[:ops.norm[:ops.pointwise'
                  '[:model.dtype]]], e.g. xla:xla:xla:xla, im2col:slices or '
                  'auto:auto:auto:auto:float32).')
FLAGS = flags.FLAGS

MODELS = {  # name -> config spec
    'g025': 'configs/googlenet.py:stem=cifar,module=reduced,width=0.25',
    'g05': 'configs/googlenet.py:stem=cifar,module=reduced,width=0.5',
    'g10': 'configs/googlenet.py:stem=cifar,module=reduced,width=1.0',
    'naive025': 'configs/googlenet.py:stem=cifar,module=naive,width=0.25',
    'small': 'configs/small_inception.py',
}
GEMM_SHAPES = ((128 * 16 * 16, 256, 256), (128 * 32 * 32, 128, 128),
               (128 * 8 * 8, 1152, 256))  # (M, K, N): 1x1s and im2col dW.
STATS = ((0.49, 0.48, 0.45), (0.25, 0.24, 0.26))  # CIFAR-10-like mean, std.


# ------------------------------------------------------------- baseline --

class BaseConv(nn.Module):
  """nn.Conv (nn.Dense for 1x1) -> nn.BatchNorm -> ReLU."""
  features: int
  kernel: int = 1
  stride: int = 1
  padding: str = 'SAME'
  norm: bool = True
  use_bias: bool = False

  @nn.compact
  def __call__(self, x, train: bool):
    if self.kernel == 1:
      x = nn.Dense(self.features, use_bias=self.use_bias)(x)
    else:
      k, s = (self.kernel,) * 2, (self.stride,) * 2
      x = nn.Conv(self.features, k, s, self.padding, use_bias=self.use_bias)(x)
    if self.norm:
      x = nn.BatchNorm(use_running_average=not train, momentum=0.9,
                       epsilon=1e-5)(x)
    return nn.relu(x)


def max_pool(x, stride=1, padding='SAME'):
  return nn.max_pool(x, (3, 3), (stride, stride), padding)


class BaseInception(nn.Module):
  """[1x1, (1x1 ->) 3x3, (1x1 ->) 5x5, max-pool (-> 1x1)] on channels."""
  c1: int
  r3: int
  c3: int
  r5: int
  c5: int
  pp: int
  naive: bool = False
  pool: bool = True
  conv: Any = BaseConv

  @nn.compact
  def __call__(self, x, train: bool):
    conv = lambda f, k, y: self.conv(f, k)(y, train)
    red = lambda f, y: y if self.naive else conv(f, 1, y)
    outs = [conv(self.c1, 1, x), conv(self.c3, 3, red(self.r3, x))]
    if self.c5:
      outs.append(conv(self.c5, 5, red(self.r5, x)))
    if self.pool:
      p = max_pool(x)
      outs.append(p if self.naive else conv(self.pp, 1, p))
    return jnp.concatenate(outs, axis=-1)


class BaseGoogLeNet(nn.Module):
  """GoogLeNet-CIFAR: conv 3x3 -> 3a, 3b -> pool -> 4a-4e -> pool -> 5a, 5b."""
  width: float
  naive: bool = False
  num_classes: int = 10

  @nn.compact
  def __call__(self, x, train: bool = False):
    w = lambda c: scaled(c, self.width)
    x = BaseConv(w(192), 3)(x, train)
    for name, widths in WIDTHS.items():
      x = BaseInception(*map(w, widths), naive=self.naive)(x, train)
      if name in ('3b', '4e'):
        x = max_pool(x, 2)
    return nn.Dense(self.num_classes)(jnp.mean(x, axis=(1, 2)))


class BaseSmallInception(nn.Module):
  """Zhang et al.'s small Inception net (no pool branch); reduced modules put
  a 1x1 (ReLU) reduction to reduce_ratio * C_in before each 3x3."""
  width: float = 1.0
  norm: bool = True
  num_classes: int = 10
  naive: bool = True
  reduce_ratio: float = SmallInception.reduce_ratio

  @nn.compact
  def __call__(self, x, train: bool = False):
    w = lambda c: scaled(c, self.width)
    conv = functools.partial(BaseConv, norm=self.norm, use_bias=not self.norm)
    x = conv(w(96), 3)(x, train)
    for kind, *widths in LAYOUT:
      if kind == 'downsample':
        y = conv(w(widths[0]), 3, 2, 'VALID')(x, train)
        x = jnp.concatenate([y, max_pool(x, 2, 'VALID')], axis=-1)
      else:
        c1, c3 = map(w, widths)
        r = scaled(x.shape[-1], self.reduce_ratio)
        x = BaseInception(c1, r, c3, 0, 0, 0, naive=self.naive, pool=False,
                          conv=conv)(x, train)
    return nn.Dense(self.num_classes)(jnp.mean(x, axis=(1, 2)))


def baseline_model(config) -> nn.Module:
  m = config.model
  if m.name == 'googlenet':
    return BaseGoogLeNet(m.width, naive=m.module == 'naive',
                         num_classes=m.num_classes)
  if m.module != 'naive' and m.reduce_act != 'relu':
    raise ValueError('The small-net baseline has ReLU reductions only.')
  return BaseSmallInception(m.width, m.norm == 'batch', m.num_classes,
                            naive=m.module == 'naive',
                            reduce_ratio=m.reduce_ratio)


# ------------------------------------------------------------- programs --

class Stepper:
  """A compiled, state-donating train step; each call advances the state."""

  def __init__(self, model, config, batch: int):
    size = 32  # Source images; the step crops them to config.image_size.
    tx, _ = optim.make_optimizer(config, 100, 1000)
    # Compiled as train.py compiles it (unoptimised on CPU): it runs once.
    self.state = jax.jit(
        functools.partial(trainer.init_state, model, config, tx),
        compiler_options=trainer.INIT_COMPILER_OPTIONS.get(
            jax.default_backend()))()
    rng = np.random.default_rng(0)
    self.images = jnp.asarray(rng.integers(0, 256, (batch, size, size, 3),
                                           np.uint8))
    self.labels = jnp.asarray(rng.integers(0, 10, (batch,), np.int32))
    self.seed_key = jax.random.PRNGKey(config.seed)
    step = jax.jit(functools.partial(trainer.train_step, model=model,
                                     config=config, stats=STATS),
                   donate_argnums=(0,),
                   compiler_options=ops.compiler_options(config))
    self.compiled = step.lower(self.state, self.images, self.labels,
                               self.seed_key).compile()
    self.flops = accounting.cost_flops(self.compiled)
    self.bytes = accounting.cost_entry(self.compiled,
                                        'bytes accessed')
    mem = self.compiled.memory_analysis()
    self.peak_bytes = (mem.temp_size_in_bytes + mem.argument_size_in_bytes
                       + mem.output_size_in_bytes)
    self.cpu_seconds = []  # (user, system) CPU seconds of each call.

  def __call__(self):
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    self.state, metrics = self.compiled(self.state, self.images, self.labels,
                                        self.seed_key)
    jax.block_until_ready(metrics)
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    self.cpu_seconds.append((r1.ru_utime - r0.ru_utime,
                             r1.ru_stime - r0.ru_stime))
    return metrics


def model_flops(config, batch: int) -> float:
  """cost_analysis() flops of the step with XLA's own ops (the lax convs and
  pools, flax's batch norm)."""
  ref = config.copy_and_resolve_references()
  model = build_model(ref.model)  # Default ops: XLA's.
  step = jax.jit(functools.partial(trainer.train_step, model=model, config=ref,
                                   stats=STATS))
  tx, _ = optim.make_optimizer(ref, 100, 1000)
  abstract = jax.eval_shape(functools.partial(trainer.init_state, model, ref, tx))
  images = jax.ShapeDtypeStruct((batch, 32, 32, 3), jnp.uint8)
  labels = jax.ShapeDtypeStruct((batch,), jnp.int32)
  key = jax.random.PRNGKey(0)
  return accounting.cost_flops(
      step.lower(abstract, images, labels, key).compile())


def layer_gemms(config, batch: int) -> collections.Counter:
  """(M, K, N, a_transposed) -> count: the plain GEMMs of the model's conv,
  1x1 and dense layers (from the accounting) that a train step needs.

  A layer with F outputs over P = N*Ho*Wo positions and K = MACs / (Ho*Wo*F)
  inputs per output is forward (P,K)x(K,F), input gradient (P,F)x(F,K) (none
  for the first layer: the image needs no gradient) and weight gradient
  (K,P)x(P,F), contracted over the P rows of a row-major (P,K) operand.
  """
  model = build_model(config.model)
  rows = [r for r in accounting.account(
      model, accounting.input_shape(config)).rows if r.macs]
  gemms = collections.Counter()
  for i, r in enumerate(rows):
    f, positions = r.out_shape[-1], int(np.prod(r.out_shape[:-1]))
    m, k = batch * positions, r.macs // (positions * f)
    gemms[(m, k, f, False)] += 1
    if i:
      gemms[(m, f, k, False)] += 1
    gemms[(k, m, f, True)] += 1
  return gemms


def gemm_bound(config, batch: int, inner: int = 3) -> dict:
  """The step's GEMM work timed as plain GEMMs of its own shapes (best of
  `inner` calls each): the time a step would take if its layers ran at
  plain-GEMM speed and nothing else (batch norm, pools, concat, the update)
  took any."""
  total_flops = total_s = 0.0
  for (m, k, n, transposed), count in layer_gemms(config, batch).items():
    a = jnp.ones((k, m) if transposed else (m, k), jnp.float32)
    b = jnp.ones((k, n), jnp.float32)
    fn = jax.jit(lambda a, b: a.T @ b) if transposed else jax.jit(jnp.dot)
    bench = benchlib.Bench(fn, (a, b))
    bench()  # Compile.
    total_s += count * min(benchlib.time_call(bench) for _ in range(inner))
    total_flops += count * 2 * m * k * n
  return {'gemm_bound_ms': total_s * 1e3,
          'layer_gemm_gflops': benchlib.gflops(total_flops, total_s)}


def stream_gbps(megabytes: int = 256, calls: int = 15) -> float:
  """Memory bandwidth now: bytes read + written by x <- 0.5 x + 1 in place
  (donated, so no fresh pages) over an array far larger than the caches,
  median of `calls` calls, in GB/s."""
  step = jax.jit(lambda x: x * 0.5 + 1.0, donate_argnums=(0,))
  x = step(jnp.ones((megabytes * 2**18,), jnp.float32))  # Compile.
  times = []
  for _ in range(calls):
    t0 = time.perf_counter()
    x = jax.block_until_ready(step(x))
    times.append(time.perf_counter() - t0)
  return 2 * x.nbytes / benchlib.median(times) / 1e9


class GemmProbe:
  """The machine's GEMM speed now: each call times every GEMM_SHAPES product
  `inner` times (best of them: a preempted call is not the machine's speed)
  and records the median over shapes, in GF/s."""

  def __init__(self, inner: int = 3):
    self.inner, self.rates, self.benches = inner, [], []
    for i, (m, k, n) in enumerate(GEMM_SHAPES):
      a = jax.random.normal(jax.random.PRNGKey(i), (m, k), jnp.float32)
      b = jax.random.normal(jax.random.PRNGKey(i + 7), (k, n), jnp.float32)
      bench = benchlib.Bench(jax.jit(jnp.dot), (a, b))
      bench()  # Compile.
      self.benches.append((2 * m * k * n, bench))

  def __call__(self):
    self.rates.append(benchlib.median([
        benchlib.gflops(flops, min(benchlib.time_call(b)
                                   for _ in range(self.inner)))
        for flops, b in self.benches]))

  def gflops(self) -> float:
    return benchlib.median(self.rates)


VARIANT_KNOBS = tuple(ops.CHOICES)  # conv, pool, norm, pointwise.


def variant_config(config, variant: str):
  """config with ops.conv:ops.pool[:ops.norm[:ops.pointwise[:model.dtype]]]
  set from 'CONV:POOL[:NORM[:POINTWISE[:DTYPE]]]' (what is absent left as
  configured)."""
  values = variant.split(':')
  if not 2 <= len(values) <= len(VARIANT_KNOBS) + 1 or not all(values):
    raise ValueError(f'--variants entry {variant!r}: write CONV:POOL, up to '
                     'CONV:POOL:NORM:POINTWISE:DTYPE, e.g. xla:slices or '
                     'auto:auto:auto:auto:float32.')
  config = config.copy_and_resolve_references()
  for knob, value in zip(VARIANT_KNOBS, values):
    config.ops[knob] = value
  if len(values) > len(VARIANT_KNOBS):
    config.model.dtype = values[-1]
  ops.resolve(config)  # Unknown or unavailable choices raise here.
  return config


def bench_model(config, repeats: int, batch: int, baseline: bool,
                variants=(), log=lambda msg: None, bounds: bool = True) -> dict:
  config = config.copy_and_resolve_references()
  config.batch_size = batch
  models = {'ours': (build_model(config.model, ops.resolve(config)), config)}
  if baseline:
    models['base'] = (baseline_model(config), config)
  for v in variants:
    vc = variant_config(config, v)
    models[v] = (build_model(vc.model, ops.resolve(vc)), vc)
  programs = {}
  for name, (model, cfg) in models.items():
    t0 = time.perf_counter()
    programs[name] = Stepper(model, cfg, batch)
    log(f'  {name}: compiled in {time.perf_counter() - t0:.1f} s')
  gemm = GemmProbe()
  t0 = time.perf_counter()
  times = benchlib.time_interleaved({**programs, 'gemm': gemm}, repeats,
                                    warmup=1)
  log(f'  timed {repeats} rounds in {time.perf_counter() - t0:.1f} s')
  gemm.rates = gemm.rates[1:]  # Drop the warmup round.
  gemm_gf = gemm.gflops()
  useful = model_flops(config, batch)
  row = {'model': config.model.to_dict(), 'batch': batch,
         'model_gflops': useful / 1e9, 'gemm_gflops': gemm_gf,
         'gemm_bound_ms': None, 'layer_gemm_gflops': None,
         'stream_gbps': None}
  if bounds:
    t0 = time.perf_counter()
    row.update(gemm_bound(config, batch), stream_gbps=stream_gbps())
    log(f'  layer GEMMs, bandwidth in {time.perf_counter() - t0:.1f} s')
  for name, prog in programs.items():
    t = benchlib.median(times[name])
    achieved = benchlib.gflops(useful, t)
    row[name] = {'step_ms': t * 1e3, 'images_per_s': batch / t,
                 'step_gflops': prog.flops / 1e9,
                 'achieved_gflops': achieved,
                 'utilization': achieved / gemm_gf,
                 'gemm_bound_fraction': (row['gemm_bound_ms'] / (t * 1e3)
                                         if bounds else None),
                 'step_gbytes': prog.bytes / 1e9,
                 'memory_bound_fraction': (
                     prog.bytes / 1e9 / row['stream_gbps'] / t
                     if bounds else None),
                 'cpu_user_ms': 1e3 * benchlib.median(
                     [u for u, _ in prog.cpu_seconds]),
                 'cpu_sys_ms': 1e3 * benchlib.median(
                     [s for _, s in prog.cpu_seconds]),
                 'peak_mb': prog.peak_bytes / 2**20,
                 'spread': benchlib.spread(times[name])}
  if baseline:
    row['speedup_vs_baseline'] = (row['base']['step_ms'] /
                                  row['ours']['step_ms'])
    row['paired_speedup'] = benchlib.paired_ratio(times['base'], times['ours'])
  for v in variants:
    row[v]['time_vs_ours'] = row[v]['step_ms'] / row['ours']['step_ms']
    if baseline:
      row[v]['speedup_vs_baseline'] = (row['base']['step_ms'] /
                                       row[v]['step_ms'])
  return row


def print_table(out):
  dtypes = sorted({r.get('model', {}).get('dtype', 'float32')
                   for r in out['models'].values()})
  print(f'device: {out["device"]}, batch {out["batch"]}, ours in '
        f'{"/".join(dtypes)} (base float32), median of the repeats; GF/s; '
        f'GLIBC_TUNABLES={out["glibc_tunables"]!r}, '
        f'LD_PRELOAD={out["ld_preload"]!r}')
  hdr = (f'{"model":9} {"prog":13} {"step ms":>9} {"img/s":>7} {"step GF":>8} '
         f'{"model GF":>8} {"GF/s":>7} {"gemm":>7} {"util":>5} {"bound":>5} '
         f'{"GB":>6} {"mem":>5} {"sys ms":>6} {"peak MB":>8} {"spread":>6} '
         f'{"speedup":>7}')
  print(hdr)
  print('-' * len(hdr))
  for name, r in out['models'].items():
    for prog in ('base', 'ours', *out['variants']):
      if prog not in r:
        continue
      p = r[prog]
      speedup = (r if prog == 'ours' else p).get('speedup_vs_baseline')
      speed = f'{speedup:7.2f}' if speedup else ''
      bound, mem = (f'{x:5.2f}' if x is not None else f'{"-":>5}' for x in
                    (p['gemm_bound_fraction'], p['memory_bound_fraction']))
      print(f'{name:9} {prog:13} {p["step_ms"]:9.1f} {p["images_per_s"]:7.1f} '
            f'{p["step_gflops"]:8.2f} {r["model_gflops"]:8.2f} '
            f'{p["achieved_gflops"]:7.1f} {r["gemm_gflops"]:7.1f} '
            f'{p["utilization"]:5.2f} {bound} {p["step_gbytes"]:6.1f} {mem} '
            f'{p["cpu_sys_ms"]:6.0f} {p["peak_mb"]:8.0f} {p["spread"]:6.2f} '
            f'{speed}')
  bounded = {n: r for n, r in out['models'].items() if r['stream_gbps']}
  if bounded:
    print('bound: the model\'s own GEMMs timed alone (gemm_bound_ms: ' +
          ', '.join(f'{n} {r["gemm_bound_ms"]:.0f} ms at '
                    f'{r["layer_gemm_gflops"]:.0f} GF/s'
                    for n, r in bounded.items()) + ') / step time.')
    print('GB: bytes the step\'s instructions read and write (XLA); mem: '
          'that at the measured stream bandwidth (' +
          ', '.join(f'{r["stream_gbps"]:.0f}' for r in bounded.values())
          + ' GB/s) / step time.')


def selected_configs() -> dict:
  """name -> config: --config if given, else the --models."""
  if FLAGS.config:
    return {'config': FLAGS.config}
  return {m: load_config(MODELS[m]) for m in FLAGS.models}


def batch_size() -> int:
  """--batch; with --config and no --batch, the config's batch_size (so
  that --config.batch_size=256 is what is timed)."""
  if FLAGS.config and not FLAGS['batch'].present:
    return FLAGS.config.batch_size
  return FLAGS.batch


def run_info() -> dict:
  """The header of the JSON output: device, batch, malloc setting."""
  return {'device': benchlib.device_info(), 'batch': batch_size(),
          'glibc_tunables': os.environ.get('GLIBC_TUNABLES', ''),
          'ld_preload': os.environ.get('LD_PRELOAD', ''),
          'variants': FLAGS.variants, 'models': {}}


def main(argv):
  del argv
  log = (lambda m: print(m, file=sys.stderr)) if FLAGS.json else print
  configs, out = selected_configs(), run_info()
  for v in FLAGS.variants:  # Bad entries fail before anything compiles.
    variant_config(next(iter(configs.values())), v)
  for name, config in configs.items():
    repeats = min(FLAGS.repeats, 3) if name == 'g10' else FLAGS.repeats
    row = out['models'][name] = bench_model(
        config, repeats, batch_size(), FLAGS.baseline, FLAGS.variants, log,
        FLAGS.bounds)
    log(f'{name}: ' + ', '.join(f'{p} {row[p]["step_ms"]:.2f} ms'
                                for p in ('base', 'ours', *FLAGS.variants)
                                if p in row))
  benchlib.print_result(out, print_table)


if __name__ == '__main__':
  app.run(main)
