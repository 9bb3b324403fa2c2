"""The image column of a Parquet row group read straight from its data pages (the fast path of `parquet_read`).

cutout-etl writes the image column as `fixed_size_list<float>`, uncompressed,
PLAIN-encoded, without a dictionary: its data pages hold the float32 values of
consecutive rows back to back, after the repetition and definition levels.
pyarrow's decode of that nested column rebuilds levels and validity for every
value (about 15-25k rows/s here); this reader checks the levels instead and
copies the values into the output buffer, bit-exact.

It reads only what it can prove: every page a data page (v1 or v2), PLAIN,
uncompressed; definition levels one run of the maximum level (no null image,
no null value); repetition levels that start a row exactly every
`values_per_row` values; page sizes that add up to the column chunk; and
rows x values_per_row values in all. Anything else raises `Unsupported`, and
the caller decodes that row group with pyarrow instead: never a guess.
"""

from __future__ import annotations

import bisect
from typing import Any

import numpy as np

_DATA_PAGE, _DATA_PAGE_V2 = 0, 3  # PageType
_PLAIN, _RLE = 0, 3  # Encoding
_MAX_DEPTH = 8  # Thrift structs nested deeper than this are not a page header we know


class Unsupported(Exception):
    """A column chunk this reader does not prove it can copy: decode it with pyarrow."""


class FloatPages:
    """Where the values of a checked column chunk lie: copy any range of them out, bit-exact."""

    def __init__(self, chunk: memoryview, firsts: list[int], offsets: list[int]) -> None:
        self.chunk = chunk  # the chunk's bytes (a view of the memory-mapped file)
        self.firsts = firsts  # value index of each page's first value, then the total
        self.offsets = offsets  # byte offset of each page's first value in `chunk`

    def copy(self, first: int, out: np.ndarray) -> None:
        """Values [first, first + len(out)) into `out` (flat float32)."""
        page = bisect.bisect_right(self.firsts, first) - 1
        done = 0
        while done < len(out):
            at = first + done
            count = min(self.firsts[page + 1] - at, len(out) - done)
            offset = self.offsets[page] + 4 * (at - self.firsts[page])
            out[done : done + count] = np.frombuffer(self.chunk, "<f4", count=count, offset=offset)
            done, page = done + count, page + 1


def float_pages(chunk: memoryview, total: int, values_per_row: int, max_def: int) -> FloatPages:
    """Check a column chunk's pages (`chunk`: its bytes) and say where its `total` float32 values lie.

    Raises `Unsupported` on anything not proven (the chunk is then left to pyarrow).
    """
    pos, firsts, offsets = 0, [0], []
    try:
        while pos < len(chunk):
            header, pos = _read_struct(chunk, pos, 0)
            size = header.get(3)
            if header.get(2) != size or not isinstance(size, int) or size < 0 or pos + size > len(chunk):
                raise Unsupported("page sizes do not add up (or the page is compressed)")
            values_at, count = _values_of(header, chunk[pos : pos + size], firsts[-1], values_per_row, max_def)
            if count:
                firsts.append(firsts[-1] + count)
                offsets.append(pos + values_at)
            pos += size
    except (IndexError, ValueError) as exc:  # bytes cut short inside a header or levels
        raise Unsupported(f"unreadable page: {exc}") from exc
    if firsts[-1] != total:
        raise Unsupported(f"{firsts[-1]} values for {total}")
    return FloatPages(chunk, firsts, offsets)


def copy_float_pages(chunk: memoryview, out: np.ndarray, values_per_row: int, max_def: int) -> None:
    """Every float32 value of a column chunk's pages into `out` (flat float32, rows x values_per_row long)."""
    float_pages(chunk, len(out), values_per_row, max_def).copy(0, out)


