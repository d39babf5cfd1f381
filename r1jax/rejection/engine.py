"""The rejection-sampling engine: shards of prompts in, accepted and rejected rows out, resumably.

The prompts (every source's, in source-name order) are cut into shards of `output.shard_size`;
process p of P handles shards p, p + P, ... A shard's rows depend only on the shard and the
seed (its sampling seed is derived from (seed, shard index)), never on the process or on what
ran before, so a rerun, or a run on another number of processes, writes the same rows.

Each finished shard is written as three files in DIR/shards/: NNNNN.accepted.jsonl,
NNNNN.rejected.jsonl and NNNNN.stats.json, each to a temporary name first and then renamed; the
stats file is renamed last and marks the shard done. A SIGKILL at any moment leaves only whole
shards, and the same command again skips them: no prompt is lost or duplicated. When every
shard is done, process 0 writes the merged view (`merge`): accepted.jsonl (the selected mix),
rejected_sample.jsonl and stats.json.

Checks on each response, in order (the first failure is the row's `reason`; all failures are in
`failed`): rules ("rule:<reward>" below its threshold, "rule_error:<reward>" when it failed to
score), the judge ("judge_rejected", "judge_error"), the filters (their names), the duplicate
filter, then the per-prompt limit ("per_prompt_limit").
"""
from __future__ import annotations

import glob
import json
import math
import os
import time
import zlib
from collections import Counter, defaultdict

import numpy as np
import tqdm

from r1jax import rewards
from r1jax.rejection import filters, select, sources
from r1jax.rejection.policy import Sample

SHARD_DIR = "shards"


def shard_seed(seed: int, shard: int, source: str) -> int:
    """The sampling seed of one source's prompts in one shard: independent of the process."""
    return int(np.random.SeedSequence([seed, shard, zlib.crc32(source.encode())]).generate_state(1)[0])


def shard_path(workdir: str, shard: int, part: str) -> str:
    return os.path.join(workdir, SHARD_DIR, f"{shard:05d}.{part}")


def is_done(workdir: str, shard: int) -> bool:
    return os.path.exists(shard_path(workdir, shard, "stats.json"))


