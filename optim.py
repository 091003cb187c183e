"""The optimizer and learning-rate schedule that config.optimizer,
config.schedule and their knobs name: SGD with Nesterov momentum or AdamW,
weight decay on the kernels only (not biases or batch-norm scales), and an
optional global-norm clip; or airbench's SGD ('sgd_decoupled', below).
Around any of them: a learning-rate scale for the batch-norm biases
(config.bias_lr_scale), the frozen whitening stem (config.whiten), and
Muon for the conv kernels in their place (config.muon_lr, below)."""

import jax
import jax.numpy as jnp
import optax

from models.air_inception import STEM

OPTIMIZERS = ('sgd', 'sgd_decoupled', 'adamw')
SCHEDULES = ('cosine', 'step', 'onecycle')


def warmup_steps(config, steps_per_epoch: int) -> int:
  return int(config.warmup_epochs * steps_per_epoch)


def schedule_warning(config, schedule, steps_per_epoch: int,
                     total_steps: int) -> str | None:
  """One line where the warmup does not end before the last step: the
  learning rate then never reaches its peak, or reaches it only at the end,
  and never decays (a short run of a recipe made for a longer one). None
  where the schedule runs its course."""
  warmup, last = warmup_steps(config, steps_per_epoch), total_steps - 1
  if warmup < last:
    return None
  reached = float(schedule(last))  # The warmup still climbs at the end.
  return (f'warmup ({warmup} steps: warmup_epochs={config.warmup_epochs}) '
          f'does not end before the last step (of {total_steps}): the '
          f'learning rate reaches {reached:.4g} of its peak '
          f'{config.learning_rate:.4g} and never decays. Set '
          f'--config.warmup_epochs below {last / steps_per_epoch:.3g}, or '
          'train longer.')


def step_schedule(lr: float, warmup: int, decay_steps: list[int]):
  """`lr` times a linear warmup factor (0 to 1 over `warmup` steps) times
  0.1 for each step of `decay_steps` reached. A decay applies from its step
  on, counted from the start of training (optax.join_schedules would count
  it from the end of the warmup), and scales a warmup it falls within."""

  def schedule(step):
    warm = jnp.minimum(1.0, step / warmup) if warmup > 0 else 1.0
    drops = sum(jnp.asarray(step >= b, jnp.int32) for b in decay_steps)
    return jnp.asarray(lr * warm * 0.1 ** drops, jnp.float32)
  return schedule


def decoupled_sgd(lr: float, weight_decay: float, momentum: float,
                  batch_size: int) -> tuple[float, float]:
  """airbench's hyperparameters as (learning rate, weight-decay coefficient)
  of Nesterov SGD on the batch's mean loss.

  `lr` and `weight_decay` are per 1024 examples and decoupled from the
  momentum: with constant gradients the step per example is the same
  whatever the batch size and momentum (Nesterov momentum m multiplies a
  step by 1 + 1 / (1 - m) in the steady state), and the decay per step is
  `weight_decay` whatever `lr` (airbench/utils.py, `train`).
  """
  kilostep = 1024 * (1 + 1 / (1 - momentum))
  return lr * batch_size / kilostep, weight_decay / lr


def peak_lr(config) -> float:
  """The schedule's peak: learning_rate, per step where it is decoupled."""
  if config.optimizer == 'sgd_decoupled':
    return decoupled_sgd(config.learning_rate, config.weight_decay,
                         config.momentum, config.batch_size)[0]
  return config.learning_rate


def make_schedule(config, steps_per_epoch: int, total_steps: int):
  warmup = warmup_steps(config, steps_per_epoch)
  lr = peak_lr(config)
  if config.schedule == 'cosine':
    return optax.warmup_cosine_decay_schedule(
        0.0, lr, warmup, max(total_steps, warmup + 1))
  if config.schedule == 'onecycle':  # lr_start_factor -> 1 -> lr_end_factor.
    return optax.join_schedules(
        [optax.linear_schedule(config.lr_start_factor * lr, lr, warmup),
         optax.linear_schedule(lr, config.lr_end_factor * lr,
                               max(total_steps - warmup, 1))],
        [warmup])
  decays = [int(f * total_steps) for f in config.step_epochs]
  return step_schedule(lr, warmup, decays)


def is_norm_bias(path) -> bool:
  """A batch norm's bias (ConvBlock names its norm 'bn')."""
  keys = [getattr(k, 'key', None) for k in path]
  return keys[-2:] == ['bn', 'bias']


def is_stem(path) -> bool:
  """A param of the whitening stem (models/air_inception.py's STEM)."""
  return getattr(path[0], 'key', None) == STEM


