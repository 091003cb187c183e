"""Prints a model's per-layer params and multiply-adds, cross-checked with XLA.

  python scripts/model_table.py --config=configs/googlenet.py:stem=imagenet,module=reduced
  python scripts/model_table.py --config=configs/small_inception.py --compare --json

--compare prints the naive and reduced variants of the config side by side.
"""

import json

from absl import app, flags
from ml_collections import config_flags

import accounting
from configs.common import parse_flags

config_flags.DEFINE_config_file('config', None, 'Model config file[:args].',
                                lock_config=True)
flags.DEFINE_bool('compare', False, 'Naive and reduced side by side.')
flags.DEFINE_bool('json', False, 'Print JSON instead of tables.')
flags.DEFINE_bool('xla', True, 'Compile the forward pass for XLA flops.')
FLAGS = flags.FLAGS


def _m(x: float) -> str:
  return f'{x / 1e6:,.2f}M'


def print_table(name: str, s: dict) -> None:
  print(f'\n== {name}')
  print(f'{"layer":34} {"type":14} {"input":>14} {"output":>14} '
        f'{"params":>10} {"MACs":>10}')
  for r in s['layers']:
    shape = lambda t: 'x'.join(map(str, t))
    print(f'{r["name"]:34} {r["type"]:14} {shape(r["in_shape"]):>14} '
          f'{shape(r["out_shape"]):>14} {r["params"]:>10,} {_m(r["macs"]):>10}')
  print(f'\n{"module":34} {"params":>12} {"MACs":>12}')
  for g, v in s['groups'].items():
    if v['params'] or v['macs']:
      print(f'{g:34} {v["params"]:>12,} {_m(v["macs"]):>12}')
  t = s['total']
  print(f'{"total":34} {t["params"]:>12,} {_m(t["macs"]):>12}')
  if 'xla_flops' in t:
    print(f'XLA cost_analysis flops/image: {t["xla_flops"] / 1e9:.3f}G '
          f'= {t["xla_flops_over_2macs"]:.3f} x 2*MACs '
          '(elementwise ops add flops; padded taps are not counted)')


def with_module(config, module: str):
  config = config.unlock().copy_and_resolve_references()
  config.model.module = module
  return config


def main(argv):
  del argv  # parse_flags refused any but the program's name.
  try:
    show(FLAGS.config)
  except ValueError as e:  # E.g. an unknown model name or a bad width.
    raise SystemExit(f'error: {e}') from None


def show(config) -> None:
  """Prints the tables (or JSON) of `config`, or of both its variants."""
  if not FLAGS.compare:
    s = accounting.summarize(config, FLAGS.xla)
    print(json.dumps(s, indent=1) if FLAGS.json else '', end='')
    if not FLAGS.json:
      print_table(f'{config.model.name} ({config.model.module})', s)
    return
  both = {m: accounting.summarize(with_module(config, m), FLAGS.xla)
          for m in ('naive', 'reduced')}
  ratios = {k: both['naive']['total'][k] / both['reduced']['total'][k]
            for k in both['naive']['total'] if k != 'xla_flops_over_2macs'}
  if FLAGS.json:
    print(json.dumps({**both, 'naive_over_reduced': ratios}, indent=1))
    return
  for m, s in both.items():
    print_table(f'{config.model.name} ({m})', s)
  n, r = both['naive'], both['reduced']
  print('\n== naive vs reduced, per module')
  print(f'{"module":20} {"naive params":>14} {"reduced":>12} {"naive MACs":>12} '
        f'{"reduced":>10} {"MAC ratio":>10} {"out C naive":>12} {"reduced":>8}')
  for g in n['groups']:
    a, b = n['groups'][g], r['groups'].get(g, {'params': 0, 'macs': 0})
    if not (a['macs'] or b['macs']):
      continue
    ratio = a['macs'] / b['macs'] if b['macs'] else float('nan')
    print(f'{g:20} {a["params"]:>14,} {b["params"]:>12,} {_m(a["macs"]):>12} '
          f'{_m(b["macs"]):>10} {ratio:>10.2f} {a["out_shape"][-1]:>12} '
          f'{b["out_shape"][-1]:>8}')
  print('\nnaive / reduced: ' + ', '.join(f'{k} {v:.2f}x' for k, v in ratios.items()))


if __name__ == '__main__':
  flags.mark_flags_as_required(['config'])
  app.run(main, flags_parser=parse_flags)
