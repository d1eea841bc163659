"""The boundary fuzz (fuzz_boundary.py) in a child process, so that a crash of the interpreter is a
failed test with its seed, not a dead test run."""

import os
import signal
import subprocess
import sys

import pytest

import dpsgd

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_arguments_never_crash(seed):
    env = dict(os.environ, DPSGD_LIBRARY=os.path.realpath(dpsgd.library_path))
    p = subprocess.run([sys.executable, os.path.join(HERE, "fuzz_boundary.py"), str(seed), "2000"],
                       capture_output=True, text=True, env=env, timeout=300)
    if p.returncode < 0:
        pytest.fail("seed %d: the interpreter died of %s\n%s%s" % (seed, signal.Signals(-p.returncode).name,
                                                                    p.stdout[-3000:], p.stderr[-3000:]))
    assert p.returncode == 0, "seed %d:\n%s%s" % (seed, p.stdout[-3000:], p.stderr[-3000:])
    assert "fuzz: 2000 calls" in p.stdout
