"""The fast recipe's levers, each switched off alone against the recipe.

  python -m scripts.sweep --sweep=configs/sweeps/fast_levers.py --seeds=3 \
      --workdir=runs/levers --config.data.source=PATH/TO/cifar10

A lever's effect may be smaller than the spread between seeds: run
several. Reaches: what each lever buys, with its CI, in docs/results.md,
"The fast recipe's levers".

Each run moves one lever of configs/cifar_fast.py (reduced modules) to its
other side (so a lever the recipe has not adopted is tried on):
  whiten            the frozen, data-initialised whitening stem (off: the
                    2x2 stem is learned like any conv);
  bias_lr_scale     the batch-norm biases' 64x learning rate (off: 1x);
  muon_lr           Muon for the conv kernels (off: the decoupled SGD's
                    steps and weight decay, as for every other param);
  lookahead_every   lookahead every 5 steps (off: none);
  alternate_flip    the alternating flip (off: random flips);
  random_crop       translate by up to 2 pixels (off: none);
  eval_flip,...     the six-view test-time augmentation (off: none);
  batch_size        half the batch, the same per-example hyperparameters
                    (decoupled SGD scales the step with the batch);
  label_smoothing   0.2 (off: 0);
  act               ReLU (other side: airbench's GELU);
  block             Inception modules (off: airbench's plain 3x3 convs at
                    the same widths).
Args: epochs=<float>, the recipe's budget (default: the recipe's own).
"""

from configs.common import load_config, parse_arg
from configs.sweeps.common import Run, base_config, name_of

# The recipe as it stands; every lever is read against it.
BASELINE = 'baseline'


def levers(recipe) -> list[dict]:
  """Each lever as the overrides that move `recipe` to its other side."""
  data, model = recipe.data, recipe.model
  acts = ('relu', 'relu') if model.act == 'gelu' else ('gelu', 'gelu')
  return [
      {'whiten': not recipe.whiten},
      {'bias_lr_scale': 1.0 if recipe.bias_lr_scale != 1.0 else 64.0},
      {'muon_lr': 0.0 if recipe.muon_lr else 0.06},
      {'lookahead_every': 0 if recipe.lookahead_every else 5},
      {'data.alternate_flip': not data.alternate_flip},
      {'data.random_crop': not data.random_crop},
      {'eval_flip': not recipe.eval_flip,
       'eval_translate': 0 if recipe.eval_translate else 1},
      {'batch_size': recipe.batch_size // 2},
      {'label_smoothing': 0.0 if recipe.label_smoothing else 0.2},
      {'model.act': acts[0], 'model.reduce_act': acts[1]},
      {'model.block': 'conv' if model.block == 'inception' else 'inception'},
  ]


def get_sweep(arg=None):
  arg = parse_arg(arg, epochs=0.0)
  config = base_config('fast', 'reduced',
                       **({'epochs': arg.epochs} if arg.epochs else {}))
  runs = [Run(BASELINE, config)]
  return runs + [Run(name_of(o), config, o) for o in levers(load_config(config))]
