"""The fast recipe's training levers (issue 17) as config knobs: the EMA of
the weights (config.ema_decay), flip test-time augmentation
(config.eval_flip), the one-cycle schedule and bfloat16 compute, on
configs/test.py's tiny network. One 3-step run with EMA and bfloat16 serves
both (a train step is most of these tests' compile time)."""

import functools
import pathlib
import re
import types

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax.training import train_state

import checkpoints
import config_checks
import input_pipeline
import ops
import optim
import trainer
from configs import test as test_config
from configs.common import load_config
from models import build_model
from tests.helpers import assert_trees_close, random_variables

STATS = ((0.5, 0.4, 0.3), (0.25, 0.2, 0.3))  # Per-channel (mean, std).
BASE = pathlib.Path(__file__).resolve().parents[1] / 'configs' / 'base.py'


def make_config(**overrides):
  config = test_config.get_config()
  config.update_from_flattened_dict(overrides)
  return config


def model_of(config):
  return build_model(config.model, ops.resolve(config))


def batch(config, seed=0):
  """A random uint8 batch of configs/test.py's stored size, and labels."""
  rng = np.random.default_rng(seed)
  size = config.data.synthetic_image_size
  return (rng.integers(0, 256, (config.batch_size, size, size, 3), np.uint8),
          rng.integers(0, 10, (config.batch_size,), np.int32))


def fresh_state(config):
  model = model_of(config)
  tx, _ = optim.make_optimizer(config, 10, 100)
  return model, jax.jit(functools.partial(trainer.init_state, model, config,
                                          tx))()


def jitted(step_fn, model, config):
  return jax.jit(functools.partial(step_fn, model=model, config=config,
                                   stats=STATS))


def weights(state):
  return jax.device_get({'params': state.params,
                         'batch_stats': state.batch_stats})


class LegacyState(train_state.TrainState):
  """trainer.TrainState as it was before the EMA: what old checkpoints hold."""
  batch_stats: object


# --- EMA (and bfloat16) -----------------------------------------------------


@pytest.fixture(scope='module')
def ema_run():
  """3 steps of configs/test.py with ema_decay=0.2 (the warm-up cap
  (1 + t) / (10 + t) binds on the first two updates, the decay on the
  third) and a high rate, computing in bfloat16: the config, model, the jitted step lowered,
  the final state, the weights after every step and the step's metrics."""
  config = make_config(**{'ema_decay': 0.2, 'model.dtype': 'bfloat16',
                          'learning_rate': 0.3})  # Weights that move.
  model, state = fresh_state(config)
  images, labels = batch(config)
  key = jax.random.PRNGKey(config.seed)
  lowered = jitted(trainer.train_step, model, config).lower(state, images,
                                                          labels, key)
  step = lowered.compile()
  history, metrics = [weights(state)], []
  for _ in range(3):
    state, m = step(state, images, labels, key)
    history.append(weights(state))
    metrics.append(jax.device_get(m))
  return types.SimpleNamespace(config=config, model=model, lowered=lowered,
                               state=state, history=history, metrics=metrics)


def test_ema_follows_the_recurrence_of_the_weights(ema_run):
  state, history = ema_run.state, ema_run.history
  expected = history[0]
  for t, current in enumerate(history[1:]):  # t: optimizer steps before.
    decay = min(0.2, (1 + t) / (10 + t))
    expected = jax.tree.map(lambda e, w: decay * e + (1 - decay) * w,
                            expected, current)
  assert_trees_close(jax.device_get(state.ema), expected, rtol=1e-6,
                     atol=1e-7)
  live = np.asarray(jax.tree.leaves(history[-1]['params'])[0])
  averaged = np.asarray(jax.tree.leaves(state.ema['params'])[0])
  assert not np.allclose(live, averaged)  # The average lags the weights.


def test_evaluation_uses_the_ema_weights(ema_run):
  config, model, state = ema_run.config, ema_run.model, ema_run.state
  images, labels = batch(config, seed=1)
  mask = np.ones(len(labels), np.float32)
  as_plain_state = lambda variables: trainer.TrainState.create(
      apply_fn=None, tx=optax.identity(), **variables)
  evaluated = jitted(trainer.eval_step, model, config)(state, images, labels,
                                                     mask)
  # The same eval step on plain states (no EMA) of either set of weights.
  plain = jitted(trainer.eval_step, model, make_config(
      **{'model.dtype': 'bfloat16'}))
  of_ema = plain(as_plain_state(state.ema), images, labels, mask)
  of_live = plain(as_plain_state(weights(state)), images, labels, mask)
  assert np.isfinite(float(evaluated['loss']))
  assert float(evaluated['loss']) == pytest.approx(float(of_ema['loss']),
                                                   rel=1e-6)
  assert float(evaluated['loss']) != pytest.approx(float(of_live['loss']),
                                                   rel=1e-3)


