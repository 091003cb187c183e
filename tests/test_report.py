"""scripts/report.py and scripts/stats.py on fabricated sweeps: groups of
seeds, statistics against scipy, comparisons, CSV, markdown, plots."""

import csv
import functools
import importlib.util
import json
import math
import pathlib
import subprocess
import sys

import matplotlib.collections
import matplotlib.image
import numpy as np
import pytest
import scipy.stats

from configs.common import load_config
from scripts import plots, stats

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = REPO / 'scripts' / 'report.py'
PNG_SIGNATURE = b'\x89PNG\r\n\x1a\n'

_spec = importlib.util.spec_from_file_location('report', SCRIPT)
report = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(report)


@functools.cache
def _test_config() -> str:
  return json.dumps(load_config(str(REPO / 'configs/test.py')).to_dict())


def _config(seed: int, **keys) -> dict:
  """configs/test.py's config as train.py saves it, with dotted `keys` set.
  Bookkeeping differs from seed to seed, as it does between real runs, and
  so do the data stats that config.json carried before data_stats.json."""
  config = json.loads(_test_config())
  config['seed'] = seed
  config['data']['cache_dir'] = f'/cache/{seed}'
  config['ops']['conv'] = ('xla', 'im2col', 'onednn', 'auto')[seed % 4]
  config['data_stats'] = [[0.49 + seed / 100] * 3, [0.25] * 3]
  for key, value in keys.items():
    *parents, leaf = key.split('.')
    node = config
    for parent in parents:
      node = node[parent]
    node[leaf] = value
  return config


def _summary(val, macs=10e6, params=100e3, ips=2000.0, seconds=120.0,
             status='ok', **extra) -> dict:
  """A summary.json as train.py writes it."""
  return {
      'status': status, 'model': 'googlenet', 'module': 'reduced',
      'workdir': '/runs/x', 'params': params, 'macs_per_image': macs,
      'xla_flops_per_image': 1.9 * macs, 'train_step_flops': 6.0 * macs * 8,
      'train_images_per_s': ips, 'train_seconds': seconds, 'steps': 6,
      'epochs': 1.0, 'batch_size': 8, 'val_split': 'train[90%:]',
      'val_accuracy': val, 'best_val_accuracy': val + 0.003,
      'device_kind': 'cpu', 'device_count': 1, 'process_count': 1,
      'jax_version': '0.10.2'} | extra


def _write(directory: pathlib.Path, runs: dict, sweep: dict | None = None
           ) -> pathlib.Path:
  """runs: {dir: (summary, config or None, {split: eval result})}."""
  for name, (summary, config, evals) in runs.items():
    folder = directory / name
    folder.mkdir(parents=True)
    (folder / 'summary.json').write_text(json.dumps(summary, indent=1))
    if config is not None:
      (folder / 'config.json').write_text(json.dumps(config, indent=1))
    for split, result in evals.items():
      (folder / f'eval_{split}.json').write_text(json.dumps(result))
  if sweep is not None:
    (directory / 'sweep.json').write_text(json.dumps(sweep, indent=1))
  return directory


# ----------------------------------------------------------- statistics

def test_describe_against_scipy_and_by_hand():
  x = [0.781, 0.776, 0.790, 0.772]
  d = stats.describe(x)
  lo, hi = scipy.stats.ttest_1samp(x, 0.0).confidence_interval(0.95)
  assert d['n'] == 4
  assert d['mean'] == pytest.approx((lo + hi) / 2, rel=1e-12)
  assert d['ci95'] == pytest.approx((hi - lo) / 2, rel=1e-9)
  assert d['sd'] == pytest.approx(np.std(x, ddof=1), rel=1e-12)
  lo, hi = scipy.stats.t.interval(0.95, 3, loc=np.mean(x),
                                  scale=scipy.stats.sem(x))
  assert d['mean'] + d['ci95'] == pytest.approx(hi, rel=1e-12)
  # By hand: sd of 1..4 is sqrt(5/3); t(0.975, 3) = 3.1824 (tables).
  d = stats.describe([1.0, 2.0, 3.0, 4.0])
  assert d['sd'] == pytest.approx(math.sqrt(5 / 3))
  assert d['ci95'] == pytest.approx(3.18245 * math.sqrt(5 / 3) / 2, rel=1e-5)
  # Identical seeds: no spread, a zero-width interval.
  d = stats.describe([0.7] * 3)
  assert (d['sd'], d['ci95']) == (0.0, 0.0)
  assert stats.describe([0.5]) == dict(n=1, mean=0.5, sd=None, ci95=None)
  assert stats.describe([]) == dict(n=0, mean=None, sd=None, ci95=None)


