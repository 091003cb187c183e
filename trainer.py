"""The training loop that every ablation shares, behind train.py's command:

  python train.py --config=configs/cifar_cpu.py --workdir=/tmp/run \
      --config.data.source=PATH/TO/cifar10

`train_and_evaluate(config, workdir)` does the same from notebooks, tests and
tools; this module defines no flags (train.py does), so any tool imports it.
Data parallel over every device (and host) through jax.sharding: a Mesh with
a 'data' axis, batches sharded on it, params replicated. A workdir with
checkpoints resumes (one whose config.json trained with other values is
refused); DIR/summary.json records accuracy next to compute.
"""

import contextlib
import dataclasses
import functools
import json
import math
import os
import signal
import time
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import logging
from flax.training import train_state
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

import accounting
import checkpoints
import config_checks
import input_pipeline
import metric_log
import ops
import optim
import rundir
import whitening

class _QuietOrbax(logging.logging.Filter):
  """Keeps orbax's per-save INFO chatter off the console."""

  def filter(self, record):
    return (record.levelno >= logging.logging.WARNING
            or '/orbax/' not in record.pathname)


def quiet_orbax() -> None:
  for handler in logging.logging.root.handlers + [logging.get_absl_handler()
                                                   .python_handler]:
    handler.addFilter(_QuietOrbax())


class TrainState(train_state.TrainState):
  batch_stats: Any


class EmaTrainState(TrainState):
  """A TrainState that also keeps an exponential moving average of the
  weights (config.ema_decay > 0), {'params': ..., 'batch_stats': ...}, which
  evaluation uses. A class of its own so that without EMA the state, and so
  the checkpoints, keep the tree they had before EMA existed."""
  ema: Any


class LookaheadTrainState(TrainState):
  """A TrainState that also keeps lookahead's slow weights
  (config.lookahead_every > 0), {'params': ..., 'batch_stats': ...}."""
  slow: Any


def any_process(flag: bool) -> bool:
  """Whether `flag` holds on any process. With several processes it is a
  collective (every one must call it): so that all raise together, none
  left waiting for the others at the next collective."""
  if jax.process_count() == 1:
    return flag
  return bool(multihost_utils.process_allgather(np.int32(flag)).any())


@contextlib.contextmanager
def hold_workdir(workdir: str) -> Iterator[None]:
  """rundir.workdir_lock for the `with` block, taken by process 0. Where
  another training holds it every process raises WorkdirInUseError."""
  with contextlib.ExitStack() as stack:
    error = None
    if jax.process_index() == 0:
      try:
        stack.enter_context(rundir.workdir_lock(workdir))
      except rundir.WorkdirInUseError as e:
        error = e
    if any_process(error is not None):
      raise error or rundir.WorkdirInUseError(
          f'{workdir} is in use by another training (found by process 0: see '
          'its log); nothing was changed.')
    yield


class ConfigMismatchError(ValueError):
  """The workdir holds a run that trained with other values."""


def check_workdir_config(config: ml_collections.ConfigDict,
                         workdir: str) -> None:
  """Refuses a workdir whose config.json differs from `config` in a key that
  changes training, before anything is loaded, compiled or written: resuming
  would mix two configs under one config.json and summary. Bookkeeping keys
  (rundir.BOOKKEEPING: logging, stopping, data paths, ops) may change. With
  several processes all of them raise, also one that cannot see the file."""
  changes = rundir.saved_training_changes(workdir, config.to_dict())
  if any_process(bool(changes)) and not changes:
    changes = ['(found by another process: see its log)']
  if changes:
    raise ConfigMismatchError(rundir.changes_error(
        f'{workdir} holds', changes,
        'Nothing was changed. Use a fresh --workdir, or rerun with the saved '
        f'values (all in {os.path.join(workdir, rundir.CONFIG)}).'))


def cross_entropy(logits, labels, smoothing: float = 0.0):
  targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]),
                                smoothing)
  return optax.softmax_cross_entropy(logits, targets)


