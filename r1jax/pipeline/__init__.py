"""The whole R1 recipe as one job (launch/pipeline.py, configs/pipeline.py).

  plan.py        the stages, in the paper's order, what each reads from the earlier ones, and
                 where each writes (DIR/<nn>_<stage>/); start-up checks of skip / given.
  cold_start.py  R1-Zero's verified samples rewritten into the readable cold-start form.
  evaluation.py  the same held-out evaluation after every stage (math pass@1 over k samples,
                 format share, language consistency, response length, reward-model scores).
  report.py      DIR/report.md, report.json and the PNG plots from every stage's metrics.
"""
