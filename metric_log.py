"""A run's scalars: TensorBoard event files, DIR/metrics.jsonl, the console.

The event files are written with the `tensorboard` package's own writer and
protos, which need no TensorFlow: importing TensorFlow (as clu's writers do)
costs seconds at every start, prints its own start-up lines, and loads a
second copy of oneDNN into the process.
"""

import json
import os
import sys
import time
import types

from absl import logging

# The writer reaches for TensorFlow's file API when it first writes, and
# imports TensorFlow if it is installed (it is, for TFDS). A module named
# tensorboard.compat.notf is tensorboard's own switch (its no_tensorflow
# build) to its TensorFlow-free stub: registering one keeps TensorFlow out.
sys.modules.setdefault('tensorboard.compat.notf',
                       types.ModuleType('tensorboard.compat.notf'))

from tensorboard.compat.proto import event_pb2, summary_pb2  # noqa: E402
from tensorboard.plugins.hparams import summary_v2 as hparams_summary  # noqa: E402
from tensorboard.summary.writer.event_file_writer import EventFileWriter  # noqa: E402


class MetricLog:
  """Scalars to TensorBoard and to DIR/metrics.jsonl (main process only;
  every process logs them to the console)."""

  def __init__(self, workdir: str, hparams: dict | None, is_main: bool,
               jsonl: str = 'metrics.jsonl'):
    """hparams: flat {name: int|float|str|bool} for TensorBoard's hparams
    dashboard, written once (None on a resumed run)."""
    self.events = EventFileWriter(workdir) if is_main else None
    self.path = os.path.join(workdir, jsonl) if is_main else None
    if self.events and hparams:
      self._add(0, hparams_summary.hparams_pb(hparams))

  def _add(self, step: int, summary: summary_pb2.Summary) -> None:
    self.events.add_event(event_pb2.Event(wall_time=time.time(), step=step,
                                          summary=summary))

  def __call__(self, step: int, scalars: dict) -> None:
    logging.info('[%d] %s', step, ', '.join(f'{k}={v:.6g}'
                                             for k, v in scalars.items()))
    if not self.events:
      return
    self._add(step, summary_pb2.Summary(value=[
        summary_pb2.Summary.Value(tag=k, simple_value=float(v))
        for k, v in scalars.items()]))
    with open(self.path, 'a') as f:
      f.write(json.dumps({'step': step, **scalars}) + '\n')

  def flush(self) -> None:
    if self.events:
      self.events.flush()

  def close(self) -> None:
    if self.events:
      self.events.close()
