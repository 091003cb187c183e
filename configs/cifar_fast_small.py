"""The previous fast CIFAR-10 recipe (until 2026-12-07): the small
Inception net with 1x1 reductions at width 0.25, batch 128, a one-cycle
schedule, no label smoothing, flip test-time augmentation, 7.5 epochs with
an evaluation every 2 and at the end; summary.json records when it first
reaches `target_accuracy` (0.9) as time_to_target_s.

  python train.py --config=configs/cifar_fast_small.py --workdir=DIR \
      --config.data.source=PATH/TO/cifar10

Reaches: the "before" of today's configs/cifar_fast.py, dated in
docs/results.md, "cifar_fast".

Args: module=<models.inception.CHOICES['module']>, width=<float>,
  epochs=<float>.
"""

from configs import small_inception
from configs.common import every_epochs, parse_arg


def get_config(arg: str | None = None):
  arg = parse_arg(arg, module='reduced', width=0.25, epochs=7.5)
  config = small_inception.get_config(f'module={arg.module},bn=True')
  config.model.width = arg.width
  config.image_size = 28
  config.batch_size = 128
  config.num_epochs = arg.epochs
  config.learning_rate = 0.1
  config.schedule = 'onecycle'
  config.warmup_epochs = 0.5
  config.label_smoothing = 0.0
  config.eval_flip = True
  config.target_accuracy = 0.9
  # A flip evaluation scores the validation images twice, so evaluating
  # every epoch would not fit the budget.
  every_epochs(config, eval=2.0, checkpoint=2.0, log=0.25)
  return config
