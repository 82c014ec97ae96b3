import os
import sys

# Tests import the reference helpers as a plain module.
sys.path.insert(0, os.path.dirname(__file__))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# The suite runs on the CPU: with libtpu installed (requirements-test.txt, for the TPU compile tests) JAX would
# otherwise try to start a TPU backend and print libtpu's warnings; TPU programs are compiled from topology
# descriptions, which need no backend. Child processes inherit this.
os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Once a test in this process has compiled for a TPU topology, libtpu holds /tmp/libtpu_lockfile and a child process
# that compiles too (`deberta-jax compile`) would abort on it; compiling needs no chip, so sharing libtpu is safe here.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")
