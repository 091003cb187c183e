"""Times the pointwise (1x1) core against a 1x1 lax conv and the plain GEMM.

  python benchmarks/bench_pointwise.py                 # table
  python benchmarks/bench_pointwise.py --json --repeats=9

For each (N, H, W, C -> F) shape, three float32 implementations of the same
product, each jitted, forward only and forward+backward:
  core: our `PointwiseConv` (lax.dot_general on the channel axis), 4-D input;
  conv: `flax.linen.Conv(F, (1, 1))`, i.e. lax.conv_general_dilated, 4-D input;
  gemm: `jnp.dot` on the flattened (N*H*W, C) x (C, F) problem: the limit.
The backward pass is `jax.grad` of sum(y * g) w.r.t. both the input and the
kernel. FLOPs: forward 2*N*H*W*C*F, train 3x that (the forward GEMM plus the
two backward GEMMs). Implementations run round-robin within each repeat so
machine noise hits them alike (alternate rounds reversed, so each has each
neighbour equally often); the reported time is the median over rounds.
core_vs_X = median time(X) / median time(core): > 1 means the core is faster;
`paired` holds the median of the per-round ratios, a check on noisy machines.
`core_hlo_matches_gemm_*` compares the opcodes XLA compiles for core and gemm
(less bitcasts): a noise-free check that the core is the plain GEMM.

Then the "seed pair", forward only: a direct 4x4 conv 256->256 against a 1x1
256->64 reduction followed by a 4x4 conv 64->256, batch 32 at 28x28. The MAC
ratio is 16*256*256 / (256*64 + 16*64*256) = 64/17; wall_ratio is the
measured direct / reduced time.
"""

import sys

from absl import app, flags
import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

from benchmarks import benchlib
from models.inception import InceptionOptions, ReducedConv
from models.layers import ConvBlock
from models.pointwise import PointwiseConv

flags.DEFINE_integer('repeats', 15, 'Timed rounds per shape (median '
                     'reported).',
                     allow_override=True)  # bench_train.py's default: 5.
flags.DEFINE_integer('warmup', 1, 'Untimed rounds after compilation.')
flags.DEFINE_bool('seed_pair', True, 'Also time the direct vs reduced 4x4 pair.')
FLAGS = flags.FLAGS

# (N, H, W, C, F)
SHAPES = ((128, 32, 32, 256, 64), (128, 16, 16, 480, 192),
          (128, 8, 8, 832, 384), (128, 32, 32, 192, 64))
IMPLS = ('core', 'conv', 'gemm')
MODES = ('fwd', 'train')


def _core(x, k):
  return PointwiseConv(k.shape[-1], use_bias=False).apply(
      {'params': {'kernel': k}}, x)


def _conv(x, k):  # k: (1, 1, C, F)
  return nn.Conv(k.shape[-1], (1, 1), use_bias=False).apply(
      {'params': {'kernel': k}}, x)


def _gemm(x, k):  # x: (N*H*W, C)
  return jnp.dot(x, k)


def _train(f):
  """(x, k, g) -> (dL/dx, dL/dk) for L = sum(f(x, k) * g)."""
  return jax.grad(lambda x, k, g: jnp.sum(f(x, k) * g), argnums=(0, 1))


def shape_benches(n, h, w, c, f, key):
  """name -> benchlib.Bench for every (impl, mode) on one shape."""
  kx, kk, kg = jax.random.split(key, 3)
  x = jax.random.normal(kx, (n, h, w, c), jnp.float32)
  k = jax.random.normal(kk, (c, f), jnp.float32) / np.sqrt(c)
  g = jax.random.normal(kg, (n, h, w, f), jnp.float32)
  # Reshapes happen outside the jitted fns: gemm sees a true 2-D problem.
  x2, g2, k4 = x.reshape(-1, c), g.reshape(-1, f), k.reshape(1, 1, c, f)
  fns = {'core': (_core, (x, k), g), 'conv': (_conv, (x, k4), g),
         'gemm': (_gemm, (x2, k), g2)}
  benches = {}
  for mode in MODES:  # Order: core, conv, gemm within each mode.
    for impl in IMPLS:
      fn, args, cot = fns[impl]
      if mode == 'fwd':
        benches[impl, mode] = benchlib.Bench(jax.jit(fn), args)
      else:
        benches[impl, mode] = benchlib.Bench(jax.jit(_train(fn)), (*args, cot))
  return benches


