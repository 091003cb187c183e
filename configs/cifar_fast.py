"""The fast CIFAR-10 recipe: airbench's method (arXiv 2404.00498,
lib_airbench93.py) around a net of its family built of Inception modules
(models/air_inception.py in GoogLeNet's shape: a 3x3 stem, then
[pool, module, module] x 3), reduced modules, trained on train[:90%].

  python train.py --config=configs/cifar_fast.py --workdir=DIR \
      --config.data.source=PATH/TO/cifar10

Its levers, each a key that a sweep can switch off
(configs/sweeps/fast_levers.py): the frozen whitening stem with its bias
trained for 3 epochs (whiten), batch norm without a scale, airbench's
decoupled Nesterov SGD with a 64x learning rate for the batch-norm biases
(optimizer=sgd_decoupled, bias_lr_scale), Muon for the conv kernels
(muon_lr, from airbench94_muon.py; its learning rate chosen at 4 epochs
among 0.06, 0.12 and 0.24), label smoothing 0.2, lookahead every 5 steps,
translate-2 with the alternating flip, and test-time augmentation over
flips and 1-pixel translations at the last evaluation.
Three departures from airbench, for a 2-core CPU: ReLU, not GELU (cheaper
there; act=gelu restores it); batch 512, not 1024 (the same speed here,
twice the steps per epoch; the decoupled hyperparameters keep the step per
example); and bfloat16 compute (params, batch-norm statistics and the
optimizer stay float32), which runs faster where the CPU has AVX512_BF16 or
AMX, and on GPUs and TPUs. On a CPU without them pass dtype=float32 (a
bfloat16 run there warns in its log that it is slower).

Reaches: docs/results.md, "cifar_fast" (the dated record: each seed's
accuracy, curve and wall time, and the host).

Args: module=naive|reduced, block=inception|conv, width=<float>,
epochs=<float>, dtype=bfloat16|float32.
"""

from configs import base
from configs.common import every_epochs, parse_arg


def get_config(arg: str | None = None):
  arg = parse_arg(arg, module='reduced', block='inception', width=1.0,
                  epochs=13.0, dtype='bfloat16')
  config = base.get_config()
  config.model.update(dict(
      name='air_inception', module=arg.module, block=arg.block,
      width=arg.width, dtype=arg.dtype, stem_width=64, widths=(128, 256, 256),
      head_scale=1 / 9, act='relu', reduce_act='relu', norm_scale=False,
      stem_pool_first=False))          # True: airbench's pool-then-norm.
  config.data.crop_padding = 2         # airbench's translate by up to 2.
  config.data.alternate_flip = True
  config.batch_size = 512
  config.num_epochs = arg.epochs
  config.optimizer = 'sgd_decoupled'   # Per 1024 examples (optim.py).
  config.learning_rate = 11.5
  config.weight_decay = 0.0153
  config.momentum = 0.85
  config.bias_lr_scale = 64.0
  config.muon_lr = 0.06                # Muon for the conv kernels (optim.py).
  config.label_smoothing = 0.2
  config.schedule = 'onecycle'         # 0.2 -> 1 over 23%, then -> 0.07.
  config.warmup_epochs = 0.23 * arg.epochs
  config.lr_start_factor = 0.2
  config.lr_end_factor = 0.07
  config.lookahead_every = 5
  config.whiten = True
  config.whiten_bias_epochs = 3.0
  config.eval_flip = True
  config.eval_translate = 1
  config.eval_tta_final_only = True    # As airbench: TTA costs 6 passes.
  config.eval_batch_size = 1000
  config.target_accuracy = 0.9
  every_epochs(config, eval=1.0, checkpoint=2.0, log=0.25)
  return config
