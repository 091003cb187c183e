"""The headline: the same network and recipe, naive against reduced modules.

  python scripts/sweep.py --sweep=configs/sweeps/naive_vs_reduced.py:size=cpu --workdir=runs/nvr
  python scripts/sweep.py --sweep=configs/sweeps/naive_vs_reduced.py --workdir=runs/nvr_full

Reaches: what the reductions save and cost in accuracy; `make main` runs it
at size=fast, dated in docs/results.md, "naive_vs_reduced".
"""

from configs.common import parse_arg
from configs.sweeps.common import Run, base_config

# The question is what the reductions buy, so the reduced run is read
# against the naive one ("reduced vs naive": its savings and its cost).
BASELINE = 'naive'


def get_sweep(arg=None):
  arg = parse_arg(arg, size='full', epochs=0.0)
  args = {'epochs': arg.epochs} if arg.epochs else {}  # size=fast's budget.
  return [Run(module, base_config(arg.size, module, **args))
          for module in ('naive', 'reduced')]
