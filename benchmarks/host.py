"""What machine a benchmark ran on, for its result file (imported by the scripts beside it)."""
import json
import os
import platform


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo (Linux), else what `platform` knows."""
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f
                        if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


# What changes the CPU code paths: an AVX-512 machine emulates an AVX2-only one with
# XLA_FLAGS=--xla_cpu_max_isa=AVX2 (JAX) and ATEN_CPU_CAPABILITY=avx2 (PyTorch).
ISA_VARIABLES = ("XLA_FLAGS", "ATEN_CPU_CAPABILITY")


def write_result(result: dict, path: str) -> None:
    """Writes a benchmark's result as indented JSON, with the ISA settings it ran under,
    making its directory, and says where."""
    result = {**result, "isa_environment": {k: os.environ.get(k) for k in ISA_VARIABLES}}
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {path}")