@pytest.mark.parametrize('a, b', [
    ([0.781, 0.776, 0.790], [0.772, 0.769, 0.780, 0.751]),
    ([0.60, 0.62, 0.61, 0.65, 0.58], [0.70, 0.50])])
def test_welch_against_scipy(a, b):
  result = scipy.stats.ttest_ind(a, b, equal_var=False)
  lo, hi = result.confidence_interval(0.95)
  d = stats.welch(stats.describe(a), stats.describe(b))
  assert d['diff'] == pytest.approx((lo + hi) / 2, rel=1e-9)
  assert d['ci95'] == pytest.approx((hi - lo) / 2, rel=1e-9)
  assert d['df'] == pytest.approx(result.df, rel=1e-9)


def test_welch_degenerate_sides():
  one, two = stats.describe([0.80]), stats.describe([0.70, 0.72])
  assert stats.welch(one, two) == pytest.approx(
      dict(diff=0.09, ci95=None, df=None))
  assert stats.welch(stats.describe([]), two) is None
  exact = stats.welch(stats.describe([0.75] * 3), stats.describe([0.5] * 2))
  assert exact == dict(diff=0.25, ci95=0.0, df=None)


def test_paired_against_scipy_and_by_hand():
  a, b = [0.781, 0.776, 0.790, 0.772], [0.770, 0.771, 0.775, 0.769]
  lo, hi = scipy.stats.ttest_rel(a, b).confidence_interval(0.95)
  d = stats.paired(a, b)
  assert d['n'] == 4 and d['df'] == 3
  assert d['diff'] == pytest.approx((lo + hi) / 2, rel=1e-12)
  assert d['ci95'] == pytest.approx((hi - lo) / 2, rel=1e-9)
  # By hand: differences 1, 2, 3 (sd 1); t(0.975, 2) = 4.3027 (tables).
  d = stats.paired([1.0, 2.0, 3.0], [0.0, 0.0, 0.0])
  assert d['diff'] == 2.0
  assert d['ci95'] == pytest.approx(4.30265 / math.sqrt(3), rel=1e-5)
  assert stats.paired([0.5, 0.7], [0.4, 0.6]) == pytest.approx(
      dict(diff=0.1, ci95=0.0, df=1, n=2))  # Every pair alike.
  assert stats.paired([0.5], [0.4]) == pytest.approx(
      dict(diff=0.1, ci95=None, df=None, n=1))
  assert stats.paired([], []) is None


def test_matched_seeds_get_a_paired_comparison_named_in_the_text(tmp_path):
  # Issue 25: the seeds were matched across designs (same seed, same data
  # order), yet the report offered Welch's unpaired interval only. Here the
  # seed moves both designs alike, so pairing removes most of the spread.
  naive = [0.70, 0.66, 0.74]
  knob = [0.68, 0.65, 0.71]
  runs = {}
  for seed, (x, y) in enumerate(zip(naive, knob)):
    runs[f'naive-seed{seed}'] = (_summary(x), _config(seed), {})
    runs[f'knob-seed{seed}'] = (_summary(y), _config(
        seed, **{'model.reduce_act': 'linear'}), {})
  runs['knob-seed7'] = (_summary(0.69), _config(
      7, **{'model.reduce_act': 'linear'}), {})  # Unmatched: Welch only.
  sweep = dict(sweep='s.py', seeds=3, baseline='naive', overrides=[],
               runs={n: {'run': n.split('-')[0], 'seed': int(n[-1])}
                     for n in runs})
  result, _ = report.analyse(_write(tmp_path, runs, sweep))
  [c] = result['comparisons']
  lo, hi = scipy.stats.ttest_rel(knob, naive).confidence_interval(0.95)
  assert c['final_val_acc_paired'] == pytest.approx(
      dict(diff=(lo + hi) / 2, ci95=(hi - lo) / 2, df=2, n=3))
  welch = scipy.stats.ttest_ind(knob + [0.69], naive, equal_var=False)
  lo_w, hi_w = welch.confidence_interval(0.95)
  assert c['final_val_acc_diff']['ci95'] == pytest.approx((hi_w - lo_w) / 2)
  assert c['final_val_acc_paired']['ci95'] < c['final_val_acc_diff']['ci95']
  welch_text, paired_text = c['verdicts']
  assert "in final val acc (Welch's t): " in welch_text
  assert 'in final val acc (paired t over matched seeds): ' in paired_text
  half = (hi - lo) / 2 * 100
  assert f'| {(lo + hi) / 2 * 100:+.2f} ± {half:.2f} (3) |' in (
      result['markdown'])


