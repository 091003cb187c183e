"""allocator.use_mimalloc: the CLIs re-execute once under mimalloc."""

import os
import platform
import subprocess
import sys

import pytest

import allocator

pytestmark = pytest.mark.skipif(
    not (sys.platform.startswith('linux') and platform.machine() == 'x86_64'),
    reason='cmeel-mimalloc is installed on x86-64 Linux only')

# Prints what the process runs under after use_mimalloc(): the allocator it
# reports, whether libmimalloc is mapped into it, its argv and how many
# times this line ran (a parent's output would show twice).
PROBE = """
import os, sys, allocator
allocator.use_mimalloc()
mapped = 'libmimalloc' in open('/proc/self/maps').read()
print(allocator.current(), mapped, sys.argv[1:],
      os.environ.get('MIMALLOC_PURGE_DELAY'))
"""


def probe(**env) -> list[str]:
  environ = {k: v for k, v in os.environ.items()
             if k not in ('LD_PRELOAD', allocator.ENV, 'MIMALLOC_PURGE_DELAY')}
  out = subprocess.run([sys.executable, '-c', PROBE, 'a b', '--flag=1'],
                       env=environ | env, capture_output=True, text=True,
                       check=True)
  assert out.stderr == ''
  return out.stdout.splitlines()


def test_the_wheel_ships_the_library():
  assert allocator.mimalloc_library() is not None


def test_a_cli_reexecutes_once_under_mimalloc_with_its_arguments():
  assert probe() == ["mimalloc True ['a b', '--flag=1'] -1"]


def test_system_keeps_glibc():
  assert probe(**{allocator.ENV: 'system'}) == [
      "glibc False ['a b', '--flag=1'] None"]


def test_a_users_own_options_and_preloads_are_kept():
  lib = allocator.mimalloc_library()
  assert probe(MIMALLOC_PURGE_DELAY='10', LD_PRELOAD=lib) == [
      "mimalloc True ['a b', '--flag=1'] 10"]
