"""A fast CIFAR-10 recipe on CPU, first cut: the small Inception net with
reductions at width 0.25, label smoothing, 7 epochs with an evaluation each
(a 15-minute budget on this project's 2-core AVX2 host); summary.json
records when it first reaches `target_accuracy` (time_to_target_s).

  python train.py --config=configs/cifar_fast.py --workdir=DIR \
      --config.data.source=../shared/data/cifar10-train-jpeg.tar.gz

Expected, on this project's 2-core AVX2-only CPU host: about 77.6% validation
accuracy in about 11 minutes of wall time, short of the 0.9 target (dated
record and the accuracy curve: docs/results.md, "cifar_fast"). The main job
trains it for 2 epochs, naive and reduced, 3 seeds each.

Args: module=naive|reduced, width=<float>, epochs=<float>.
"""

from configs import small_inception
from configs.common import parse_arg


def get_config(arg: str | None = None):
  arg = parse_arg(arg, module='reduced', width=0.25, epochs=7.0)
  config = small_inception.get_config(f'module={arg.module},bn=True')
  config.model.width = arg.width
  config.image_size = 28
  config.batch_size = 128
  config.num_epochs = arg.epochs
  config.learning_rate = 0.1
  config.warmup_epochs = 0.5
  config.label_smoothing = 0.1
  config.target_accuracy = 0.9
  config.eval_every_steps = 352       # About once an epoch of train[:90%].
  config.checkpoint_every_steps = 352
  config.log_every_steps = 88
  return config