def write_atomically(path: str, text: str) -> None:
    """Writes `text` to a temporary file beside `path`, flushed to disk, then renames it."""
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def jsonl(rows) -> str:
    return "".join(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def read_jsonl(path: str) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def _value(x) -> float | None:
    """A JSON-safe score: NaN (failed to score) becomes None."""
    x = float(x)
    return None if math.isnan(x) else x


def _new_stats() -> dict:
    return {"prompts": 0, "samples": 0, "accepted": 0, "rejected": Counter(), "tokens": 0,
            "judge": Counter()}


class ShardRunner:
    """Processes shards with a policy, an optional judge, and the config's checks."""

    def __init__(self, config, policy, judge=None):
        self.config, self.policy, self.judge = config, policy, judge

    def _responses(self, prompts, inputs, shard) -> list[list[Sample]]:
        """Each prompt's responses: its source's n samples, or its reference when reused."""
        out = [[] for _ in prompts]
        for name in sorted({p.source for p in prompts}):
            source = self.config.sources[name]
            rows = [i for i, p in enumerate(prompts) if p.source == name]
            if source.responses == "reuse":
                groups = [[Sample(prompts[i].reference, self.policy.num_tokens(prompts[i].reference), "stop")]
                          for i in rows]
            else:
                groups = self.policy.sample(
                    [inputs[i][1] for i in rows], n=source.n or self.config.sampling.n,
                    max_new_tokens=source.max_new_tokens or self.config.sampling.max_new_tokens,
                    seed=shard_seed(self.config.sampling.seed, shard, name))
            for i, group in zip(rows, groups):
                out[i] = group
        return out

    def _rule_scores(self, items) -> dict[int, dict[str, float]]:
        """{item index: {reward: score}} with every source's rules, batched per (source, reward)."""
        scores = defaultdict(dict)
        by_source = defaultdict(list)
        for k, item in enumerate(items):
            by_source[item[0].source].append(k)
        for name, ks in by_source.items():
            source = self.config.sources[name]
            for reward in source.rules:
                fields = {f: [items[k][0].fields[f] for k in ks] for f in items[ks[0]][0].fields}
                values = rewards.evaluate(reward, [items[k][2] for k in ks], [items[k][1].text for k in ks],
                                          fields, source.rules_params.get(reward))
                for k, v in zip(ks, values):
                    scores[k][reward] = float(v)
        return scores

    def _verdicts(self, items) -> dict[int, object]:
        ks = [k for k, (p, *_) in enumerate(items) if self.config.sources[p.source].judge]
        if not ks:
            return {}
        if self.judge is None:
            raise ValueError("a source has judge=True but no judge was given")
        verdicts = self.judge([items[k][0].question for k in ks], [items[k][0].reference for k in ks],
                              [items[k][1].text for k in ks])
        return dict(zip(ks, verdicts))

    def run(self, prompts: list[sources.Prompt], shard: int) -> tuple[list, list, dict]:
        """(accepted rows, rejected rows, stats) of one shard's prompts."""
        start = time.perf_counter()
        inputs = [self.policy.render(self.config.sources[p.source].template, p.system, p.question)
                  for p in prompts]
        responses = self._responses(prompts, inputs, shard)
        sampled_at = time.perf_counter()
        items = [(p, sample, text, j) for p, (text, _), group in zip(prompts, inputs, responses)
                 for j, sample in enumerate(group)]
        rule_scores = self._rule_scores(items)
        judged_at = time.perf_counter()
        verdicts = self._verdicts(items)
        judge_seconds = time.perf_counter() - judged_at
        stats = defaultdict(_new_stats)
        accepted, rejected, passing = [], [], defaultdict(list)
        for k, (prompt, sample, text, j) in enumerate(items):
            row, failed = self._check(prompt, sample, text, j, rule_scores.get(k, {}), verdicts.get(k),
                                      stats[prompt.source])
            if failed:
                rejected.append((row, failed))
            else:
                passing[prompt.id].append(row)
        for prompt in prompts:
            stats[prompt.source]["prompts"] += 1
            source = self.config.sources[prompt.source]
            dedup = filters.Deduplicator(self.config.filters, source.skip_filters)
            unique = []
            for row in passing[prompt.id]:
                reason = dedup.reason(row["messages"][-1]["content"])
                if reason:
                    rejected.append((row, [reason]))
                else:
                    unique.append(row)
            kept, left_out = select.per_prompt(unique, self.config.select, prompt.id)
            accepted.extend(unique[i] for i in kept)
            rejected.extend((unique[i], ["per_prompt_limit"]) for i in left_out)
        rejected_rows = [self._rejected_row(row, failed) for row, failed in rejected]
        for row in accepted:
            stats[row["provenance"]["source"]]["accepted"] += 1
        for row in rejected_rows:
            stats[row["source"]]["rejected"][row["reason"]] += 1
        seconds = time.perf_counter() - start
        timing = {"seconds": seconds, "sampler_seconds": sampled_at - start, "judge_seconds": judge_seconds}
        return accepted, rejected_rows, {"sources": dict(stats), "timing": timing}

    def _check(self, prompt, sample, text, j, rule_scores, verdict, stats) -> tuple[dict, list[str]]:
        source = self.config.sources[prompt.source]
        stats["samples"] += 1
        stats["tokens"] += sample.num_tokens
        failed, judge_reply = [], None
        for reward, threshold in source.rules.items():
            score = rule_scores[reward]
            if math.isnan(score) or score < threshold:
                failed.append(f"rule_error:{reward}" if math.isnan(score) else f"rule:{reward}")
        scores = {reward: _value(v) for reward, v in rule_scores.items()}
        if verdict is not None:
            stats["judge"]["judged"] += 1
            stats["judge"]["errors"] += verdict.error is not None
            scores["judge"] = verdict.score
            judge_reply = verdict.reply
            if verdict.error is None and source.rules:  # The judge against the rules.
                stats["judge"]["compared"] += 1
                stats["judge"]["agreed"] += verdict.accepted == (not failed)
                stats["judge"][f"judge_{'accepts' if verdict.accepted else 'rejects'}_"
                               f"rules_{'fail' if failed else 'pass'}"] += 1
            if not verdict.accepted:
                failed.append("judge_error" if verdict.error else "judge_rejected")
        filter_scores, filter_failed = filters.check(
            self.config.filters, source.skip_filters, text, sample.text, sample.num_tokens,
            sample.finish_reason, prompt.fields.get("language"))
        scores.update(filter_scores)
        messages = ([{"role": "system", "content": prompt.system}] if prompt.system else []) + [
            {"role": "user", "content": prompt.user}, {"role": "assistant", "content": sample.text}]
        provenance = {"source": prompt.source, "prompt_id": prompt.id, "question": prompt.question,
                      "sample_index": j,
                      "model": self.policy.name, "checkpoint_step": self.policy.step,
                      "seed": self.config.sampling.seed, "num_tokens": sample.num_tokens,
                      "finish_reason": sample.finish_reason, "reference": prompt.reference,
                      "scores": scores, **({"judge_reply": judge_reply} if verdict is not None else {})}
        return {"messages": messages, "provenance": provenance}, failed + filter_failed

    @staticmethod
    def _rejected_row(row: dict, failed: list[str]) -> dict:
        p = row["provenance"]
        return {"source": p["source"], "prompt_id": p["prompt_id"], "sample_index": p["sample_index"],
                "reason": failed[0], "failed": failed, "response": row["messages"][-1]["content"],
                "provenance": p}


def write_shard(workdir: str, shard: int, accepted, rejected, stats) -> None:
    """The shard's three files, each atomically; stats.json last: it marks the shard done."""
    os.makedirs(os.path.join(workdir, SHARD_DIR), exist_ok=True)
    write_atomically(shard_path(workdir, shard, "accepted.jsonl"), jsonl(accepted))
    write_atomically(shard_path(workdir, shard, "rejected.jsonl"), jsonl(rejected))
    write_atomically(shard_path(workdir, shard, "stats.json"), json.dumps(stats, indent=1))


def shards(num_prompts: int, shard_size: int) -> list[range]:
    return [range(s, min(s + shard_size, num_prompts)) for s in range(0, num_prompts, shard_size)]


def run(config, prompts, runner: ShardRunner, workdir: str, process_index: int = 0,
        process_count: int = 1, progress: bool = True) -> None:
    """Processes this process's shards that are not done yet (see the module docstring)."""
    all_shards = shards(len(prompts), config.output.shard_size)
    mine = [s for s in range(len(all_shards)) if s % process_count == process_index]
    todo = [s for s in mine if not is_done(workdir, s)]
    for s in todo:  # Left by a process killed while writing: the shard is redone from scratch.
        for stale in glob.glob(glob.escape(shard_path(workdir, s, "")) + "*.tmp.*"):
            os.remove(stale)
    done_prompts = sum(len(all_shards[s]) for s in mine if s not in todo)
    samples = accepted = 0
    start = time.perf_counter()
    with tqdm.tqdm(total=sum(len(all_shards[s]) for s in mine), initial=done_prompts, unit="prompt",
                   desc=f"rejection sampling (process {process_index})", disable=not progress) as bar:
        for s in todo:
            rows, rejected, stats = runner.run([prompts[i] for i in all_shards[s]], s)
            write_shard(workdir, s, rows, rejected, stats)
            samples += sum(v["samples"] for v in stats["sources"].values())
            accepted += len(rows)
            bar.update(len(all_shards[s]))
            bar.set_postfix(accept=f"{accepted / max(samples, 1):.1%}",
                            samples_per_s=f"{samples / (time.perf_counter() - start):.2f}")
