"""metric_log: TensorBoard event files read back by TensorBoard's own reader,
metrics.jsonl, and start-up without TensorFlow."""

import json
import os
import subprocess
import sys

import pytest
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import plugin_data_pb2

import metric_log

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_scalars_and_hparams_read_back_by_tensorboard(tmp_path):
  log = metric_log.MetricLog(str(tmp_path), {'model.width': 0.25,
                                             'model.name': 'googlenet'},
                             is_main=True)
  log(1, {'train/loss': 2.5, 'train/accuracy': 0.125})
  log(3, {'train/loss': 1.75})
  log.close()
  events = event_accumulator.EventAccumulator(str(tmp_path))
  events.Reload()
  assert [(e.step, e.value) for e in events.Scalars('train/loss')] == [
      (1, 2.5), (3, 1.75)]
  assert [e.value for e in events.Scalars('train/accuracy')] == [0.125]
  content = events.PluginTagToContent('hparams')
  start = plugin_data_pb2.HParamsPluginData.FromString(
      content['_hparams_/session_start_info']).session_start_info
  assert start.hparams['model.width'].number_value == 0.25
  assert start.hparams['model.name'].string_value == 'googlenet'
  lines = (tmp_path / 'metrics.jsonl').read_text().splitlines()
  assert [json.loads(line) for line in lines] == [
      {'step': 1, 'train/loss': 2.5, 'train/accuracy': 0.125},
      {'step': 3, 'train/loss': 1.75}]


def test_other_processes_write_nothing(tmp_path):
  log = metric_log.MetricLog(str(tmp_path), {'a': 1}, is_main=False)
  log(1, {'train/loss': 2.5})
  log.flush()
  log.close()
  assert not list(tmp_path.iterdir())


@pytest.mark.parametrize('entry_point', ['train', 'eval'])
def test_entry_points_start_without_tensorflow(entry_point):
  """TensorFlow (seconds to import, start-up lines on stderr, a second oneDNN
  in the process) loads only where a TFDS source is used. One process each:
  both tools define --workdir."""
  code = (f'import sys, {entry_point}, trainer, input_pipeline, metric_log; '
          'print("tensorflow" in sys.modules)')
  done = subprocess.run([sys.executable, '-c', code], cwd=ROOT, text=True,
                        capture_output=True, check=True, timeout=120)
  assert done.stdout.strip() == 'False'
  assert done.stderr == ''


def test_time_to_accuracy_reads_each_evaluation_at_its_wall_time(tmp_path):
  """scripts/time_to_accuracy reads the event files without TensorFlow: each
  val/accuracy, at the run's wall_seconds less the time from its event to
  the last one."""
  import time
  from scripts import time_to_accuracy
  log = metric_log.MetricLog(str(tmp_path), {'seed': 0}, is_main=True)
  log(10, {'val/accuracy': 0.5, 'val/loss': 1.0})
  time.sleep(0.3)
  log(20, {'train/loss': 0.5})
  log(20, {'val/accuracy': 0.75})
  log.close()
  (tmp_path / 'summary.json').write_text(json.dumps({'wall_seconds': 100.0}))
  points = time_to_accuracy.curve(str(tmp_path))
  assert [acc for _, acc in points] == [0.5, 0.75]
  assert points[1][0] == pytest.approx(100.0, abs=0.05)
  assert points[1][0] - points[0][0] == pytest.approx(0.3, abs=0.1)


def test_time_to_accuracy_reads_the_anchors_json(tmp_path):
  from scripts import time_to_accuracy
  path = tmp_path / 'airbench.json'
  path.write_text(json.dumps({
      'curve': [{'epoch': 1.0, 'wall_s': 60.0, 'val_acc': 0.5},
                {'epoch': 2.0, 'wall_s': 120.0, 'val_acc': 0.7}],
      'wall_s': 150.0, 'tta_val_acc': 0.75}))
  assert time_to_accuracy.curve(str(path)) == [(60.0, 0.5), (120.0, 0.7),
                                               (150.0, 0.75)]


def test_writing_events_imports_no_tensorflow(tmp_path):
  """tensorboard's writer would import TensorFlow at its first write (for its
  file API) wherever TensorFlow is installed; metric_log keeps it on
  tensorboard's TensorFlow-free stub."""
  code = ('import sys, metric_log; '
          f'log = metric_log.MetricLog({str(tmp_path)!r}, {{"a": 1}}, True); '
          'log(1, {"train/loss": 2.5}); log.flush(); log.close(); '
          'print("tensorflow" in sys.modules)')
  done = subprocess.run([sys.executable, '-c', code], cwd=ROOT, text=True,
                        capture_output=True, check=True, timeout=120)
  assert done.stdout.strip() == 'False'
  assert done.stderr == ''
  assert any(p.name.startswith('events.out.tfevents') for p in tmp_path.iterdir())
