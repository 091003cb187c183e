"""The fast recipe in bfloat16 against float32 compute, 3 seeds each.

  python scripts/sweep.py --sweep=configs/sweeps/dtype.py --workdir=runs/dtype \
      --config.data.source=PATH/TO/cifar10

bfloat16 casts the activations and the weights a layer uses; params, the
batch-norm statistics and the optimizer state stay float32, and oneDNN
sums in float32. The question is whether that costs accuracy, so the
bfloat16 runs are read against the float32 ones. Where the CPU has no
bfloat16 instructions the bfloat16 runs are slower than float32 (the log
says so). size=fast (default) or fast_small: the recipe (the dated record
in docs/results.md, "dtype", is of fast_small, the recipe of its day).
"""

from configs.common import parse_arg
from configs.sweeps.common import Run, base_config

SEEDS = 3
BASELINE = 'float32'


def get_sweep(arg=None):
  arg = parse_arg(arg, size='fast')
  config = base_config(arg.size, 'reduced')
  return [Run(dtype, config, {'model.dtype': dtype})
          for dtype in ('float32', 'bfloat16')]
