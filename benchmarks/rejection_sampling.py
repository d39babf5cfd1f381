"""Rejection sampling's throughput on this CPU (the default config), and what the pod config can expect.

  python benchmarks/rejection_sampling.py [--workdir=workdirs/rejection]

Runs `python -m launch.rejection_sample --config=configs/rejection_sampling.py --workdir=DIR` (a
finished DIR is only merged again: its shards keep the timings recorded when they ran) and reads
DIR/stats.json: samples/s and accepted samples/s (the policy's samples; reused responses cost
no sampling) over the shards' summed seconds, and the
sampler's share of that time (policy sampling; the judge's sampling is reported apart). The
ratio printed is accepted samples/s over samples/s: the share of the sampling that ends up as
training data.

The pod figure is an estimate, not a measurement (no accelerator here): decoding is bound by
memory bandwidth, so a replica's decode step costs (weights + the batch's KV cache) bytes over
its chips' HBM bandwidth at `--roofline_fraction` (the project's goal: 60%); tokens/s per
replica is its batch over that time; samples/s is all replicas' tokens/s over the mean sample
length. Every input of that estimate is written beside it. Writes
benchmarks/results/rejection_sampling_cpu.json.
"""
import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import host  # noqa: E402
from configs import rejection_sampling  # noqa: E402
from r1jax import models  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
V5P_HBM_BYTES_PER_S = 2.765e12  # per chip (Cloud TPU v5p spec sheet)


def pod_estimate(mean_sample_tokens: float, mean_prompt_tokens: float, roofline_fraction: float) -> dict:
    """Expected samples/s of the qwen2_5_7b variant on a v5p-64 slice (see the module docstring)."""
    config = rejection_sampling.get_config("qwen2_5_7b")
    model = models.preset("qwen2_5_7b")
    chips_per_replica = config.mesh.shape["tensor"] * config.mesh.shape["fsdp"]
    replicas = 32 // chips_per_replica  # v5p-64: 32 chips
    batch = config.sampling.batch_size // config.mesh.shape["data"]  # completions per replica
    weight_bytes = model.num_params * 2  # bfloat16
    kv_bytes_per_token = 2 * model.num_layers * model.num_kv_heads * model.head_dim * 2
    context = mean_prompt_tokens + mean_sample_tokens / 2  # mean over a completion's decode steps
    step_s = (weight_bytes + batch * context * kv_bytes_per_token) / (
        chips_per_replica * V5P_HBM_BYTES_PER_S * roofline_fraction)
    tokens_per_s = replicas * batch / step_s
    return {"replicas": replicas, "chips_per_replica": chips_per_replica, "batch_per_replica": batch,
            "weight_bytes": weight_bytes, "kv_bytes_per_token": kv_bytes_per_token,
            "mean_sample_tokens": mean_sample_tokens, "mean_prompt_tokens": mean_prompt_tokens,
            "roofline_fraction": roofline_fraction, "decode_step_seconds": step_s,
            "tokens_per_second": tokens_per_s, "samples_per_second": tokens_per_s / mean_sample_tokens}


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--workdir", default=os.path.join(ROOT, "workdirs", "rejection"))
    parser.add_argument("--pod_sample_tokens", type=float, default=4000.0,
                        help="mean response length assumed for the pod estimate (R1-style long CoT)")
    parser.add_argument("--pod_prompt_tokens", type=float, default=200.0)
    parser.add_argument("--roofline_fraction", type=float, default=0.6)
    args = parser.parse_args()
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "launch.rejection_sample", "--config=configs/rejection_sampling.py",
                    f"--workdir={args.workdir}", "--noprogress"], cwd=ROOT, check=True)
    wall = time.perf_counter() - start
    with open(os.path.join(args.workdir, "stats.json")) as f:
        stats = json.load(f)
    timing = stats["timing"]
    config = rejection_sampling.get_config("")
    sampled = [n for n, s in config.sources.items() if s.responses == "sample"]
    samples = sum(stats["sources"][n]["samples"] for n in sampled)  # The policy's; not reused rows.
    accepted = sum(stats["sources"][n]["accepted"] for n in sampled)
    result = {
        "machine": host.cpu_name(), "cpus": os.cpu_count(), "config": "configs/rejection_sampling.py (cpu)",
        "samples": samples, "accepted": accepted, "in_mix": stats["mix"]["total"],
        "shard_seconds": timing["seconds"], "wall_seconds_this_call": wall,
        "samples_per_second": timing["samples_per_second"],
        "accepted_per_second": timing["accepted_per_second"],
        "sampler_share": timing["sampler_share"],
        "judge_share": timing["judge_seconds"] / timing["seconds"],
        "per_source": {name: {k: s[k] for k in ("prompts", "samples", "accepted", "in_mix", "tokens",
                                                  "rejected", "judge")}
                       for name, s in stats["sources"].items()},
        "pod_estimate_qwen2_5_7b_v5p_64": pod_estimate(args.pod_sample_tokens, args.pod_prompt_tokens,
                                                       args.roofline_fraction),
    }
    ratio = result["accepted_per_second"] / result["samples_per_second"]
    print(f"samples/s {result['samples_per_second']:.2f}, accepted/s {result['accepted_per_second']:.2f} "
          f"(ratio {ratio:.3f}); sampler {result['sampler_share']:.0%} of the time, judge "
          f"{result['judge_share']:.0%}; pod estimate "
          f"{result['pod_estimate_qwen2_5_7b_v5p_64']['samples_per_second']:.1f} samples/s")
    host.write_result(result, os.path.join(ROOT, "benchmarks", "results", "rejection_sampling_cpu.json"))


if __name__ == "__main__":
    main()
