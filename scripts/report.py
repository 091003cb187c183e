"""Collects a sweep's runs into groups of seeds, statistics, tables and plots.

  python scripts/report.py DIR [--json] [--allow_fewer_runs]

Runs: every `summary.json` under DIR (recursively) is one run, named by its
folder relative to DIR; its sibling `eval_*.json` (eval.py) and `config.json`
(train.py) are read too; folders set aside by `scripts/sweep.py
--rerun_stale` (`<dir>.stale-<time>`) are skipped. DIR/sweep.json
(rundir.SWEEP) is optional: it names each folder's sweep run and seed, and
the baseline. A run it does not list counts with the runs of its design
(same config but seed) at a seed none of them has; otherwise it is left
out. results.md names both kinds.

Groups, the seeds of one design: runs whose config.json files are equal but
for `seed` and bookkeeping (rundir.training_changes). A group is named by
its sweep run (sweep.json), else by its folder less a trailing `-seed<k>`; a
run without config.json joins the group of its name. The varied keys are
the config keys (dotted) whose values differ between groups.

Statistics (scripts/stats.py) count finished runs (status 'ok') only; the
others are listed, and named as excluded. Per group, of final val acc (the
last evaluation, summary's `val_accuracy`), best val acc (the best during
training, `best_val_accuracy`) and test acc (`test_accuracy`, else
eval_test.json): n, mean, sd and ci95 (the half-width of the mean's 95% CI,
Student's t); of params, MACs, images/s and train time, the mean.

Setup: the budget of the finished runs (steps, batch, epochs, images seen:
summary.json), their data (source and splits: config.json), the --config.*
flags sweep.json says they were launched with, and the runs whose warmup
did not end before their last step (summary.json's schedule_warning).

Comparisons: every group against one baseline: the group sweep.json names;
else, where model.module varies, the first with module 'naive' (no 1x1
reductions: each comparison then reads as what they buy); else the first
(in sweep.json's order, else by name); one with a finished run. Of final
val acc and test acc: the difference of means (group - baseline) with its
95% CI by Welch's t and, over the seeds both groups finished (same seed:
same initialisation and data order), by the paired t; a sentence for each,
naming its test, saying whether it is detectable. Of the costs: ratios
group / baseline.

Writes into DIR:

  results.csv   one row per run (per seed): run, group, seed, the varied
                keys, final_val_acc, best_val_acc, test_acc, every summary
                field, eval_<split>_accuracy.
  groups.csv    one row per group: group, the varied keys, runs, n (finished
                runs), excluded; <acc>_n, _mean, _sd, _ci95 of each accuracy;
                <cost>_mean; vs (the baseline), <acc>_diff, _diff_ci95,
                _diff_df (Welch) and <acc>_paired_diff, _ci95, _df, _n
                (paired) of the compared accuracies, <cost>_ratio.
  results.md    the setup, the groups table, the comparisons and their
                sentences, the runs table.
  pareto_macs.png, pareto_params.png, pareto_time.png
                the groups' mean final val acc with 95% CI bars against
                mean MACs/image, params and train time (scripts/plots.py),
                labelled by the varied keys' values.

A report that would count fewer finished runs than the results.csv it
replaces (a run moved, deleted or no longer finished) writes nothing and
says which, unless --allow_fewer_runs.

Prints results.md; with --json, the whole report as JSON instead.
"""

import csv
import json
import math
import os
import pathlib
import re
import statistics
import sys

from absl import app, flags

import rundir
from scripts import plots, stats

# allow_override: tests import this module next to benchmark scripts that
# define a --json flag too.
flags.DEFINE_bool('json', False, 'Print the report as JSON instead of the '
                  'tables.', allow_override=True)
flags.DEFINE_bool('allow_fewer_runs', False, 'Overwrite an earlier report '
                  'of DIR that counted finished runs this one does not.',
                  allow_override=True)
FLAGS = flags.FLAGS

