"""Checks that turn a bad config into one clear error before any data is
loaded or anything compiles: unknown choices, sizes that do not divide the
devices, an image size the data or the network cannot take. Also where the
log, evaluation and checkpoint cadences, in steps or epochs, become steps
(every_steps)."""

import jax
import jax.numpy as jnp
import ml_collections
from flax import linen as nn

import ops
import optim
from models import build_model
from models.layers import check_choice


def check_config(config: ml_collections.ConfigDict) -> nn.Module:
  """Clear errors for bad configs, raised before any data or compilation:
  check_values with the ops this host resolves to (an op it cannot run
  raises here), and the batch sizes against this process's devices.
  Returns the network it checked, built with those ops: the run's model."""
  model = check_values(config, ops.resolve(config))
  check_batch_sizes(config, jax.device_count())
  ops.compiler_options(config)
  return model


def check_values(config: ml_collections.ConfigDict,
                 op_impls: ops.Ops | None = None) -> nn.Module:
  """The checks of check_config that hold on any host, without starting
  JAX's backend (scripts/sweep.py runs them before launching, in a process
  that must not hold an accelerator): unknown choices and keys, values out
  of range, an image size the data or the network cannot take. op_impls:
  the ops to build the network with; None checks the op names only and
  builds it with XLA's reference ops (the same shapes under every choice).
  Returns the network built."""
  def fail(msg):
    raise ValueError(f'Bad config: {msg}')
  if config.optimizer not in optim.OPTIMIZERS:
    fail(f'optimizer={config.optimizer!r}; choose one of {optim.OPTIMIZERS}.')
  if config.schedule not in optim.SCHEDULES:
    fail(f'schedule={config.schedule!r}; choose one of {optim.SCHEDULES}.')
  if not 0 <= config.ema_decay < 1:
    fail(f'ema_decay={config.ema_decay} must be in [0, 1) (0 = off); e.g. '
         '--config.ema_decay=0.999.')
  _check_recipe(config, fail)
  check_batch_sizes(config)
  for cadence in CADENCES:
    _cadence(config, cadence)
  if config.num_train_steps <= 0 and config.num_epochs <= 0:
    fail('set num_epochs > 0 or num_train_steps > 0.')
  if config.data.source == 'synthetic':  # Its side is known before loading.
    check_image_fits(config.image_size, config.data.synthetic_image_size,
                     "the 'synthetic' source's images",
                     ' or --config.data.synthetic_image_size larger')
  if op_impls is None:
    _check_op_names(config)
    op_impls = ops.Ops()
  # Unknown model names, keys and choices raise here.
  model = build_model(config.model, op_impls)
  check_input_size(model, config)
  if config.whiten and not getattr(model, 'has_whitening_stem', False):
    fail(f'whiten=True needs a model with a whitening stem (air_inception); '
         f'{config.model.name!r} has none. Set --config.whiten=False.')
  return model


def _check_recipe(config: ml_collections.ConfigDict, fail) -> None:
  """The airbench levers' values (configs/base.py documents each)."""
  if config.bias_lr_scale <= 0:
    fail(f'bias_lr_scale={config.bias_lr_scale} must be > 0 (1 = off).')
  for key in ('lr_start_factor', 'lr_end_factor'):
    if not 0 <= config[key] <= 1:
      fail(f'{key}={config[key]} must be in [0, 1] (a fraction of the peak).')
  if config.optimizer == 'sgd_decoupled' and not (
      config.learning_rate > 0 and 0 <= config.momentum < 1):
    fail(f'optimizer=sgd_decoupled needs learning_rate > 0 and momentum in '
         f'[0, 1); got {config.learning_rate} and {config.momentum}.')
  if config.lookahead_every < 0 or not 0 <= config.lookahead_decay < 1:
    fail(f'lookahead_every={config.lookahead_every} must be >= 0 (0 = off) '
         f'and lookahead_decay={config.lookahead_decay} in [0, 1).')
  if config.lookahead_every > 0 and config.ema_decay > 0:
    fail('lookahead_every and ema_decay are both set; the lookahead already '
         'averages the weights: set --config.ema_decay=0 or '
         '--config.lookahead_every=0.')
  if config.muon_lr < 0 or not 0 <= config.muon_momentum < 1 or (
      config.muon_ns_steps < 1):
    fail(f'muon_lr={config.muon_lr} must be >= 0 (0 = off), muon_momentum='
         f'{config.muon_momentum} in [0, 1) and muon_ns_steps='
         f'{config.muon_ns_steps} >= 1.')
  if config.whiten_bias_epochs < 0 or config.eval_translate < 0:
    fail(f'whiten_bias_epochs={config.whiten_bias_epochs} and eval_translate='
         f'{config.eval_translate} must be >= 0.')