def test_without_ema_the_checkpoint_format_is_unchanged(tmp_path):
  """ema_decay=0: the state has the pre-EMA tree, and a checkpoint written
  from the pre-EMA class restores into it; with EMA the average is saved
  and restored with the rest."""
  config = make_config()
  model = model_of(config)
  tx, _ = optim.make_optimizer(config, 10, 100)
  abstract = jax.eval_shape(functools.partial(trainer.init_state, model,
                                              config, tx))
  assert type(abstract) is trainer.TrainState
  rng = np.random.default_rng(0)
  filled = jax.tree.map(lambda s: np.asarray(rng.standard_normal(s.shape),
                                             s.dtype), abstract)
  legacy = LegacyState(step=filled.step, apply_fn=None, params=filled.params,
                       tx=tx, opt_state=filled.opt_state,
                       batch_stats=filled.batch_stats)
  paths = lambda tree: [jax.tree_util.keystr(p) for p, _ in
                        jax.tree_util.tree_flatten_with_path(tree)[0]]
  assert paths(abstract) == paths(legacy)
  ckpt = checkpoints.Checkpoints(str(tmp_path / 'old'), 2, {})
  ckpt.save(1, legacy)
  ckpt.close()
  runner = trainer.Runner(config, STATS, model)
  ckpt = checkpoints.Checkpoints(str(tmp_path / 'old'), 2, {})
  restored = ckpt.restore_latest(runner.sharded(abstract))
  ckpt.close()
  assert_trees_close(restored.params, legacy.params, rtol=0, atol=0)
  assert_trees_close(restored.opt_state, legacy.opt_state, rtol=0, atol=0)

  ema_config = make_config(ema_decay=0.9)
  ema_abstract = trainer.Runner(ema_config, STATS,
                                model_of(ema_config)).abstract_state(tx)
  with_ema = jax.tree.map(lambda s: np.asarray(rng.standard_normal(s.shape),
                                               s.dtype), ema_abstract)
  ckpt = checkpoints.Checkpoints(str(tmp_path / 'ema'), 2, {})
  ckpt.save(1, with_ema)
  ckpt.close()
  ckpt = checkpoints.Checkpoints(str(tmp_path / 'ema'), 2, {})
  restored = ckpt.restore_latest(runner.sharded(ema_abstract))
  ckpt.close()
  assert_trees_close(restored.ema, with_ema.ema, rtol=0, atol=0)


def test_ema_decay_out_of_range_is_one_clear_error():
  with pytest.raises(ValueError, match=re.escape(
      'Bad config: ema_decay=1.0 must be in [0, 1) (0 = off); e.g. '
      '--config.ema_decay=0.999.')):
    config_checks.check_config(make_config(ema_decay=1.0))


# --- Flip test-time augmentation ---------------------------------------------


def test_eval_flip_scores_the_mean_logits_of_image_and_mirror():
  config = make_config(eval_flip=True)
  model = model_of(config)
  images, labels = batch(config, seed=2)
  size = config.image_size
  variables = random_variables(model, jnp.zeros((1, size, size, 3)),
                               train=False)
  state = trainer.TrainState.create(apply_fn=None, tx=optax.identity(),
                                  **variables)
  mask = np.ones(len(labels), np.float32)
  flipped = jitted(trainer.eval_step, model, config)(state, images, labels,
                                                   mask)

  apply = jax.jit(functools.partial(model.apply, train=False))
  def logits_of(raw):  # The raw uint8 images are mirrored, if at all.
    x = input_pipeline.preprocess_eval(raw, image_size=size, mean=STATS[0],
                                       std=STATS[1])
    return np.asarray(apply(variables, x))
  unflipped = logits_of(images)
  mean = (unflipped + logits_of(images[:, :, ::-1].copy())) / 2
  loss = optax.softmax_cross_entropy_with_integer_labels(mean, labels).sum()
  confusion = np.zeros((10, 10))
  np.add.at(confusion, (labels, mean.argmax(-1)), 1)
  assert float(flipped['loss']) == pytest.approx(float(loss), rel=1e-5)
  np.testing.assert_array_equal(np.asarray(flipped['confusion']), confusion)
  assert not np.allclose(mean, unflipped, rtol=1e-3)  # The mirror counts.


# --- One-cycle schedule ------------------------------------------------------


