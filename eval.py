"""Evaluates a run's latest checkpoint on a split.

  python eval.py --workdir=/tmp/run [--split=test] [--data=path/to/folder]

Restores with the run's own saved config (DIR/config.json) and data stats
(DIR/data_stats.json, or for an older run its config.json), on any device
count, and writes DIR/eval_<split>.json (rundir.eval_file: a slice as
_<start>-<end>, 'train[90%:]' -> eval_train_90-100.json): accuracy, loss,
num_examples, per-class accuracy and the confusion matrix; prints one line
naming it. --data points the run at another source, e.g. a folder with a
`test/` split. Orbax's INFO lines stay off the console, as in train.py.

It may run while the run still trains (it takes no workdir lock): it reads
only finished checkpoints (orbax lists a step once its save is complete) and
writes only DIR/eval_<split>.json, which training never writes. A workdir
without a checkpoint is refused, and left as it was.
"""

import allocator
if __name__ == '__main__':  # Before anything allocates (allocator.py).
  allocator.use_mimalloc()

import os

import jax
import orbax.checkpoint as ocp
from absl import app, flags, logging

import checkpoints
import config_checks
import input_pipeline
import rundir
import trainer
from configs.common import parse_flags

flags.DEFINE_string('workdir', None, 'The run directory (train.py --workdir).')
flags.DEFINE_string('split', None, "Split to evaluate; default: the run's "
                    'eval_split.')
flags.DEFINE_string('data', None, 'Override config.data.source.')
FLAGS = flags.FLAGS


def evaluate(workdir: str, split: str | None = None,
             data: str | None = None) -> dict:
  config = rundir.load_run_config(workdir)
  directory = checkpoints.directory(workdir)
  if not ocp.utils.checkpoint_steps(directory):
    raise ValueError(
        f'{workdir} has no checkpoint to evaluate (none in {directory}): '
        f'train it first (python train.py --workdir={workdir} ...).')
  if data:
    config.data.source = data
  split = split or config.data.eval_split
  model = config_checks.check_config(config)
  examples = input_pipeline.load_split(config.data, split)
  config_checks.check_image_fits(config.image_size, min(examples.images.shape[1:3]),
                         f'the {split!r} images of {config.data.source}')
  runner, state = trainer.restore_for_eval(config, workdir, model)
  result = runner.evaluate(state, examples)
  result |= {'step': int(jax.device_get(state.step)),
             'source': config.data.source}
  path = os.path.join(workdir, rundir.eval_file(split))
  if jax.process_index() == 0:
    rundir.write_json_atomic(path, result)
  return result | {'path': path}


def main(argv):
  del argv
  trainer.quiet_orbax()  # As train.py: orbax's INFO lines off the console.
  try:
    r = evaluate(FLAGS.workdir, FLAGS.split, FLAGS.data)
  except (ValueError, input_pipeline.DataError) as e:
    raise SystemExit(f'error: {e}') from None
  print(f'{r["split"]}: accuracy {r["accuracy"]:.4f}  loss {r["loss"]:.4f}  '
        f'({r["num_examples"]} examples, step {r["step"]}): {r["path"]}')


if __name__ == '__main__':
  flags.mark_flags_as_required(['workdir'])
  app.run(main, flags_parser=parse_flags)
