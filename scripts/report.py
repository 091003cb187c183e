"""Collects a sweep's runs into a CSV, markdown tables and Pareto plots.

  python scripts/report.py DIR [--json]

Every `summary.json` under DIR (recursively) is one run, named by its folder
relative to DIR; its sibling `eval_*.json` (eval.py) and `config.json`
(train.py) are read too. Writes into DIR:

  results.csv          one row per run: every summary field, eval accuracies.
  results.md           the runs table and the naive-vs-reduced pair table.
  pareto_macs.png      best validation accuracy against MACs/image,
  pareto_params.png    ... parameters,
  pareto_time.png      ... training time; log x, Pareto front as a step line.

Prints the markdown tables (--json: the report as JSON instead).

Pairs: two runs pair when their config.json files are equal except for
`model.module` (and the run-specific keys in IGNORED_CONFIG_KEYS); a run
without config.json pairs by name instead, 'naive' <-> 'reduced'
(`foo_naive` with `foo_reduced`).
"""

import argparse
import csv
import json
import math
import os
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import matplotlib  # noqa: E402

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker, transforms  # noqa: E402
from matplotlib.text import Text  # noqa: E402

# train.py's summary keys, in its order: the CSV's column order.
SUMMARY_KEYS = (
    'status', 'model', 'module', 'workdir', 'params', 'macs_per_image',
    'xla_flops_per_image', 'train_step_flops', 'train_images_per_s',
    'train_seconds', 'steps', 'epochs', 'batch_size', 'val_split',
    'val_accuracy', 'best_val_accuracy', 'test_accuracy', 'device_kind',
    'device_count', 'process_count', 'jax_version', 'error')

# config.json keys (dotted) that differ between otherwise identical runs and
# say nothing about what was trained: normalisation stats written by train.py
# (train.STATS_KEY), where data is cached, and bookkeeping that does not
# change the trained network or its measured accuracy.
IGNORED_CONFIG_KEYS = (
    'data_stats', 'data.cache_dir', 'data.data_dir', 'data.num_workers',
    'keep_checkpoints', 'checkpoint_every_steps', 'log_every_steps',
    'stop_after_steps', 'distributed')
MODULE_KEY = 'model.module'
MODULES = ('naive', 'reduced')
FAILED = 'failed'

# Scalars of an eval_<split>.json worth keeping (not the confusion matrix).
EVAL_KEYS = ('split', 'accuracy', 'loss', 'num_examples', 'step', 'source')

# x axes of the Pareto plots: (file suffix, summary key, axis label, title).
PLOTS = (
    ('macs', 'macs_per_image', 'multiply-accumulates per image (MACs, log scale)',
     'MACs per image'),
    ('params', 'params', 'parameters (count, log scale)', 'parameters'),
    ('time', 'train_seconds', 'training time (seconds, log scale)',
     'training time'),
)
STYLE = {  # module -> matplotlib style; anything else draws as 'other'.
    'naive': dict(color='tab:orange', marker='s', label='naive'),
    'reduced': dict(color='tab:blue', marker='o', label='reduced'),
    None: dict(color='tab:gray', marker='D', label='other'),
}


# ----------------------------------------------------------------- loading

def _read_json(path: pathlib.Path):
  with open(path) as f:
    return json.load(f)


def _warn(message: str) -> None:
  print(f'warning: {message}', file=sys.stderr)


