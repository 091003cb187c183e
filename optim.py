"""The optimizer and learning-rate schedule that config.optimizer,
config.schedule and their knobs name: SGD with Nesterov momentum or AdamW,
weight decay on the kernels only (not biases or batch-norm scales), and an
optional global-norm clip."""

import jax
import jax.numpy as jnp
import optax

OPTIMIZERS = ('sgd', 'adamw')
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


def make_optimizer(config, steps_per_epoch: int, total_steps: int):
  warmup = warmup_steps(config, steps_per_epoch)
  lr = config.learning_rate
  if config.schedule == 'cosine':
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, lr, warmup, max(total_steps, warmup + 1))
  elif config.schedule == 'onecycle':  # A triangle: 0 -> lr -> 0 at the end.
    schedule = optax.join_schedules(
        [optax.linear_schedule(0.0, lr, warmup),
         optax.linear_schedule(lr, 0.0, max(total_steps - warmup, 1))],
        [warmup])
  else:
    decays = [int(f * total_steps) for f in config.step_epochs]
    schedule = step_schedule(lr, warmup, decays)
  decay_mask = lambda params: jax.tree.map(lambda p: p.ndim > 1, params)
  if config.optimizer == 'sgd':
    opt = optax.chain(
        optax.add_decayed_weights(config.weight_decay, decay_mask),
        optax.sgd(schedule, config.momentum, nesterov=True))
  else:
    opt = optax.adamw(schedule, weight_decay=config.weight_decay,
                      mask=decay_mask)
  if config.grad_clip_norm > 0:
    opt = optax.chain(optax.clip_by_global_norm(config.grad_clip_norm), opt)
  return opt, schedule