# How often training logs, evaluates and checkpoints: each as
# <cadence>_every_steps or <cadence>_every_epochs, the one that is > 0.
CADENCES = ('log', 'eval', 'checkpoint')


def _cadence(config, cadence: str) -> tuple[str, float]:
  """('steps', n) or ('epochs', x): the one of config's
  <cadence>_every_steps and <cadence>_every_epochs that is set (> 0).
  Raises one line naming the fix where both or neither are set."""
  steps_key, epochs_key = f'{cadence}_every_steps', f'{cadence}_every_epochs'
  steps, epochs = config[steps_key], config[epochs_key]
  if steps < 0 or epochs < 0:
    raise ValueError(f'Bad config: {steps_key}={steps} and {epochs_key}='
                     f'{epochs} must be >= 0 (0 = unset).')
  if steps > 0 and epochs > 0:
    raise ValueError(
        f'Bad config: {steps_key}={steps} and {epochs_key}={epochs} are both '
        f'set; set one to 0: --config.{epochs_key}=0 to count in steps, '
        f'--config.{steps_key}=0 to count in epochs.')
  if steps == epochs == 0:
    raise ValueError(f'Bad config: set {steps_key} or {epochs_key} > 0.')
  return ('steps', steps) if steps > 0 else ('epochs', epochs)


def every_steps(config, steps_per_epoch: int) -> dict[str, int]:
  """{cadence: its interval in steps} for each of CADENCES; an interval in
  epochs is rounded to the nearest step (at least 1)."""
  out = {}
  for cadence in CADENCES:
    unit, every = _cadence(config, cadence)
    out[cadence] = (int(every) if unit == 'steps'
                    else max(1, round(every * steps_per_epoch)))
  return out


def check_batch_sizes(config: ml_collections.ConfigDict,
                      devices: int | None = None) -> None:
  """Raises unless the batch sizes are positive and, given the device
  count, multiples of it (each device takes an equal share)."""
  for key in ('batch_size', 'eval_batch_size'):
    size = config[key]
    if size > 0 and (devices is None or size % devices == 0):
      continue
    if devices is None:
      raise ValueError(f'Bad config: {key}={size} must be positive.')
    raise ValueError(
        f'Bad config: {key}={size} must be a positive multiple of the device '
        f'count ({devices}); e.g. --config.{key}='
        f'{devices * max(1, size // devices)}.')


def _check_op_names(config: ml_collections.ConfigDict) -> None:
  """The `ops` choices are valid names (whether this host can run them is
  ops.resolve's to say)."""
  choices = config.get('ops') or {}
  for key, valid in ops.CHOICES.items():
    check_choice(f'ops.{key}', choices.get(key, 'auto'), valid)
  check_choice('ops.cpu_vector_width',
               str(choices.get('cpu_vector_width', 'auto')),
               ops.CPU_VECTOR_WIDTHS)


def check_image_fits(image_size: int, side: int, images: str,
                     fix: str = '') -> None:
  """Raises unless image_size <= side: evaluation centre-crops the stored
  images (side x side) to image_size."""
  if image_size > side:
    raise ValueError(
        f'Bad config: image_size={image_size} is larger than {images} '
        f'({side}x{side}), which are cropped to it; set --config.image_size '
        f'<= {side}{fix}.')


def _network_error(model, size: int) -> Exception | None:
  """Why `model` does not map (1, size, size, 3) to logits with no empty
  activation on the way (None if it does), by shape evaluation: nothing
  compiles."""
  if size < 1:
    return ValueError(f'image_size={size} < 1')
  try:
    _, variables = jax.eval_shape(
        lambda x: model.init_with_output(jax.random.PRNGKey(0), x,
                                         capture_intermediates=True),
        jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32))
  except (TypeError, ValueError) as e:  # E.g. a window larger than its input.
    return e
  empty = [a.shape for a in jax.tree.leaves(variables['intermediates'])
           if 0 in a.shape]
  return ValueError(f'empty activations {empty}') if empty else None


def check_input_size(model, config) -> None:
  """Raises, naming the smallest size that works, where config.image_size
  is too small for the network: it would fail to trace, or train on empty
  activations (whose means are NaN)."""
  size = config.image_size
  error = _network_error(model, size)
  if error is None:
    return
  works = lambda s: _network_error(model, s) is None
  high = next((s for s in (2**k for k in range(11)) if works(s)), None)
  if high is None:  # No size works: the network's fault, not the size's.
    raise error
  low = high // 2  # Does not work (or 0); bisect (low, high].
  while high - low > 1:
    mid = (low + high) // 2
    low, high = (low, mid) if works(mid) else (mid, high)
  raise ValueError(
      f'Bad config: image_size={size} is too small for {config.model.name}: '
      f'its layers need inputs of at least {high}x{high}; set '
      f'--config.image_size >= {high} (and <= the stored images\' side).')
