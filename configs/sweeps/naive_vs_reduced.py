"""The headline: the same network and recipe, naive against reduced modules.

  python scripts/sweep.py --sweep=configs/sweeps/naive_vs_reduced.py:size=cpu --workdir=runs/nvr
  python scripts/sweep.py --sweep=configs/sweeps/naive_vs_reduced.py --workdir=runs/nvr_full

Args: size (configs/sweeps/common.py's SIZES), epochs (0: the size's own
budget), naive=full|matched: the naive net at the reduced one's widths
(full), or narrowed until it costs the reduced net's MACs per image
(matched: the same compute, so the accuracy difference is the design's).

Reaches: what the reductions save and cost in accuracy; `make main` runs it
at size=fast,naive=matched, dated in docs/results.md, "naive_vs_reduced".
"""

from configs.common import parse_arg
from configs.sweeps.common import Run, base_config, matched_width

# The question is what the reductions buy, so the reduced run is read
# against the naive one ("reduced vs naive": its savings and its cost).
BASELINE = 'naive'


def get_sweep(arg=None):
  arg = parse_arg(arg, size='full', epochs=0.0, naive='full')
  if arg.naive not in ('full', 'matched'):
    raise ValueError(f'naive={arg.naive!r}; choose full or matched.')
  args = {'epochs': arg.epochs} if arg.epochs else {}  # size=fast's budget.
  naive, reduced = (base_config(arg.size, m, **args)
                    for m in ('naive', 'reduced'))
  narrow = ({'model.width': matched_width(naive, reduced)}
            if arg.naive == 'matched' else {})
  return [Run('naive', naive, narrow), Run('reduced', reduced)]