SEED_KEY = 'seed'
MODULE_KEY = 'model.module'
FINISHED = 'ok'
SEED_SUFFIX = re.compile(r'-seed\d+$')
STALE = re.compile(re.escape(rundir.STALE_SUFFIX) + r'\d{8}-\d{6}$')
# Accuracy key -> (its name in tables, CSV and plots; summary.json field;
# eval.py split that stands in where the summary has none).
ACCURACIES = {
    'final_val_acc': ('final val acc', 'val_accuracy', None),
    'best_val_acc': ('best val acc', 'best_val_accuracy', None),
    'test_acc': ('test acc', 'test_accuracy', 'test'),
}
COMPARED = ('final_val_acc', 'test_acc')  # Compared against the baseline.
WELCH, PAIRED = "Welch's t", 'paired t over matched seeds'  # The tests.
COSTS = ('params', 'macs_per_image', 'train_images_per_s', 'train_seconds')
BUDGET_KEYS = ('steps', 'batch_size', 'epochs')  # Of summary.json.
# How a run was computed (summary.json's implementation, device_kind and
# device_count), as results.md names it: a difference changes its speed, not
# its params, MACs or math.
IMPLEMENTATION = {
    'conv': 'ops.conv', 'pool': 'ops.pool', 'norm': 'ops.norm',
    'cpu_vector_width': 'ops.cpu_vector_width', 'allocator': 'malloc',
    'unfused_1x1': 'modules with their 1x1 heads unfused',
    'device_kind': 'device', 'device_count': 'devices'}
TIMES = ('train_seconds', 'train_images_per_s')  # The ratios it changes.
DATA_KEYS = ('data.source', 'data.train_split', 'data.eval_split')
# Scalars of an eval_<split>.json worth keeping (not the confusion matrix).
EVAL_KEYS = ('split', 'accuracy', 'loss', 'num_examples', 'step', 'source')


# ----------------------------------------------------------------- loading

def _warn(message: str) -> None:
  print(f'warning: {message}', file=sys.stderr)


def _read_eval(path) -> dict:
  try:
    result = rundir.read_json(path)
    return {k: result[k] for k in EVAL_KEYS if k in result}
  except (OSError, ValueError, TypeError) as e:
    _warn(f'{path}: {e}')
    return {}


def load_runs(directory, sweep: dict | None = None) -> list[dict]:
  """Every run under `directory`, sorted by name.

  A run: {'run', 'dir', 'summary', 'evals' ({split: scalars}), 'config'
  (dict or None), 'seed'}. A summary.json that does not parse still makes a
  run, with status 'unreadable' and the error.
  """
  directory = pathlib.Path(directory)
  if not directory.is_dir():
    raise ValueError(f'{str(directory)!r} is not a directory.')
  entries = (sweep or {}).get('runs', {})
  runs = []
  for root, dirs, files in os.walk(directory):
    for stale in [d for d in dirs if STALE.search(d)]:
      _warn(f'skipping {pathlib.Path(root) / stale}: set aside as stale by '
            'scripts/sweep.py --rerun_stale.')
      dirs.remove(stale)
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
        config = rundir.load_run_config(str(folder)).to_dict()
      except (OSError, TypeError, ValueError) as e:
        _warn(f'{folder / rundir.CONFIG}: {e}; grouping {name!r} by name.')
    evals = {p.stem[len(rundir.EVAL_PREFIX):]: _read_eval(p)
             for p in sorted(folder.glob(f'{rundir.EVAL_PREFIX}*.json'))}
    seed = (config or {}).get(SEED_KEY, entries.get(name, {}).get('seed'))
    runs.append(dict(run=name, dir=str(folder), summary=summary, evals=evals,
                     config=config, seed=seed))
  if not runs:
    raise ValueError(f'No {rundir.SUMMARY} under {str(directory)!r}: '
                     'is it a sweep or train.py workdir?')
  return sorted(runs, key=lambda r: r['run'])


def outside_sweep(runs: list[dict], sweep: dict | None
                  ) -> tuple[list[dict], dict[str, str], dict[str, str]]:
  """The runs to report, and those sweep.json does not list: {run: the
  sweep run whose design it has}, counted with that design's runs (it
  trains the same config, at a seed none of them has), and {run: why it is
  left out}. Without a sweep.json every run counts."""
  entries = (sweep or {}).get('runs', {})
  listed = [r for r in runs if not entries or r['run'] in entries]
  adopted, left_out = {}, {}
  for run in runs:
    if not entries or run['run'] in entries:
      continue
    design = [r for r in listed if r['config'] and run['config']
              and not _changed_keys(r['config'], run['config'])]
    if not design:
      left_out[run['run']] = f'of no design {rundir.SWEEP} lists'
    elif run['seed'] in {r['seed'] for r in design}:
      left_out[run['run']] = (f"a second run of seed {run['seed']} of "
                              f"`{entries[design[0]['run']]['run']}`")
    else:
      adopted[run['run']] = entries[design[0]['run']]['run']
      listed.append(run)
  for name, why in left_out.items():
    _warn(f'leaving out {name}: not a run of {rundir.SWEEP}, {why}.')
  return sorted(listed, key=lambda r: r['run']), adopted, left_out


def load_sweep(directory) -> dict | None:
  """DIR/sweep.json (rundir.read_sweep), or None where there is none."""
  return rundir.read_sweep(directory)


