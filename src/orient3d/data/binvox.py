"""Read and write ``.binvox`` files (Patrick Min's binvox tool), dense format only.

Layout: an ASCII header (``#binvox 1``, ``dim D D D``, optional ``translate`` and
``scale`` lines, ``data``) followed by run-length pairs of bytes ``(value,
count)``. The voxels are stored with y varying fastest, then z, then x; as in
``binvox-rw-py`` we transpose them to our ``(x, y, z)`` axes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from orient3d.errors import DataError

__all__ = ["binvox_bytes", "read_binvox", "read_binvox_header", "write_binvox"]


def _header(buf: bytes, name: str) -> tuple[tuple[int, int, int], int]:
    """Parse the header; return the dims and the offset of the run-length data."""
    pos = 0
    dims: tuple[int, int, int] | None = None
    first = True
    while True:
        end = buf.find(b"\n", pos)
        if end < 0:
            raise DataError(f"{name}: binvox header has no 'data' line (truncated?)")
        line = buf[pos:end].strip()
        pos = end + 1
        if first:
            if not line.startswith(b"#binvox"):
                raise DataError(f"{name}: not a binvox file (first line {line[:20]!r})")
            first = False
        elif line.startswith(b"dim"):
            try:
                d = tuple(int(v) for v in line.split()[1:])
            except ValueError as err:
                raise DataError(f"{name}: bad binvox dim line {line!r}") from err
            if len(d) != 3 or min(d) < 1:
                raise DataError(f"{name}: bad binvox dim line {line!r}")
            dims = (d[0], d[1], d[2])
        elif line == b"data":
            break
    if dims is None:
        raise DataError(f"{name}: binvox header has no 'dim' line")
    return dims, pos


def read_binvox(path: str | Path, max_side: int | None = None) -> np.ndarray:
    """One grid ``(X, Y, Z)`` uint8 in {0, 1}, axes x, y, z; DataError if malformed.

    ``max_side``: refuse, from the header and before allocating, a grid with a
    larger side (``data.max_res``)."""
    name = str(path)
    try:
        buf = Path(path).read_bytes()
    except OSError as err:
        raise DataError(f"{name}: cannot read ({err.strerror})") from err
    dims, pos = _header(buf, name)
    if max_side is not None and max(dims) > max_side:
        raise DataError(
            f"{name}: a {'x'.join(map(str, dims))} grid is larger than data.max_res="
            f"{max_side}; raise data.max_res to read it (it needs {_gib(dims):.1f} GiB)"
        )
    raw = np.frombuffer(buf, dtype=np.uint8, offset=pos)
    if raw.size % 2:
        raise DataError(f"{name}: binvox data has an odd number of bytes (truncated?)")
    values, counts = raw[0::2], raw[1::2].astype(np.int64)
    total = int(np.prod(dims))
    if int(counts.sum()) != total:
        raise DataError(
            f"{name}: binvox run lengths cover {int(counts.sum())} voxels, expected {total}"
            " (truncated or corrupt)"
        )
    if (values > 1).any():
        raise DataError(f"{name}: binvox values must be 0 or 1, found {int(values.max())}")
    flat = np.repeat(values, counts)
    return np.ascontiguousarray(flat.reshape(dims[0], dims[2], dims[1]).transpose(0, 2, 1))


def _gib(dims: tuple[int, ...]) -> float:
    """Memory of a uint8 grid of ``dims`` and its float32 copy, in GiB."""
    return 5 * float(np.prod(dims)) / 2**30


def read_binvox_header(path: str | Path) -> bytes:
    """The header of a binvox file, up to and including its ``data`` line."""
    buf = Path(path).read_bytes()
    return buf[: _header(buf, str(path))[1]]


def binvox_bytes(grid: np.ndarray, header: bytes | None = None) -> bytes:
    """One ``(X, Y, Z)`` binary grid as a binvox file; ``header`` (from
    :func:`read_binvox_header`, its ``dim`` line matching the grid) keeps a file's
    ``translate`` and ``scale``, else a plain header is written."""
    g = (np.asarray(grid) > 0).astype(np.uint8)
    flat = g.transpose(0, 2, 1).reshape(-1)
    change = np.flatnonzero(np.diff(flat)) + 1
    starts = np.concatenate([[0], change])
    lengths = np.diff(np.concatenate([starts, [flat.size]]))
    pairs = []
    for s, n in zip(starts.tolist(), lengths.tolist()):
        while n > 0:  # a count is one byte
            k = min(n, 255)
            pairs += [int(flat[s]), k]
            n -= k
    x, y, z = g.shape
    if header is None:
        header = f"#binvox 1\ndim {x} {y} {z}\ntranslate 0 0 0\nscale 1\ndata\n".encode()
    elif _header(header, "header")[0] != (x, y, z):
        raise ValueError(f"binvox header is for {_header(header, 'header')[0]}, grid is {g.shape}")
    return header + bytes(pairs)


def write_binvox(grid: np.ndarray, path: str | Path) -> Path:
    """Write one ``(X, Y, Z)`` binary grid as binvox (inverse of :func:`read_binvox`)."""
    out = Path(path)
    out.write_bytes(binvox_bytes(grid))
    return out
