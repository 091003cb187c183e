"""Collects a sweep's runs into a CSV, markdown tables and Pareto plots.

  python scripts/report.py DIR [--json]

Every `summary.json` under DIR (recursively) is one run, named by its folder
relative to DIR; its sibling `eval_*.json` (eval.py) and `config.json`
(train.py) are read too. Writes into DIR:

  results.csv          one row per run: every summary field, eval accuracies.
  results.md           the runs table and the naive-vs-reduced pair table.
  pareto_macs.png      best validation accuracy against MACs/image,
  pareto_params.png    ... parameters,
  pareto_time.png      ... training time; log x, Pareto front as a step line
                       (drawn by scripts/plots.py).

Prints the markdown tables (--json: the report as JSON instead).

Pairs: two runs pair when their config.json files are equal except for
`model.module` (and the run-specific keys in IGNORED_CONFIG_KEYS); a run
without config.json pairs by name instead, 'naive' <-> 'reduced'
(`foo_naive` with `foo_reduced`).
"""

import csv
import json
import math
import os
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from absl import app, flags  # noqa: E402

import rundir  # noqa: E402
from scripts import plots  # noqa: E402

# allow_override: tests import this module next to benchmark scripts that
# define a --json flag too.
flags.DEFINE_bool('json', False, 'Print the report as JSON instead of the '
                  'tables.', allow_override=True)
FLAGS = flags.FLAGS

# config.json keys (dotted) that differ between otherwise identical runs and
# say nothing about what was trained: normalisation stats written by train.py
# (rundir.STATS_KEY), where data is cached, and bookkeeping that does not
# change the trained network or its measured accuracy.
IGNORED_CONFIG_KEYS = (
    rundir.STATS_KEY, 'data.cache_dir', 'data.data_dir', 'data.num_workers',
    'keep_checkpoints', 'checkpoint_every_steps', 'log_every_steps',
    'stop_after_steps', 'distributed')
MODULE_KEY = 'model.module'
MODULES = ('naive', 'reduced')
FAILED = 'failed'

# Scalars of an eval_<split>.json worth keeping (not the confusion matrix).
EVAL_KEYS = ('split', 'accuracy', 'loss', 'num_examples', 'step', 'source')


# ----------------------------------------------------------------- loading

def _warn(message: str) -> None:
  print(f'warning: {message}', file=sys.stderr)


def _module(summary: dict, config: dict | None) -> str | None:
  module = summary.get('module')
  if module is None and config is not None:
    module = (config.get('model') or {}).get('module')
  return module


def load_runs(directory) -> list[dict]:
  """Every run under `directory`, sorted by name.

  A run: {'run', 'dir', 'summary', 'evals' ({split: scalars}), 'config'
  (dict or None), 'module'}. A summary.json that does not parse still makes a
  run, with status 'unreadable' and the error.
  """
  directory = pathlib.Path(directory)
  if not directory.is_dir():
    raise ValueError(f'{str(directory)!r} is not a directory.')
  runs = []
  for root, dirs, files in os.walk(directory):
    dirs.sort()
    if rundir.SUMMARY not in files:
      continue
    folder = pathlib.Path(root)
    rel = folder.relative_to(directory).as_posix()
    name = rel if rel != '.' else directory.resolve().name
    try:
      summary = rundir.read_json(folder / rundir.SUMMARY)
      if not isinstance(summary, dict):
        raise ValueError('not a JSON object')
    except (OSError, ValueError) as e:
      _warn(f'{folder / rundir.SUMMARY}: {e}')
      summary = {'status': 'unreadable', 'error': f'{rundir.SUMMARY}: {e}'}
    config = None
    if (folder / rundir.CONFIG).exists():
      try:
        config = rundir.read_json(folder / rundir.CONFIG)
      except (OSError, ValueError) as e:
        _warn(f'{folder / rundir.CONFIG}: {e}; pairing {name!r} by name.')
    evals = {}
    for path in sorted(folder.glob(f'{rundir.EVAL_PREFIX}*.json')):
      try:
        result = rundir.read_json(path)
        evals[path.stem[len(rundir.EVAL_PREFIX):]] = {
            k: result[k] for k in EVAL_KEYS if k in result}
      except (OSError, ValueError, TypeError) as e:
        _warn(f'{path}: {e}')
    runs.append(dict(run=name, dir=str(folder), summary=summary, evals=evals,
                     config=config, module=_module(summary, config)))
  if not runs:
    raise ValueError(f'No {rundir.SUMMARY} under {str(directory)!r}: '
                     'is it a sweep or train.py workdir?')
  return sorted(runs, key=lambda r: r['run'])


