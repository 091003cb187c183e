"""Checks that turn a bad config into one clear error before any data is
loaded or anything compiles: unknown choices, sizes that do not divide the
devices, an image size the data or the network cannot take."""

import jax
import jax.numpy as jnp
import ml_collections

import ops
import optim
from models import build_model


def check_config(config: ml_collections.ConfigDict) -> None:
  """Clear errors for bad configs, raised before any data or compilation."""
  def fail(msg):
    raise ValueError(f'Bad config: {msg}')
  if config.optimizer not in optim.OPTIMIZERS:
    fail(f'optimizer={config.optimizer!r}; choose one of {optim.OPTIMIZERS}.')
  if config.schedule not in optim.SCHEDULES:
    fail(f'schedule={config.schedule!r}; choose one of {optim.SCHEDULES}.')
  if not 0 <= config.ema_decay < 1:
    fail(f'ema_decay={config.ema_decay} must be in [0, 1) (0 = off); e.g. '
         '--config.ema_decay=0.999.')
  for key in ('batch_size', 'eval_batch_size'):
    size, devices = config[key], jax.device_count()
    if size <= 0 or size % devices:
      fail(f'{key}={size} must be a positive multiple of the device count '
           f'({devices}); e.g. --config.{key}={devices * max(1, size // devices)}.')
  if config.num_train_steps <= 0 and config.num_epochs <= 0:
    fail('set num_epochs > 0 or num_train_steps > 0.')
  if config.data.source == 'synthetic':  # Its side is known before loading.
    check_image_fits(config.image_size, config.data.synthetic_image_size,
                     "the 'synthetic' source's images",
                     ' or --config.data.synthetic_image_size larger')
  # Unknown model names, keys and op choices raise here.
  model = build_model(config.model, ops.resolve(config))
  ops.compiler_options(config)
  check_input_size(model, config)


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