def test_verdict_sentences():
  say = lambda diff, ci95, n=3, m=3: stats.verdict(
      'naive', 'reduced', 'final val acc', dict(diff=diff, ci95=ci95), n, m)
  assert say(0.004, 0.006) == (
      'naive is 0.40 ± 0.60 points above reduced in final val acc: '
      'no detectable difference with 3 seeds.')
  assert say(-0.012, 0.006, 3, 2) == (
      'naive is 1.20 ± 0.60 points below reduced in final val acc: '
      'a difference at 95%.')
  assert 'no detectable difference with 4 and 2 seeds' in say(
      0.005, 0.005, 4, 2)  # The interval touches 0: not excluded.
  assert say(-0.009, None, 1, 3) == (
      'naive is 0.90 points below reduced in final val acc: no interval '
      'can be given with 1 and 3 seeds (it needs 2 a side).')
  assert 'can be given with 1 seed (it' in say(0.01, None, 1, 1)


# ----------------------------------------------------------- a grid sweep

# reduce_act x branch5, three seeds each: final val acc by seed.
GRID = {
    ('relu', '5x5'): [0.780, 0.784, 0.776],
    ('linear', '5x5'): [0.760, 0.764, 0.756],    # 2 points below: detectable.
    ('relu', '3x3x2'): [0.782, 0.776, 0.790],    # Within the noise.
    ('linear', '3x3x2'): [0.771, 0.779, 0.768],
}
MACS = {'5x5': 10e6, '3x3x2': 8e6}
BASELINE = 'reduce_act=relu,branch5=5x5'


def _name(act, branch5):
  return f'reduce_act={act},branch5={branch5}'  # As sweep.py names them.


def _grid_runs():
  runs, entries = {}, {}
  for (act, branch5), accs in GRID.items():
    for seed, val in enumerate(accs):
      config = _config(seed, **{'model.reduce_act': act,
                                'model.branch5': branch5})
      runs[f'{_name(act, branch5)}-seed{seed}'] = (
          _summary(val, macs=MACS[branch5], seconds=100.0 + seed), config, {})
  # Excluded from the statistics: a diverged run (with a config and an
  # accuracy), and a crash before train.py wrote its config.
  runs[f'{BASELINE}-seed3'] = (
      _summary(0.1, status='diverged'), _config(3, **{
          'model.reduce_act': 'relu', 'model.branch5': '5x5'}), {})
  runs[f'{_name("linear", "5x5")}-seed4'] = (
      {'status': 'failed', 'error': 'RuntimeError: out of memory'}, None, {})
  for name in [*runs, f'{_name("relu", "3x3x2")}-seed3']:  # The last: not run.
    run, _, seed = name.rpartition('-seed')
    entries[name] = {'run': run, 'seed': int(seed)}
  return runs, dict(sweep='configs/sweeps/grid.py', seeds=3,
                    baseline=BASELINE, overrides=[], runs=entries)


@pytest.fixture(scope='module')
def grid(tmp_path_factory):
  runs, sweep = _grid_runs()
  directory = _write(tmp_path_factory.mktemp('grid'), runs, sweep)
  return directory, runs, report.make_report(directory)


def test_grid_groups_and_statistics(grid):
  _, _, result = grid
  groups = {g['group']: g for g in result['groups']}
  assert list(groups) == [_name(*k) for k in GRID]  # sweep.json's order.
  assert result['varied_keys'] == ['model.branch5', 'model.reduce_act']
  for (act, branch5), accs in GRID.items():
    g = groups[_name(act, branch5)]
    assert g['values'] == {'model.branch5': branch5, 'model.reduce_act': act}
    assert g['n'] == 3 and g['final_val_acc']['n'] == 3
    assert g['final_val_acc']['mean'] == pytest.approx(np.mean(accs))
    assert g['final_val_acc']['sd'] == pytest.approx(np.std(accs, ddof=1))
    assert g['best_val_acc']['mean'] == pytest.approx(np.mean(accs) + 0.003)
    assert g['test_acc']['n'] == 0
    assert g['macs_per_image'] == MACS[branch5]
    assert g['train_seconds'] == pytest.approx(101.0)
  assert groups[BASELINE]['excluded'] == {f'{BASELINE}-seed3': 'diverged'}
  assert len(groups[BASELINE]['runs']) == 4
  # The crashed run has no config: it joins the group of its sweep run.
  assert groups[_name('linear', '5x5')]['excluded'] == {
      f'{_name("linear", "5x5")}-seed4': 'failed'}
  assert result['missing'] == [f'{_name("relu", "3x3x2")}-seed3']