def train_step(state: TrainState, images, labels, seed_key, *, model, config,
               stats, total_steps: int = 0):
  """One SGD step; augmentation runs here, keyed on (seed, step). The seed
  comes in as an argument, not a constant, so every seed of a config runs
  the same program (one entry in a persistent compilation cache).
  `total_steps`: the run's length, which lookahead's schedule follows."""
  rng = jax.random.fold_in(seed_key, state.step)
  aug_rng, dropout_rng = jax.random.split(rng)
  x = input_pipeline.augment_batch(aug_rng, images, **augment_args(config, stats))

  def loss_fn(params):
    logits, updates = model.apply(
        {'params': params, 'batch_stats': state.batch_stats}, x, train=True,
        rngs={'dropout': dropout_rng}, mutable=['batch_stats'])
    loss = cross_entropy(logits, labels, config.label_smoothing).mean()
    return loss, (logits, updates.get('batch_stats', {}))

  (loss, (logits, batch_stats)), grads = jax.value_and_grad(
      loss_fn, has_aux=True)(state.params)
  state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  state = update_ema(state, ema_decay_at(config.ema_decay, state.step - 1))
  state = update_lookahead(state, config, total_steps)
  metrics = {'loss': loss, 'accuracy': jnp.mean(logits.argmax(-1) == labels),
             'grad_norm': optax.global_norm(grads),
             'param_norm': optax.global_norm(state.params)}  # After the step.
  return state, metrics


def ema_decay_at(decay: float, step):
  """The EMA's decay for the update after `step` optimizer steps: `decay`,
  capped by (1 + step) / (10 + step) as TF's ExponentialMovingAverage with
  num_updates does, so that early on the average follows the weights and
  forgets the random init fast (a short run's average is not held back)."""
  return jnp.minimum(decay, (1.0 + step) / (10.0 + step))


def update_ema(state: TrainState, decay) -> TrainState:
  """Moves the state's EMA (if it keeps one) towards its current weights."""
  if not isinstance(state, EmaTrainState):
    return state
  current = {'params': state.params, 'batch_stats': state.batch_stats}
  return state.replace(ema=optax.incremental_update(current, state.ema,
                                                    1.0 - decay))


def update_lookahead(state: TrainState, config, total_steps: int
                     ) -> TrainState:
  """airbench's lookahead, after the state's `step`-th update (if it keeps
  slow weights): every config.lookahead_every steps the slow weights move
  towards the live ones by 1 - d, d = lookahead_decay * (step / total)**3
  (little early, more as training ends), and the live weights restart from
  them; the last step ends on the slow weights."""
  if not isinstance(state, LookaheadTrainState):
    return state
  t = state.step
  decay = config.lookahead_decay * (t / total_steps) ** 3
  sync = t % config.lookahead_every == 0
  live = {'params': state.params, 'batch_stats': state.batch_stats}
  slow = jax.tree.map(lambda s, w: jnp.where(sync, s + (1 - decay) * (w - s), s),
                      state.slow, live)
  reset = sync | (t >= total_steps)
  live = jax.tree.map(lambda s, w: jnp.where(reset, s, w), slow, live)
  return state.replace(slow=slow, **live)


def eval_variables(state: TrainState) -> dict:
  """The weights evaluation uses: the EMA's where the state keeps one."""
  if isinstance(state, EmaTrainState):
    return state.ema
  return {'params': state.params, 'batch_stats': state.batch_stats}


def eval_logits(variables: dict, x, *, model, flip: bool, translate: int = 0):
  """The model's eval-mode logits of `x`; with flip, the mean of those of
  `x` and of its horizontal mirror (flip test-time augmentation). With
  translate = p > 0, airbench's: half that, half the mean of the same for
  `x` shifted by p pixels down-right and up-left (reflect padding)."""
  def views(x):
    logits = model.apply(variables, x, train=False)
    if flip:
      mirrored = model.apply(variables, jnp.flip(x, axis=2), train=False)
      logits = (logits + mirrored) / 2
    return logits
  logits = views(x)
  if translate:
    p, (h, w) = translate, x.shape[1:3]
    padded = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)), mode='reflect')
    shifted = (views(padded[:, :h, :w]) +
               views(padded[:, 2 * p:2 * p + h, 2 * p:2 * p + w]))
    logits = logits / 2 + shifted / 4
  return logits


def eval_step(state: TrainState, images, labels, mask, *, model, config, stats,
              tta: bool = True):
  """Sums over the valid examples of a (padded) batch. tta=False scores the
  images alone, whatever config.eval_flip and eval_translate say."""
  x = input_pipeline.preprocess_eval(
      images, image_size=config.image_size, **normalization(config, stats))
  logits = eval_logits(eval_variables(state), x, model=model,
                       flip=tta and config.eval_flip,
                       translate=config.eval_translate if tta else 0)
  num_classes = logits.shape[-1]
  pred = logits.argmax(-1)
  confusion = jnp.einsum('bi,bj->ij', jax.nn.one_hot(labels, num_classes) *
                         mask[:, None], jax.nn.one_hot(pred, num_classes))
  return {'loss': jnp.sum(cross_entropy(logits, labels) * mask),
          'confusion': confusion}


