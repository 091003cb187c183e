"""scripts/report.py on a fabricated sweep: CSV, markdown, pairs, plots."""

import copy
import csv
import importlib.util
import json
import math
import pathlib
import subprocess
import sys

import matplotlib.image
import pytest
from absl.testing import flagsaver

from scripts import plots

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = REPO / 'scripts' / 'report.py'
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'

_spec = importlib.util.spec_from_file_location('report', SCRIPT)
report = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(report)


def _config(module: str, width: float, cache_dir: str) -> dict:
  """A config.json as train.py writes it (a trimmed base config)."""
  return {
      'model': {'name': 'small_inception', 'num_classes': 10, 'width': width,
                'module': module, 'branch5': '5x5', 'norm': 'batch'},
      'image_size': 32,
      'data': {'source': 'tfds', 'dataset': 'cifar10', 'cache_dir': cache_dir,
               'data_dir': None, 'train_split': 'train[:90%]',
               'eval_split': 'train[90%:]', 'test_split': 'test'},
      'seed': 0, 'batch_size': 128, 'num_epochs': 30.0,
      'learning_rate': 0.1, 'step_epochs': [0.5, 0.75],
      # Per run: differs between otherwise equal runs, ignored for pairing.
      'data_stats': [[0.49 + width / 1000, 0.48, 0.45], [0.25, 0.24, 0.26]],
  }


def _summary(module, width, macs, params, seconds, ips, val, best, **extra):
  """A summary.json as train.py writes it."""
  return {
      'status': 'ok', 'model': 'small_inception', 'module': module,
      'workdir': f'/runs/{module}{width}', 'params': params,
      'macs_per_image': macs, 'xla_flops_per_image': 2 * macs + 12345.0,
      'train_step_flops': 6.0 * macs * 128, 'train_images_per_s': ips,
      'train_seconds': seconds, 'steps': 10550, 'epochs': 30.0,
      'batch_size': 128, 'val_split': 'train[90%:]', 'val_accuracy': val,
      'best_val_accuracy': best, 'device_kind': 'cpu', 'device_count': 1,
      'process_count': 1, 'jax_version': '0.10.2'} | extra


# run -> (summary, config or None, {split: eval result}).
RUNS = {
    # Pair 1, by config only: the names do not swap 'naive' <-> 'reduced'.
    'width1/baseline': (
        _summary('naive', 1.0, 120e6, 2_400_000, 5400.5, 1850.25, 0.8512,
                 0.8530, test_accuracy=0.8455),
        _config('naive', 1.0, '/cache/a'), {}),
    'width1/pointwise': (
        _summary('reduced', 1.0, 40e6, 800_000, 2160.2, 4625.6, 0.8401,
                 0.8420, test_accuracy=0.8377),
        _config('reduced', 1.0, '/cache/b'), {}),
    # Pair 2: names swap too; test accuracy only from eval.py.
    'width05_naive': (
        _summary('naive', 0.5, 31e6, 610_000, 1500.0, 5000.0, 0.8102, 0.8150),
        _config('naive', 0.5, '/cache/a'), {}),
    'width05_reduced': (
        _summary('reduced', 0.5, 10.5e6, 205_000, 750.0, 9800.0, 0.7953,
                 0.8001),
        _config('reduced', 0.5, '/cache/a'),
        {'test': {'split': 'test', 'num_examples': 10000, 'accuracy': 0.7911,
                  'loss': 0.61, 'per_class_accuracy': [0.79] * 10,
                  'confusion_matrix': [[0] * 10] * 10, 'step': 10550,
                  'source': 'tfds'}}),
    # What sweep tooling writes for a run that died.
    'width2_naive': (
        {'status': 'failed', 'module': 'naive',
         'error': 'RuntimeError: RESOURCE_EXHAUSTED: out of memory'},
        None, {}),
}


def _write_runs(directory: pathlib.Path, runs: dict) -> pathlib.Path:
  for name, (summary, config, evals) in runs.items():
    folder = directory / name
    folder.mkdir(parents=True)
    (folder / 'summary.json').write_text(json.dumps(summary, indent=1))
    if config is not None:
      (folder / 'config.json').write_text(json.dumps(config, indent=1))
    for split, result in evals.items():
      (folder / f'eval_{split}.json').write_text(json.dumps(result))
  return directory