def test_grid_comparisons_against_welch(grid):
  _, _, result = grid
  assert (result['baseline'], result['baseline_reason']) == (
      BASELINE, 'named by sweep.json')
  comparisons = {c['group']: c for c in result['comparisons']}
  assert set(comparisons) == {_name(*k) for k in GRID} - {BASELINE}
  base = GRID[('relu', '5x5')]
  for key, accs in GRID.items():
    if _name(*key) == BASELINE:
      continue
    c = comparisons[_name(*key)]
    lo, hi = scipy.stats.ttest_ind(accs, base, equal_var=False
                                   ).confidence_interval(0.95)
    assert c['final_val_acc_diff']['diff'] == pytest.approx((lo + hi) / 2)
    assert c['final_val_acc_diff']['ci95'] == pytest.approx((hi - lo) / 2)
    assert c['test_acc_diff'] is None
    found = 'a difference at 95%' in c['verdicts'][0]
    assert found == (not lo <= 0 <= hi), c['verdicts']
    assert c['verdicts'][0] in result['markdown']
  assert comparisons[_name('linear', '5x5')]['verdicts'] == [
      f'{_name("linear", "5x5")} is 2.00 ± 0.91 points below {BASELINE} in '
      "final val acc (Welch's t): a difference at 95%.",
      f'{_name("linear", "5x5")} is 2.00 ± 0.00 points below {BASELINE} in '
      'final val acc (paired t over matched seeds): a difference at 95%.']
  assert 'no detectable difference with 3 seeds' in comparisons[
      _name('relu', '3x3x2')]['verdicts'][0]
  assert comparisons[_name('relu', '3x3x2')]['macs_per_image_ratio'] == 0.8


def test_grid_markdown(grid):
  directory, _, result = grid
  text = (directory / 'results.md').read_text()
  assert text == result['markdown']
  assert 'No naive/reduced pairs found' not in text
  assert f'Baseline: `{BASELINE}` (named by sweep.json).' in text
  row = next(line for line in text.splitlines()
             if line.startswith(f'| {_name("linear", "5x5")} | 5x5 | linear'))
  cells = [c.strip() for c in row.strip('|').split('|')]
  # n, final val acc, its CI half-width, sd: mean 0.76, sd 0.004.
  assert cells[3:7] == ['3', '0.7600', f'{4.303 * 0.004 / 3 ** 0.5:.4f}',
                        '0.0040']
  assert (f'Excluded from the statistics (did not finish): `{BASELINE}'
          '-seed3` (diverged)') in text
  assert f'`{_name("linear", "5x5")}-seed4` (failed)' in text
  assert ('| Δ final val acc, Welch (points) | Δ final val acc, paired '
          '(points, pairs) |') in text
  assert '| -2.00 ± 0.91 | -2.00 ± 0.00 (3) |' in text
  assert 'out of memory' in text
  header = next(line for line in text.splitlines()
                if line.startswith('| run |'))
  assert '| final val acc | best val acc | test acc | status |' in header