def normalization(config, stats) -> dict:
  mean, std = stats if config.data.normalize else (None, None)
  return {'mean': mean, 'std': std}


def augment_args(config, stats) -> dict:
  # An alternating flip is applied to the batch before the step.
  flip = config.data.flip and not config.data.alternate_flip
  return dict(image_size=config.image_size,
              crop_padding=config.data.crop_padding, flip=flip,
              random_crop=config.data.random_crop, **normalization(config, stats))


def init_state(model, config, tx, stem_kernel=None) -> TrainState:
  """Fresh params (seeded by config.seed), batch stats and optimizer state;
  with config.ema_decay > 0 an EmaTrainState whose EMA starts at them, with
  config.lookahead_every > 0 a LookaheadTrainState whose slow weights do.
  `stem_kernel`: the whitening stem's kernel (config.whiten)."""
  size = config.image_size
  variables = model.init(jax.random.PRNGKey(config.seed),
                         jnp.zeros((1, size, size, 3), jnp.float32))
  params = variables['params']
  if stem_kernel is not None:
    params = whitening.set_stem(params, stem_kernel)
  weights = {'params': params,
             'batch_stats': variables.get('batch_stats', {})}
  if config.ema_decay > 0:
    return EmaTrainState.create(apply_fn=model.apply, tx=tx, ema=weights,
                                **weights)
  if config.lookahead_every > 0:
    return LookaheadTrainState.create(apply_fn=model.apply, tx=tx,
                                      slow=weights, **weights)
  return TrainState.create(apply_fn=model.apply, tx=tx, **weights)


