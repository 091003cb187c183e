"""Compiles ops/onednn/onednn_conv.cc into build/onednn_conv.so.

  .venv/bin/python -m ops.onednn.build [--optional]

`make setup` runs it with --optional: where it can't build (no compiler, or
not x86-64 Linux, where the oneDNN wheels don't install) it says why and
exits 0, and `--config.ops.conv` / `--config.ops.pool` 'auto' use the XLA
forms (im2col convolutions, shifted-slice pools).
"""

import sys

from absl import app, flags

from ops import onednn

flags.DEFINE_bool('optional', False,
                  'Exit 0 with a message when the library cannot be built.')
FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'Unexpected arguments: {argv[1:]}')
  try:
    print(f'built {onednn.build()}')
  except RuntimeError as e:
    print(f'oneDNN ops not built: {e}\n'
          "ops 'auto' will use the im2col convolutions and shifted-slice "
          'pools.', file=sys.stderr)
    sys.exit(0 if FLAGS.optional else 1)


if __name__ == '__main__':
  app.run(main)