def test_grid_csvs(grid):
  directory, runs, result = grid
  with open(directory / 'results.csv', newline='') as f:
    rows = {row['run']: row for row in csv.DictReader(f)}
  assert set(rows) == set(runs)
  header = list(next(iter(rows.values())))
  assert header == result['columns']
  assert header[:9] == ['run', 'group', 'seed', 'model.branch5',
                        'model.reduce_act', 'final_val_acc', 'best_val_acc',
                        'test_acc', 'status']
  for name, (summary, _, _) in runs.items():
    row = rows[name]
    assert row['group'] == name.rpartition('-seed')[0]
    assert row['final_val_acc'] == row['val_accuracy']
    assert row['best_val_acc'] == row['best_val_accuracy']
    for key, value in summary.items():
      assert (row[key] == value if isinstance(value, str)
              else float(row[key]) == value), (name, key)
  assert rows[f'{BASELINE}-seed3']['model.branch5'] == '5x5'
  assert rows[f'{BASELINE}-seed1']['seed'] == '1'

  with open(directory / 'groups.csv', newline='') as f:
    groups = {row['group']: row for row in csv.DictReader(f)}
  assert list(groups) == [g['group'] for g in result['groups']]
  for g in result['groups']:
    row = groups[g['group']]
    assert int(row['n']) == 3 and row['model.reduce_act'] == g['values'][
        'model.reduce_act']
    for stat in ('n', 'mean', 'sd', 'ci95'):
      assert float(row[f'final_val_acc_{stat}']) == g['final_val_acc'][stat]
    assert row['test_acc_mean'] == ''
  linear = groups[_name('linear', '5x5')]
  assert linear['vs'] == BASELINE and linear['runs'] == '4'
  assert linear['excluded'] == f'{_name("linear", "5x5")}-seed4'
  assert float(linear['final_val_acc_diff']) == pytest.approx(-0.02)
  assert float(linear['final_val_acc_diff_ci95']) > 0
  assert groups[BASELINE]['vs'] == ''


def test_grid_plots(grid):
  directory, _, result = grid
  for name in ('macs', 'params', 'time'):
    path = directory / f'pareto_{name}.png'
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    assert image.min() < image.max()  # Not blank.
    assert sorted(result['plotted'][name]) == sorted(
        f'branch5={b}, reduce_act={a}' for a, b in GRID)


def test_runs_outside_sweep_json_are_left_out_and_named(tmp_path, capsys):
  runs, sweep = _grid_runs()
  # An earlier sweep's run (--seeds=1): counted, it would be a second seed 0.
  runs[BASELINE] = (_summary(0.5), _config(0, **{
      'model.reduce_act': 'relu', 'model.branch5': '5x5'}), {})
  runs['other'] = (_summary(0.5), _config(0, learning_rate=0.3), {})
  result, _ = report.analyse(_write(tmp_path, runs, sweep))
  baseline = next(g for g in result['groups'] if g['group'] == BASELINE)
  assert baseline['n'] == 3 and BASELINE not in baseline['runs']
  assert result['left_out'] == {
      BASELINE: f'a second run of seed 0 of `{BASELINE}`',
      'other': 'of no design sweep.json lists'}
  assert ('Not in sweep.json, left out: `other` (of no design sweep.json '
          f'lists), `{BASELINE}` (a second run of seed 0 of `{BASELINE}`).'
          ) in result['markdown']
  assert f'leaving out {BASELINE}: not a run of sweep.json' in (
      capsys.readouterr().err)


def test_a_finished_seed_missing_from_sweep_json_still_counts(tmp_path):
  # Issue 25: a sweep.json rewritten by a later --seeds=2 made the report
  # drop every third seed, and n fell from 3 to 2.
  runs, sweep = _grid_runs()
  for name in [n for n in sweep['runs'] if n.endswith('-seed2')]:
    del sweep['runs'][name]
  result, _ = report.analyse(_write(tmp_path, runs, sweep))
  groups = {g['group']: g for g in result['groups']}
  assert [groups[_name(*k)]['n'] for k in GRID] == [3] * 4
  assert groups[BASELINE]['final_val_acc']['mean'] == pytest.approx(
      np.mean(GRID[('relu', '5x5')]))
  assert result['adopted'] == {f'{_name(*k)}-seed2': _name(*k) for k in GRID}
  line = next(line for line in result['markdown'].splitlines()
              if line.startswith('Not in sweep.json, counted with the runs '
                                 'of their design: '))
  assert f'`{BASELINE}-seed2` (`{BASELINE}`)' in line


