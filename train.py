"""The training loop that every ablation shares.

  python train.py --config=configs/cifar_cpu.py --workdir=/tmp/run \
      --config.data.source=../shared/data/cifar10-train-jpeg.tar.gz

`train_and_evaluate(config, workdir)` is importable from notebooks and tests.
Data parallel over every device (and host) through jax.sharding: a Mesh with
a 'data' axis, batches sharded on it, params replicated. A workdir with
checkpoints resumes; DIR/summary.json records accuracy next to compute.
"""

import functools
import json
import math
import os
import signal
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
from absl import app, flags, logging
from clu import metric_writers
from flax.training import train_state
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
from ml_collections import config_flags

import accounting
import checkpoints
import input_pipeline
from models import build_model

OPTIMIZERS = ('sgd', 'adamw')
STATS_KEY = 'data_stats'  # In DIR/config.json: the train split's mean, std.
SCHEDULES = ('cosine', 'step')
CPU_VECTOR_WIDTHS = ('auto', '256', '512')  # config.cpu_vector_width.


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


def check_config(config: ml_collections.ConfigDict) -> None:
  """Clear errors for bad configs, raised before any data or compilation."""
  def fail(msg):
    raise ValueError(f'Bad config: {msg}')
  if config.optimizer not in OPTIMIZERS:
    fail(f'optimizer={config.optimizer!r}; choose one of {OPTIMIZERS}.')
  if config.schedule not in SCHEDULES:
    fail(f'schedule={config.schedule!r}; choose one of {SCHEDULES}.')
  for key in ('batch_size', 'eval_batch_size'):
    size, devices = config[key], jax.device_count()
    if size <= 0 or size % devices:
      fail(f'{key}={size} must be a positive multiple of the device count '
           f'({devices}); e.g. --config.{key}={devices * max(1, size // devices)}.')
  if config.num_train_steps <= 0 and config.num_epochs <= 0:
    fail('set num_epochs > 0 or num_train_steps > 0.')
  if str(config.get('cpu_vector_width', 'auto')) not in CPU_VECTOR_WIDTHS:
    fail(f'cpu_vector_width={config.cpu_vector_width!r}; choose one of '
         f'{CPU_VECTOR_WIDTHS}.')
  build_model(config.model)  # Unknown model names and keys raise here.


def _cpu_has_avx512() -> bool:
  try:
    with open('/proc/cpuinfo') as f:
      return ' avx512f' in f.read()
  except OSError:
    return False


def compiler_options(config) -> dict:
  """XLA options for the jitted steps. On CPU: the vector width XLA's own
  loops (batch norm, pools, ReLU, concatenation) are compiled for; 'auto'
  is 512 bits where the CPU has AVX-512 (6-8% faster steps at GoogLeNet
  width 0.25 here, scripts/bench_train.py), else XLA's default 256."""
  width = str(config.get('cpu_vector_width', 'auto'))
  if jax.default_backend() != 'cpu':
    return {}
  if width == 'auto':
    width = '512' if _cpu_has_avx512() else '256'
  return {'xla_cpu_prefer_vector_width': int(width)}


def make_optimizer(config, steps_per_epoch: int, total_steps: int):
  warmup = int(config.warmup_epochs * steps_per_epoch)
  lr = config.learning_rate
  if config.schedule == 'cosine':
    schedule = optax.warmup_cosine_decay_schedule(
        0.0, lr, warmup, max(total_steps, warmup + 1))
  else:
    boundaries = {int(f * total_steps): 0.1 for f in config.step_epochs}
    schedule = optax.join_schedules(
        [optax.linear_schedule(0.0, lr, warmup),
         optax.piecewise_constant_schedule(lr, boundaries)], [warmup])
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


def cross_entropy(logits, labels, smoothing: float = 0.0):
  targets = optax.smooth_labels(jax.nn.one_hot(labels, logits.shape[-1]),
                                smoothing)
  return optax.softmax_cross_entropy(logits, targets)


def train_step(state: TrainState, images, labels, *, model, config, stats):
  """One SGD step; augmentation runs here, keyed on (seed, step)."""
  rng = jax.random.fold_in(jax.random.PRNGKey(config.seed), state.step)
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
  metrics = {'loss': loss, 'accuracy': jnp.mean(logits.argmax(-1) == labels),
             'grad_norm': optax.global_norm(grads),
             'param_norm': optax.global_norm(state.params)}  # After the step.
  return state, metrics