# ----------------------------------------------------------------- values

def _number(value) -> float | None:
  """A float, or None for anything missing or non-numeric."""
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return None
  return float(value)


def _finite(value) -> float | None:
  x = _number(value)
  return x if x is not None and math.isfinite(x) else None


def val_accuracy(run: dict) -> float | None:
  """The run's final validation accuracy (its best if there is no final)."""
  s = run['summary']
  x = _finite(s.get('val_accuracy'))
  return x if x is not None else _finite(s.get('best_val_accuracy'))


def best_accuracy(run: dict) -> float | None:
  """What the Pareto plots show: best validation accuracy, else final."""
  s = run['summary']
  x = _finite(s.get('best_val_accuracy'))
  return x if x is not None else _finite(s.get('val_accuracy'))


def test_accuracy(run: dict) -> float | None:
  """summary.json's test accuracy, else eval.py's eval_test.json's."""
  x = _finite(run['summary'].get('test_accuracy'))
  if x is None:
    x = _finite(run['evals'].get('test', {}).get('accuracy'))
  return x


# ----------------------------------------------------------------- pairing

def _config_key(config: dict) -> str:
  flat = rundir.flatten(config)
  for key in (MODULE_KEY, *IGNORED_CONFIG_KEYS):
    flat.pop(key, None)
    for k in [k for k in flat if k.startswith(key + '.')]:
      flat.pop(k)
  return json.dumps(flat, sort_keys=True, default=str)


def _swap(name: str) -> str | None:
  return name.replace('naive', 'reduced') if 'naive' in name else None


def pair_runs(runs: list[dict]) -> list[dict]:
  """naive/reduced pairs: [{'naive', 'reduced' (run names), 'rule'}].

  Rule 'config': both have config.json, equal but for model.module and
  IGNORED_CONFIG_KEYS. Where such a group holds several runs of one module,
  names decide (see below), else a lone naive pairs with a lone reduced.
  Rule 'name': a run without config.json (or its partner without one) pairs
  with the run whose name has 'naive' replaced by 'reduced'.
  """
  by_name = {r['run']: r for r in runs}
  pairs, paired = [], set()

  def add(naive, reduced, rule):
    pairs.append(dict(naive=naive, reduced=reduced, rule=rule))
    paired.update((naive, reduced))

  groups = {}
  for r in runs:
    if r['config'] is not None and r['module'] in MODULES:
      groups.setdefault(_config_key(r['config']), []).append(r)
  for group in groups.values():
    naive = [r['run'] for r in group if r['module'] == 'naive']
    reduced = [r['run'] for r in group if r['module'] == 'reduced']
    for n in naive:
      if _swap(n) in reduced:
        add(n, _swap(n), 'config')
    naive = [n for n in naive if n not in paired]
    reduced = [n for n in reduced if n not in paired]
    if len(naive) == 1 and len(reduced) == 1:
      add(naive[0], reduced[0], 'config')
    elif naive and reduced:
      _warn(f'runs {naive + reduced} share a config: cannot tell which '
            'naive run goes with which reduced run; not pairing them.')

  for r in runs:
    n, counterpart = r['run'], by_name.get(_swap(r['run']) or '')
    if counterpart is None or n in paired or counterpart['run'] in paired:
      continue
    if r['config'] is not None and counterpart['config'] is not None:
      continue  # Both have configs, and they differ: not comparable.
    if r['module'] in ('naive', None) and counterpart['module'] in (
        'reduced', None):
      add(n, counterpart['run'], 'name')
  return sorted(pairs, key=lambda p: p['naive'])


def _ratio(a, b):
  a, b = _finite(a), _finite(b)
  return a / b if a is not None and b else None


def _diff(a, b):
  return b - a if a is not None and b is not None else None


def compare(pair: dict, by_name: dict) -> dict:
  """A pair's ratios (naive / reduced) and accuracy differences (r - n)."""
  n, r = by_name[pair['naive']], by_name[pair['reduced']]
  ns, rs = n['summary'], r['summary']
  statuses = {ns.get('status'), rs.get('status')}
  return pair | {
      'macs_ratio': _ratio(ns.get('macs_per_image'), rs.get('macs_per_image')),
      'params_ratio': _ratio(ns.get('params'), rs.get('params')),
      'train_seconds_ratio': _ratio(ns.get('train_seconds'),
                                    rs.get('train_seconds')),
      'images_per_s_ratio': _ratio(ns.get('train_images_per_s'),
                                   rs.get('train_images_per_s')),
      'val_accuracy_diff': _diff(val_accuracy(n), val_accuracy(r)),
      'test_accuracy_diff': _diff(test_accuracy(n), test_accuracy(r)),
      'statuses': {'naive': ns.get('status'), 'reduced': rs.get('status')},
      'all_ok': statuses == {'ok'},
  }


