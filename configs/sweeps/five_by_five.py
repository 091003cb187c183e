"""The 5x5 branch: a true 5x5, two stacked 3x3s, or depthwise-separable.

  python scripts/sweep.py --sweep=configs/sweeps/five_by_five.py --workdir=runs/5x5

GoogLeNet only (the small CPU net has no 5x5 branch); size=cpu narrows it
to width 0.125 and 3 epochs. Reaches: not yet run here (docs/results.md,
"Not yet run here").
"""

from configs.common import parse_arg
from configs.sweeps.common import Run, base_config, name_of, product
from models.inception import CHOICES

# GoogLeNet's own 5x5 branch; the factorised forms are read against it.
BASELINE = 'branch5=5x5'


def get_sweep(arg=None):
  arg = parse_arg(arg, size='full')
  config = base_config('full', 'reduced')
  small = {'model.width': 0.125, 'num_epochs': 3.0} if arg.size == 'cpu' else {}
  return [Run(name_of(o), config, {**o, **small})
          for o in product(**{'model.branch5': list(CHOICES['branch5'])})]
