"""The fast recipe's levers (issue 17), one at a time against the recipe.

  python scripts/sweep.py --sweep=configs/sweeps/fast_levers.py --seeds=3 \
      --workdir=runs/levers \
      --config.data.source=../shared/data/cifar10-train-jpeg.tar.gz

A lever's effect may be a few tenths of a percent: run several seeds.

Each run changes one thing of configs/cifar_fast.py (reduced modules):
  ema=0.99           evaluate an EMA of the weights (config.ema_decay);
  eval_flip          score the mean logits of each image and its mirror;
  onecycle           linear warm-up then linear decay to 0 (a triangle)
                     instead of warm-up + cosine;
  bfloat16           bf16 compute (params stay float32);
  batch256,lr=0.2    twice the batch at twice the peak rate (the linear
                     scaling rule), the same epochs in half the steps,
                     evaluated as often per epoch;
  label_smoothing=0  the recipe's existing smoothing (0.1) taken away.

EMA decay: 0.99 averages over about the last 100 steps (0.3 of an epoch of
352 steps). With the warm-up cap (1 + t) / (10 + t) it is reached after
about 900 of the 2808 steps; 0.999 would never be reached in 8 epochs (the
cap is still 0.996 at the end), so it would measure the warm-up, not the
decay.

size=fast (default) or cpu: the recipe the levers are applied to.
"""

from configs.common import load_config, parse_arg
from configs.sweeps.common import Run, base_config

# The recipe as it stands; every lever is read against it.
BASELINE = 'baseline'


def get_sweep(arg=None):
  arg = parse_arg(arg, size='fast')
  config = base_config(arg.size, 'reduced')
  recipe = load_config(config)
  # Twice the batch: half the steps per epoch, so the step-counted schedule
  # of evaluations, checkpoints and logs is halved to stay per epoch.
  batch256 = {'batch_size': 2 * recipe.batch_size,
              'learning_rate': 2 * recipe.learning_rate}
  batch256 |= {key: max(1, recipe[key] // 2) for key in (
      'eval_every_steps', 'checkpoint_every_steps', 'log_every_steps')}
  levers = {
      'baseline': {},
      'ema=0.99': {'ema_decay': 0.99},
      'eval_flip': {'eval_flip': True},
      'onecycle': {'schedule': 'onecycle'},
      'bfloat16': {'model.dtype': 'bfloat16'},
      f'batch256,lr={batch256["learning_rate"]:g}': batch256,
      'label_smoothing=0': {'label_smoothing': 0.0},
  }
  return [Run(name, config, overrides) for name, overrides in levers.items()]
