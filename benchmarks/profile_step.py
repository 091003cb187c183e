"""Where the train step's time goes: a jax.profiler trace, summed per layer kind.

  python benchmarks/profile_step.py --models=g025          # bench_train's models
  python benchmarks/profile_step.py --config=configs/cifar_cpu.py --json

Runs bench_train.py's compiled step (same flags: --models, --config,
--batch), traces `--steps` calls with jax.profiler, and reads the trace
(XSpace protobuf) back. XLA:CPU records one event per HLO instruction it
runs, on the thread that ran it; each event is attributed through the
instruction's op_name metadata to
  pass:  forward, backward (op_name under transpose(...)) or update
         (optimizer, metrics);
  kind:  conv kxk, 1x1 (pointwise), batch norm, pool, concat, input
         (augmentation), other (loss, softmax, ...).
Figures are per step, in ms of thread time (two threads busy for 1 ms count
2 ms): `busy_ms` per compute thread (the intra-op pool's, and the client
thread that XLA's executor starts on and runs instructions in until it hands
work to the pool), and `idle_ms`, the pool's thread time in the step's
span (one pool thread per core) less the busy time of them all. An
instruction is traced on the thread that starts it: the other thread's
share of a loop split in two (XLA's outer_dimension_partitions) or of a
YNNPACK GEMM is not traced, so `idle_ms` overstates idleness; getrusage's
CPU time (bench_train.py's cpu_user_ms + cpu_sys_ms over the step time) is
the measure of how busy the cores are. Tracing records every instruction
and so slows the step (traced_step_ms is above bench_train.py's step_ms):
read the shares, not the absolute times.

Prints, per model, the traced step time, thread time by (pass, kind) with
each one's share, and the `--top` longest instructions; with --json, one
JSON object (bench_train.py's header, then per model the figures above,
`by_kind` and `top_ops`).
"""

import allocator
if __name__ == '__main__':  # Before anything allocates (allocator.py).
  allocator.use_mimalloc()

import collections
import glob
import os
import re
import tempfile
import time

from absl import app, flags
import jax

from benchmarks import bench_train, benchlib
import ops
from models import build_model

flags.DEFINE_integer('steps', 3, 'Traced steps (after 2 untraced ones).',
                     allow_override=True)  # bench_input.py's: timed batches.
flags.DEFINE_integer('top', 15, 'Longest instructions to list.')
FLAGS = flags.FLAGS

POOL_THREAD = 'XLAEigen'  # XLA:CPU's intra-op thread pool, one per core.
# Threads that run the step's instructions: the pool's, and the client thread
# the thunk executor starts on (it runs instructions there until it hands
# work to the pool, sometimes a whole forward pass).
COMPUTE_THREADS = (POOL_THREAD, 'XLAPjRtCpuClient')
NOT_OPS = ('ThunkExecutor', 'end: ', 'SlinkyThreadPool', 'ThreadpoolListener')
KINDS = (  # (kind, a regex for an op_name path component); first match wins.
    ('batch norm', r'bn'),
    ('pool', r'(max_|avg_)?pool\w*'),
    ('conv kxk', r'conv|depthwise'),
    ('1x1 (pointwise)', r'pointwise|head'),
    ('input', r'augment_batch'),
)


def op_names(hlo_text: str) -> dict[str, str]:
  """HLO instruction name -> its op_name metadata (the JAX call path)."""
  out = {}
  for m in re.finditer(r'^\s*(?:ROOT )?%?([\w.\-]+) = .*?op_name="([^"]*)"',
                       hlo_text, re.M):
    out[m.group(1)] = m.group(2)
  return out


def classify(op_name: str) -> tuple[str, str]:
  """op_name -> (pass, kind); see the module docstring."""
  pass_ = ('backward' if 'transpose(' in op_name else
           'forward' if 'jvp(' in op_name else 'update')
  parts = re.split(r'[/()]', op_name)
  for kind, pattern in KINDS:
    if any(re.fullmatch(pattern, p) for p in parts):
      return pass_, kind
  last = op_name.rsplit('/', 1)[-1]
  return pass_, 'concat' if last.startswith('concatenate') else 'other'