def test_the_report_states_budget_data_overrides_and_short_runs(tmp_path):
  # Issue 25: results.md did not say how long the runs trained, on what,
  # or with which sweep-wide flags.
  source = 'PATH/TO/cifar10'
  flags = ['--config.num_train_steps=150', f'--config.data.source={source}']
  warning = 'warmup (175 steps: warmup_epochs=0.5) does not end before ...'
  runs, entries = {}, {}
  for module in ('naive', 'reduced'):
    for seed in (0, 1):
      name = f'{module}-seed{seed}'
      runs[name] = (
          _summary(0.6, steps=150, batch_size=128, epochs=150 / 351,
                   schedule_warning=warning),
          _config(seed, **{'model.module': module, 'data.source': source}),
          {})
      entries[name] = {'run': module, 'seed': seed, 'overrides': flags}
  runs['reduced-seed2'] = (  # Launched later, by hand, with more steps.
      _summary(0.6, steps=300, batch_size=128, epochs=300 / 351),
      _config(2, **{'model.module': 'reduced', 'data.source': source}), {})
  entries['reduced-seed2'] = {'run': 'reduced', 'seed': 2, 'overrides': []}
  result, _ = report.analyse(_write(tmp_path, runs, dict(
      sweep='s.py', seeds=3, baseline='naive', overrides=[], runs=entries)))
  setup = result['markdown'].split('## Setup\n\n')[1].split('\n\n')[0]
  assert setup.splitlines() == [
      '- Budget of each finished run: 150 steps of 128 images (0.427 epochs, '
      '19,200 images seen) (naive, reduced); 300 steps of 128 images (0.855 '
      'epochs, 38,400 images seen) (reduced).',
      f'- Data: `{source}`, trained on `train[:90%]`, validated on '
      '`train[90%:]`.',
      '- Sweep-wide overrides (sweep.json): `--config.num_train_steps=150` '
      f'`--config.data.source={source}` (naive, reduced); none (reduced).',
      '- Cut short: `naive-seed0`, `naive-seed1`, `reduced-seed0`, '
      f'`reduced-seed1`: {warning}']


def test_a_report_with_fewer_finished_runs_is_refused_unless_asked(
    tmp_path):
  runs, sweep = _grid_runs()
  directory = _write(tmp_path / 'sweep', runs, sweep)
  report.make_report(directory)
  outputs = ['results.csv', 'groups.csv', 'results.md', 'pareto_macs.png']
  before = {name: (directory / name).read_bytes() for name in outputs}
  gone = f'{_name("linear", "5x5")}-seed1'
  (directory / gone).rename(tmp_path / 'moved')
  with pytest.raises(ValueError) as error:
    report.make_report(directory)
  assert str(error.value) == (
      f'{directory / "results.csv"} counts 12 finished runs, among them 1 '
      f'that this report would not: {gone} (moved, deleted or not finished '
      'now). Nothing was written; rerun with --allow_fewer_runs to replace '
      'it.')
  assert {name: (directory / name).read_bytes() for name in outputs} == before
  proc = subprocess.run([sys.executable, str(SCRIPT), str(directory)],
                        capture_output=True, text=True, timeout=120)
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines()[-1].startswith('error: ')
  result = report.make_report(directory, allow_fewer_runs=True)
  assert {g['group']: g['n'] for g in result['groups']}[
      _name('linear', '5x5')] == 2
  assert gone not in (directory / 'results.csv').read_text()


def test_grid_without_sweep_json(tmp_path):
  runs, _ = _grid_runs()
  result, _ = report.analyse(_write(tmp_path, runs))
  names = sorted(_name(*k) for k in GRID)
  assert [g['group'] for g in result['groups']] == names  # By name.
  assert [g['n'] for g in result['groups']] == [3] * 4
  assert result['baseline'] == names[0]
  assert result['baseline_reason'] == 'no sweep.json; the first group by name'
  assert result['missing'] == []


def test_cli_json(grid):
  directory, runs, _ = grid
  proc = subprocess.run([sys.executable, str(SCRIPT), str(directory),
                         '--json'], capture_output=True, text=True,
                        timeout=120)
  assert proc.returncode == 0, proc.stderr
  out = json.loads(proc.stdout)
  assert len(out['runs']) == len(runs) and len(out['groups']) == 4
  assert out['baseline'] == BASELINE and len(out['comparisons']) == 3
  assert 'No naive/reduced pairs found' not in out['markdown']
  assert set(out['files']) == {'csv', 'groups_csv', 'md', 'pareto_macs',
                               'pareto_params', 'pareto_time'}


# ----------------------------------------------------------- naive vs reduced

