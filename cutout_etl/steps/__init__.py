"""The dataset's decisions and numbers, in memory and without I/O of their own.

`merge` decides which rows are kept (`sky` matches positions), `split` assigns them to
train/val/test and lays out the output tables, `stats` (with `sketch` and `sky_level`) accumulates
per-band statistics, `checksums` and `metadata` describe and seal what was written. They work on
the facts from `inputs`; `execution` then writes the planned tables through `formats`.
"""
