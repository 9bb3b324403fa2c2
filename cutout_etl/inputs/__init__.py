"""Reading and checking the class files: the first step of every command that takes inputs.

`readers` opens the astronomers' HDF5 tables and yields row chunks; `scan` is pass 1 (the per-row
facts: IDs, labels, positions, file hashes), with `labels` and `validate` deciding what a label is
and which rows are unusable; `records` turns input rows into output blocks. The facts go next to
`steps` (which rows to keep and where), the blocks to `formats` through `execution`.
"""