def test_onecycle_is_a_triangle_from_zero_to_peak_to_zero():
  config = make_config(schedule='onecycle', warmup_epochs=2.0,
                       learning_rate=0.4)
  config_checks.check_config(config)
  _, schedule = optim.make_optimizer(config, steps_per_epoch=10,
                                     total_steps=100)
  values = {step: float(schedule(step)) for step in (0, 10, 20, 60, 99, 100)}
  assert values == pytest.approx({0: 0.0, 10: 0.2, 20: 0.4, 60: 0.2,
                                  99: 0.4 / 80, 100: 0.0}, abs=1e-7)
  _, no_warmup = optim.make_optimizer(make_config(schedule='onecycle'), 10, 6)
  assert float(no_warmup(0)) == pytest.approx(0.05)  # configs/test.py's lr.


def test_step_schedule_decays_at_its_fractions_of_training():
  # Issue 27: optax.join_schedules gave the decays step - warmup, so each
  # one landed `warmup` steps late (at 61 and 86 here, not 50 and 75).
  config = make_config(schedule='step', warmup_epochs=1.0, learning_rate=0.4,
                       step_epochs=(0.5, 0.75))
  config_checks.check_config(config)
  _, schedule = optim.make_optimizer(config, steps_per_epoch=10,
                                     total_steps=100)
  values = {step: float(schedule(step))
            for step in (0, 5, 10, 49, 50, 74, 75, 99)}
  assert values == pytest.approx({0: 0.0, 5: 0.2, 10: 0.4, 49: 0.4,
                                  50: 0.04, 74: 0.04, 75: 0.004, 99: 0.004},
                                 rel=1e-6, abs=1e-9)
  # A decay inside the warmup scales it: 20 warmup steps, a decay at 15.
  _, overlap = optim.make_optimizer(
      make_config(schedule='step', warmup_epochs=2.0, learning_rate=0.4,
                  step_epochs=(0.5,)), steps_per_epoch=10, total_steps=30)
  assert [float(overlap(s)) for s in (10, 14, 15, 20, 29)] == pytest.approx(
      [0.2, 0.28, 0.03, 0.04, 0.04], rel=1e-6)


@pytest.mark.parametrize('schedule', optim.SCHEDULES)
def test_a_run_that_ends_in_its_warmup_is_warned(schedule):
  # Issue 25: configs/cifar_cpu.py (warmup_epochs=0.5) with
  # num_train_steps=150 climbed to 0.085 and never peaked nor decayed.
  config = load_config('configs/cifar_cpu.py')
  config.schedule = schedule
  config.step_epochs = (1.0,)  # step: no decay, the warmup alone counts.
  per_epoch = input_pipeline.steps_per_epoch(45000, config.batch_size)
  warn = lambda steps: optim.schedule_warning(
      config, optim.make_optimizer(config, per_epoch, steps)[1], per_epoch,
      steps)
  # 175 warmup steps of 351 per epoch; the last of 150 steps is step 149.
  assert warn(150) == (
      'warmup (175 steps: warmup_epochs=0.5) does not end before the last '
      'step (of 150): the learning rate reaches 0.08514 of its peak 0.1 and '
      'never decays. Set --config.warmup_epochs below 0.425, or train '
      'longer.')
  assert 'reaches 0.1 of its peak 0.1 and never decays' in warn(176)
  assert warn(177) is None  # Peaks at step 175, decays at 176.
  assert warn(1000) is None


def test_base_config_lists_the_schedules():
  line = next(line for line in BASE.read_text().splitlines()
              if line.strip().startswith('config.schedule ='))
  listed = line.split('#')[1].strip(' .').split(' | ')
  assert tuple(listed) == optim.SCHEDULES


# --- bfloat16 ----------------------------------------------------------------


def test_bfloat16_computes_in_bf16_and_keeps_float32_weights(ema_run):
  assert 'bf16' in ema_run.lowered.as_text()  # Convs and matmuls in bf16.
  float32 = jnp.dtype('float32')
  state = ema_run.state
  for tree in (state.params, state.batch_stats, state.ema, state.opt_state):
    assert {leaf.dtype for leaf in jax.tree.leaves(tree)
            if jnp.issubdtype(leaf.dtype, jnp.floating)} == {float32}
  losses = [float(m['loss']) for m in ema_run.metrics]
  assert np.isfinite(losses).all() and losses[-1] < losses[0]  # It learns.
  size = ema_run.config.image_size
  logits = jax.eval_shape(
      functools.partial(trainer.eval_logits, model=ema_run.model, flip=True),
      state.ema, jax.ShapeDtypeStruct((2, size, size, 3), jnp.float32))
  assert logits.dtype == float32
