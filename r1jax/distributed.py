"""Multi-process start-up: join the other processes of a run, and tell process 0 apart.

Call `maybe_initialize()` first thing in a launcher, before any other JAX call. How it learns
the process layout, by environment:

  * R1JAX_NUM_PROCESSES > 1, with R1JAX_COORDINATOR ("host:port" of process 0) and
    R1JAX_PROCESS_ID: explicit. For multi-node GPU (one process per node, each driving its
    local GPUs; JAX_LOCAL_DEVICE_IDS restricts them if you run one process per GPU), several
    CPU processes on one machine (tests), or any launcher we do not auto-detect.
  * R1JAX_DISTRIBUTED=auto, or a multi-task SLURM job (SLURM_NTASKS > 1), or Open MPI
    (OMPI_COMM_WORLD_SIZE > 1): `jax.distributed.initialize()` with no arguments, which asks the
    cluster (TPU metadata server, SLURM, Open MPI) for the coordinator and process ids. On a
    Cloud TPU pod slice set R1JAX_DISTRIBUTED=auto on every worker.
  * anything else: a single process; nothing to do.
"""
from __future__ import annotations

import os
from typing import Mapping, Optional

import jax


def launch_mode(environ: Mapping[str, str]) -> str:
    """"explicit", "auto" or "single": how this process finds the others (see module doc)."""
    if int(environ.get("R1JAX_NUM_PROCESSES", "1")) > 1:
        return "explicit"
    if (environ.get("R1JAX_DISTRIBUTED") == "auto"
            or int(environ.get("SLURM_NTASKS", "1")) > 1
            or int(environ.get("OMPI_COMM_WORLD_SIZE", "1")) > 1):
        return "auto"
    return "single"


def maybe_initialize(environ: Optional[Mapping[str, str]] = None) -> bool:
    """Calls `jax.distributed.initialize` when the environment describes several processes.

    Returns whether this process is now part of a multi-process run. Safe to call twice.
    """
    environ = os.environ if environ is None else environ
    mode = launch_mode(environ)
    if mode == "single":
        return False
    if jax.distributed.is_initialized():
        return True
    # Cross-process collectives of the CPU backend need gloo; GPU/TPU backends ignore the flag.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    if mode == "explicit":
        missing = [k for k in ("R1JAX_COORDINATOR", "R1JAX_PROCESS_ID") if k not in environ]
        if missing:
            raise ValueError(f"R1JAX_NUM_PROCESSES={environ['R1JAX_NUM_PROCESSES']} needs "
                             f"{' and '.join(missing)} too.")
        jax.distributed.initialize(coordinator_address=environ["R1JAX_COORDINATOR"],
                                   num_processes=int(environ["R1JAX_NUM_PROCESSES"]),
                                   process_id=int(environ["R1JAX_PROCESS_ID"]))
    else:
        jax.distributed.initialize()
    return True


def is_main_process() -> bool:
    """True on process 0, the only one that writes logs and metrics."""
    return jax.process_index() == 0