# ----------------------------------------------------------------- values

def _number(value) -> float | None:
  """A float, or None for anything missing or non-numeric."""
  if isinstance(value, bool) or not isinstance(value, (int, float)):
    return None
  return float(value)


def _finite(value) -> float | None:
  x = _number(value)
  return x if x is not None and math.isfinite(x) else None


def accuracy(run: dict, key: str) -> float | None:
  """A run's accuracy `key` of ACCURACIES, None where it has none."""
  _, field, split = ACCURACIES[key]
  x = _finite(run['summary'].get(field))
  if x is None and split:
    x = _finite(run['evals'].get(split, {}).get('accuracy'))
  return x


def finished(run: dict) -> bool:
  return run['summary'].get('status') == FINISHED


# ----------------------------------------------------------------- groups

def _changed_keys(a: dict, b: dict) -> set[str]:
  """The keys of two configs that differ and change training, but seed."""
  return {line.partition(':')[0]
          for line in rundir.training_changes(a, b)} - {SEED_KEY}


def _same_design(first: dict, run: dict) -> bool:
  if run['config'] is None:
    return first['name'] == run['name']
  return (first['config'] is not None
          and not _changed_keys(first['config'], run['config']))


def group_runs(runs: list[dict], sweep: dict | None) -> dict[str, list]:
  """{group name: its runs}, in sweep.json's run order, else by name; sets
  each run's 'name' (its sweep run, else its folder less -seed<k>)."""
  entries = (sweep or {}).get('runs', {})
  groups = []
  for run in sorted(runs, key=lambda r: r['config'] is None):
    entry = entries.get(run['run'])
    run['name'] = (entry['run'] if entry else run.get('sweep_run')
                   or SEED_SUFFIX.sub('', run['run']))
    group = next((g for g in groups if _same_design(g[0], run)), None)
    if group is None:
      groups.append([run])
    else:
      group.append(run)
  order = list(dict.fromkeys(e['run'] for e in entries.values()))
  rank = lambda name: (order.index(name) if name in order else len(order),
                       name)
  named = {}
  for group in sorted(groups, key=lambda g: rank(g[0]['name'])):
    names = list(dict.fromkeys(r['name'] for r in group))
    if len(names) > 1:
      _warn(f'runs named {names} train the same config: one group, '
            f'{names[0]!r}.')
    name, k = names[0], 2
    while name in named:
      name, k = f'{names[0]}#{k}', k + 1
    if name != names[0]:
      _warn(f'groups named {names[0]!r} train different configs (see the '
            f'varied keys): the later one is {name!r}.')
    named[name] = group
  return named


def varied_keys(configs: list[dict | None]) -> list[str]:
  """The config keys whose values differ between configs (seed and
  bookkeeping aside), sorted."""
  configs = [c for c in configs if c is not None]
  return sorted(set().union(*(_changed_keys(configs[0], c)
                              for c in configs[1:])))


def describe_group(name: str, runs: list[dict], varied: list[str]) -> dict:
  """A group's record: its varied keys' values, runs, excluded runs, the
  statistics of each accuracy and the cost means (module docstring)."""
  config = next((r['config'] for r in runs if r['config'] is not None), {})
  flat = rundir.flatten(config)
  counted = [r for r in runs if finished(r)]
  record = dict(group=name, values={k: flat.get(k) for k in varied},
                runs=[r['run'] for r in runs],
                seeds=[r['seed'] for r in runs],
                excluded={r['run']: r['summary'].get('status')
                          for r in runs if not finished(r)},
                n=len(counted))
  for key in ACCURACIES:
    record[key] = stats.describe(
        [x for r in counted if (x := accuracy(r, key)) is not None])
  for key in COSTS:
    xs = [x for r in counted
          if (x := _finite(r['summary'].get(key))) is not None]
    record[key] = statistics.fmean(xs) if xs else None
  record['implementation'] = {
      key: sorted({str(impl[key]) for impl in map(implementation, counted)
                   if key in impl}) for key in IMPLEMENTATION}
  record['by_seed'] = {  # For the paired comparison.
      key: {r['seed']: x for r in counted if r['seed'] is not None
            and (x := accuracy(r, key)) is not None} for key in COMPARED}
  seeds = [r['seed'] for r in counted if r['seed'] is not None]
  if len(set(seeds)) < len(seeds):
    _warn(f'group {name!r} has finished runs of the same seed ({seeds}): '
          'they are not independent samples.')
  return record


