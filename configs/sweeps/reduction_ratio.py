"""Reduction widths at 0.25x, 0.5x, 1x and 2x of the default (reduced modules).

  python scripts/sweep.py --sweep=configs/sweeps/reduction_ratio.py:size=cpu --workdir=runs/ratio

full: GoogLeNet's r3, r5 times `model.reduce_scale`; cpu: the small net's
`model.reduce_ratio` (r3 = ratio * C_in) times the same factors. Reaches:
not yet run here (docs/results.md, "Not yet run here").
"""

from configs.common import load_config, parse_arg
from configs.sweeps.common import SMALL_NET_SIZES, Run, base_config

FACTORS = (0.25, 0.5, 1.0, 2.0)
# The default reduction width; the other factors are read against it.
BASELINE = 'reduce_x1'


def get_sweep(arg=None):
  arg = parse_arg(arg, size='full')
  config = base_config(arg.size, 'reduced')
  key = ('reduce_ratio' if arg.size in SMALL_NET_SIZES else 'reduce_scale')
  default = load_config(config).model[key]  # The config's own value.
  return [Run(f'reduce_x{f:g}', config, {f'model.{key}': f * default})
          for f in FACTORS]
