"""Small timing helpers shared by the benchmark scripts.

  from benchmarks import benchlib
  fns = {'a': benchlib.Bench(jax.jit(f), (x, k)), 'b': ...}
  times = benchlib.time_interleaved(fns, repeats=7, warmup=2)
  t = benchlib.median(times['a'])           # seconds
  print(benchlib.fmt_gflops(benchlib.gflops(flops, t)))

Timing is wall clock around one call plus `jax.block_until_ready` of its
result; the first `warmup` calls of every function (which include compilation
on the first one) are discarded. `time_interleaved` runs the functions
round-robin within each repeat, so slow drifts in machine load (other
processes, thermal state) hit them alike, and reports the per-call times.
Use the median: it ignores the odd preempted run that would skew a mean.

Flags: every benchmark is an absl app (`app.run(main)`), like train.py.
`--json`, which all of those here take, is defined in this module, once.
A flag that another tool defines too, with another default or meaning
(--repeats, --steps, --split), is defined with allow_override=True in each,
so that tests can import several tools into one process; there the last
import's definition (and default) stands, so code run in-process passes such
values as arguments rather than reading the flag.
"""

import collections
import dataclasses
import json
import os
import platform
import re
import statistics
import time
from typing import Any, Callable, Mapping, Sequence

from absl import flags
import jax

# allow_override: scripts/report.py and scripts/model_table.py define --json
# too, and this module may be imported as `benchlib` and as
# `benchmarks.benchlib` in one process.
flags.DEFINE_bool('json', False, 'Print one JSON object instead of tables.',
                  allow_override=True)


@dataclasses.dataclass
class Bench:
  """A (jitted) function and the arguments to time it on."""
  fn: Callable
  args: Sequence[Any] = ()

  def __call__(self):
    return jax.block_until_ready(self.fn(*self.args))


def time_call(bench: Callable[[], Any]) -> float:
  """Seconds for one call, result blocked on."""
  t0 = time.perf_counter()
  bench()
  return time.perf_counter() - t0


def compile_all(fns: Mapping[str, Bench]) -> dict[str, float]:
  """Lowers and compiles each jitted fn ahead of timing; returns seconds each.

  Only for fns that are `jax.jit` objects; others are skipped (their first
  warmup call pays the compile instead).
  """
  out = {}
  for name, b in fns.items():
    if hasattr(b.fn, 'lower'):
      t0 = time.perf_counter()
      b.fn.lower(*b.args).compile()
      out[name] = time.perf_counter() - t0
  return out


def time_interleaved(fns: Mapping[str, Callable[[], Any]], repeats: int = 5,
                     warmup: int = 1,
                     alternate: bool = True) -> dict[str, list[float]]:
  """Per-call seconds of each fn, over `repeats` round-robin rounds.

  Each round calls every fn once, in the mapping's order; with `alternate`,
  every other round runs in reverse (a, b, c, c, b, a, a, b, c, ...). On a
  small CPU a call's time depends on what ran just before it (a call after a
  slow conv runs slower: caches, memory and clocks are left in its state),
  so a fixed cyclic order biases whichever fn follows the slow one;
  alternating gives each fn each neighbour equally often. `warmup` untimed
  rounds come first.
  """
  for _ in range(warmup):
    for b in fns.values():
      b()
  times = {name: [] for name in fns}
  items = list(fns.items())
  for r in range(repeats):
    for name, b in (items[::-1] if alternate and r % 2 else items):
      times[name].append(time_call(b))
  return times


def median(times: Sequence[float]) -> float:
  return statistics.median(times)


def paired_ratio(times_a: Sequence[float], times_b: Sequence[float]) -> float:
  """Median over rounds of time_a / time_b, from time_interleaved's lists.

  The two calls of a round run back to back, so load that drifts over seconds
  cancels in each round's ratio; a robustness check on median(a)/median(b).
  """
  return statistics.median(a / b for a, b in zip(times_a, times_b))


def spread(times: Sequence[float]) -> float:
  """(max - min) / median: a rough noise figure for a set of repeats."""
  m = statistics.median(times)
  return (max(times) - min(times)) / m if m else float('nan')


# Ops that move no data: a layout-preserving reshape, parameters, tuples.
FREE_OPS = frozenset({'bitcast', 'parameter', 'tuple', 'get-tuple-element',
                      'constant'})
_INSTR = re.compile(r'^\s*(?:ROOT\s+)?%?[\w.\-]+\s*=\s*(.*)$')


def hlo_ops(jitted: Callable, *args, drop=FREE_OPS) -> collections.Counter:
  """Opcode counts of the optimized HLO XLA compiles for jitted(*args).

  Counts instructions in every computation (fusion bodies included), minus
  `drop`. Two programs with equal counts do the same work up to free
  reshapes: a noise-free check to set beside the timings.
  """
  ops = collections.Counter()
  for line in jitted.lower(*args).compile().as_text().splitlines():
    m = _INSTR.match(line)
    if not m or line.lstrip().startswith(('HloModule', '//')):
      continue
    rhs = m.group(1)
    if rhs.startswith('('):  # Tuple shape: skip the balanced parentheses.
      depth = 0
      for i, ch in enumerate(rhs):
        depth += {'(': 1, ')': -1}.get(ch, 0)
        if depth == 0:
          rhs = rhs[i + 1:]
          break
    else:
      rhs = rhs.split(' ', 1)[1] if ' ' in rhs else ''
    op = rhs.strip().split('(', 1)[0]
    if op and op not in drop:
      ops[op] += 1
  return ops


def gflops(flops: float, seconds: float) -> float:
  return flops / seconds / 1e9


def fmt_gflops(x: float) -> str:
  return f'{x:8.1f}'


def fmt_ms(seconds: float) -> str:
  return f'{seconds * 1e3:9.2f}'


def device_info() -> str:
  """E.g. 'cpu (2 cores, x86_64), jax 0.10.2'."""
  d = jax.devices()[0]
  kind = getattr(d, 'device_kind', d.platform)
  desc = f'{d.platform}:{kind}'
  if d.platform == 'cpu':
    desc += f' ({os.cpu_count()} cores, {platform.machine()})'
  return f'{desc}, jax {jax.__version__}'


def print_json(obj: Any) -> None:
  """One JSON object on stdout; floats rounded for readability."""
  def rnd(v):
    if isinstance(v, float):
      return round(v, 4)
    if isinstance(v, dict):
      return {k: rnd(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
      return [rnd(x) for x in v]
    return v
  print(json.dumps(rnd(obj), indent=1))


def print_result(out: Any, print_table) -> None:
  """`out` as JSON with --json, else as the tool's own table."""
  if flags.FLAGS.json:
    print_json(out)
  else:
    print_table(out)
