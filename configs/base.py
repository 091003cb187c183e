"""Base config: every key, documented. Model configs import it and change a few.

  python train.py --config=configs/base.py --workdir=/tmp/run

Reaches: as configs/googlenet.py (its defaults), not yet run here
(docs/results.md, "Not yet run here").
"""

import ml_collections
from ml_collections import config_dict


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()

  # Model: `name` picks the network from models.MODELS; every other key is a
  # field of that network or an Inception knob (models.InceptionOptions).
  # Each knob's valid values are models.inception.CHOICES (a config with
  # another is refused, naming them).
  config.model = ml_collections.ConfigDict(dict(
      name='googlenet',
      num_classes=10,
      width=1.0,               # Global width multiplier (> 0).
      dropout=0.0,             # Before the dense head.
      module='reduced',        # The module design (Fig. 2a naive, 2b reduced).
      act='relu',              # After every other conv.
      reduce_act='relu',       # After the 1x1 reductions (relu: dual-purpose).
      branch3='standard',      # The 3x3 branch's conv (or depthwise + 1x1).
      branch5='5x5',           # The 5x5 branch's conv(s).
      pool='max',              # The pool branch's pool, if any.
      norm='batch',            # After each conv.
      norm_scale=True,         # Batch norm learns a scale (else 1).
      use_bias=False,          # Conv bias.
      fuse_pointwise=True,     # 1x1 siblings reading one input: one GEMM.
      dtype='float32',         # Compute dtype; params stay float32.
  ))
  # How convs, pools, batch norms and 1x1s are computed (ops/; ops.resolve
  # decides 'auto' per backend); the valid values are ops.CHOICES and
  # ops.CPU_VECTOR_WIDTHS. Same params and math whichever is chosen: not part
  # of the model, so a checkpoint resumes under any of them.
  config.ops = ml_collections.ConfigDict(dict(
      conv='auto',             # Dense kxk convolutions.
      pool='auto',             # Pools (oneDNN: max pools).
      norm='auto',             # The batch norms' backward.
      pointwise='auto',        # The 1x1s' GEMMs.
      cpu_vector_width='auto', # XLA:CPU's loops (auto: 512 with AVX-512).
  ))
  config.image_size = 32       # Network input is image_size x image_size x 3.

  # Data: input_pipeline.load_split reads this block, and
  # input_pipeline.default_config() returns a copy of it. `source` is 'tfds'
  # (TFDS's `dataset`, prepared once in `data_dir`), 'synthetic' (built in:
  # CIFAR-shaped, 10 classes, splits train and test, made in memory from the
  # synthetic_* keys; for smoke runs and tests) or a local
  # `<split>/<class>/*.{png,jpg,jpeg}` as a folder, .tar.gz/.tgz or .zip
  # (decoded once, cached in `cache_dir`), e.g. PATH/TO/cifar10.tar.gz (a
  # folder named like a built-in source: ./synthetic). A split is a name with an optional percent slice:
  # 'train', 'train[:90%]', 'train[90%:]' (= 'train[-10%:]'). Every source
  # loads the whole named split, then keeps the [start%, end%) range of every
  # class in stored order (local: by file name; TFDS: its record order; TFDS's
  # own slicing is not used). So the train and eval splits below are
  # disjoint, stratified and the same on every run.
  config.data = ml_collections.ConfigDict(dict(
      source='tfds',           # tfds | synthetic | a local path.
      dataset='cifar10',       # TFDS name; source='tfds' only.
      data_dir=config_dict.placeholder(str),   # TFDS data dir; None: default.
      cache_dir=config_dict.placeholder(str),  # None: ~/.cache/pointwise.
      train_split='train[:90%]',  # The first 90% of every class.
      eval_split='train[90%:]',   # Validation: the last 10% of every class.
      test_split='test',       # Evaluated at the end if the source has it.
      num_workers=2,           # Processes decoding a local source (0: one
                               # per core; 1: in the main process).
      random_crop=True,        # Random crop after reflect padding.
      crop_padding=4,
      flip=True,               # Random horizontal flip.
      alternate_flip=False,    # flip: mirror a fixed random half of the
                               # images in even epochs, the other half in odd
                               # ones (input_pipeline.alternating_flips).
      normalize=True,          # Per-channel mean / std of the train split.
      # source='synthetic' only. Examples of (train, test): a tenth of
      # CIFAR-10's, so that a smoke run loads its data in a fraction of a
      # second and still learns well above chance.
      synthetic_size=(5000, 1000),
      synthetic_image_size=32,  # Stored side, >= config.image_size (the
                                # steps crop to it): 8 for configs/test.py.
      synthetic_seed=0,        # The data's own seed: config.seed varies
                               # across a sweep's replicates, the data not.
  ))

  # Optimisation.
  config.seed = 0
  config.batch_size = 128      # Global; must divide by the device count.
  config.num_epochs = 30.0
  config.num_train_steps = -1  # > 0 overrides num_epochs.
  # sgd (Nesterov momentum) | adamw | sgd_decoupled: airbench's Nesterov
  # SGD, whose learning_rate and weight_decay are per 1024 examples and
  # decoupled from the momentum and batch size (optim.decoupled_sgd).
  config.optimizer = 'sgd'
  config.learning_rate = 0.1   # Peak; sgd and adamw: not rescaled by batch.
  config.momentum = 0.9
  config.weight_decay = 5e-4
  config.bias_lr_scale = 1.0   # Batch-norm biases' learning rate x this.
  config.label_smoothing = 0.0
  config.schedule = 'cosine'   # cosine | step | onecycle.
  # cosine and step warm up linearly from 0 to learning_rate; onecycle
  # warms up from lr_start_factor x learning_rate, then decays linearly to
  # lr_end_factor x learning_rate at the last step.
  config.warmup_epochs = 1.0
  config.lr_start_factor = 0.0
  config.lr_end_factor = 0.0
  config.step_epochs = (0.5, 0.75)  # step: fractions of training, lr x0.1 each.
  config.grad_clip_norm = 0.0  # 0 = off.
  # > 0: the conv kernels (4-D, but the whitening stem's) step by Muon
  # (airbench94_muon.py; optim.muon) at this learning rate times the
  # schedule's fraction of its peak, with Nesterov momentum muon_momentum
  # and muon_ns_steps Newton-Schulz iterations, each kernel rescaled to norm
  # sqrt(its output channels) first, no weight decay; the other params take
  # `optimizer`. 0 = off.
  config.muon_lr = 0.0
  config.muon_momentum = 0.6
  config.muon_ns_steps = 3
  # > 0: keep an exponential moving average of the params and batch stats,
  # updated every step, and evaluate it instead of the live weights. Its
  # decay is min(ema_decay, (1 + step) / (10 + step)) (TF's warm-up), so it
  # starts at the init and averages over about the last 1 / (1 - ema_decay)
  # steps once warm. 0 = off (and the checkpoints hold no average).
  config.ema_decay = 0.0
  # > 0: lookahead (airbench): every this many steps the slow weights (params
  # and batch stats) move towards the live ones by 1 - d, with
  # d = lookahead_decay * (step / total_steps)**3, and the live ones are
  # reset to them; the last step ends on the slow weights. 0 = off.
  config.lookahead_every = 0
  config.lookahead_decay = 0.95**5
  # A frozen 2x2 whitening stem (models with one: air_inception): its kernel
  # from the training images' patch covariance (whitening.py), its bias
  # trained for the first whiten_bias_epochs.
  config.whiten = False
  config.whiten_bias_epochs = 3.0

  # Evaluation, checkpoints and logging: each cadence in steps
  # (*_every_steps) or in epochs (*_every_epochs, rounded to a step),
  # whichever is > 0; the other is 0 (config_checks.every_steps).
  config.eval_every_steps = 1000
  config.eval_every_epochs = 0.0
  config.target_accuracy = 0.0  # > 0: summary.json's time_to_target_s is the
                                # wall time at the first evaluation reaching it.
  config.eval_batch_size = 500
  config.eval_flip = False     # Evaluate the mean logits of each image and
                               # its horizontal mirror (test-time flip).
  config.eval_translate = 0    # > 0: half the logits (flip-averaged with
                               # eval_flip), half the mean of the same for the
                               # image shifted this many pixels down-right
                               # and up-left (airbench's TTA).
  config.eval_tta_final_only = False  # Evaluations before the last one
                               # score the images alone (TTA costs passes).
  config.checkpoint_every_steps = 1000
  config.checkpoint_every_epochs = 0.0
  config.keep_checkpoints = 3
  config.log_every_steps = 50
  config.log_every_epochs = 0.0
  config.stop_after_steps = -1  # > 0: checkpoint and stop after this many
                                # steps of this run (e.g. a job's time slot).

  # Multi-host: call jax.distributed.initialize() (also --distributed).
  config.distributed = False
  return config