def implementation(run: dict) -> dict:
  """How a run was computed: summary.json's implementation (train.py:
  accounting.implementation; absent from runs older than it) and
  devices."""
  summary = run['summary']
  recorded = summary.get('implementation')
  recorded = recorded if isinstance(recorded, dict) else {}
  return {k: v for k, v in (recorded | summary).items()
          if k in IMPLEMENTATION and v is not None}


def implementation_differences(group: dict, baseline: dict) -> dict:
  """{what: [the group's values, the baseline's]} where the two were
  computed differently (what both recorded)."""
  a, b = group['implementation'], baseline['implementation']
  return {label: [a[k], b[k]] for k, label in IMPLEMENTATION.items()
          if a[k] and b[k] and a[k] != b[k]}


def choose_baseline(groups: list[dict], sweep: dict | None
                    ) -> tuple[dict | None, str]:
  """The group the others are compared against, and why (module
  docstring)."""
  usable = [g for g in groups if g['final_val_acc']['n']]
  named = (sweep or {}).get('baseline')
  match = [g for g in usable if g['group'] == named]
  if match:
    return match[0], 'named by sweep.json'
  if named:
    why = f"sweep.json's baseline {named!r} has no finished run"
    _warn(f'{why}: comparing against the default.')
  else:
    why = 'sweep.json names none' if sweep else 'no sweep.json'
  if not usable:
    return None, 'no group has a finished run with a final val acc'
  naive = [g for g in usable if g['values'].get(MODULE_KEY) == 'naive']
  if naive:
    return naive[0], (f"{why}; the first group with {MODULE_KEY} = 'naive': "
                      'each comparison reads as what the 1x1 reductions buy')
  order = "in sweep.json's order" if sweep else 'by name'
  return usable[0], f'{why}; the first group {order}'


def _ratio(a, b):
  return a / b if a is not None and b else None


def matched(group: dict, baseline: dict, key: str) -> dict | None:
  """stats.paired of the accuracy `key` over the seeds both groups
  finished."""
  a, b = group['by_seed'][key], baseline['by_seed'][key]
  seeds = sorted(set(a) & set(b), key=str)
  return stats.paired([a[s] for s in seeds], [b[s] for s in seeds])


def compare(group: dict, baseline: dict) -> dict:
  """group against baseline: the differences of the compared accuracies,
  by Welch's t (stats.welch: `<key>_diff`) and, over the seeds both ran, by
  the paired t (stats.paired: `<key>_paired`), their sentences naming the
  test, and the ratios of the cost means."""
  out = dict(group=group['group'], baseline=baseline['group'])
  sentences = []
  say = lambda key, test, diff, n, m: sentences.append(stats.verdict(
      group['group'], baseline['group'], f'{ACCURACIES[key][0]} ({test})',
      diff, n, m))
  for key in COMPARED:
    out[f'{key}_diff'] = diff = stats.welch(group[key], baseline[key])
    if diff:
      say(key, WELCH, diff, group[key]['n'], baseline[key]['n'])
    out[f'{key}_paired'] = pair = matched(group, baseline, key)
    if pair and pair['n'] > 1:
      say(key, PAIRED, pair, pair['n'], pair['n'])
  for key in COSTS:
    out[f'{key}_ratio'] = _ratio(group[key], baseline[key])
  differs = implementation_differences(group, baseline)
  if differs:
    sentences.append(
        f'{group["group"]} and {baseline["group"]} were computed '
        'differently, not only designed differently: ' + '; '.join(
            f'{what} {", ".join(a)} against {", ".join(b)}'
            for what, (a, b) in differs.items())
        + ': the train time and images/s ratios (†) are partly the '
        "implementation's.")
  return out | dict(verdicts=sentences, implementation_differs=differs)


# ----------------------------------------------------------------- setup

def _by_value(runs: list[dict], group_of: dict, value) -> list[dict]:
  """[{'value': value(run), 'groups': the groups of the runs with it}], in
  first-seen order; runs whose value is None are left out."""
  out = {}
  for run in runs:
    if (v := value(run)) is not None:
      out.setdefault(v, {})[group_of[run['run']]] = None
  return [dict(value=v, groups=list(g)) for v, g in out.items()]


def _budget(run: dict) -> tuple | None:
  """(steps, batch size, epochs) from summary.json; None if one is absent."""
  values = tuple(run['summary'].get(k) for k in BUDGET_KEYS)
  return None if None in values else values


def _data(run: dict) -> tuple | None:
  """(source, train split, eval split) from config.json."""
  flat = rundir.flatten(run['config'] or {})
  return tuple(flat.get(k) for k in DATA_KEYS) if run['config'] else None


