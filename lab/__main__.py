"""``python3 -m lab``: the lab's main job (see lab/run.py)."""

import os

# Two OpenMP threads that spin while waiting stall each other when the CPU is shared
# (3x slower here with other work running); passive waiting costs nothing when it is not.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .run import main  # noqa: E402

main()
