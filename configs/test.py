"""A tiny GoogLeNet and a few steps, for tests and smoke runs.

  python train.py --config=configs/test.py --workdir=/tmp/smoke \
      --config.data.source=path/to/tiny/folder
"""

from configs import googlenet


def get_config(arg: str | None = None):
  config = googlenet.get_config(arg or 'stem=cifar,width=0.0625')
  config.image_size = 8
  config.data.crop_padding = 1
  config.data.num_workers = 1
  config.batch_size = 8
  config.eval_batch_size = 8
  config.num_train_steps = 6
  config.warmup_epochs = 0.0
  config.learning_rate = 0.05
  config.log_every_steps = 1
  config.eval_every_steps = 3
  config.checkpoint_every_steps = 3
  config.keep_checkpoints = 2
  return config
