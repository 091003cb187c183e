"""A tiny GoogLeNet (3a, 3b, pool, 4a) on tiny synthetic data, for a few
steps: tests and smoke runs, no download.

  python train.py --config=configs/test.py --workdir=/tmp/smoke
  python train.py --config=configs/test.py --workdir=/tmp/smoke_folder \
      --config.data.source=path/to/tiny/folder

Reaches: nothing to read: a smoke run, mostly compilation, whose accuracy
on random synthetic data means nothing.
"""

from configs import googlenet


def get_config(arg: str | None = None):
  config = googlenet.get_config(arg or 'stem=cifar,width=0.0625')
  # The first 3 of GoogLeNet's 9 modules: every layer kind, a fraction of
  # the compile time.
  config.model.num_modules = 3
  config.image_size = 8
  config.data.source = 'synthetic'
  config.data.synthetic_size = (200, 50)  # (train, test) images.
  config.data.synthetic_image_size = 8
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