# ----------------------------------------------------------------- CSV

def csv_columns(runs: list[dict]) -> list[str]:
  """'run', the union of summary fields (train.py's order first, then others
  by first appearance), then eval_<split>_accuracy columns."""
  seen = {k for r in runs for k in r['summary']}
  columns = [k for k in rundir.SUMMARY_KEYS if k in seen]
  for r in runs:
    columns += [k for k in r['summary'] if k not in columns]
  splits = sorted({s for r in runs for s, e in r['evals'].items()
                   if 'accuracy' in e})
  return ['run'] + columns + [f'eval_{s}_accuracy' for s in splits]


def _csv_value(value) -> str:
  if value is None:
    return ''
  if isinstance(value, float):
    return repr(value)  # Round-trips exactly through float().
  if isinstance(value, (list, dict)):
    return json.dumps(value)
  return str(value)


def write_csv(runs: list[dict], path) -> list[str]:
  columns = csv_columns(runs)
  rows = []
  for r in runs:
    row = dict(r['summary'], run=r['run'])
    row |= {f'eval_{s}_accuracy': e.get('accuracy')
            for s, e in r['evals'].items()}
    rows.append({c: _csv_value(row.get(c)) for c in columns})
  def write(f):
    writer = csv.DictWriter(f, columns)
    writer.writeheader()
    writer.writerows(rows)
  rundir.write_atomic(path, write, newline='')
  return columns


# ----------------------------------------------------------------- markdown

def si(value, digits: int = 3) -> str:
  """1234567 -> '1.23M', 45.6e6 -> '45.6M', 1.5e9 -> '1.5G'; '' if absent."""
  x = _number(value)
  if x is None:
    return ''
  if not math.isfinite(x):
    return str(x)
  for scale, suffix in ((1, ''), (1e3, 'K'), (1e6, 'M'), (1e9, 'G'),
                        (1e12, 'T')):
    v = x / scale
    s = f'{v:.0f}' if abs(v) >= 10 ** digits else f'{v:.{digits}g}'
    if abs(float(s)) < 1000 or suffix == 'T':
      return s + suffix
  raise AssertionError


def duration(value) -> str:
  """Seconds as '42.1s', '12m 05s', '3h 07m'; '' if absent."""
  s = _finite(value)
  if s is None:
    return '' if _number(value) is None else str(value)
  if s < 60:
    return f'{s:.1f}s'
  if s < 3600:
    m, sec = divmod(round(s), 60)
    return f'{m}m {sec:02d}s'
  h, rest = divmod(round(s), 3600)
  return f'{h}h {rest // 60:02d}m'


def rate(value) -> str:
  x = _number(value)
  if x is None:
    return ''
  return f'{x:,.0f}' if not math.isfinite(x) or x >= 100 else f'{x:.3g}'


def acc(value) -> str:
  return '' if value is None else f'{value:.4f}'


def signed(value) -> str:
  return '' if value is None else f'{value:+.4f}'


def times(value) -> str:
  return '' if value is None else f'{value:.2f}×'


def _md_table(header, align, rows) -> list[str]:
  esc = lambda s: str(s).replace('|', r'\|').replace('\n', ' ')
  lines = ['| ' + ' | '.join(header) + ' |',
           '|' + '|'.join('---:' if a == 'r' else ':---' for a in align) + '|']
  lines += ['| ' + ' | '.join(esc(c) for c in row) + ' |' for row in rows]
  return lines


