"""The small Inception net at width 0.25 for 6 epochs: CIFAR-10 on a CPU,
the sweeps' size=cpu (naive_vs_reduced:size=cpu).

  python train.py --config=configs/cifar_cpu.py --workdir=/tmp/cifar_cpu \
      --config.data.source=PATH/TO/cifar10

Reaches: dated accuracy per host in docs/results.md, "naive_vs_reduced at
6 epochs".

Args: module=<models.inception.CHOICES['module']>, width=<float> (as
configs/small_inception.py).
"""

from configs import small_inception
from configs.common import parse_arg


def get_config(arg: str | None = None):
  arg = parse_arg(arg, module='reduced', width=0.25)
  config = small_inception.get_config(f'module={arg.module},bn=True')
  config.model.width = arg.width
  config.batch_size = 128
  config.num_epochs = 6.0
  config.learning_rate = 0.1
  config.warmup_epochs = 0.5
  config.eval_every_steps = 500
  config.checkpoint_every_steps = 500
  config.log_every_steps = 50
  return config
