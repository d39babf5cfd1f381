"""Rejection sampling (R1's stage 3): sample n responses per prompt, keep the verified ones that
pass the filters, mix reasoning and general rows, and write chat records for SFT.

  sources.py  prompt sources (math / code / chat; a JSONL file or a generated task) and start-up checks
  policy.py   the model that answers (r1jax.sampling.generate, n samples per prefill)
  judge.py    the generative judge (also the reward `generative_judge`)
  filters.py  the R1 paper's filters (mixed language, overlong, long paragraphs, code in the
              reasoning, format, repetition, duplicates)
  select.py   m per prompt, then the reasoning : general mix
  engine.py   shards processed in order and written atomically (resumable after a SIGKILL)
  merge.py    the merged view: accepted.jsonl, rejected_sample.jsonl, stats.json

The binary is launch/rejection_sample.py; the config configs/rejection_sampling.py.
"""