def check_agree(benches, c, f):
  """The three implementations compute the same thing (to f32 rounding)."""
  ref = {m: jax.device_get(benches['gemm', m]()) for m in MODES}
  for impl in ('core', 'conv'):
    y = np.asarray(benches[impl, 'fwd']()).reshape(ref['fwd'].shape)
    np.testing.assert_allclose(y, ref['fwd'], rtol=1e-3, atol=1e-3)
    dx, dk = benches[impl, 'train']()
    np.testing.assert_allclose(np.asarray(dx).reshape(ref['train'][0].shape),
                               ref['train'][0], rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(np.asarray(dk).reshape(c, f), ref['train'][1],
                               rtol=1e-3, atol=2e-2)


def bench_shapes(repeats, warmup, log):
  rows = []
  key = jax.random.PRNGKey(0)
  for i, (n, h, w, c, f) in enumerate(SHAPES):
    benches = shape_benches(n, h, w, c, f, jax.random.fold_in(key, i))
    benchlib.compile_all(benches)
    check_agree(benches, c, f)
    times = benchlib.time_interleaved(benches, repeats, warmup)
    fwd_flops = 2 * n * h * w * c * f
    flops = {'fwd': fwd_flops, 'train': 3 * fwd_flops}
    med = {key_: benchlib.median(t) for key_, t in times.items()}
    row = {'shape': f'{n}x{h}x{w}x{c}->{f}', 'N': n, 'H': h, 'W': w, 'C': c,
           'F': f, 'fwd_gflop': fwd_flops / 1e9}
    for impl in IMPLS:
      for mode in MODES:
        row[f'{impl}_{mode}_ms'] = med[impl, mode] * 1e3
        row[f'{impl}_{mode}_gflops'] = benchlib.gflops(flops[mode],
                                                       med[impl, mode])
        row[f'{impl}_{mode}_spread'] = benchlib.spread(times[impl, mode])
    for other in ('gemm', 'conv'):
      for mode in MODES:
        row[f'core_vs_{other}_{mode}'] = med[other, mode] / med['core', mode]
    row['paired'] = {  # Median of per-round ratios: a check on the above.
        f'core_vs_{o}_{m}': benchlib.paired_ratio(times[o, m], times['core', m])
        for o in ('gemm', 'conv') for m in MODES}
    for mode in MODES:  # What XLA emits for core beyond the plain GEMM.
      ops = {i: benchlib.hlo_ops(benches[i, mode].fn, *benches[i, mode].args)
             for i in ('core', 'gemm')}
      extra = dict(ops['core'] - ops['gemm'])
      missing = dict(ops['gemm'] - ops['core'])
      row[f'core_hlo_matches_gemm_{mode}'] = not extra and not missing
      row[f'core_hlo_extra_ops_{mode}'] = extra
    rows.append(row)
    log(f'  {row["shape"]}: done')
  return rows


def bench_seed_pair(repeats, warmup):
  n, hw, c, r, f, k = 32, 28, 256, 64, 256, 4
  x = jax.random.normal(jax.random.PRNGKey(1), (n, hw, hw, c), jnp.float32)
  direct = ConvBlock(f, k, norm='none', act='linear')
  reduced = ReducedConv(r, f, k, InceptionOptions(norm='none',
                                                  reduce_act='linear'))
  benches = {}
  for name, mod in (('direct', direct), ('reduced', reduced)):
    params = mod.init(jax.random.PRNGKey(2), x)
    benches[name] = benchlib.Bench(jax.jit(mod.apply), (params, x))
  benchlib.compile_all(benches)
  times = benchlib.time_interleaved(benches, repeats, warmup)
  t_direct, t_reduced = (benchlib.median(times[m]) for m in ('direct', 'reduced'))
  pixels = n * hw * hw
  direct_macs = pixels * k * k * c * f
  reduced_macs = pixels * (c * r + k * k * r * f)
  return {
      'shape': f'{n}x{hw}x{hw}x{c}: {k}x{k} {c}->{f} vs 1x1 {c}->{r} + '
               f'{k}x{k} {r}->{f}',
      'mac_ratio': direct_macs / reduced_macs,
      'wall_ratio': t_direct / t_reduced,
      'direct_ms': t_direct * 1e3,
      'reduced_ms': t_reduced * 1e3,
      'direct_gflops': benchlib.gflops(2 * direct_macs, t_direct),
      'reduced_gflops': benchlib.gflops(2 * reduced_macs, t_reduced),
      'direct_spread': benchlib.spread(times['direct']),
      'reduced_spread': benchlib.spread(times['reduced']),
  }


def print_tables(out):
  print(f'device: {out["device"]}  (median of {out["repeats"]} repeats, '
        'GF/s; core/X = X time / core time, > 1: core faster)')
  hdr = (f'{"shape":22} {"mode":5} {"core":>8} {"conv":>8} {"gemm":>8} '
         f'{"core ms":>9} {"core/gemm":>10} {"core/conv":>10} {"paired":>7} '
         f'{"spread":>7}  core HLO vs gemm')
  print(hdr)
  print('-' * len(hdr))
  for r in out['shapes']:
    for mode in MODES:
      g = [benchlib.fmt_gflops(r[f'{i}_{mode}_gflops']) for i in IMPLS]
      spread = max(r[f'{i}_{mode}_spread'] for i in IMPLS)
      print(f'{r["shape"]:22} {mode:5} {" ".join(g)} '
            f'{benchlib.fmt_ms(r[f"core_{mode}_ms"] / 1e3)} '
            f'{r[f"core_vs_gemm_{mode}"]:>10.3f} '
            f'{r[f"core_vs_conv_{mode}"]:>10.3f} '
            f'{r["paired"][f"core_vs_gemm_{mode}"]:>7.3f} {spread:>7.2f}  '
            + ('same ops' if r[f'core_hlo_matches_gemm_{mode}'] else
               f'extra {r[f"core_hlo_extra_ops_{mode}"]}'))
  print('paired: median over rounds of gemm/core time; spread: (max-min)/'
        'median, worst of the three; HLO: opcodes of the compiled programs '
        'less bitcasts.')
  s = out.get('seed_pair')
  if s:
    print(f'\nseed pair ({s["shape"]}), forward:')
    print(f'  direct  {s["direct_ms"]:9.2f} ms  {s["direct_gflops"]:7.1f} GF/s')
    print(f'  reduced {s["reduced_ms"]:9.2f} ms  {s["reduced_gflops"]:7.1f} GF/s')
    print(f'  mac_ratio {s["mac_ratio"]:.4f}  wall_ratio {s["wall_ratio"]:.3f}')


def main(argv):
  del argv
  log = (lambda m: print(m, file=sys.stderr)) if FLAGS.json else (lambda m: None)
  out = {'device': benchlib.device_info(), 'repeats': FLAGS.repeats,
         'shapes': bench_shapes(FLAGS.repeats, FLAGS.warmup, log)}
  if FLAGS.seed_pair:
    out['seed_pair'] = bench_seed_pair(FLAGS.repeats, FLAGS.warmup)
  benchlib.print_result(out, print_tables)


if __name__ == '__main__':
  app.run(main)
