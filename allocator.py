"""Run the command-line tools under mimalloc instead of glibc's malloc.

XLA:CPU allocates each step's buffers afresh. glibc's malloc hands large
ones back to the kernel when they are freed (munmap, or MADV_DONTNEED on
a thread's heap), so every step faults the same memory in again and the
kernel zeroes it: up to half a bfloat16 step's CPU time on a 2-core host
(docs/performance.md, "Allocator"). mimalloc with purging off keeps freed
memory for reuse. The allocator must be in place before the process
allocates anything, so `use_mimalloc()`, called first thing by a CLI,
re-executes the same command once with the library preloaded
(LD_PRELOAD). It does nothing where the library is missing (not Linux, or
the `cmeel-mimalloc` wheel not installed), where mimalloc or another
allocator is already preloaded, or where POINTWISE_MALLOC=system.
"""

import importlib.metadata
import os
import sys

ENV = 'POINTWISE_MALLOC'  # 'system' keeps glibc; set to 'mimalloc' on re-exec.
# mimalloc's options, unless the environment sets them: keep freed memory.
MIMALLOC_ENV = {'MIMALLOC_PURGE_DELAY': '-1'}


def mimalloc_library() -> str | None:
  """Path of the cmeel-mimalloc wheel's shared library, or None."""
  if not sys.platform.startswith('linux'):
    return None
  try:
    files = importlib.metadata.files('cmeel-mimalloc') or []
  except importlib.metadata.PackageNotFoundError:
    return None
  for f in files:
    if f.name.startswith('libmimalloc.so'):
      path = str(f.locate())
      if os.path.exists(path):
        return path
  return None


def preloaded() -> list[str]:
  """The libraries in LD_PRELOAD."""
  return os.environ.get('LD_PRELOAD', '').replace(':', ' ').split()


def current() -> str:
  """Which allocator this process runs: 'mimalloc', a preloaded library's
  file name, or 'glibc'."""
  for path in preloaded():
    name = os.path.basename(path)
    if 'malloc' in name:
      return 'mimalloc' if 'mimalloc' in name else name
  return 'glibc'


def use_mimalloc() -> None:
  """Re-executes this command under mimalloc, once; returns if it cannot or
  need not."""
  if os.environ.get(ENV) or current() != 'glibc':
    return
  library = mimalloc_library()
  if library is None:
    return
  env = {**MIMALLOC_ENV, **os.environ, ENV: 'mimalloc',
         'LD_PRELOAD': ':'.join([library] + preloaded())}
  sys.stdout.flush()
  sys.stderr.flush()
  os.execve(sys.executable, [sys.executable, *sys.orig_argv[1:]], env)
