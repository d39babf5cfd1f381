"""A split of the data set a config's `data` section names, prepared on first use."""
from __future__ import annotations

import logging

import jax

from r1jax.data import builders

log = logging.getLogger("r1jax")


def open_split(data_section, split: str, limit: int | None = None) -> list[dict]:
    """The records of one split (the first `limit` of them when given), preparing the data set
    under data_dir first when it is not there (process 0 writes; the others wait)."""
    if data_section.name not in builders.list_datasets(data_section.data_dir):
        if jax.process_index() == 0:
            counts = builders.prepare(
                data_section.kind, data_section.input or None, name=data_section.name,
                data_dir=data_section.data_dir, test_fraction=data_section.test_fraction,
                **dict(data_section.generate))
            log.info("Prepared data set %r in %s: %s", data_section.name, data_section.data_dir,
                     counts)
        _wait_for_all_processes("prepare_data")
    source = builders.load(data_section.name, data_section.data_dir, split)
    return source[:limit]


def _wait_for_all_processes(name: str):
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils
        multihost_utils.sync_global_devices(name)
