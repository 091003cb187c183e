"""The fast recipe's levers (issue 17), one at a time against the recipe.

  python scripts/sweep.py --sweep=configs/sweeps/fast_levers.py --seeds=3 \
      --workdir=runs/levers --config.num_epochs=2 \
      --config.data.source=PATH/TO/cifar10

A lever's effect may be smaller than the spread between seeds: run
several. Reaches: each lever's difference from the recipe, dated in
docs/results.md, "fast_levers".

Each run flips one setting of configs/cifar_fast.py (reduced modules) to its
alternative, so the sweep reads each lever against the recipe as it stands,
whichever side of a lever the recipe has adopted:
  ema=0.99           evaluate an EMA of the weights (config.ema_decay);
  eval_flip=...      score the mean logits of each image and its mirror, or
                     stop doing so;
  schedule=...       one-cycle (linear warm-up, then linear decay to 0)
                     against warm-up + cosine;
  label_smoothing=.. 0.1 against none;
  bfloat16           bf16 compute (params stay float32);
  batch256,lr=...    twice the batch at twice the peak rate (the linear
                     scaling rule), the same epochs in half the steps,
                     evaluated as often per epoch (the recipe's cadences
                     are in epochs; size=cpu's are in steps).

EMA decay: 0.99 averages over about the last 1 / (1 - 0.99) = 100 steps
(under a third of an epoch at batch 128). Under the warm-up cap
(1 + t) / (10 + t) it is reached at step 890; 0.999 (step 8990) would
barely be reached in a short run, so it would measure the warm-up, not the
decay.

size=fast (default) or cpu: the recipe the levers are applied to.
"""

from configs.common import load_config, parse_arg
from configs.sweeps.common import Run, base_config, name_of

# The recipe as it stands; every lever is read against it.
BASELINE = 'baseline'


def levers(recipe) -> list[dict]:
  """Each lever as the overrides that move `recipe` to its other side."""
  batch = {'batch_size': 2 * recipe.batch_size,
           'learning_rate': 2 * recipe.learning_rate}
  return [
      {'ema_decay': 0.99 if recipe.ema_decay == 0 else 0.0},
      {'eval_flip': not recipe.eval_flip},
      {'schedule': 'cosine' if recipe.schedule == 'onecycle' else 'onecycle'},
      {'label_smoothing': 0.1 if recipe.label_smoothing == 0 else 0.0},
      {'model.dtype': 'float32' if recipe.model.dtype == 'bfloat16'
                      else 'bfloat16'},
      batch,
  ]


def _name(overrides: dict) -> str:
  if 'batch_size' in overrides:  # Shorter than name_of's key=value pairs.
    return (f'batch{overrides["batch_size"]},'
            f'lr={overrides["learning_rate"]:g}')
  return name_of(overrides)


def get_sweep(arg=None):
  arg = parse_arg(arg, size='fast')
  config = base_config(arg.size, 'reduced')
  runs = [Run(BASELINE, config)]
  return runs + [Run(_name(o), config, o) for o in levers(load_config(config))]