def setup(runs: list[dict], groups: list[dict], sweep: dict | None) -> dict:
  """What a reader needs to judge the numbers, with the groups each holds
  for: the budget of the finished runs (steps, batch, epochs), their data
  (source, train and eval splits), the --config flags the sweep gave them
  (sweep.json), and the runs whose schedule was cut short (summary.json's
  schedule_warning: {message: runs})."""
  group_of = {run: g['group'] for g in groups for run in g['runs']}
  counted = [r for r in runs if finished(r)]
  entries = (sweep or {}).get('runs', {})

  def flags(run):  # Older sweep.json files keep them at the top level only.
    entry = entries.get(run['run'])
    return (tuple(entry.get('overrides', sweep.get('overrides', [])))
            if entry else None)
  short = {}
  for run in runs:
    if warning := run['summary'].get('schedule_warning'):
      short.setdefault(warning, []).append(run['run'])
  return dict(budget=_by_value(counted, group_of, _budget),
              data=_by_value(counted, group_of, _data),
              overrides=_by_value(runs, group_of, flags),
              short_schedules=short)


def setup_markdown(setup_: dict) -> list[str]:
  def line(what, items, text):
    if not items:
      return []
    if len(items) == 1:
      return [f'- {what}: {text(items[0]["value"])}.']
    return [f'- {what}: ' + '; '.join(
        f'{text(i["value"])} ({", ".join(i["groups"])})' for i in items)
            + '.']
  budget = lambda v: (f'{v[0]:,} steps of {v[1]:,} images ({v[2]:.3g} '
                      f'epoch{"s" * (v[2] != 1)}, {v[0] * v[1]:,} images '
                      'seen)')
  data = lambda v: f'`{v[0]}`, trained on `{v[1]}`, validated on `{v[2]}`'
  flags = lambda v: ' '.join(f'`{f}`' for f in v) or 'none'
  lines = (line('Budget of each finished run', setup_['budget'], budget)
           + line('Data', setup_['data'], data)
           + line('Sweep-wide overrides (sweep.json)', setup_['overrides'],
                  flags))
  lines += [f'- Cut short: {", ".join(f"`{r}`" for r in runs)}: {message}'
            for message, runs in setup_['short_schedules'].items()]
  return lines


# ----------------------------------------------------------------- CSV

def run_columns(runs: list[dict], varied: list[str]) -> list[str]:
  """'run', 'group', 'seed', the varied keys, the accuracies (ACCURACIES'
  keys), the union of summary fields (train.py's order first, then others by
  first appearance), then eval_<split>_accuracy columns."""
  seen = {k for r in runs for k in r['summary']}
  columns = ['run', 'group', 'seed', *varied, *ACCURACIES]
  columns += [k for k in rundir.SUMMARY_KEYS if k in seen]
  for r in runs:
    columns += [k for k in r['summary'] if k not in columns]
  splits = sorted({s for r in runs for s, e in r['evals'].items()
                   if 'accuracy' in e})
  return list(dict.fromkeys(columns + [f'eval_{s}_accuracy' for s in splits]))


def run_row(run: dict, group: dict) -> dict:
  row = dict(run['summary'], run=run['run'], group=group['group'],
             seed=run['seed'])
  row |= {f'eval_{s}_accuracy': e.get('accuracy')
          for s, e in run['evals'].items()}
  row |= {key: accuracy(run, key) for key in ACCURACIES}
  return row | group['values']


def group_row(group: dict, comparison: dict | None) -> dict:
  row = dict(group=group['group'], **group['values'], runs=len(group['runs']),
             n=group['n'], excluded=' '.join(group['excluded']))
  for key in ACCURACIES:
    row |= {f'{key}_{k}': v for k, v in group[key].items()}
  row |= {f'{key}_mean': group[key] for key in COSTS}
  if comparison:
    row['vs'] = comparison['baseline']
    for key in COMPARED:
      diff = comparison[f'{key}_diff'] or {}
      row |= {f'{key}_diff{"" if k == "diff" else "_" + k}': v
              for k, v in diff.items()}
      pair = comparison[f'{key}_paired'] or {}
      row |= {f'{key}_paired_{k}': v for k, v in pair.items()}
    row |= {f'{key}_ratio': comparison[f'{key}_ratio'] for key in COSTS}
  return row


def _csv_value(value) -> str:
  if value is None:
    return ''
  if isinstance(value, float):
    return repr(value)  # Round-trips exactly through float().
  if isinstance(value, (list, dict)):
    return json.dumps(value)
  return str(value)


