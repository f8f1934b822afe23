"""A parquet file's top-level column names from its footer, stdlib only (pyarrow is not imported on the login
node). The footer is the file's FileMetaData in Thrift's compact protocol: `<metadata><len: u32 LE>PAR1`.
Only what the column check needs is decoded: field 2 (the flattened schema: SchemaElement name = field 4,
num_children = field 5); everything else is skipped by its wire type.
"""

from __future__ import annotations

import struct
from pathlib import Path

MAGIC = b"PAR1"
# compact protocol wire types
STOP, TRUE, FALSE, BYTE, I16, I32, I64, DOUBLE, BINARY, LIST, SET, MAP, STRUCT = range(13)


class ParquetError(ValueError):
    pass


class _Reader:
    def __init__(self, data: bytes):
        self.data, self.pos = data, 0

    def byte(self) -> int:
        if self.pos >= len(self.data):
            raise ParquetError("the footer ends early")
        self.pos += 1
        return self.data[self.pos - 1]

    def varint(self) -> int:
        shift = value = 0
        while True:
            b = self.byte()
            value |= (b & 0x7F) << shift
            if not b & 0x80:
                return value
            shift += 7

    def zigzag(self) -> int:
        v = self.varint()
        return (v >> 1) ^ -(v & 1)

    def binary(self) -> bytes:
        n = self.varint()
        self.pos += n
        if self.pos > len(self.data):
            raise ParquetError("the footer ends early")
        return self.data[self.pos - n:self.pos]

    def fields(self):
        """(field id, wire type) of a struct's fields until its STOP."""
        last = 0
        while True:
            header = self.byte()
            kind = header & 0x0F
            if kind == STOP:
                return
            delta = header >> 4
            last = last + delta if delta else self.zigzag()
            yield last, kind

    def list_header(self) -> tuple[int, int]:
        header = self.byte()
        size = header >> 4
        return (self.varint() if size == 15 else size), header & 0x0F

    def skip(self, kind: int) -> None:
        if kind in (TRUE, FALSE):
            return
        if kind == BYTE:
            self.byte()
        elif kind in (I16, I32, I64):
            self.varint()
        elif kind == DOUBLE:
            self.pos += 8
        elif kind == BINARY:
            self.binary()
        elif kind in (LIST, SET):
            size, elem = self.list_header()
            for _ in range(size):
                self.byte() if elem in (TRUE, FALSE) else self.skip(elem)
        elif kind == MAP:
            size = self.varint()
            if size:
                types = self.byte()
                for _ in range(size):
                    self.skip(types >> 4)
                    self.skip(types & 0x0F)
        elif kind == STRUCT:
            for _, k in self.fields():
                self.skip(k)
        else:
            raise ParquetError(f"unknown Thrift wire type {kind}")


def parquet_columns(path: Path) -> list[str]:
    """The top-level column names of a parquet file; ParquetError when it is not one."""
    with open(path, "rb") as f:
        f.seek(0, 2)
        size = f.tell()
        if size < 12:
            raise ParquetError("too short to be a parquet file")
        f.seek(size - 8)
        length, magic = struct.unpack("<I4s", f.read(8))
        if magic != MAGIC or length > size - 12:
            raise ParquetError("no parquet footer (PAR1) at its end")
        f.seek(size - 8 - length)
        reader = _Reader(f.read(length))
    elements: list[tuple[str, int]] = []
    for field_id, kind in reader.fields():
        if field_id != 2 or kind != LIST:
            reader.skip(kind)
            continue
        count, _ = reader.list_header()
        for _ in range(count):
            name, children = "", 0
            for fid, k in reader.fields():
                if fid == 4 and k == BINARY:
                    name = reader.binary().decode("utf-8")
                elif fid == 5 and k == I32:
                    children = reader.zigzag()
                else:
                    reader.skip(k)
            elements.append((name, children))
        break
    if not elements:
        raise ParquetError("its footer has no schema")
    # elements[0] is the root; its children, each followed by its own subtree (depth first), are the columns
    columns, i = [], 1

    def subtree_end(j: int) -> int:
        n, j = elements[j][1], j + 1
        for _ in range(n):
            j = subtree_end(j)
        return j

    for _ in range(elements[0][1]):
        columns.append(elements[i][0])
        i = subtree_end(i)
    return columns
