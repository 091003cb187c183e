"""GoogLeNet (Szegedy et al. 2014) with naive or reduced Inception modules.

  python train.py --config=configs/googlenet.py:module=reduced,stem=cifar,width=0.5 --workdir=/tmp/gnet
  python scripts/model_table.py --config=configs/googlenet.py:stem=imagenet,module=reduced

Reaches: not yet run here (sized for an accelerator): docs/results.md,
"Not yet run here".

Args: module=<models.inception.CHOICES['module']>,
  stem=<models.googlenet.STEMS>, width=<float>.
"""

from configs import base
from configs.common import parse_arg
from models.googlenet import GoogLeNet


def get_config(arg: str | None = None):
  arg = parse_arg(arg, module='reduced', stem='cifar', width=1.0)
  config = base.get_config()
  config.model.name = 'googlenet'
  config.model.module = arg.module
  config.model.stem = arg.stem
  config.model.width = arg.width
  # Multiplies the paper's r3 and r5; the network's default.
  config.model.reduce_scale = GoogLeNet.reduce_scale
  if arg.stem == 'imagenet':
    config.image_size = 224
    config.model.num_classes = 1000
    config.model.dropout = 0.4
  return config
