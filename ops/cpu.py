"""What the host CPU can do, read once from /proc/cpuinfo (Linux x86-64)."""

import functools


@functools.cache
def flags() -> frozenset[str]:
  """The CPU's feature flags; empty where /proc/cpuinfo can't be read."""
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('flags'):
          return frozenset(line.partition(':')[2].split())
  except OSError:
    pass
  return frozenset()


def has_avx512() -> bool:
  return 'avx512f' in flags()