def test_naive_vs_reduced_is_one_comparison(tmp_path):
  test = {'split': 'test', 'accuracy': 0.7911, 'num_examples': 10000}
  runs = {'naive': (_summary(0.7830, macs=11.4e6, params=105e3, ips=1833.0,
                             seconds=147.0),
                    _config(0, **{'model.module': 'naive'}), {'test': test})}
  for seed, val in enumerate([0.7738, 0.7702, 0.7769]):
    runs[f'reduced-seed{seed}'] = (
        _summary(val, macs=7.98e6, params=73.6e3, ips=2264.0, seconds=119.0,
                 test_accuracy=0.78 + seed / 100),
        _config(seed, **{'model.module': 'reduced'}), {})
  result, _ = report.analyse(_write(tmp_path, runs))
  assert result['varied_keys'] == ['model.module']
  assert result['baseline'] == 'naive'
  assert "model.module = 'naive'" in result['baseline_reason']
  [c] = result['comparisons']
  assert (c['group'], c['baseline']) == ('reduced', 'naive')
  assert c['macs_per_image_ratio'] == pytest.approx(7.98 / 11.4)
  assert c['train_seconds_ratio'] == pytest.approx(119 / 147)
  assert c['final_val_acc_diff'] == pytest.approx(
      dict(diff=np.mean([0.7738, 0.7702, 0.7769]) - 0.7830, ci95=None,
           df=None))
  # Test accuracy: eval.py's for naive, the summaries' for reduced.
  assert c['test_acc_diff']['diff'] == pytest.approx(0.79 - 0.7911)
  assert c['verdicts'][0].startswith(
      "reduced is 0.94 points below naive in final val acc (Welch's t): no "
      'interval can be given with 3 and 1 seeds')
  assert c['final_val_acc_paired'] == pytest.approx(  # Seed 0 alone.
      dict(diff=0.7738 - 0.7830, ci95=None, df=None, n=1))
  assert len(c['verdicts']) == 2 and 'test acc' in c['verdicts'][1]
  assert '| Δ test acc, Welch (points) |' in result['markdown']
  assert 'paired (points' not in result['markdown']  # Not for one pair.
  naive = next(g for g in result['groups'] if g['group'] == 'naive')
  points = report.pareto_points(result['groups'], 'macs_per_image',
                                'model.module')
  assert {p.label: (p.colour, p.ci95 is None) for p in points} == {
      'module=naive': ('naive', True), 'module=reduced': ('reduced', False)}
  assert naive['final_val_acc']['ci95'] is None


def test_a_difference_in_implementation_is_marked(tmp_path):
  # Issue 25: a knob's runs could not fuse their 1x1 heads, trained at 0.85x
  # the speed, and the report showed "train time 1.16x" as the design's.
  def impl(unfused, conv='im2col'):
    return dict(conv=conv, pool='slices', norm='custom_vjp',
                cpu_vector_width=256, fused_1x1=8 - unfused,
                unfused_1x1=unfused)
  designs = {  # name: (config keys, implementation, train seconds)
      'reduced': ({}, impl(0), 100.0),
      'naive': ({'model.module': 'naive'},
                impl(0) | dict(fused_1x1=0), 130.0),
      'knob': ({'model.reduce_act': 'linear'}, impl(8), 116.0),
      'onednn': ({'model.width': 0.5}, impl(0, conv='onednn'), 60.0)}
  runs, entries = {}, {}
  for name, (keys, implementation, seconds) in designs.items():
    for seed in (0, 1):
      runs[f'{name}-seed{seed}'] = (
          _summary(0.7, seconds=seconds, implementation=implementation),
          _config(seed, **keys), {})
      entries[f'{name}-seed{seed}'] = {'run': name, 'seed': seed}
  result, _ = report.analyse(_write(tmp_path, runs, dict(
      sweep='s.py', seeds=2, baseline='reduced', overrides=[],
      runs=entries)))
  comparisons = {c['group']: c for c in result['comparisons']}
  assert comparisons['naive']['implementation_differs'] == {}  # 1 head.
  assert comparisons['knob']['implementation_differs'] == {
      'modules with their 1x1 heads unfused': [['8'], ['0']]}
  assert comparisons['onednn']['implementation_differs'] == {
      'ops.conv': [['onednn'], ['im2col']]}
  assert comparisons['knob']['verdicts'][-1] == (
      'knob and reduced were computed differently, not only designed '
      'differently: modules with their 1x1 heads unfused 8 against 0: the '
      "train time and images/s ratios (†) are partly the implementation's.")
  rows = {line.split('|')[1].strip(): line for line in
          result['markdown'].split('## Comparisons')[1].splitlines()
          if line.startswith('| ') and not line.startswith('| group')}
  assert '| 1.16×† | 1.00×† |' in rows['knob']
  assert '| 1.30× | 1.00× |' in rows['naive']  # Same implementation.


# ----------------------------------------------------------- edge cases