def eval_step(state: TrainState, images, labels, mask, *, model, config, stats):
  """Sums over the valid examples of a (padded) batch."""
  x = input_pipeline.preprocess_eval(
      images, image_size=config.image_size, **normalization(config, stats))
  logits = model.apply({'params': state.params,
                        'batch_stats': state.batch_stats}, x, train=False)
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
  return dict(image_size=config.image_size,
              crop_padding=config.data.crop_padding, flip=config.data.flip,
              random_crop=config.data.random_crop, **normalization(config, stats))


def init_state(model, config, tx) -> TrainState:
  """Fresh params (seeded by config.seed), batch stats and optimizer state."""
  size = config.image_size
  variables = model.init(jax.random.PRNGKey(config.seed),
                         jnp.zeros((1, size, size, 3), jnp.float32))
  return TrainState.create(apply_fn=model.apply, params=variables['params'],
                           tx=tx, batch_stats=variables.get('batch_stats', {}))


class Runner:
  """Model, mesh, jitted steps and data placement for one config."""

  def __init__(self, config, stats):
    self.config = config
    self.model = build_model(config.model)
    self.mesh = Mesh(np.asarray(jax.devices()), ('data',))
    self.batch_sharding = NamedSharding(self.mesh, P('data'))
    self.replicated = NamedSharding(self.mesh, P())
    kw = dict(model=self.model, config=config, stats=stats)
    options = compiler_options(config)
    self.train_step = jax.jit(functools.partial(train_step, **kw),
                              donate_argnums=(0,), compiler_options=options)
    self.eval_step = jax.jit(functools.partial(eval_step, **kw),
                             compiler_options=options)

  def to_global(self, local: np.ndarray) -> jax.Array:
    """This process's rows of a global batch -> an array sharded on 'data'."""
    return jax.make_array_from_process_local_data(self.batch_sharding, local)

  def abstract_state(self, tx) -> TrainState:
    return jax.eval_shape(functools.partial(self.init_state, tx))

  def init_state(self, tx) -> TrainState:
    return init_state(self.model, self.config, tx)

  def sharded(self, abstract: TrainState) -> TrainState:
    """Restore targets: every array replicated over the mesh."""
    return jax.tree.map(lambda s: jax.ShapeDtypeStruct(
        s.shape, s.dtype, sharding=self.replicated), abstract)

  def create_state(self, tx) -> TrainState:
    return jax.jit(functools.partial(self.init_state, tx),
                   out_shardings=self.replicated)()

  def evaluate(self, state, split: input_pipeline.Split) -> dict:
    """Accuracy, loss and confusion matrix over every example of `split`."""
    bs, nproc, pid = (self.config.eval_batch_size, jax.process_count(),
                      jax.process_index())
    totals = None
    for idx, mask in input_pipeline.eval_batches(len(split.labels), bs):
      rows = slice(pid * bs // nproc, (pid + 1) * bs // nproc)
      idx, mask = idx[rows], mask[rows]
      out = self.eval_step(state, self.to_global(split.images[idx]),
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


def _flatten(tree: dict, prefix: str = '') -> dict:
  """{'data': {'source': x}} -> {'data.source': x}."""
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out |= _flatten(v, f'{prefix}{k}.')
    else:
      out[prefix + k] = v if isinstance(v, (int, float, str, bool)) else str(v)
  return out


def _write_json(path: str, obj: dict) -> None:
  if jax.process_index() == 0:
    with open(path + '.tmp', 'w') as f:
      json.dump(obj, f, indent=1, default=str)
    os.replace(path + '.tmp', path)


def train_and_evaluate(config: ml_collections.ConfigDict, workdir: str) -> dict:
  """Trains `config` in `workdir` (resuming if it has checkpoints).

  Returns the summary also written to workdir/summary.json.
  """
  check_config(config)
  quiet_orbax()
  os.makedirs(workdir, exist_ok=True)
  is_main = jax.process_index() == 0

  # Data: everything in memory as uint8; augmentation runs in the step.
  train = input_pipeline.load_split(config.data, config.data.train_split)
  val = input_pipeline.load_split(config.data, config.data.eval_split)
  test = (load_optional_split(config.data, config.data.test_split)
          if config.data.test_split not in ('', None, config.data.eval_split)
          else None)
  if train.num_classes > config.model.num_classes:
    raise ValueError(
        f'The data has {train.num_classes} classes but the model '
        f'{config.model.num_classes}; set --config.model.num_classes='
        f'{train.num_classes}.')
  # Python floats: np.float32 would reach config.json as strings.
  stats = tuple(tuple(map(float, s)) for s in input_pipeline.dataset_stats(train))
  steps_per_epoch = input_pipeline.steps_per_epoch(len(train.labels),
                                                   config.batch_size)
  total_steps = (config.num_train_steps if config.num_train_steps > 0 else
                 math.ceil(config.num_epochs * steps_per_epoch))

  runner = Runner(config, stats)
  tx, schedule = make_optimizer(config, steps_per_epoch, total_steps)
  abstract = runner.abstract_state(tx)
  ckpt = checkpoints.Checkpoints(
      workdir, config.keep_checkpoints,
      checkpoints.fingerprint(config.model.to_dict(), abstract) |
      {'image_size': config.image_size})
  ckpt.check_compatible()  # Before compiling or writing anything.

  costs = accounting.summarize(config)['total']
  _write_json(os.path.join(workdir, 'config.json'),
              config.to_dict() | {STATS_KEY: stats})
  state = ckpt.restore_latest(runner.sharded(abstract))
  state = state if state is not None else runner.create_state(tx)
  start = int(jax.device_get(state.step))
  if start:
    logging.info('Resuming from step %d in %s.', start, ckpt.directory)

  # Synchronous: no writer threads to start while a signal may arrive.
  writer = metric_writers.create_default_writer(
      workdir, just_logging=not is_main, asynchronous=False)
  if start == 0:
    writer.write_hparams(_flatten(config.to_dict()))
  history_path = os.path.join(workdir, 'metrics.jsonl')
  summary_path = os.path.join(workdir, 'summary.json')
  previous = {}
  if os.path.exists(summary_path):
    with open(summary_path) as f:
      previous = json.load(f)
  best = previous.get('best_val_accuracy', 0.0) if start else 0.0

  def log(step: int, scalars: dict) -> None:
    writer.write_scalars(step, scalars)
    if is_main:
      with open(history_path, 'a') as f:
        f.write(json.dumps({'step': step, **scalars}) + '\n')

  step_flops = None
  status, val_result, pending = 'ok', None, []
  train_seconds = previous.get('train_seconds', 0.0) if start else 0.0
  timed_images, timed_seconds = 0, 0.0
  tick = time.perf_counter()
  with StopSignal() as stop:
    for step in range(start, total_steps):
      idx = input_pipeline.batch_indices(
          len(train.labels), config.batch_size, step, config.seed,
          process_index=jax.process_index(),
          process_count=jax.process_count())
      images, labels = (runner.to_global(train.images[idx]),
                        runner.to_global(train.labels[idx]))
      if step_flops is None:  # Compile once; read XLA's cost of the step.
        step_fn = runner.train_step.lower(state, images, labels).compile()
        step_flops = accounting.cost_flops(step_fn)
      state, metrics = step_fn(state, images, labels)
      pending.append(metrics)
      done = step + 1
      last = done == total_steps
      time_slot_over = 0 < config.stop_after_steps <= done - start
      if time_slot_over:
        stop.received = stop.received or f'stop_after_steps={done - start}'
      stopping = stop.decide(time_slot_over or
                             done % config.log_every_steps == 0)
      flush = (last or stopping or done % config.log_every_steps == 0 or
               done % config.checkpoint_every_steps == 0 or
               done % config.eval_every_steps == 0)
      if not flush:
        continue
      # Block here: every metric since the last flush must be finite.
      host = jax.device_get(pending)
      now = time.perf_counter()
      train_seconds += now - tick
      if step > start:  # Skip the first (compiling) step when timing.
        timed_images += len(host) * config.batch_size
        timed_seconds += now - tick
      pending = []
      losses = [float(m['loss']) for m in host]
      # A loss is of the params before its step: the newest params, which a
      # checkpoint would save, must be finite too.
      if not all(map(math.isfinite, losses + [float(host[-1]['param_norm'])])):
        status = 'diverged'
        logging.error(
            'Loss or params became non-finite by step %d (last loss %s): '
            'training diverged. The last good checkpoint is kept in %s; try '
            'a lower learning_rate or grad_clip_norm.', done, losses[-1],
            ckpt.directory)
        break
      images_per_s = timed_images / max(timed_seconds, 1e-9)
      scalars = {k: float(np.mean([m[k] for m in host])) for k in host[0]}
      scalars |= {'learning_rate': float(schedule(step)),
                  'images_per_s': images_per_s}
      log(done, {f'train/{k}': v for k, v in scalars.items()})
      eta = (total_steps - done) * config.batch_size / max(images_per_s, 1e-9)
      logging.info(
          'step %d/%d  epoch %.2f  loss %.4f  acc %.3f  %.0f img/s  ETA %s',
          done, total_steps, done / steps_per_epoch, scalars['loss'],
          scalars['accuracy'], images_per_s,
          time.strftime('%H:%M:%S', time.gmtime(eta)) if timed_images else '?')
      if last or done % config.eval_every_steps == 0:
        val_result = runner.evaluate(state, val)
        best = max(best, val_result['accuracy'])
        log(done, {'val/accuracy': val_result['accuracy'],
                   'val/loss': val_result['loss']})
        logging.info('step %d  val accuracy %.4f  loss %.4f', done,
                     val_result['accuracy'], val_result['loss'])
      if last or stopping or done % config.checkpoint_every_steps == 0:
        ckpt.save(done, state)
      writer.flush()
      tick = time.perf_counter()
      if stopping:
        logging.warning('Stopping at step %d (%s); checkpoint saved in %s.',
                        done, stopping, ckpt.directory)
        status = 'interrupted'
        break
  ckpt.close()

  step = int(jax.device_get(state.step)) if status != 'diverged' else done
  summary = {
      'status': status, 'model': config.model.name,
      'module': config.model.module, 'workdir': os.path.abspath(workdir),
      'params': costs['params'], 'macs_per_image': costs['macs'],
      'xla_flops_per_image': costs['xla_flops'],
      'train_step_flops': step_flops,
      'train_images_per_s': (timed_images / timed_seconds if timed_seconds
                             else previous.get('train_images_per_s')),
      'train_seconds': train_seconds, 'steps': step,
      'epochs': step / steps_per_epoch, 'batch_size': config.batch_size,
      'val_split': val.name,
      'val_accuracy': (val_result or {}).get('accuracy',
                                             previous.get('val_accuracy')),
      'best_val_accuracy': best,
      'device_kind': jax.devices()[0].device_kind,
      'device_count': jax.device_count(), 'process_count': jax.process_count(),
      'jax_version': jax.__version__,
  }
  if test is not None and status == 'ok':
    result = runner.evaluate(state, test)
    summary['test_accuracy'] = result['accuracy']
  _write_json(summary_path, summary)
  writer.close()
  logging.info('Summary: %s', json.dumps(summary))
  if status == 'diverged':
    raise FloatingPointError(
        f'Training diverged (non-finite loss by step {step}); '
        f'status recorded in {summary_path}.')
  return summary


def load_run_config(workdir: str) -> ml_collections.ConfigDict:
  """A run's saved config; its normalisation stats under STATS_KEY."""
  path = os.path.join(workdir, 'config.json')
  if not os.path.exists(path):
    raise ValueError(f'{path} not found: is {workdir!r} a train.py workdir?')
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def restore_for_eval(config, workdir: str) -> tuple[Runner, TrainState]:
  """A Runner and the latest restorable checkpoint of a finished run."""
  stats = tuple(tuple(map(float, s)) for s in config[STATS_KEY])
  runner = Runner(config, stats)
  abstract = runner.abstract_state(make_optimizer(config, 1, 1)[0])
  ckpt = checkpoints.Checkpoints(workdir, config.keep_checkpoints, {})
  state = ckpt.restore_latest(runner.sharded(abstract))
  ckpt.close()
  if state is None:
    raise ValueError(f'No checkpoint restores in {ckpt.directory}.')
  return runner, state


FLAGS = flags.FLAGS
config_flags.DEFINE_config_file('config', None, 'Config file[:args].',
                                lock_config=True)
flags.DEFINE_string('workdir', None, 'Directory for checkpoints and logs.')
flags.DEFINE_bool('distributed', False,
                  'Call jax.distributed.initialize() (multi-host).')
flags.DEFINE_string('coordinator_address', None, 'host:port of process 0.')
flags.DEFINE_integer('num_processes', None, 'Number of processes.')
flags.DEFINE_integer('process_id', None, 'This process id.')


def initialize_distributed(config) -> None:
  if FLAGS.distributed or config.distributed:
    jax.distributed.initialize(FLAGS.coordinator_address, FLAGS.num_processes,
                               FLAGS.process_id)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  initialize_distributed(FLAGS.config)
  logging.info('JAX process %d/%d, devices: %s', jax.process_index(),
               jax.process_count(), jax.devices())
  try:
    train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except (ValueError, FloatingPointError, input_pipeline.DataError) as e:
    raise SystemExit(f'error: {e}') from None


if __name__ == '__main__':
  flags.mark_flags_as_required(['config', 'workdir'])
  app.run(main)