def scale_norm_biases(factor: float) -> optax.GradientTransformation:
  """Multiplies the batch-norm biases' gradients by `factor`: their
  learning rate times `factor`, their weight decay per step unchanged."""
  def scale(updates):
    return jax.tree_util.tree_map_with_path(
        lambda path, u: u * factor if is_norm_bias(path) else u, updates)
  return optax.stateless(lambda updates, params=None: scale(updates))


def freeze_stem(bias_steps: int) -> optax.GradientTransformation:
  """Zeroes the whitening stem's updates: its kernel's always, its bias's
  from step `bias_steps` on (airbench trains the bias for a few epochs)."""
  def init(params):
    del params
    return optax.ScaleByScheduleState(count=jnp.zeros([], jnp.int32))

  def update(updates, state, params=None):
    del params
    bias_on = state.count < bias_steps

    def mask(path, u):
      if not is_stem(path):
        return u
      keep = bias_on if getattr(path[-1], 'key', None) == 'bias' else False
      return jnp.where(keep, u, jnp.zeros_like(u))
    return (jax.tree_util.tree_map_with_path(mask, updates),
            optax.ScaleByScheduleState(count=state.count + 1))
  return optax.GradientTransformation(init, update)


def is_muon_kernel(path, param) -> bool:
  """A conv kernel (4-D, HWIO) outside the frozen whitening stem."""
  return param.ndim == 4 and not is_stem(path)


def normalize_kernels() -> optax.GradientTransformation:
  """Rescales each kernel to Frobenius norm sqrt(output channels) before its
  step (airbench94_muon.py): the batch norm after every conv makes the
  kernel's scale irrelevant to the function, so this fixes the size of a
  step relative to the kernel and stands in for weight decay."""
  def rescale(update, param):  # param: (H, W, C_in, C_out).
    scale = jnp.sqrt(param.shape[-1]) / jnp.linalg.norm(param)
    return update + param * (scale - 1)
  return optax.stateless(
      lambda updates, params=None: jax.tree.map(rescale, updates, params))


def muon(config, lr_fraction) -> optax.GradientTransformation:
  """Muon (airbench94_muon.py) for the conv kernels: Nesterov momentum
  `muon_momentum`, the update orthogonalised by `muon_ns_steps`
  Newton-Schulz iterations over each kernel as a (H*W*C_in, C_out) matrix,
  a step of `muon_lr` times `lr_fraction(step)`, on normalized kernels."""
  dims = optax.contrib.MuonDimensionNumbers(reduction_axis=(0, 1, 2),
                                            output_axis=3)
  return optax.chain(
      optax.contrib.scale_by_muon(
          ns_steps=config.muon_ns_steps, beta=config.muon_momentum,
          weight_dimension_numbers=lambda tree: jax.tree.map(
              lambda _: dims, tree)),
      optax.scale_by_schedule(lambda step: -config.muon_lr * lr_fraction(step)),
      normalize_kernels())


def with_muon(config, opt, schedule) -> optax.GradientTransformation:
  """`opt` for every param but the conv kernels, Muon for those, its
  learning rate following `schedule`'s fraction of its peak."""
  labels = lambda params: jax.tree_util.tree_map_with_path(
      lambda path, p: 'muon' if is_muon_kernel(path, p) else 'other', params)
  peak = peak_lr(config)
  fraction = lambda step: schedule(step) / peak
  return optax.partition({'muon': muon(config, fraction), 'other': opt},
                         labels)


def make_optimizer(config, steps_per_epoch: int, total_steps: int):
  schedule = make_schedule(config, steps_per_epoch, total_steps)
  decay_mask = lambda params: jax.tree.map(lambda p: p.ndim > 1, params)
  if config.optimizer == 'sgd':
    opt = optax.chain(
        optax.add_decayed_weights(config.weight_decay, decay_mask),
        optax.sgd(schedule, config.momentum, nesterov=True))
  elif config.optimizer == 'sgd_decoupled':  # airbench: decays every param.
    _, decay = decoupled_sgd(config.learning_rate, config.weight_decay,
                             config.momentum, config.batch_size)
    opt = optax.chain(optax.add_decayed_weights(decay),
                      optax.sgd(schedule, config.momentum, nesterov=True))
  else:
    opt = optax.adamw(schedule, weight_decay=config.weight_decay,
                      mask=decay_mask)
  if config.bias_lr_scale != 1.0:
    opt = optax.chain(scale_norm_biases(config.bias_lr_scale), opt)
  if config.muon_lr > 0:
    opt = with_muon(config, opt, schedule)
  if config.grad_clip_norm > 0:
    opt = optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), opt)
  if config.whiten:
    opt = optax.chain(opt, freeze_stem(
        round(config.whiten_bias_epochs * steps_per_epoch)))
  return opt, schedule