def write_csv(rows: list[dict], columns: list[str], path) -> None:
  def write(f):
    writer = csv.DictWriter(f, columns)
    writer.writeheader()
    writer.writerows({c: _csv_value(row.get(c)) for c in columns}
                     for row in rows)
  rundir.write_atomic(path, write, newline='')


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


def times(value) -> str:
  return '' if value is None else f'{value:.2f}×'


def points(diff: dict | None) -> str:
  """A difference of accuracies in points: '+0.40 ± 0.61', '+0.40 ± —'."""
  if diff is None:
    return ''
  half = '—' if diff['ci95'] is None else f'{diff["ci95"] * 100:.2f}'
  return f'{diff["diff"] * 100:+.2f} ± {half}'


def text(value) -> str:
  return '' if value is None else str(value)


def _md_table(header, align, rows) -> list[str]:
  esc = lambda s: str(s).replace('|', r'\|').replace('\n', ' ')
  lines = ['| ' + ' | '.join(header) + ' |',
           '|' + '|'.join('---:' if a == 'r' else ':---' for a in align) + '|']
  lines += ['| ' + ' | '.join(esc(c) for c in row) + ' |' for row in rows]
  return lines


def _shown(groups: list[dict]) -> list[str]:
  """The accuracies some group has: test acc only where there is one."""
  return [k for k in ACCURACIES if any(g[k]['n'] for g in groups)]


def groups_markdown(groups: list[dict], varied: list[str]) -> list[str]:
  shown = _shown(groups)
  header = ['group', *varied, 'n']
  for key in shown:
    header += [ACCURACIES[key][0], '± 95% CI', 'sd']
  header += ['params', 'MACs/image', 'images/s', 'train time']
  rows = []
  for g in groups:
    row = [g['group'], *map(text, g['values'].values()), g['n']]
    for key in shown:
      s = g[key]
      row += [acc(s['mean']), acc(s['ci95']) or '—', acc(s['sd']) or '—']
    rows.append(row + [si(g['params']), si(g['macs_per_image']),
                       rate(g['train_images_per_s']),
                       duration(g['train_seconds'])])
  lines = _md_table(header, 'l' * (1 + len(varied)) + 'r' * (
      len(header) - 1 - len(varied)), rows)
  lines += ['', 'Each group is the seeds of one design: runs whose '
            'config.json files are equal except for `seed` and bookkeeping '
            'keys. Statistics over its finished runs (n): mean, the '
            "half-width of the mean's 95% confidence interval (Student's t, "
            'n−1 degrees of freedom) and the standard deviation (n−1); — '
            'where n = 1. final val acc is the last evaluation, best val acc '
            'the best one during training. Costs are means.']
  excluded = [f'`{run}` ({status})' for g in groups
              for run, status in g['excluded'].items()]
  if excluded:
    lines += ['', 'Excluded from the statistics (did not finish): '
              + ', '.join(excluded) + '.']
  return lines


def comparisons_markdown(comparisons: list[dict], baseline: str | None,
                         reason: str) -> list[str]:
  if baseline is None:
    return [f'No comparisons: {reason}.']
  lines = [f'Baseline: `{baseline}` ({reason}).']
  if not comparisons:
    return lines + ['', 'No other group to compare.']
  columns = []  # (header, cell of a comparison)
  for key in COMPARED:
    name = ACCURACIES[key][0]
    if any(c[f'{key}_diff'] for c in comparisons):
      columns.append((f'Δ {name}, Welch (points)',
                      lambda c, k=key: points(c[f'{k}_diff'])))
    if any(_pairs(c, key) > 1 for c in comparisons):
      columns.append((f'Δ {name}, paired (points, pairs)',
                      lambda c, k=key: paired_points(c[f'{k}_paired'])))
  header = ['group', *(h for h, _ in columns),
            'MACs ×', 'params ×', 'train time ×', 'images/s ×']
  rows = [[c['group'], *(cell(c) for _, cell in columns),
           *(times(c[f'{k}_ratio']) + (
               '†' if k in TIMES and c['implementation_differs'] else '')
             for k in ('macs_per_image', 'params', 'train_seconds',
                       'train_images_per_s'))] for c in comparisons]
  lines += [''] + _md_table(header, 'l' + 'r' * (len(header) - 1), rows)
  lines += [''] + [f'- {s}' for c in comparisons for s in c['verdicts']]
  return lines + [
      '', 'Δ is group − baseline in accuracy points (percentage points), '
      '± the half-width of its 95% confidence interval; a difference is '
      "detectable when the interval excludes 0. Welch: Welch's t on the "
      'two groups as independent samples (Welch–Satterthwaite degrees of '
      'freedom; — where a side has one run). Paired: the paired t on the '
      'differences seed by seed, over the seeds both groups finished (same '
      'initialisation and data order; their count after the interval): '
      'what the seeds share cancels, so it is the sharper test where seeds '
      'match. Ratios are group / baseline of the means; † marks a time '
      'ratio of groups computed differently (ops, fused or unfused 1x1 '
      'heads, devices: summary.json\'s implementation), which the design '
      'alone does not explain.']