def _values_of(header: dict, page: memoryview, first: int, per_row: int, max_def: int) -> tuple[int, int]:
    """(offset of the values in the page, how many) after checking its levels; `first`: the chunk's value index."""
    kind = header.get(1)
    if kind == _DATA_PAGE and isinstance(v1 := header.get(5), dict):
        count = _count(v1.get(1))
        if v1.get(2) != _PLAIN or v1.get(3) != _RLE or v1.get(4) != _RLE:
            raise Unsupported("a v1 data page not PLAIN with RLE levels")
        rep_end = 4 + int.from_bytes(page[0:4], "little")
        _check_rep(page[4:rep_end], count, first, per_row)
        def_end = rep_end + 4 + int.from_bytes(page[rep_end : rep_end + 4], "little")
        _check_def(page[rep_end + 4 : def_end], count, max_def)
        levels_end = def_end
    elif kind == _DATA_PAGE_V2 and isinstance(v2 := header.get(8), dict):
        count = _count(v2.get(1))
        if v2.get(2) != 0 or v2.get(4) != _PLAIN:
            raise Unsupported("a v2 data page with nulls, or not PLAIN")
        rep_end = _count(v2.get(6))
        levels_end = rep_end + _count(v2.get(5))
        _check_rep(page[:rep_end], count, first, per_row)
        _check_def(page[rep_end:levels_end], count, max_def)
    else:
        raise Unsupported(f"page type {kind}")
    if len(page) - levels_end != 4 * count:
        raise Unsupported("page size is not its levels plus its values")
    return levels_end, count


def _count(value: object) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise Unsupported(f"a count of {value!r}")
    return value


def _check_def(levels: memoryview, count: int, max_def: int) -> None:
    """Definition levels must be one RLE run of the maximum level over every value: no nulls at any depth."""
    if max_def < 1:
        raise Unsupported("no definition levels to check")
    run, pos = _varint(levels, 0)
    width = (max_def.bit_length() + 7) // 8
    value = int.from_bytes(levels[pos : pos + width], "little")
    if run & 1 or run >> 1 != count or value != max_def or pos + width != len(levels):
        raise Unsupported("definition levels are not one run of the maximum level")


def _check_rep(levels: memoryview, count: int, first: int, per_row: int) -> None:
    """Repetition levels (bit width 1) must be 0 exactly where a row starts: every `per_row` values.

    Runs over every row (two runs a row, as pyarrow writes them): kept tight,
    and remembered: pages that start at the same place in a row with the same
    count and the same bytes (pyarrow cuts pages at row boundaries, so most do)
    are checked once per process. The check depends on nothing else.
    """
    data = bytes(levels)
    key = (per_row, first % per_row, count, data)
    if key in _CHECKED_REP:
        return
    _check_rep_runs(data, count, first, per_row)
    if len(_CHECKED_REP) >= 256:
        _CHECKED_REP.clear()
    _CHECKED_REP[key] = None


_CHECKED_REP: dict[tuple[int, int, int, bytes], None] = {}  # repetition levels already checked (keys: see above)


def _check_rep_runs(data: bytes, count: int, first: int, per_row: int) -> None:
    at, stop, pos, end = first, first + count, 0, len(data)
    while at < stop:
        header = data[pos]
        if header < 0x80:
            pos += 1
        else:
            header, pos = _varint(data, pos)
        if header & 1:  # bit-packed: header >> 1 groups of 8 one-bit values
            groups = header >> 1
            width = min(8 * groups, stop - at)
            got = int.from_bytes(data[pos : pos + groups], "little") & ((1 << width) - 1)
            if not groups or pos + groups > end or got != _row_bits(at, width, per_row):
                raise Unsupported("repetition levels are not rows of equal length")
            pos, at = pos + groups, at + width
        else:  # an RLE run: header >> 1 copies of one byte
            run, value, inside = header >> 1, data[pos], at % per_row
            if value == 1:  # inside one row
                fits = inside != 0 and inside + run <= per_row
            else:  # row starts: one, at a row's first value (or any number, for one-value rows)
                fits = value == 0 and (per_row == 1 or (run == 1 and inside == 0))
            if not run or at + run > stop or not fits:
                raise Unsupported("repetition levels are not rows of equal length")
            pos, at = pos + 1, at + run
    if pos != end:
        raise Unsupported("repetition levels do not fill their bytes")


def _row_bits(at: int, width: int, per_row: int) -> int:
    """The repetition levels of values [at, at + width) as bits (value i is bit i): 1 but at row starts."""
    bits = (1 << width) - 1
    for start in range(at + (-at % per_row), at + width, per_row):
        bits ^= 1 << (start - at)
    return bits


def _varint(data: memoryview | bytes, pos: int) -> tuple[int, int]:
    result, shift = 0, 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 64 bits")


def _zigzag(data: memoryview, pos: int) -> tuple[int, int]:
    value, pos = _varint(data, pos)
    return (value >> 1) ^ -(value & 1), pos