@pytest.fixture(scope='module')
def sweep(tmp_path_factory):
  directory = _write_runs(tmp_path_factory.mktemp('sweep'), RUNS)
  return directory, report.make_report(directory)


def test_csv_matches_summaries(sweep):
  directory, result = sweep
  with open(directory / 'results.csv', newline='') as f:
    rows = {row['run']: row for row in csv.DictReader(f)}
  assert set(rows) == set(RUNS)
  header = list(next(iter(rows.values())))
  assert header[0] == 'run' and header[-1] == 'eval_test_accuracy'
  assert header[1:4] == ['status', 'model', 'module']  # train.py's order.
  assert header == result['columns']
  for name, (summary, _, _) in RUNS.items():
    row = rows[name]
    for key in set(header) - {'run', 'eval_test_accuracy'}:
      value = summary.get(key)
      if value is None:
        assert row[key] == '', (name, key)
      elif isinstance(value, str):
        assert row[key] == value, (name, key)
      else:
        assert float(row[key]) == value, (name, key)
  assert float(rows['width05_reduced']['eval_test_accuracy']) == 0.7911
  assert rows['width05_naive']['eval_test_accuracy'] == ''
  assert rows['width2_naive']['status'] == 'failed'
  assert rows['width2_naive']['params'] == ''


def test_markdown_runs_and_ratios(sweep, capsys):
  directory, result = sweep
  text = (directory / 'results.md').read_text()
  assert text == result['markdown']
  runs_table, pairs_table = text.split('## naive vs reduced')
  lines = {line.split(' | ')[0].lstrip('| '): line
           for line in runs_table.splitlines() if line.startswith('| ')}
  assert set(RUNS) <= set(lines)
  assert '| 2.4M | 120M | 240M | 1,850 | 1h 30m | 0.8512 | 0.8455 | ok |' in (
      lines['width1/baseline'])
  # Test accuracy from eval_test.json; blank where there is none.
  assert '| 0.7953 | 0.7911 | ok |' in lines['width05_reduced']
  assert '| 0.8102 |  | ok |' in lines['width05_naive']
  assert lines['width2_naive'].rstrip().endswith('| failed |')
  assert 'RESOURCE_EXHAUSTED' in runs_table

  pair_lines = [line for line in pairs_table.splitlines()
                if line.startswith('| width')]
  assert len(pair_lines) == 2
  cells = [c.strip() for c in pair_lines[0].strip('|').split('|')]
  assert cells[:3] == ['width05_naive', 'width05_reduced', 'config']
  cells = [c.strip() for c in pair_lines[1].strip('|').split('|')]
  assert cells[:3] == ['width1/baseline', 'width1/pointwise', 'config']
  # MACs 120M / 40M, params 2.4M / 800K, time 5400.5 s / 2160.2 s, images/s
  # 1850.25 / 4625.6; val accuracy 0.8401 - 0.8512, test 0.8377 - 0.8455.
  assert cells[3:9] == ['3.00×', '3.00×', '2.50×', '0.40×', '-0.0111',
                        '-0.0078']

  pairs = {p['naive']: p for p in result['pairs']}
  p = pairs['width1/baseline']
  assert p['macs_ratio'] == pytest.approx(3.0)
  assert p['params_ratio'] == pytest.approx(3.0)
  assert p['images_per_s_ratio'] == pytest.approx(1850.25 / 4625.6)
  assert p['val_accuracy_diff'] == pytest.approx(0.8401 - 0.8512)
  assert pairs['width05_naive']['test_accuracy_diff'] is None  # naive: none.

  with flagsaver.as_parsed(json='false'):
    report.main(['report.py', str(directory)])
  out = capsys.readouterr().out
  assert out.startswith(result['markdown'])
  assert out.rstrip().endswith(str(directory / 'pareto_time.png'))
  with flagsaver.as_parsed(json='true'):
    report.main(['report.py', str(directory)])
  assert json.loads(capsys.readouterr().out)['pairs'] == result['pairs']


def test_plots_are_pngs_without_failed_runs(sweep):
  directory, result = sweep
  for name in ('macs', 'params', 'time'):
    path = directory / f'pareto_{name}.png'
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 0 and image.shape[1] > 0
    assert image.min() < image.max()  # Not blank.
    assert sorted(result['plotted'][name]) == sorted(
        set(RUNS) - {'width2_naive'})


