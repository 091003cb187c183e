"""The training command; the loop itself is trainer.py's.

  python train.py --config=configs/cifar_cpu.py --workdir=/tmp/run \
      --config.data.source=PATH/TO/cifar10

--config=FILE[:ARGS] picks a config, --config.KEY=VALUE overrides any key of
configs/base.py; --distributed (or config.distributed) calls
jax.distributed.initialize() for multi-host runs. Errors end the process
with one line, `error: ...`; a workdir that another training holds exits
with rundir.IN_USE_EXIT_CODE. This file holds the flags and main only:
code imports trainer instead (trainer.train_and_evaluate).
"""

import allocator
if __name__ == '__main__':  # Before anything allocates (allocator.py).
  allocator.use_mimalloc()

import sys

import jax
from absl import app, flags, logging
from ml_collections import config_flags

import input_pipeline
import rundir
from configs import common as config_common
from trainer import train_and_evaluate

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
  del argv  # config_common.parse_flags refused any but the program's name.
  initialize_distributed(FLAGS.config)
  logging.info('JAX process %d/%d, devices: %s', jax.process_index(),
               jax.process_count(), jax.devices())
  try:
    train_and_evaluate(FLAGS.config, FLAGS.workdir)
  except rundir.WorkdirInUseError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(rundir.IN_USE_EXIT_CODE)
  except (ValueError, FloatingPointError, input_pipeline.DataError) as e:
    raise SystemExit(f'error: {e}') from None


if __name__ == '__main__':
  flags.mark_flags_as_required(['config', 'workdir'])
  app.run(main, flags_parser=config_common.parse_flags)