def _pairs(comparison: dict, key: str) -> int:
  return (comparison[f'{key}_paired'] or {}).get('n', 0)


def paired_points(pair: dict | None) -> str:
  """A paired difference in points with its pairs: '-2.95 ± 7.60 (3)'."""
  return f'{points(pair)} ({pair["n"]})' if pair and pair['n'] > 1 else ''



def runs_markdown(runs: list[dict], group_of: dict) -> list[str]:
  rows = []
  for r in runs:
    s = r['summary']
    rows.append([r['run'], group_of[r['run']], text(r['seed']),
                 si(s.get('params')), si(s.get('macs_per_image')),
                 si(s.get('xla_flops_per_image')),
                 rate(s.get('train_images_per_s')),
                 duration(s.get('train_seconds')),
                 *(acc(accuracy(r, k)) for k in ACCURACIES),
                 s.get('status', '')])
  lines = _md_table(
      ['run', 'group', 'seed', 'params', 'MACs/image', 'XLA FLOPs/image',
       'images/s', 'train time', *(v[0] for v in ACCURACIES.values()),
       'status'], 'lll' + 'r' * 8 + 'l', rows)
  errors = [(r['run'], r['summary']['error']) for r in runs
            if r['summary'].get('error')]
  if errors:
    lines += ['', 'Errors:', '']
    for run, error in errors:
      error = ' '.join(str(error).split())
      lines.append(f'- `{run}`: {error[:300]}{"…" if len(error) > 300 else ""}')
  return lines


def markdown(report: dict, runs: list[dict]) -> str:
  groups, sweep = report['groups'], report['sweep']
  lines = [f'# Sweep report: {report["title"]}', '']
  if sweep:
    lines += [f'Sweep `{sweep.get("sweep")}`, {sweep.get("seeds")} seed(s) '
              'per run (sweep.json).', '']
  if report['missing']:
    lines += ['In sweep.json but without a summary.json (not run yet): '
              + ', '.join(f'`{m}`' for m in report['missing']) + '.', '']
  if report['adopted']:
    lines += ['Not in sweep.json, counted with the runs of their design: '
              + ', '.join(f'`{run}` (`{group}`)' for run, group in
                          report['adopted'].items()) + '.', '']
  if report['left_out']:
    lines += ['Not in sweep.json, left out: ' + ', '.join(
        f'`{run}` ({why})' for run, why in report['left_out'].items())
              + '.', '']
  lines += ['## Setup', ''] + setup_markdown(report['setup']) + ['']
  lines += [f'## Groups ({len(groups)})', '']
  lines += groups_markdown(groups, report['varied_keys'])
  lines += ['', '## Comparisons', '']
  lines += comparisons_markdown(report['comparisons'], report['baseline'],
                                report['baseline_reason'])
  group_of = {run: g['group'] for g in groups for run in g['runs']}
  lines += ['', f'## Runs ({len(runs)})', ''] + runs_markdown(runs, group_of)
  return '\n'.join(lines) + '\n'


# ----------------------------------------------------------------- plots

def point_label(group: dict) -> str:
  """The varied keys' values ('branch5=3x3x2, reduce_act=linear'), else (no
  varied keys, or no config) the group's name."""
  return ', '.join(f'{k.rsplit(".", 1)[-1]}={v}'
                   for k, v in group['values'].items() if v is not None
                   ) or group['group']


def colour_key(varied: list[str]) -> str | None:
  """The varied key that colours the plots: model.module, else the first."""
  return MODULE_KEY if MODULE_KEY in varied else next(iter(varied), None)


def pareto_points(groups: list[dict], key: str, colour: str | None
                  ) -> list[plots.Point]:
  """What a Pareto plot of the cost `key` shows: each group with a mean
  final val acc and a positive mean cost."""
  out = []
  for g in groups:
    x, y = g[key], g['final_val_acc']
    if x is not None and x > 0 and y['n']:
      out.append(plots.Point(point_label(g), text(g['values'].get(colour)),
                             x, y['mean'], y['ci95']))
  return out


# ----------------------------------------------------------------- report

