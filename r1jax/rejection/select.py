"""Selection: up to m accepted responses per prompt, then the reasoning : general mix.

config.select: per_prompt (m; 0: all), strategy ("all": the first m in sample order;
"shortest": the m with the fewest tokens; "random": m drawn with a seed of their own), ratio
(reasoning rows per general row, R1's 600k : 200k = 3; 0: no mix, every accepted row is kept),
total (rows in the mix; 0: as many as the ratio allows), seed.

Random choices are seeded by (seed, the prompt's or group's name) only, so a prompt's pick does
not depend on which shard or process handled it, and a rerun picks the same rows.
"""
from __future__ import annotations

import math
import zlib
from collections.abc import Sequence

import numpy as np

STRATEGIES = ("all", "shortest", "random")


def _rng(seed: int, name: str) -> np.random.Generator:
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


def validate(config) -> None:
    if config.strategy not in STRATEGIES:
        raise ValueError(f"select.strategy={config.strategy!r}: expected one of {STRATEGIES}")
    if config.per_prompt < 0 or config.ratio < 0 or config.total < 0:
        raise ValueError(f"select.per_prompt, ratio and total must be >= 0; got "
                         f"{config.per_prompt}, {config.ratio}, {config.total}")


def per_prompt(rows: Sequence[dict], config, prompt_id: str) -> tuple[list[int], list[int]]:
    """(indices of the rows kept, of those left out), for one prompt's accepted rows in sample
    order; each row's provenance has "num_tokens"."""
    indices = list(range(len(rows)))
    m = config.per_prompt or len(rows)
    if config.strategy == "shortest":
        indices.sort(key=lambda i: (rows[i]["provenance"]["num_tokens"], i))
    elif config.strategy == "random":
        indices = [int(i) for i in _rng(config.seed, prompt_id).permutation(len(rows))]
    kept = sorted(indices[:m])
    return kept, sorted(indices[m:])


def mix_sizes(reasoning: int, general: int, ratio: float, total: int) -> tuple[int, int]:
    """(reasoning rows, general rows) of the mix: the most general rows g such that g * ratio
    reasoning rows exist and g * (1 + ratio) <= total, with floor(g * ratio) reasoning rows.
    ratio 0: everything (or the first `total`, reasoning first)."""
    if ratio == 0:
        take = min(reasoning, total) if total else reasoning
        return take, (min(general, total - take) if total else general)
    eps = 1e-9  # 600 / 3 must give 200, not 199.99...
    g = math.floor(min(reasoning / ratio, general, total / (ratio + 1) if total else math.inf) + eps)
    return math.floor(g * ratio + eps), g


def shares(sizes: dict[str, int], weights: dict[str, float], count: int) -> dict[str, int]:
    """`count` rows split among sources in proportion to weight, none above its size (its
    surplus goes to the others); largest remainders, ties by name."""
    out = {name: 0 for name in sizes}
    left = min(count, sum(sizes.values()))
    open_ = {name for name, size in sizes.items() if size > 0}
    while left > 0 and open_:
        weight = sum(weights[n] for n in open_)
        quotas = {n: left * weights[n] / weight for n in open_}
        add = {n: min(int(quotas[n]), sizes[n] - out[n]) for n in open_}
        if not any(add.values()):  # The remainders: one row each, largest first.
            best = sorted(open_, key=lambda n: (-(quotas[n] - int(quotas[n])), n))
            add = {n: int(n in best[:left]) for n in open_}
        for name, extra in add.items():
            out[name] += extra
            left -= extra
        open_ = {n for n in open_ if out[n] < sizes[n]}
    return out


def mix(rows_by_source: dict[str, list[dict]], reasoning_sources: set[str],
        weights: dict[str, float], config) -> tuple[list[dict], dict[str, int]]:
    """The mix: (rows, {source: rows taken}), rows in source-name order, each source's rows
    in their original order (a seeded subset when not all are taken)."""
    groups = [sorted(n for n in rows_by_source if n in reasoning_sources),
              sorted(n for n in rows_by_source if n not in reasoning_sources)]
    sizes = {n: len(r) for n, r in rows_by_source.items()}
    targets = mix_sizes(sum(sizes[n] for n in groups[0]), sum(sizes[n] for n in groups[1]),
                        config.ratio, config.total)
    taken = {}
    for names, target in zip(groups, targets):
        taken.update(shares({n: sizes[n] for n in names}, weights, target))
    out = []
    for name in sorted(rows_by_source):
        rows = rows_by_source[name]
        if taken[name] < len(rows):
            pick = _rng(config.seed, name).choice(len(rows), taken[name], replace=False)
            rows = [rows[i] for i in sorted(int(i) for i in pick)]
        out.extend(rows)
    return out, taken
