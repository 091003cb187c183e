"""The small Inception net of Zhang et al. 2017 on CIFAR-10 (28x28 crops).

  python train.py --config=configs/small_inception.py:module=reduced,bn=True --workdir=/tmp/small
  python scripts/model_table.py --config=configs/small_inception.py --compare

Reaches: not yet run here at full width (docs/results.md, "Not yet run
here"); its width-0.25 versions are configs/cifar_cpu.py and
configs/cifar_fast.py.

Args: module=<models.inception.CHOICES['module']>, bn=True|False.
"""

from configs import base
from configs.common import parse_arg
from models.small_inception import SmallInception


def get_config(arg: str | None = None):
  arg = parse_arg(arg, module='naive', bn=True)
  config = base.get_config()
  config.model.name = 'small_inception'
  config.model.module = arg.module
  config.model.norm = 'batch' if arg.bn else 'none'
  config.model.use_bias = not arg.bn
  config.model.pool = 'none'        # Zhang's modules have no pool branch.
  # module=reduced: r3 = reduce_ratio * C_in; the network's default.
  config.model.reduce_ratio = SmallInception.reduce_ratio
  config.image_size = 28            # Random 28x28 crops of 32x32 images.
  config.data.crop_padding = 0
  return config
