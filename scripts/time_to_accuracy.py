"""Validation accuracy against wall time: one curve per run, a colour per
recipe, with the target accuracy drawn across.

  python -m scripts.time_to_accuracy --out=docs/time_to_accuracy.png \
      --target=0.9 'cifar_fast=runs/fast/*-seed*' 'before=runs/dtype/float32-seed*'

Each positional argument is LABEL=GLOB: the run directories (with
summary.json and TensorBoard event files) of one recipe, or the JSON that
benchmarks/airbench_reference.py --json printed (its per-epoch curve, then
its final test-time-augmented accuracy at its wall time). A point of a run
directory is an evaluation: its val/accuracy, at the run's wall time when
it was logged (the run's wall_seconds in summary.json, less the time from
that event to the run's last one; resumed runs count every session, as
wall_seconds does). Prints each run's points as JSON lines.
"""

import glob
import json
import os
import struct

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
from absl import app, flags  # noqa: E402
from tensorboard.compat.proto import event_pb2  # noqa: E402

flags.DEFINE_string('out', 'time_to_accuracy.png', 'Where to write the plot.')
flags.DEFINE_float('target', 0.0, '> 0: a dashed line at this accuracy.')
FLAGS = flags.FLAGS

TAG = 'val/accuracy'


def _records(path: str):
  """The records of a TFRecord file (length, its CRC, data, its CRC), read
  without TensorFlow, which tensorboard's own loaders import."""
  with open(path, 'rb') as f:
    while header := f.read(12):
      (length,) = struct.unpack('<Q', header[:8])
      yield f.read(length)
      f.read(4)


def _events(workdir: str) -> list:
  paths = sorted(glob.glob(os.path.join(workdir, 'events.out.tfevents.*')))
  return [event_pb2.Event.FromString(record) for path in paths
          for record in _records(path)]


def anchor_curve(path: str) -> list[tuple[float, float]]:
  """[(wall seconds, val accuracy)] of airbench_reference.py's JSON."""
  with open(path) as f:
    result = json.load(f)
  points = [(p['wall_s'], p['val_acc']) for p in result['curve']]
  return points + [(result['wall_s'], result['tta_val_acc'])]


def curve(workdir: str) -> list[tuple[float, float]]:
  """[(wall seconds, val accuracy)] of one run's evaluations (or of the
  anchor's JSON)."""
  if workdir.endswith('.json'):
    return anchor_curve(workdir)
  with open(os.path.join(workdir, 'summary.json')) as f:
    wall = json.load(f)['wall_seconds']
  events = _events(workdir)
  if not events:
    raise ValueError(f'{workdir} has no TensorBoard event files.')
  last = max(e.wall_time for e in events)
  return sorted((wall - (last - e.wall_time), v.simple_value)
                for e in events for v in e.summary.value if v.tag == TAG)


def parse_groups(args: list[str]) -> dict[str, list[str]]:
  groups = {}
  for arg in args:
    label, sep, pattern = arg.partition('=')
    runs = sorted(glob.glob(pattern)) if sep else []
    if not runs:
      raise app.UsageError(f'{arg!r}: expected LABEL=GLOB matching run '
                           'directories or JSON files.')
    groups[label] = runs
  return groups


def plot(curves: dict[str, list[list[tuple]]], out: str, target: float):
  fig, ax = plt.subplots(figsize=(7, 4.5))
  for colour, (label, runs) in zip(plt.rcParams['axes.prop_cycle'].by_key()
                                   ['color'], curves.items()):
    for i, points in enumerate(runs):
      xs, ys = zip(*points)
      ax.plot([x / 60 for x in xs], ys, 'o-', color=colour, alpha=0.8,
              markersize=3, label=label if i == 0 else None)
  if target > 0:
    ax.axhline(target, color='grey', linestyle='--', linewidth=1)
  ax.set_xlabel('wall time (minutes: data, compiles and evaluations included)')
  ax.set_ylabel('val accuracy')
  ax.grid(alpha=0.3)
  ax.legend()
  fig.tight_layout()
  fig.savefig(out, dpi=120)


def main(argv):
  groups = parse_groups(argv[1:])
  curves = {label: [curve(run) for run in runs] for label, runs in
            groups.items()}
  for label, runs in groups.items():
    for run, points in zip(runs, curves[label]):
      print(json.dumps({'label': label, 'run': run, 'points': points}))
  plot(curves, FLAGS.out, FLAGS.target)


if __name__ == '__main__':
  app.run(main)