def test_interrupted_run_plotted_off_the_front(tmp_path):
  runs = copy.deepcopy(RUNS)
  summary = runs['width1/baseline'][0]
  summary |= {'status': 'interrupted', 'best_val_accuracy': 0.99}
  run_list = report.load_runs(_write_runs(tmp_path, runs))
  points = {p.name: p for p in report.pareto_points(run_list, 'macs_per_image')}
  assert set(points) == set(RUNS) - {'width2_naive'}  # Failed: not shown.
  assert points['width1/baseline'] == plots.Point(
      'width1/baseline', 'naive', 120e6, 0.99, finished=False)
  assert points['width05_reduced'] == plots.Point(
      'width05_reduced', 'reduced', 10.5e6, 0.8001, finished=True)
  plots.plot_pareto(list(points.values()), tmp_path / 'p.png', 'MACs', 'MACs')
  assert (tmp_path / 'p.png').read_bytes()[:8] == PNG_SIGNATURE
  assert plots.pareto_front([(40e6, 0.84), (120e6, 0.85), (31e6, 0.815),
                             (10.5e6, 0.80), (50e6, 0.83)]) == [
      (10.5e6, 0.80), (31e6, 0.815), (40e6, 0.84), (120e6, 0.85)]


def _pairs(directory):
  return {(p['naive'], p['reduced'], p['rule'])
          for p in report.pair_runs(report.load_runs(directory))}


def test_pairing_by_name_without_config(tmp_path):
  runs = {name: (summary, None, {}) for name, (summary, _, _) in RUNS.items()}
  # Mixed: a config on one side only still pairs by name.
  runs['width05_naive'] = RUNS['width05_naive']
  assert _pairs(_write_runs(tmp_path, runs)) == {
      ('width05_naive', 'width05_reduced', 'name')}


def test_pairing_needs_equal_configs(tmp_path):
  runs = copy.deepcopy(RUNS)
  runs['width05_reduced'][1]['learning_rate'] = 0.05  # Not comparable.
  runs['width1/pointwise'][1]['data']['cache_dir'] = '/elsewhere'  # Ignored.
  assert _pairs(_write_runs(tmp_path, runs)) == {
      ('width1/baseline', 'width1/pointwise', 'config')}


def test_failed_summary_without_fields(tmp_path):
  _write_runs(tmp_path, {'only_failed': (
      {'status': 'failed', 'error': 'boom'}, None, {})})
  result = report.make_report(tmp_path)
  assert result['plotted'] == {'macs': [], 'params': [], 'time': []}
  assert result['pairs'] == []
  assert '| only_failed |' in result['markdown']
  assert (tmp_path / 'pareto_time.png').read_bytes()[:8] == PNG_SIGNATURE


def test_number_formats():
  assert report.si(1_234_567) == '1.23M'
  assert report.si(45.6e6) == '45.6M'
  assert report.si(999_999) == '1M'
  assert report.si(None) == '' and report.si('x') == ''
  assert report.duration(42.14) == '42.1s'
  assert report.duration(725) == '12m 05s'
  assert report.duration(11220) == '3h 07m'
  assert report.acc(0.71234) == '0.7123'
  assert math.isnan(float(report._csv_value(float('nan'))))


def test_empty_dir_error(tmp_path):
  empty = tmp_path / 'empty_sweep'
  empty.mkdir()
  with pytest.raises(ValueError, match='No summary.json under .*empty_sweep'):
    report.make_report(empty)
  proc = subprocess.run([sys.executable, str(SCRIPT), str(empty)],
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode != 0
  assert 'error: No summary.json under' in proc.stderr
  assert str(empty) in proc.stderr
  assert not (empty / 'results.csv').exists()


def test_cli_json(sweep):
  directory, _ = sweep
  proc = subprocess.run([sys.executable, str(SCRIPT), str(directory),
                         '--json'], capture_output=True, text=True,
                        timeout=120)
  assert proc.returncode == 0, proc.stderr
  out = json.loads(proc.stdout)
  assert len(out['runs']) == len(RUNS) and len(out['pairs']) == 2
  assert set(out['files']) == {'csv', 'md', 'pareto_macs', 'pareto_params',
                               'pareto_time'}
