"""The merged view of a finished run, from its shard files (see engine.py): written by process 0.

  accepted.jsonl         the mix (select.mix) of every shard's accepted rows: chat records
                         ({"messages", "provenance"}) that SFT reads with data.kind="chat".
  rejected_sample.jsonl  up to `output.rejected_per_reason` rejected rows per (source, reason).
  stats.json             per source: prompts, samples, accepted (after selection), in_mix,
                         rejected {reason: count}, tokens, judge {judged, errors, compared,
                         agreed, agreement, and the four judge_accepts|rejects_rules_pass|fail
                         counts}, and its share of the time; plus "timing" for the run.

Everything but the timing entries is a function of the shards' rows, so a resumed run's files
equal an uninterrupted run's.
"""
from __future__ import annotations

import json
import os
from collections import Counter, defaultdict

from r1jax.rejection import engine, select, sources

ACCEPTED, REJECTED_SAMPLE, STATS = "accepted.jsonl", "rejected_sample.jsonl", "stats.json"


def _add(total: dict, part: dict) -> None:
    for key in ("prompts", "samples", "accepted", "tokens"):
        total[key] += part[key]
    total["rejected"].update(part["rejected"])
    total["judge"].update(part["judge"])


def _source_stats(total: dict, in_mix: int, seconds: float) -> dict:
    judge = dict(total["judge"])
    if judge.get("compared"):
        judge["agreement"] = judge["agreed"] / judge["compared"]
    return {"prompts": total["prompts"], "samples": total["samples"], "accepted": total["accepted"],
            "in_mix": in_mix, "acceptance_rate": total["accepted"] / max(total["samples"], 1),
            "rejected": dict(sorted(total["rejected"].items())), "tokens": total["tokens"],
            "judge": dict(sorted(judge.items())),
            "timing": {"seconds": seconds,
                       "samples_per_second": total["samples"] / seconds if seconds else None}}


def merge(config, workdir: str, num_prompts: int) -> dict:
    """Writes the merged view (each file atomically) and returns the stats."""
    num_shards = len(engine.shards(num_prompts, config.output.shard_size))
    missing = [s for s in range(num_shards) if not engine.is_done(workdir, s)]
    if missing:
        raise RuntimeError(f"shards {missing[:10]} of {workdir} are not done: run the command again")
    rows_by_source = defaultdict(list)
    samples_by_reason = defaultdict(list)
    totals = defaultdict(lambda: engine._new_stats())
    seconds, timing = defaultdict(float), Counter()
    for s in range(num_shards):
        for row in engine.read_jsonl(engine.shard_path(workdir, s, "accepted.jsonl")):
            rows_by_source[row["provenance"]["source"]].append(row)
        for row in engine.read_jsonl(engine.shard_path(workdir, s, "rejected.jsonl")):
            bucket = samples_by_reason[(row["source"], row["reason"])]
            if len(bucket) < config.output.rejected_per_reason:
                bucket.append(row)
        with open(engine.shard_path(workdir, s, "stats.json")) as f:
            stats = json.load(f)
        timing.update(stats["timing"])
        # The shard's time, shared among its sampled sources by their tokens (reused responses
        # cost no sampling).
        sampled = {n: p["tokens"] for n, p in stats["sources"].items()
                   if config.sources[n].responses == "sample"}
        for name, part in stats["sources"].items():
            _add(totals[name], part)
            seconds[name] += stats["timing"]["seconds"] * sampled.get(name, 0) / (sum(sampled.values()) or 1)
    reasoning = {n for n, s in config.sources.items() if sources.is_reasoning(s.kind)}
    weights = {n: s.weight for n, s in config.sources.items()}
    mixed, taken = select.mix(dict(rows_by_source), reasoning, weights, config.select)
    engine.write_atomically(os.path.join(workdir, ACCEPTED), engine.jsonl(mixed))
    engine.write_atomically(os.path.join(workdir, REJECTED_SAMPLE), engine.jsonl(
        row for key in sorted(samples_by_reason) for row in samples_by_reason[key]))
    sampling = [t for n, t in totals.items() if config.sources[n].responses == "sample"]
    samples = sum(t["samples"] for t in sampling)  # Of the policy: reused responses are free.
    accepted = sum(t["accepted"] for t in sampling)
    run_seconds = timing["seconds"]
    out = {"sources": {name: _source_stats(totals[name], taken.get(name, 0), seconds[name])
                       for name in sorted(totals)},
           "mix": {"reasoning": sum(taken.get(n, 0) for n in reasoning),
                   "general": sum(v for n, v in taken.items() if n not in reasoning),
                   "total": len(mixed)},
           "timing": {**{k: timing[k] for k in ("seconds", "sampler_seconds", "judge_seconds")},
                      "samples_per_second": samples / run_seconds if run_seconds else None,
                      "accepted_per_second": accepted / run_seconds if run_seconds else None,
                      "sampler_share": timing["sampler_seconds"] / run_seconds if run_seconds else None}}
    engine.write_atomically(os.path.join(workdir, STATS), json.dumps(out, indent=1))
    return out