def _flatten(tree, prefix=''):
  out = {}
  for key, value in tree.items():
    name = f'{prefix}{key}'
    if isinstance(value, dict) and value:
      out |= _flatten(value, name + '.')
    else:
      out[name] = value
  return out


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
    if 'summary.json' not in files:
      continue
    folder = pathlib.Path(root)
    rel = folder.relative_to(directory).as_posix()
    name = rel if rel != '.' else directory.resolve().name
    try:
      summary = _read_json(folder / 'summary.json')
      if not isinstance(summary, dict):
        raise ValueError('not a JSON object')
    except (OSError, ValueError) as e:
      _warn(f'{folder / "summary.json"}: {e}')
      summary = {'status': 'unreadable', 'error': f'summary.json: {e}'}
    config = None
    if (folder / 'config.json').exists():
      try:
        config = _read_json(folder / 'config.json')
      except (OSError, ValueError) as e:
        _warn(f'{folder / "config.json"}: {e}; pairing {name!r} by name.')
    evals = {}
    for path in sorted(folder.glob('eval_*.json')):
      try:
        result = _read_json(path)
        evals[path.stem[len('eval_'):]] = {
            k: result[k] for k in EVAL_KEYS if k in result}
      except (OSError, ValueError, TypeError) as e:
        _warn(f'{path}: {e}')
    runs.append(dict(run=name, dir=str(folder), summary=summary, evals=evals,
                     config=config, module=_module(summary, config)))
  if not runs:
    raise ValueError(f'No summary.json under {str(directory)!r}: '
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
  flat = _flatten(config)
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
  columns = [k for k in SUMMARY_KEYS if k in seen]
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
  _atomic_write(path, write, newline='')
  return columns


def _atomic_write(path, write, **kwargs) -> None:
  tmp = f'{path}.tmp'
  with open(tmp, 'w', **kwargs) as f:
    write(f)
  os.replace(tmp, path)


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

class _HumanLogFormatter(ticker.LogFormatter):
  """Log-axis tick labels as 1M, 20K, ... instead of 10^6."""

  def _num_to_string(self, x, vmin, vmax):
    return si(x, 2)


def _overlap(a, b) -> float:
  w = min(a.x1, b.x1) - max(a.x0, b.x0)
  h = min(a.y1, b.y1) - max(a.y0, b.y0)
  return w * h if w > 0 and h > 0 else 0.0


# Label offsets from a point, in points: (dx, dy, ha, va), nearest first.
_OFFSETS = [(dx * r, dy * r, ha, va)
            for r in (1, 2.2, 3.6)
            for dx, dy, ha, va in ((7, 5, 'left', 'bottom'),
                                   (7, -5, 'left', 'top'),
                                   (-7, 5, 'right', 'bottom'),
                                   (-7, -5, 'right', 'top'),
                                   (0, 9, 'center', 'bottom'),
                                   (0, -9, 'center', 'top'),
                                   (9, 0, 'left', 'center'),
                                   (-9, 0, 'right', 'center'))]


def _place_labels(fig, ax, points, texts, obstacles) -> None:
  """Greedy label placement: for each point the nearest offset whose label
  stays inside the axes and overlaps no marker, legend or earlier label."""
  renderer = fig.canvas.get_renderer()
  frame = ax.get_window_extent(renderer)
  to_px = ax.transData.transform
  markers = []
  for x, y in points:
    px, py = to_px((x, y))
    markers.append(transforms.Bbox.from_extents(
        px - 5, py - 5, px + 5, py + 5))
  placed = list(obstacles)
  # Crowded points first: they have the fewest good spots.
  order = sorted(range(len(points)), key=lambda i: sum(
      _overlap(markers[i].expanded(8, 8), m) > 0 for m in markers))[::-1]
  for i in order:
    best = None
    for rank, (dx, dy, ha, va) in enumerate(_OFFSETS):
      text = _label(ax, texts[i], points[i], dx, dy, ha, va, rank >= 8)
      # The text's own box, without its leader line.
      text.update_positions(renderer)
      box = Text.get_window_extent(text, renderer).expanded(1.05, 1.1)
      outside = (box.width * box.height -
                 _overlap(box, frame)) * 4  # Clipped text: worst.
      cost = outside + sum(_overlap(box, o) for o in placed + markers)
      if rank < 8 and _ambiguous(box, i, markers):
        cost += 60  # Unclear whose label it is: a far one with a leader.
      cost += rank * 0.5  # Prefer near offsets among equals.
      if best is None or cost < best[0]:
        if best is not None:
          best[1].remove()
        best = (cost, text, box, rank)
      else:
        text.remove()
      if cost <= rank * 0.5:
        break  # Free spot: take it.
    _, text, box, rank = best
    if rank < 8 and _ambiguous(box, i, markers):
      # Nearer another point than its own: a leader line says whose it is.
      dx, dy, ha, va = _OFFSETS[rank]
      text.remove()
      _label(ax, texts[i], points[i], dx, dy, ha, va, True)
    placed.append(box)


def _label(ax, text, xy, dx, dy, ha, va, leader: bool):
  return ax.annotate(
      text, xy, xytext=(dx, dy), textcoords='offset points', ha=ha, va=va,
      fontsize=8, zorder=4,
      bbox=dict(boxstyle='round,pad=0.15', fc='white', ec='none', alpha=0.75),
      arrowprops=(dict(arrowstyle='-', color='0.45', lw=0.7, shrinkA=0,
                       shrinkB=3) if leader else None))


def _ambiguous(box, i, markers) -> bool:
  """Whether the label box is as near another marker as its own."""
  own = _distance(box, markers[i])
  return any(_distance(box, m) <= own + 2
             for j, m in enumerate(markers) if j != i)


def _distance(box, marker) -> float:
  """Pixels from a marker's centre to the nearest point of a box."""
  (x, y), = marker.get_points().mean(axis=0, keepdims=True)
  dx = max(box.x0 - x, 0, x - box.x1)
  dy = max(box.y0 - y, 0, y - box.y1)
  return math.hypot(dx, dy)


def pareto_front(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
  """The (cost, accuracy) points no cheaper-or-equal point beats, by cost."""
  front = []
  for x, y in sorted(points, key=lambda p: (p[0], -p[1])):
    if not front or y > front[-1][1]:
      front.append((x, y))
  return front


def plot_pareto(runs: list[dict], key: str, path, xlabel: str, title: str,
                name: str = '') -> list[str]:
  """Plots best validation accuracy against summary[key]; returns the names
  of the runs plotted: those with an accuracy and a positive cost, not
  'failed'. Runs that did not finish ('interrupted', 'diverged') draw hollow
  and stay off the Pareto front."""
  fig, ax = plt.subplots(figsize=(7, 5), dpi=120)
  shown = []
  for r in runs:
    status = r['summary'].get('status')
    x, y = _finite(r['summary'].get(key)), best_accuracy(r)
    if status in (FAILED, 'unreadable') or x is None or x <= 0 or y is None:
      continue
    shown.append((r, x, y, status in ('ok', None)))

  if shown:
    for module in (*MODULES, None):
      group = [(x, y, ok) for r, x, y, ok in shown
               if (r['module'] if r['module'] in MODULES else None) == module]
      if not group:
        continue
      style = STYLE[module]
      ok = [(x, y) for x, y, good in group if good]
      bad = [(x, y) for x, y, good in group if not good]
      if ok:
        ax.scatter(*zip(*ok), s=42, color=style['color'],
                   marker=style['marker'], label=style['label'], zorder=3,
                   edgecolors='black', linewidths=0.5)
      if bad:
        ax.scatter(*zip(*bad), s=42, facecolors='none',
                   edgecolors=style['color'], marker=style['marker'],
                   linewidths=1.2, zorder=3,
                   label=f'{style["label"]} (did not finish)')
    xs = [x for _, x, _, _ in shown]
    ys = [y for _, _, y, _ in shown]
    lo, hi = math.log10(min(xs)), math.log10(max(xs))
    pad = max(0.12 * (hi - lo), 0.08)
    ax.set_xscale('log')
    ax.set_xlim(10 ** (lo - pad), 10 ** (hi + pad))
    ylo, yhi = min(ys), max(ys)
    ypad = max(0.15 * (yhi - ylo), 0.01)
    ax.set_ylim(ylo - ypad, yhi + 1.5 * ypad)
    front = pareto_front([(x, y) for _, x, y, ok in shown if ok])
    corners = []  # The step line's corners, for labels to keep off it.
    if front:
      fx, fy = zip(*front)
      fx = [*fx, 10 ** (hi + pad)]
      ax.step(fx, [*fy, fy[-1]], where='post', color='0.35', ls='--',
              lw=1.2, zorder=2, label='Pareto front (best accuracy at ≤ cost)')
      corners = [(fx[0], fy[0])]
      for k, y in enumerate(fy):
        corners += [(fx[k + 1], y)] + ([(fx[k + 1], fy[k + 1])]
                                       if k + 1 < len(fy) else [])
    ax.xaxis.set_major_formatter(_HumanLogFormatter(labelOnlyBase=False))
    ax.xaxis.set_minor_formatter(_HumanLogFormatter(
        labelOnlyBase=False, minor_thresholds=(2, 0.7)))
    ax.tick_params(axis='x', which='minor', labelsize=7, labelcolor='0.3')
  else:
    ax.text(0.5, 0.5, 'no finished runs with an accuracy and this cost',
            ha='center', va='center', transform=ax.transAxes, color='0.4')
    ax.set_xscale('log')
  ax.set_xlabel(xlabel)
  ax.set_ylabel('best validation accuracy (fraction)')
  ax.set_title(f'Accuracy vs {title}' + (f' — {name}' if name else ''))
  ax.grid(True, which='major', alpha=0.3)
  ax.grid(True, which='minor', axis='x', alpha=0.12)
  fig.tight_layout()  # Before placing labels: it moves the axes.
  if shown:
    legend = ax.legend(loc='best', fontsize=8, framealpha=0.9)
    fig.canvas.draw()  # Settles the legend's place before labels avoid it.
    renderer = fig.canvas.get_renderer()
    px = [ax.transData.transform(c) for c in corners]
    line = [transforms.Bbox.from_extents(
        min(a[0], b[0]) - 1.5, min(a[1], b[1]) - 1.5,
        max(a[0], b[0]) + 1.5, max(a[1], b[1]) + 1.5)
            for a, b in zip(px, px[1:])]
    _place_labels(fig, ax, [(x, y) for _, x, y, _ in shown],
                  [r['run'] for r, _, _, _ in shown],
                  [legend.get_window_extent(renderer)] + line)
  fig.savefig(path)
  plt.close(fig)
  return [r['run'] for r, _, _, _ in shown]


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
  _atomic_write(files['md'], lambda f: f.write(text))
  plotted = {}
  for suffix, key, xlabel, what in PLOTS:
    path = str(directory / f'pareto_{suffix}.png')
    plotted[suffix] = plot_pareto(runs, key, path, xlabel, what, title)
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


def main(argv=None) -> None:
  parser = argparse.ArgumentParser(
      description='Tabulates and plots the runs of a sweep directory.')
  parser.add_argument('directory', help='Sweep dir: runs in DIR/<run>/.')
  parser.add_argument('--json', action='store_true',
                      help='Print the report as JSON instead of the tables.')
  args = parser.parse_args(argv)
  try:
    report = make_report(args.directory)
  except ValueError as e:
    raise SystemExit(f'error: {e}') from None
  if args.json:
    print(json.dumps({k: v for k, v in report.items() if k != 'markdown'},
                     indent=1))
  else:
    print(report['markdown'])
    print('Wrote ' + ', '.join(report['files'].values()))


if __name__ == '__main__':
  main()
