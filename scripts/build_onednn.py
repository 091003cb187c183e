"""Compiles csrc/onednn_conv.cc into build/onednn_conv.so (models/onednn.py).

  .venv/bin/python scripts/build_onednn.py [--optional]

`make setup` runs it with --optional: where it can't build (no compiler, or
not x86-64 Linux, where the oneDNN wheels don't install) it says why and
exits 0, and conv_impl='auto' uses the im2col path.
"""

import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

from models import onednn  # noqa: E402


def main():
  try:
    print(f'built {onednn.build()}')
  except RuntimeError as e:
    print(f'oneDNN convolutions not built: {e}\n'
          "conv_impl='auto' will use the im2col path.", file=sys.stderr)
    sys.exit(0 if '--optional' in sys.argv[1:] else 1)


if __name__ == '__main__':
  main()
