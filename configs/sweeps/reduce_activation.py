"""ReLU against linear 1x1 reductions: is the "dual-purpose" ReLU worth it?

  python scripts/sweep.py --sweep=configs/sweeps/reduce_activation.py:size=cpu --workdir=runs/act

Reaches: a short check only so far (docs/results.md, "reduce_activation");
at full length, not yet run here.
"""

from configs.common import parse_arg
from configs.sweeps.common import Run, base_config, name_of, product

# The paper's dual-purpose ReLU is the default; linear is the ablation.
BASELINE = 'reduce_act=relu'


def get_sweep(arg=None):
  arg = parse_arg(arg, size='full')
  return [Run(name_of(o), base_config(arg.size, 'reduced'), o)
          for o in product(**{'model.reduce_act': ['relu', 'linear']})]