def markdown(runs: list[dict], comparisons: list[dict], title: str) -> str:
  lines = [f'# Sweep report: {title}', '', f'## Runs ({len(runs)})', '']
  rows = []
  for r in runs:
    s = r['summary']
    rows.append([r['run'], r['module'] or '', si(s.get('params')),
                 si(s.get('macs_per_image')), si(s.get('xla_flops_per_image')),
                 rate(s.get('train_images_per_s')),
                 duration(s.get('train_seconds')), acc(val_accuracy(r)),
                 acc(test_accuracy(r)), s.get('status', '')])
  lines += _md_table(
      ['run', 'module', 'params', 'MACs/image', 'XLA FLOPs/image', 'images/s',
       'train time', 'val accuracy', 'test accuracy', 'status'],
      'llrrrrrrrl', rows)
  errors = [(r['run'], r['summary']['error']) for r in runs
            if r['summary'].get('error')]
  if errors:
    lines += ['', 'Errors:', '']
    for run, error in errors:
      error = ' '.join(str(error).split())
      lines.append(f'- `{run}`: {error[:300]}{"…" if len(error) > 300 else ""}')
  lines += ['', '## naive vs reduced', '']
  if not comparisons:
    lines.append('No naive/reduced pairs found.')
    return '\n'.join(lines) + '\n'
  with_test = any(c['test_accuracy_diff'] is not None for c in comparisons)
  header = ['naive', 'reduced', 'paired by', 'MACs n/r', 'params n/r',
            'train time n/r', 'images/s n/r', 'Δ val acc (r−n)']
  header += ['Δ test acc (r−n)'] if with_test else []
  header += ['note']
  rows = []
  for c in comparisons:
    row = [c['naive'], c['reduced'], c['rule'], times(c['macs_ratio']),
           times(c['params_ratio']), times(c['train_seconds_ratio']),
           times(c['images_per_s_ratio']), signed(c['val_accuracy_diff'])]
    row += [signed(c['test_accuracy_diff'])] if with_test else []
    bad = [f'{k}: {v}' for k, v in c['statuses'].items() if v != 'ok']
    row.append(', '.join(bad))
    rows.append(row)
  lines += _md_table(header, 'lll' + 'r' * (len(header) - 4) + 'l', rows)
  lines += ['', 'Ratios are naive / reduced: MACs, params, train time > 1 '
            'mean naive costs more; images/s < 1 means naive trains slower. '
            'Δ accuracy is reduced − naive; val accuracy is the final '
            'evaluation (the best where there is no final).']
  return '\n'.join(lines) + '\n'


# ----------------------------------------------------------------- plots

def pareto_points(runs: list[dict], key: str) -> list[plots.Point]:
  """What a Pareto plot of summary[key] shows: runs with an accuracy (best
  validation, else final) and a positive cost, not 'failed'. Runs that did
  not finish ('interrupted', 'diverged') draw hollow, off the Pareto front."""
  points = []
  for r in runs:
    status = r['summary'].get('status')
    x, y = _finite(r['summary'].get(key)), best_accuracy(r)
    if status in (FAILED, 'unreadable') or x is None or x <= 0 or y is None:
      continue
    points.append(plots.Point(r['run'], r['module'], x, y,
                              status in ('ok', None)))
  return points


# ----------------------------------------------------------------- report

def make_report(directory) -> dict:
  """Writes results.csv, results.md and the pareto_*.png into `directory`;
  returns what it wrote: runs (without configs), pairs with their ratios,
  the CSV columns, the markdown, the runs each plot shows and the paths.
  Raises ValueError if there is no summary.json under `directory`."""
  directory = pathlib.Path(directory)
  runs = load_runs(directory)
  by_name = {r['run']: r for r in runs}
  comparisons = [compare(p, by_name) for p in pair_runs(runs)]
  title = directory.resolve().name
  files = {'csv': str(directory / 'results.csv'),
           'md': str(directory / 'results.md')}
  columns = write_csv(runs, files['csv'])
  text = markdown(runs, comparisons, title)
  rundir.write_atomic(files['md'], lambda f: f.write(text))
  plotted = {}
  for suffix, key, xlabel, what in plots.PLOTS:
    path = str(directory / f'pareto_{suffix}.png')
    points = pareto_points(runs, key)
    plots.plot_pareto(points, path, xlabel, what, title,
                      tick_label=lambda x: si(x, 2))
    plotted[suffix] = [p.name for p in points]
    files[f'pareto_{suffix}'] = path
  return {
      'directory': str(directory),
      'runs': [{k: v for k, v in r.items() if k != 'config'}
               | {'has_config': r['config'] is not None} for r in runs],
      'pairs': comparisons,
      'columns': columns,
      'markdown': text,
      'plotted': plotted,
      'files': files,
  }


def main(argv):
  if len(argv) != 2:
    raise app.UsageError(f'Give one sweep directory (runs in DIR/<run>/); '
                         f'got {argv[1:]}.')
  try:
    report = make_report(argv[1])
  except ValueError as e:
    raise SystemExit(f'error: {e}') from None
  if FLAGS.json:
    print(json.dumps({k: v for k, v in report.items() if k != 'markdown'},
                     indent=1))
  else:
    print(report['markdown'])
    print('Wrote ' + ', '.join(report['files'].values()))


if __name__ == '__main__':
  app.run(main)