def _read_struct(data: memoryview, pos: int, depth: int) -> tuple[dict[int, Any], int]:
    """A Thrift compact-protocol struct: {field id: int, bool or nested struct}; other values skipped."""
    if depth > _MAX_DEPTH:
        raise ValueError("Thrift structs nested too deep")
    fields: dict[int, Any] = {}
    last = 0
    while True:
        byte = data[pos]
        pos += 1
        kind = byte & 0x0F
        if kind == 0:  # STOP
            return fields, pos
        if byte >> 4:
            last += byte >> 4
        else:
            last, pos = _zigzag(data, pos)
        if kind in (1, 2):  # a bool field carries its value in its type
            fields[last] = kind == 1
        elif kind == 12:
            fields[last], pos = _read_struct(data, pos, depth + 1)
        elif kind in (3, 4, 5, 6):
            fields[last], pos = _zigzag(data, pos) if kind != 3 else (data[pos], pos + 1)
        else:
            pos = _skip(data, pos, kind, depth)


def _skip(data: memoryview, pos: int, kind: int, depth: int) -> int:
    """Past one value of Thrift compact type `kind` (in a container, bools are one byte)."""
    if kind in (1, 2, 3):
        return pos + 1
    if kind in (4, 5, 6):
        return _varint(data, pos)[1]
    if kind == 7:
        return pos + 8
    if kind == 8:
        length, pos = _varint(data, pos)
        return pos + length
    if kind == 12:
        return _read_struct(data, pos, depth + 1)[1]
    if kind in (9, 10):
        head = data[pos]
        pos += 1
        size = head >> 4
        if size == 15:
            size, pos = _varint(data, pos)
        return _skip_items(data, pos, [head & 0x0F] * size, depth)
    if kind == 11:
        size, pos = _varint(data, pos)
        if not size:
            return pos
        types = data[pos]
        return _skip_items(data, pos + 1, [types >> 4, types & 0x0F] * size, depth)
    raise ValueError(f"Thrift type {kind}")


def _skip_items(data: memoryview, pos: int, kinds: list[int], depth: int) -> int:
    if len(kinds) > len(data):
        raise ValueError("a Thrift container larger than its bytes")
    for kind in kinds:
        pos = _skip(data, pos, kind, depth + 1)
    return pos


def read_float_column(data: memoryview, metadata: Any, group: int, name: str, values_per_row: int) -> np.ndarray:
    """Column `name` (a fixed-size list of float32) of row group `group`, as one new flat float32 array."""
    pages = float_column_pages(data, metadata, group, name, values_per_row)
    out = np.empty(pages.firsts[-1], np.float32)
    pages.copy(0, out)
    return out


def float_column_pages(data: memoryview, metadata: Any, group: int, name: str, values_per_row: int) -> FloatPages:
    """The pages of column `name` (a fixed-size list of float32) in row group `group`, checked.

    `data` is the whole file's bytes (a memory map), `metadata` pyarrow's
    `FileMetaData` of it. Raises `Unsupported` when the column chunk is not
    one this reader proves it can copy.
    """
    index, max_def = _float_list_leaf(metadata, name)
    chunk = metadata.row_group(group).column(index)
    rows = metadata.row_group(group).num_rows
    if chunk.compression != "UNCOMPRESSED" or chunk.has_dictionary_page or chunk.dictionary_page_offset is not None:
        raise Unsupported(f"column chunk {chunk.compression}, dictionary {chunk.has_dictionary_page}")
    if chunk.file_path or chunk.num_values != rows * values_per_row:
        raise Unsupported(f"{chunk.num_values} values in a chunk of {rows} rows")
    start, size = chunk.data_page_offset, chunk.total_compressed_size
    if start < 0 or size < 0 or start + size > len(data):
        raise Unsupported("column chunk outside the file")
    return float_pages(data[start : start + size], rows * values_per_row, values_per_row, max_def)


def _float_list_leaf(metadata: Any, name: str) -> tuple[int, int]:
    """(leaf column index, maximum definition level) of a list of FLOAT values named `name`."""
    schema = metadata.schema
    leaves = [i for i in range(metadata.num_columns) if schema.column(i).path.split(".")[0] == name]
    if len(leaves) != 1:
        raise Unsupported(f"{len(leaves)} leaf columns under {name!r}")
    leaf = schema.column(leaves[0])
    if leaf.physical_type != "FLOAT" or leaf.max_repetition_level != 1:
        raise Unsupported(f"{leaf.physical_type} values, repetition level {leaf.max_repetition_level}")
    return leaves[0], leaf.max_definition_level