def test_runs_without_configs_group_by_name(tmp_path, capsys):
  runs = {'a-seed0': (_summary(0.70), None, {}),
          'a-seed1': (_summary(0.72), None, {}),
          'b': (_summary(0.60), None, {}),
          # Same name, different training configs: two groups.
          'c-seed0': (_summary(0.5), _config(0, learning_rate=0.1), {}),
          'c-seed1': (_summary(0.6), _config(1, learning_rate=0.05), {})}
  result, _ = report.analyse(_write(tmp_path, runs))
  groups = {g['group']: g for g in result['groups']}
  assert set(groups) == {'a', 'b', 'c', 'c#2'}
  assert groups['a']['final_val_acc']['mean'] == pytest.approx(0.71)
  assert result['varied_keys'] == ['learning_rate']
  assert groups['a']['values'] == {'learning_rate': None}
  assert "groups named 'c' train different configs" in capsys.readouterr().err
  assert report.point_label(groups['b']) == 'b'  # No config: its name.
  assert report.point_label(groups['c#2']) == 'learning_rate=0.05'


def test_malformed_sweep_json(tmp_path):
  _write(tmp_path, {'a': (_summary(0.7), None, {})})
  (tmp_path / 'sweep.json').write_text('{"runs": [1, 2]}')
  with pytest.raises(ValueError, match=r"sweep.json has no 'runs'.*move it "
                     'away'):
    report.analyse(tmp_path)
  (tmp_path / 'sweep.json').write_text('{"runs": ')
  with pytest.raises(ValueError, match='sweep.json: .*fix it'):
    report.analyse(tmp_path)


def test_plot_with_and_without_bars(tmp_path):
  points = [plots.Point('relu', 'relu', 10e6, 0.78, 0.008),
            plots.Point('linear', 'linear', 8e6, 0.76, None)]
  plots.plot_pareto(points, tmp_path / 'p.png', 'MACs', 'MACs',
                    colour_key='reduce_act')
  assert (tmp_path / 'p.png').read_bytes()[:8] == PNG_SIGNATURE
  assert plots.pareto_front([(40e6, 0.84), (120e6, 0.85), (31e6, 0.815),
                             (10.5e6, 0.80), (50e6, 0.83)]) == [
      (10.5e6, 0.80), (31e6, 0.815), (40e6, 0.84), (120e6, 0.85)]


def drawn_markers(monkeypatch, points, path) -> list:
  """plots.plot_pareto's markers, in pixels: one scatter per colour, in the
  points' order where each has its own colour."""
  figures = []
  monkeypatch.setattr(plots.plt, 'close', figures.append)
  plots.plot_pareto(points, path, 'MACs', 'MACs', colour_key='reduce_norm')
  [ax] = figures[0].axes
  return [ax.transData.transform(c.get_offsets()[0]) for c in ax.collections
          if isinstance(c, matplotlib.collections.PathCollection)]


def test_groups_at_equal_cost_do_not_hide_each_other(tmp_path, monkeypatch):
  # Issue 25: a zero-cost ablation sat at its baseline's exact MACs, one
  # error bar covering the other's marker.
  points = [plots.Point('reduce_norm=same', 'same', 7.98e6, 0.662, 0.021),
            plots.Point('reduce_norm=none', 'none', 7.98e6, 0.655, 0.030),
            plots.Point('naive', 'naive', 11.4e6, 0.691, 0.015)]
  same, none, naive = drawn_markers(monkeypatch, points, tmp_path / 'p.png')
  assert abs(same[0] - none[0]) > 12  # Pixels: wider than marker and cap.
  assert naive[0] > max(same[0], none[0]) + 50  # Still at its own cost.
  # Side by side around their cost: its place on the (log) axis between them.
  moved = plots.side_by_side(points, 0.01)
  assert moved[0].x * moved[1].x == pytest.approx(7.98e6 ** 2)
  assert moved[0].x / moved[1].x == pytest.approx(10 ** -0.01)
  assert moved[2] == points[2]
  assert plots.side_by_side(points[1:], 0.01) == points[1:]  # Apart already.


def test_failed_only(tmp_path):
  _write(tmp_path, {'only_failed': (
      {'status': 'failed', 'error': 'boom'}, None, {})})
  result = report.make_report(tmp_path)
  assert result['plotted'] == {'macs': [], 'params': [], 'time': []}
  assert result['comparisons'] == [] and result['baseline'] is None
  assert 'No comparisons: no group has a finished run' in result['markdown']
  assert '| only_failed | only_failed |' in result['markdown']
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
  assert report.points(dict(diff=-0.0123, ci95=None)) == '-1.23 ± —'
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