def stem_kernel(config, train: input_pipeline.Split, stats):
  """The whitening stem's kernel from an evenly spaced sample of the
  training images, normalized as the step normalizes them; None unless
  config.whiten."""
  if not config.whiten:
    return None
  images = train.images
  sample = images[::max(1, len(images) // whitening.NUM_IMAGES)]
  sample = input_pipeline.preprocess_eval(
      sample[:whitening.NUM_IMAGES], image_size=config.image_size,
      **normalization(config, stats))
  return whitening.whitening_kernel(np.asarray(sample))


# XLA options for compiling the initial state, per backend.
INIT_COMPILER_OPTIONS = {'cpu': {'xla_backend_optimization_level': 0}}


class Runner:
  """Model, mesh, jitted steps and data placement for one config. `model`:
  the config's network, as config_checks.check_config returns it."""

  def __init__(self, config, stats, model, total_steps: int = 0):
    self.config = config
    self.model = model
    self.mesh = Mesh(np.asarray(jax.devices()), ('data',))
    self.batch_sharding = NamedSharding(self.mesh, P('data'))
    self.replicated = NamedSharding(self.mesh, P())
    self.seed_key = jax.random.PRNGKey(config.seed)  # train_step's argument.
    kw = dict(model=self.model, config=config, stats=stats)
    options = ops.compiler_options(config)
    self.train_step = jax.jit(functools.partial(train_step, **kw,
                                                total_steps=total_steps),
                              donate_argnums=(0,), compiler_options=options)
    self.eval_steps = {tta: jax.jit(functools.partial(eval_step, **kw, tta=tta),
                                    compiler_options=options)
                       for tta in (True, False)}

  def to_global(self, local: np.ndarray) -> jax.Array:
    """This process's rows of a global batch -> an array sharded on 'data'."""
    return jax.make_array_from_process_local_data(self.batch_sharding, local)

  def abstract_state(self, tx) -> TrainState:
    return jax.eval_shape(functools.partial(self.init_state, tx))

  def init_state(self, tx, stem_kernel=None) -> TrainState:
    return init_state(self.model, self.config, tx, stem_kernel)

  def sharded(self, abstract: TrainState) -> TrainState:
    """Restore targets: every array replicated over the mesh."""
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(
        s.shape, s.dtype, sharding=self.replicated), abstract)

  def create_state(self, tx, stem_kernel=None) -> TrainState:
    """The initial state, compiled unoptimised where XLA allows: it runs
    once, and optimising its many small RNG programs costs far more compile
    time than it saves (the values agree to float rounding)."""
    return jax.jit(functools.partial(self.init_state, tx, stem_kernel),
                   out_shardings=self.replicated,
                   compiler_options=INIT_COMPILER_OPTIONS.get(
                       jax.default_backend()))()

  def evaluate(self, state, split: input_pipeline.Split,
               final: bool = True) -> dict:
    """Accuracy, loss and confusion matrix over every example of `split`;
    with test-time augmentation unless config.eval_tta_final_only and not
    `final`."""
    eval_step = self.eval_steps[final or not self.config.eval_tta_final_only]
    bs, nproc, pid = (self.config.eval_batch_size, jax.process_count(),
                      jax.process_index())
    totals = None
    for idx, mask in input_pipeline.eval_batches(len(split.labels), bs):
      rows = slice(pid * bs // nproc, (pid + 1) * bs // nproc)
      idx, mask = idx[rows], mask[rows]
      out = eval_step(state, self.to_global(split.images[idx]),
                           self.to_global(split.labels[idx]),
                           self.to_global(mask.astype(np.float32)))
      totals = out if totals is None else jax.tree.map(jnp.add, totals, out)
    totals = jax.device_get(totals)
    confusion = np.rint(totals['confusion']).astype(int)
    n = int(confusion.sum())
    per_class = confusion.diagonal() / np.maximum(confusion.sum(1), 1)
    return {'split': split.name, 'num_examples': n,
            'accuracy': float(confusion.trace() / n),
            'loss': float(totals['loss'] / n),
            'per_class_accuracy': dict(zip(split.class_names,
                                           per_class.round(4).tolist())),
            'confusion_matrix': confusion.tolist()}


class StopSignal:
  """SIGTERM / SIGINT set a flag; the loop saves a checkpoint and exits."""

  def __init__(self):
    self.received = None

  def __enter__(self):
    self.previous = {s: signal.signal(s, self._handle)
                     for s in (signal.SIGTERM, signal.SIGINT)}
    return self

  def _handle(self, signum, frame):
    del frame  # Only set a flag: the loop logs, saves and stops.
    self.received = signal.Signals(signum).name

  def decide(self, sync_point: bool) -> str | None:
    """Why to stop now, or None. With several processes every host must
    stop at the same step (checkpoints are collective), so they agree, at
    sync points only: log steps and the end of a time slot."""
    if jax.process_count() == 1:
      return self.received
    if not sync_point:
      return None
    anyone = multihost_utils.process_allgather(np.int32(bool(self.received)))
    return (self.received or 'signal on another host') if anyone.any() else None

  def __exit__(self, *exc):
    for s, handler in self.previous.items():
      signal.signal(s, handler)


def load_optional_split(data_config, split: str):
  """The split, or None if the source has no such split (e.g. no test)."""
  try:
    return input_pipeline.load_split(data_config, split)
  except input_pipeline.MissingSplitError as e:
    logging.info('No %r split: %s', split, e)
    return None


@dataclasses.dataclass
class Data:
  """The splits, in memory as uint8, and what the schedule derives from them."""
  train: input_pipeline.Split
  val: input_pipeline.Split
  test: input_pipeline.Split | None
  stats: tuple  # The train split's per-channel (mean, std), Python floats.
  steps_per_epoch: int
  total_steps: int


def load_data(config) -> Data:
  """Every split the run uses; augmentation runs later, in the step."""
  data = config.data
  train = input_pipeline.load_split(data, data.train_split)
  val = input_pipeline.load_split(data, data.eval_split)
  test = (load_optional_split(data, data.test_split)
          if data.test_split not in ('', None, data.eval_split) else None)
  if train.num_classes > config.model.num_classes:
    raise ValueError(
        f'The data has {train.num_classes} classes but the model '
        f'{config.model.num_classes}; set --config.model.num_classes='
        f'{train.num_classes}.')
  # Python floats: np.float32 would reach data_stats.json as strings.
  stats = tuple(tuple(map(float, s))
                for s in input_pipeline.dataset_stats(train))
  steps_per_epoch = input_pipeline.steps_per_epoch(len(train.labels),
                                                   config.batch_size)
  total_steps = (config.num_train_steps if config.num_train_steps > 0 else
                 math.ceil(config.num_epochs * steps_per_epoch))
  return Data(train, val, test, stats, steps_per_epoch, total_steps)


def restore_or_create(config, workdir: str, runner: Runner, tx,
                      data: 'Data'
                      ) -> tuple[checkpoints.Checkpoints, TrainState, dict]:
  """The checkpoints, the state to start from (the latest checkpoint that
  restores, else a fresh one) and the summary of the run so far ({} when it
  starts afresh). A workdir whose checkpoints are of another run
  (checkpoints.recorded_changes) is refused before anything is compiled or
  written."""
  abstract = runner.abstract_state(tx)
  ckpt = checkpoints.Checkpoints(
      workdir, config.keep_checkpoints,
      checkpoints.fingerprint(config.to_dict(), abstract))
  ckpt.check_compatible()
  # check_workdir_config passed: a saved config.json differs from this one in
  # bookkeeping keys only, so what training used stays recorded.
  if jax.process_index() == 0:
    rundir.write_data_stats(workdir, data.stats)
    rundir.write_json_atomic(os.path.join(workdir, rundir.CONFIG),
                             config.to_dict())
  state = ckpt.restore_latest(runner.sharded(abstract))
  if state is None:
    kernel = stem_kernel(config, data.train, data.stats)
    return ckpt, runner.create_state(tx, kernel), {}
  logging.info('Resuming from step %d in %s.', int(jax.device_get(state.step)),
               ckpt.directory)
  path = os.path.join(workdir, rundir.SUMMARY)
  return ckpt, state, rundir.read_json(path) if os.path.exists(path) else {}


class Timer:
  """Training time (evaluation and checkpoints excluded), the images per
  second of the steps alone (XLA's compile is timed apart), and the wall
  time of the whole run since `started` (data, compiles, evaluations), which
  time_to_target_s is measured in. Each adds to the previous sessions' of a
  resumed run."""

  def __init__(self, previous: dict, started: float):
    self.seconds = previous.get('train_seconds', 0.0)
    self.compile_seconds = previous.get('compile_seconds') or 0.0
    self.images, self.step_seconds = 0, 0.0
    self.previous_rate = previous.get('train_images_per_s')
    self.previous_wall = previous.get('wall_seconds') or 0.0
    self.started = started
    self.time_to_target = previous.get('time_to_target_s')
    self.start()

  @property
  def wall_seconds(self) -> float:
    return self.previous_wall + time.perf_counter() - self.started

  def evaluated(self, accuracy: float, target: float, step: int) -> None:
    """Records the wall time of the first evaluation that reaches target."""
    if 0 < target <= accuracy and self.time_to_target is None:
      self.time_to_target = self.wall_seconds
      logging.info('Target accuracy %.4f reached at step %d, %.1f s into the '
                   'run.', target, step, self.time_to_target)

  def start(self) -> None:
    self.tick, self.compiling = time.perf_counter(), 0.0

  def compiled(self, seconds: float) -> None:
    self.compiling += seconds
    self.compile_seconds += seconds

  def stop(self, images: int) -> None:
    elapsed = time.perf_counter() - self.tick
    self.seconds += elapsed
    self.step_seconds += elapsed - self.compiling
    self.images += images

  @property
  def images_per_s(self) -> float | None:
    """This session's rate; a resumed run that took no step keeps the last."""
    if not self.images:
      return self.previous_rate
    return self.images / max(self.step_seconds, 1e-9)


@dataclasses.dataclass
class LoopResult:
  status: str          # 'ok', 'interrupted' or 'diverged'.
  state: TrainState
  step: int            # The last step taken.
  val_result: dict | None
  best_val_accuracy: float
  step_flops: float | None


def train_loop(config, runner: Runner, data: Data, state: TrainState,
               ckpt: checkpoints.Checkpoints, schedule,
               log: metric_log.MetricLog, timer: Timer,
               best: float) -> LoopResult:
  """Steps from the state's step to data.total_steps, logging, evaluating
  and checkpointing on schedule; stops early on a signal, a time slot's end
  (stop_after_steps) or a non-finite loss."""
  start = int(jax.device_get(state.step))
  every = config_checks.every_steps(config, data.steps_per_epoch)
  step_fn, step_flops = None, None
  status, val_result, pending, done = 'ok', None, [], start
  with StopSignal() as stop:
    for step in range(start, data.total_steps):
      idx = input_pipeline.batch_indices(
          len(data.train.labels), config.batch_size, step, config.seed,
          process_index=jax.process_index(),
          process_count=jax.process_count())
      images = data.train.images[idx]
      if config.data.flip and config.data.alternate_flip:
        images = input_pipeline.mirror(images, input_pipeline.alternating_flips(
            idx, step, len(data.train.labels), config.batch_size, config.seed))
      images, labels = (runner.to_global(images),
                        runner.to_global(data.train.labels[idx]))
      if step_fn is None:  # Compile once; read XLA's cost of the step.
        t0 = time.perf_counter()
        step_fn = runner.train_step.lower(state, images, labels,
                                          runner.seed_key).compile()
        timer.compiled(time.perf_counter() - t0)
        step_flops = accounting.cost_flops(step_fn)
      state, metrics = step_fn(state, images, labels, runner.seed_key)
      pending.append(metrics)
      done = step + 1
      last = done == data.total_steps
      time_slot_over = 0 < config.stop_after_steps <= done - start
      if time_slot_over:
        stop.received = stop.received or f'stop_after_steps={done - start}'
      stopping = stop.decide(time_slot_over or done % every['log'] == 0)
      if not (last or stopping or any(done % n == 0 for n in every.values())):
        continue
      # Block here: every metric since the last flush must be finite.
      host = jax.device_get(pending)
      timer.stop(len(host) * config.batch_size)
      pending = []
      if not _all_finite(host, done, ckpt):
        status = 'diverged'
        break
      _log_train(log, host, done, schedule(step), timer, data, config)
      if last or done % every['eval'] == 0:
        val_result = runner.evaluate(state, data.val, final=last)
        best = max(best, val_result['accuracy'])
        timer.evaluated(val_result['accuracy'], config.target_accuracy, done)
        log(done, {'val/accuracy': val_result['accuracy'],
                   'val/loss': val_result['loss']})
        logging.info('step %d  val accuracy %.4f  loss %.4f', done,
                     val_result['accuracy'], val_result['loss'])
      if last or stopping or done % every['checkpoint'] == 0:
        ckpt.save(done, state)
      log.flush()
      timer.start()
      if stopping:
        logging.warning('Stopping at step %d (%s); checkpoint saved in %s.',
                        done, stopping, ckpt.directory)
        status = 'interrupted'
        break
  return LoopResult(status, state, done, val_result, best, step_flops)


def _all_finite(host: list[dict], done: int, ckpt) -> bool:
  """Whether every loss since the last flush, and the newest params, are
  finite (a loss is of the params before its step; the newest params are
  what a checkpoint would save). Logs the way out when not."""
  losses = [float(m['loss']) for m in host]
  if all(map(math.isfinite, losses + [float(host[-1]['param_norm'])])):
    return True
  logging.error(
      'Loss or params became non-finite by step %d (last loss %s): training '
      'diverged. The last good checkpoint is kept in %s; try a lower '
      'learning_rate or grad_clip_norm.', done, losses[-1], ckpt.directory)
  return False


def _log_train(log: metric_log.MetricLog, host: list[dict], done: int, lr,
               timer: Timer, data: Data, config) -> None:
  """The mean of each train metric since the last flush; a console line."""
  rate = timer.images_per_s or 0.0
  scalars = {k: float(np.mean([m[k] for m in host])) for k in host[0]}
  scalars |= {'learning_rate': float(lr), 'images_per_s': rate}
  log(done, {f'train/{k}': v for k, v in scalars.items()})
  eta = (data.total_steps - done) * config.batch_size / max(rate, 1e-9)
  logging.info(
      'step %d/%d  epoch %.2f  loss %.4f  acc %.3f  %.0f img/s  ETA %s',
      done, data.total_steps, done / data.steps_per_epoch, scalars['loss'],
      scalars['accuracy'], rate,
      time.strftime('%H:%M:%S', time.gmtime(eta)) if timer.images else '?')


def make_summary(config, workdir: str, runner: Runner, data: Data,
                 result: LoopResult, timer: Timer, costs: dict,
                 previous: dict) -> dict:
  """summary.json: what was trained, its costs, speed and accuracy, with
  the keys in rundir.SUMMARY_KEYS' order."""
  ok = result.status == 'ok'
  val_accuracy = (result.val_result or {}).get('accuracy',
                                               previous.get('val_accuracy'))
  summary = {
      'status': result.status, 'model': config.model.name,
      'module': config.model.module, 'workdir': os.path.abspath(workdir),
      'params': costs['params'], 'macs_per_image': costs['macs'],
      'xla_flops_per_image': costs['xla_flops'],
      'train_step_flops': result.step_flops,
      'train_images_per_s': timer.images_per_s,
      'compile_seconds': timer.compile_seconds,
      'train_seconds': timer.seconds, 'wall_seconds': timer.wall_seconds,
      'time_to_target_s': timer.time_to_target, 'steps': result.step,
      'epochs': result.step / data.steps_per_epoch,
      'batch_size': config.batch_size, 'val_split': data.val.name,
      'val_accuracy': val_accuracy,
      'best_val_accuracy': result.best_val_accuracy,
  }
  if data.test is not None and ok:  # Only a finished run is tested.
    summary['test_accuracy'] = runner.evaluate(result.state,
                                               data.test)['accuracy']
  return summary | {
      'device_kind': jax.devices()[0].device_kind,
      'device_count': jax.device_count(), 'process_count': jax.process_count(),
      'jax_version': jax.__version__}


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains `config` in `workdir` (resuming if it has checkpoints).

  Returns the summary also written to workdir/summary.json. A workdir of a
  run with other training values is refused (check_workdir_config), and so
  is one that another training holds (hold_workdir), before anything is
  written or compiled.
  """
  started = time.perf_counter()
  model = config_checks.check_config(config)
  with hold_workdir(workdir):
    # Under the lock: a run that ended a moment ago wrote its config.json.
    check_workdir_config(config, workdir)
    return _train_and_evaluate(config, workdir, started, model)


def _train_and_evaluate(config, workdir: str, started: float, model) -> dict:
  """train_and_evaluate, once the config and workdir are checked and the
  workdir is this run's; `model` is the network check_config built."""
  quiet_orbax()
  os.makedirs(workdir, exist_ok=True)  # Process 0's lock made it; others'.
  data = load_data(config)
  for split in (data.train, data.val, data.test):
    if split is not None:
      config_checks.check_image_fits(config.image_size, min(split.images.shape[1:3]),
                       f'the {split.name!r} images')
  runner = Runner(config, data.stats, model, data.total_steps)
  tx, schedule = optim.make_optimizer(config, data.steps_per_epoch, data.total_steps)
  short = optim.schedule_warning(config, schedule, data.steps_per_epoch,
                                 data.total_steps)
  if short:
    logging.warning('Short schedule: %s', short)
  ckpt, state, previous = restore_or_create(config, workdir, runner, tx,
                                            data)
  costs = accounting.summarize(config, model=model)['total']
  resumed = int(jax.device_get(state.step)) > 0
  log = metric_log.MetricLog(
      workdir, None if resumed else rundir.flatten(config.to_dict(),
                                                   stringify=True),
      is_main=jax.process_index() == 0, jsonl=rundir.METRICS)
  timer = Timer(previous, started)
  result = train_loop(config, runner, data, state, ckpt, schedule, log, timer,
                      best=previous.get('best_val_accuracy', 0.0))
  ckpt.close()
  summary = make_summary(config, workdir, runner, data, result, timer, costs,
                         previous) | {
      'schedule_warning': short,
      'implementation': accounting.implementation(config, result.state.params)}
  summary_path = os.path.join(workdir, rundir.SUMMARY)
  if jax.process_index() == 0:
    rundir.write_json_atomic(summary_path, summary)
  log.close()
  logging.info('Summary: %s', json.dumps(summary))
  if result.status == 'diverged':
    raise FloatingPointError(
        f'Training diverged (non-finite loss by step {result.step}); '
        f'status recorded in {summary_path}.')
  return summary


def restore_for_eval(config, workdir: str,
                     model=None) -> tuple[Runner, TrainState]:
  """A Runner and the latest restorable checkpoint of a finished run, with
  the run's data stats (rundir.read_data_stats). model: the network
  config_checks.check_config returned for config; None checks and builds."""
  stats = rundir.read_data_stats(workdir)
  runner = Runner(config, stats, model or config_checks.check_config(config))
  abstract = runner.abstract_state(optim.make_optimizer(config, 1, 1)[0])
  ckpt = checkpoints.Checkpoints(workdir, config.keep_checkpoints, {})
  state = ckpt.restore_latest(runner.sharded(abstract))
  ckpt.close()
  if state is None:
    raise ValueError(f'No checkpoint restores in {ckpt.directory}.')
  return runner, state