def read_events(trace_dir: str):
  """(thread name, instruction, start_ps, end_ps) on the compute threads."""
  # TensorFlow ships the XPlane proto (it is pinned for TFDS anyway).
  from tensorflow.tsl.profiler.protobuf import xplane_pb2
  paths = glob.glob(os.path.join(trace_dir, '**', '*.xplane.pb'),
                    recursive=True)
  if not paths:
    raise FileNotFoundError(f'No *.xplane.pb under {trace_dir}.')
  space = xplane_pb2.XSpace()
  with open(paths[0], 'rb') as f:
    space.ParseFromString(f.read())
  events = []
  for plane in space.planes:
    names = {k: v.name for k, v in plane.event_metadata.items()}
    for line in plane.lines:
      if not any(t in line.name for t in COMPUTE_THREADS):
        continue
      for ev in line.events:
        name = names.get(ev.metadata_id, '?')
        if not name.startswith(NOT_OPS):
          start = line.timestamp_ns * 1000 + ev.offset_ps
          events.append((line.name, name, start, start + ev.duration_ps))
  return events


def busy_ps(intervals) -> int:
  """Length of the union of [start, end) intervals."""
  total, end = 0, None
  for s, e in sorted(intervals):
    if end is None or s > end:
      total, end = total + e - s, e
    elif e > end:
      total, end = total + e - end, e
  return total


def summarize(events, names: dict[str, str], steps: int, top: int) -> dict:
  """Per-step thread time by (pass, kind), per thread, and the top ops."""
  ms = lambda ps: ps / 1e9 / steps
  by_kind, by_op = collections.Counter(), collections.Counter()
  threads = collections.defaultdict(list)
  for thread, name, start, end in events:
    by_kind[classify(names.get(name, ''))] += end - start
    by_op[name] += end - start
    threads[thread].append((start, end))
  span = (max(e[3] for e in events) - min(e[2] for e in events)
          if events else 0)
  busy = {t: busy_ps(v) for t, v in threads.items()}
  return {
      'span_ms': ms(span),
      'op_ms': ms(sum(by_op.values())),
      'busy_ms': sorted((ms(b) for b in busy.values()), reverse=True),
      'idle_ms': ms(max(0, span * sum(POOL_THREAD in t for t in busy)
                        - sum(busy.values()))),
      'by_kind': [{'pass': p, 'kind': k, 'ms': ms(v)}
                  for (p, k), v in by_kind.most_common()],
      'top_ops': [{'name': n, 'ms': ms(v), 'op_name': names.get(n, '')}
                  for n, v in by_op.most_common(top)],
  }


def profile(config, batch: int, steps: int, top: int) -> dict:
  model = build_model(config.model, ops.resolve(config))
  stepper = bench_train.Stepper(model, config, batch)
  for _ in range(2):
    stepper()
  with tempfile.TemporaryDirectory() as trace_dir:
    t0 = time.perf_counter()
    jax.profiler.start_trace(trace_dir)
    for _ in range(steps):
      stepper()
    jax.profiler.stop_trace()
    wall = (time.perf_counter() - t0) / steps
    events = read_events(trace_dir)
  out = summarize(events, op_names(stepper.compiled.as_text()), steps, top)
  return {'traced_step_ms': wall * 1e3, **out}


def print_profile(name: str, p: dict) -> None:
  print(f'\n{name}: traced step {p["traced_step_ms"]:.0f} ms; instructions '
        f'{p["op_ms"]:.0f} ms of thread time; busy per thread '
        f'{", ".join(f"{b:.0f}" for b in p["busy_ms"])} ms; idle '
        f'{p["idle_ms"]:.0f} ms (pool thread time in the span less the '
        'busy time)')
  print(f'  {"pass":9} {"kind":16} {"ms":>8} {"share":>6}')
  for row in p['by_kind']:
    print(f'  {row["pass"]:9} {row["kind"]:16} {row["ms"]:8.1f} '
          f'{row["ms"] / p["op_ms"]:6.1%}')
  print('  longest instructions:')
  for row in p['top_ops']:
    print(f'  {row["ms"]:8.2f} ms  {row["name"]:32} {row["op_name"][-70:]}')


def main(argv):
  del argv
  out = bench_train.run_info()
  for name, config in bench_train.selected_configs().items():
    out['models'][name] = profile(config, FLAGS.batch, FLAGS.steps, FLAGS.top)
    if not FLAGS.json:
      print_profile(name, out['models'][name])
  if FLAGS.json:
    benchlib.print_json(out)


if __name__ == '__main__':
  app.run(main)
