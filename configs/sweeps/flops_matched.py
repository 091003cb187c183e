"""Naive modules narrowed until they cost what the reduced network costs.

  python scripts/sweep.py --sweep=configs/sweeps/flops_matched.py:size=cpu --workdir=runs/matched

The naive network's width multiplier is found by bisection on the
accounting (shapes only), so its MACs per image match the reduced
network's (within accounting.match_width's tolerance). Is the reduced module better at equal compute, or
just cheaper? Reaches: dated in docs/results.md, "flops_matched".
"""

from configs.common import parse_arg
from configs.sweeps.common import Run, base_config, matched_width

# The reduced network sets the compute the narrowed naive one is matched to,
# so both naive runs are read against it.
BASELINE = 'reduced'


def get_sweep(arg=None):
  arg = parse_arg(arg, size='full')
  naive, reduced = (base_config(arg.size, m) for m in ('naive', 'reduced'))
  width = matched_width(naive, reduced)
  return [
      Run('reduced', reduced),
      Run('naive', naive),
      Run('naive_matched', naive, {'model.width': width}),
  ]