def analyse(directory) -> tuple[dict, list[dict]]:
  """The report of the runs under `directory` (without writing anything)
  and the runs it read. Raises ValueError if there is no summary.json under
  `directory` or its sweep.json is malformed."""
  directory = pathlib.Path(directory)
  sweep = load_sweep(directory)
  runs, adopted, left_out = outside_sweep(load_runs(directory, sweep), sweep)
  for run in runs:
    run['sweep_run'] = adopted.get(run['run'])
  grouped = group_runs(runs, sweep)
  varied = varied_keys([next((r['config'] for r in g if r['config']), None)
                        for g in grouped.values()])
  groups = [describe_group(name, g, varied) for name, g in grouped.items()]
  baseline, reason = choose_baseline(groups, sweep)
  comparisons = [compare(g, baseline) for g in groups
                 if baseline and g is not baseline and g['n']]
  names = {r['run'] for r in runs}
  report = dict(
      directory=str(directory), title=directory.resolve().name, sweep=sweep,
      missing=[d for d in (sweep or {}).get('runs', {}) if d not in names],
      adopted=adopted, left_out=left_out,
      varied_keys=varied, groups=groups,
      baseline=baseline and baseline['group'], baseline_reason=reason,
      comparisons=comparisons,
      runs=[{k: v for k, v in r.items() if k != 'config'}
            | {'has_config': r['config'] is not None} for r in runs])
  report['setup'] = setup(runs, groups, sweep)
  report['markdown'] = markdown(report, runs)
  return report, runs


def check_no_fewer_runs(csv_path: pathlib.Path, runs: list[dict]) -> None:
  """Raises where the report in csv_path (results.csv) counted a finished
  run that `runs` does not: overwriting it would silently change its
  numbers."""
  try:
    with open(csv_path, newline='') as f:
      before = {row['run'] for row in csv.DictReader(f)
                if row.get('status') == FINISHED}
  except (OSError, KeyError, csv.Error):
    return
  dropped = sorted(before - {r['run'] for r in runs if finished(r)})
  if dropped:
    raise ValueError(
        f'{csv_path} counts {len(before)} finished runs, among them '
        f'{len(dropped)} that this report would not: {", ".join(dropped)} '
        '(moved, deleted or not finished now). Nothing was written; rerun '
        'with --allow_fewer_runs to replace it.')


def make_report(directory, allow_fewer_runs: bool = False) -> dict:
  """Writes results.csv, groups.csv, results.md and the pareto_*.png into
  `directory`; returns the report (see analyse) with the CSV columns, the
  groups each plot shows and the files. Refuses (check_no_fewer_runs),
  writing nothing, to replace a report that counted finished runs this one
  does not, unless allow_fewer_runs."""
  directory = pathlib.Path(directory)
  report, runs = analyse(directory)
  if not allow_fewer_runs:
    check_no_fewer_runs(directory / 'results.csv', runs)
  groups, varied = report['groups'], report['varied_keys']
  files = {k: str(directory / f) for k, f in (
      ('csv', 'results.csv'), ('groups_csv', 'groups.csv'),
      ('md', 'results.md'))}
  group_of = {run: g for g in groups for run in g['runs']}
  columns = run_columns(runs, varied)
  write_csv([run_row(r, group_of[r['run']]) for r in runs], columns,
            files['csv'])
  vs = {c['group']: c for c in report['comparisons']}
  rows = [group_row(g, vs.get(g['group'])) for g in groups]
  group_columns = list(dict.fromkeys(k for row in rows for k in row))
  write_csv(rows, group_columns, files['groups_csv'])
  rundir.write_atomic(files['md'], lambda f: f.write(report['markdown']))
  plotted, colour = {}, colour_key(varied)
  for suffix, key, xlabel, what in plots.PLOTS:
    files[f'pareto_{suffix}'] = path = str(directory / f'pareto_{suffix}.png')
    found = pareto_points(groups, key, colour)
    plots.plot_pareto(found, path, xlabel, what, report['title'],
                      tick_label=lambda x: si(x, 2), colour_key=colour or '')
    plotted[suffix] = [p.label for p in found]
  return report | dict(columns=columns, group_columns=group_columns,
                       plotted=plotted, files=files)


def main(argv):
  if len(argv) != 2:
    raise app.UsageError(f'Give one sweep directory (runs in DIR/<run>/); '
                         f'got {argv[1:]}.')
  try:
    report = make_report(argv[1], FLAGS.allow_fewer_runs)
  except ValueError as e:
    raise SystemExit(f'error: {e}') from None
  if FLAGS.json:
    print(json.dumps(report, indent=1, default=str))
  else:
    print(report['markdown'])
    print('Wrote ' + ', '.join(report['files'].values()))


if __name__ == '__main__':
  app.run(main)
