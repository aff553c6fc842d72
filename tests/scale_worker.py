"""Runs a tiny sweep in a separate process (fake devices or jax.distributed) and saves it.

python tests/scale_worker.py OUT.npz [PROCESS_ID NUM_PROCESSES PORT]
"""

import os
import sys

import jax

if len(sys.argv) > 2:
    pid, n, port = int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(
        coordinator_address=f"127.0.0.1:{port}", num_processes=n, process_id=pid, initialization_timeout=120
    )

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import purify
from tests.conftest import tiny

res = purify.sweep(tiny(), grid={"tau": [0.0, 0.3]}, seeds=3, chunk_size=6 if jax.process_count() == 1 else None)
res.meta["devices"] = len(jax.local_devices())
res.meta["processes"] = jax.process_count()
if jax.process_index() == 0:
    res.save(sys.argv[1])
else:  # every process holds the whole sweep
    res.save(sys.argv[1].replace(".npz", f".p{jax.process_index()}.npz"))
