"""Near-duplicate search: perceptual image hashes in a multi-index Hamming table, MinHash LSH for captions.

Neither compares all pairs. Image codes are pHashes (64 bits by default) split into ``width``-bit substrings,
one hash table each (multi-index hashing, Norouzi et al. 2012): two codes within Hamming distance ``r`` agree
to within ``r // nhash`` bits on at least one of the ``nhash`` substrings (pigeonhole), so probing each table
with up to that many flipped bits finds every match exactly, and only the codes in the probed buckets are
compared. With ``width`` near log2 of the collection size the buckets hold about one code each, so a query
costs a constant number of probes and the whole pass grows linearly. (faiss's ``IndexBinaryMultiHash`` does
this one query at a time with 16-bit substrings; its time grew 28x for 10x the codes in our benchmark.)
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import imagehash
import numpy as np
from datasketch import MinHash, MinHashLSH
from PIL import Image
from tqdm.auto import tqdm

from ..data.errors import BadSampleLog, load_image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff")


def phash(image: Image.Image, hash_size: int = 8) -> np.ndarray:
    """The perceptual hash (``hash_size**2`` bits of the low DCT frequencies) as bytes: robust to resizing,
    re-encoding and small colour changes. 8 (64 bits) suits photos; flat synthetic scenes need more bits."""
    return np.packbits(imagehash.phash(image, hash_size=hash_size).hash.reshape(-1))


def fine_descriptor(image: Image.Image, side: int = 8) -> np.ndarray:
    """The second check on pHash candidates: an RGB ``side`` x ``side`` area thumbnail, centred and scaled to
    unit norm (so a brightness or contrast change cancels), as int8. pHash sees only the grey DCT's signs, and
    flat clip art collides there; the thumbnail's cosine keeps colour and layout. Measured on a constructed set
    (benchmarks/bench_curation.py): resized, JPEG q35, 4%-cropped and brightened copies score >= 0.93 in 98% of
    cases, distinct images that collide in pHash score above 0.9 in ~1% of colliding pairs."""
    a = np.asarray(image.convert("RGB").resize((side, side), Image.Resampling.BOX), dtype=np.float32)
    a = (a - a.mean()).ravel()
    return np.round(127 * a / max(float(np.linalg.norm(a)), 1e-6)).astype(np.int8)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two int8 fine descriptors."""
    a, b = a.astype(np.float32), b.astype(np.float32)
    return float(a @ b / max(float(np.linalg.norm(a) * np.linalg.norm(b)), 1e-6))


def to_hex(code: np.ndarray) -> str:
    return bytes(code).hex()


def from_hex(codes: Iterable[str], nbytes: int) -> np.ndarray:
    """``(N, nbytes)`` uint8 codes from hex strings."""
    return np.frombuffer(b"".join(bytes.fromhex(c) for c in codes), dtype=np.uint8).reshape(-1, nbytes)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise Hamming distances ``(len(a), len(b))`` between ``(N, nbytes)`` uint8 codes."""
    return np.bitwise_count(a[:, None, :] ^ b[None, :, :]).sum(-1, dtype=np.int32)


def _distances(a: np.ndarray, i: np.ndarray, b: np.ndarray, j: np.ndarray) -> np.ndarray:
    """Hamming distances of the code pairs ``(a[i], b[j])``, 64 bits per operation where the width allows
    (the per-candidate cost is what grows with the collection: keep it small)."""
    if a.shape[1] % 8 == 0:
        a, b = a.view(np.uint64), b.view(np.uint64)
    out = np.bitwise_count(a[i] ^ b[j])
    return out[:, 0].astype(np.int32) if out.shape[1] == 1 else out.sum(1, dtype=np.int32)


class _Growing:
    """A numpy array appended to along axis 0 with amortised doubling (streaming adds stay linear)."""

    def __init__(self, shape: tuple[int, ...], dtype: type, fill: int = 0):
        self.data, self.size, self.fill = np.full((16, *shape), fill, dtype=dtype), 0, fill

    def extend(self, rows: np.ndarray) -> None:
        need = self.size + len(rows)
        if need > len(self.data):
            grown = np.full((max(need, 2 * len(self.data)), *self.data.shape[1:]), self.fill, self.data.dtype)
            grown[: self.size] = self.data[: self.size]
            self.data = grown
        self.data[self.size:need] = rows
        self.size = need

    @property
    def view(self) -> np.ndarray:
        return self.data[: self.size]


class HammingIndex:
    """All stored codes within ``radius`` bits of a query, by multi-index hashing (no all-pairs scan).

    One direct-address table per 16-bit substring; a bucket is a chain through ``next`` (so adding is O(1)).
    A batch of queries probes every table at once with all masks of up to ``radius // nhash`` bits and walks
    the chains in vectorised steps; candidates are then checked on the full code.
    """

    def __init__(self, radius: int, bits: int = 64, width: int | None = None):
        # Default: as many ~20-bit substrings as fit, then widened to use every bit (64 -> 3 x 21). A wider
        # substring halves the random candidates per probe; candidates are the part of a query's cost that grows
        # with the collection (10x hashes: 12.5x CPU time at 3 x 20 bits, 9.7x at 3 x 21, same run).
        width = width if width is not None else min(24, bits // max(1, bits // 20))
        if not 8 <= width <= min(bits, 24):
            raise ValueError(f"width: {width} must be in [8, min(bits, 24)]")
        self.radius, self.nbytes, self.width, self.nhash = radius, bits // 8, width, bits // width
        masks = np.arange(1 << width, dtype=np.int32)
        self.masks = masks[np.bitwise_count(masks) <= radius // self.nhash]
        self.head = np.full((self.nhash, 1 << width), -1, dtype=np.int32)
        self.next = _Growing((self.nhash,), np.int32, fill=-1)
        self.codes = _Growing((self.nbytes,), np.uint8)
        self.ids = _Growing((), np.int64)
        self._powers = (1 << np.arange(width - 1, -1, -1)).astype(np.int32)

    def __len__(self) -> int:
        return self.ids.size

    def _substrings(self, codes: np.ndarray) -> np.ndarray:
        """``(N, nhash)`` integer substrings of the codes (trailing bits that do not fill one are unused)."""
        bits = np.unpackbits(np.asarray(codes, dtype=np.uint8), axis=1)[:, : self.nhash * self.width]
        return bits.reshape(len(codes), self.nhash, self.width).astype(np.int32) @ self._powers

    def add(self, codes: np.ndarray, ids: Sequence[int]) -> None:
        start, subs = len(self), self._substrings(codes)
        tables = np.arange(self.nhash)
        nxt = np.empty((len(codes), self.nhash), dtype=np.int32)
        for j, row in enumerate(subs):  # chains are sequential; one pass over the new codes
            nxt[j] = self.head[tables, row]
            self.head[tables, row] = start + j
        self.next.extend(nxt)
        self.codes.extend(np.asarray(codes, dtype=np.uint8))
        self.ids.extend(np.asarray(list(ids), dtype=np.int64))

    def search(self, codes: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Per query: (ids, distances) of the stored codes within the radius."""
        subs, found_q, found_c = self._substrings(codes), [], []
        nxt = self.next.view
        for t in range(self.nhash if len(self) else 0):
            # Most probed buckets are empty: keep the positions of the others (sparse, so nonzero is cheap where a
            # boolean compress of the whole probe array costs more as buckets fill) and derive each one's query
            # from its position, instead of repeating the query ids over every probe.
            cur = self.head[t].take((subs[:, t:t + 1] ^ self.masks[None, :]).ravel())
            hit = np.flatnonzero(cur >= 0)
            q, cur = (hit // len(self.masks)).astype(np.int32), cur[hit]
            while len(cur):  # down the chains, one step for all of them at a time
                found_q.append(q)
                found_c.append(cur)
                cur = nxt[cur, t]
                hit = cur >= 0
                q, cur = q[hit], cur[hit]
        out = [(np.empty(0, np.int64), np.empty(0, np.int32)) for _ in range(len(codes))]
        if not found_q:
            return out
        q, c = np.concatenate(found_q), np.concatenate(found_c)
        dist = _distances(np.asarray(codes, dtype=np.uint8), q, self.codes.view, c)
        keep = dist <= self.radius  # filter first: a pair found through several substrings is rare after this
        key, first = np.unique(q[keep].astype(np.int64) * len(self) + c[keep], return_index=True)
        q, c, dist = key // len(self), key % len(self), dist[keep][first]
        bounds = np.searchsorted(q, np.arange(len(codes) + 1))
        ids = self.ids.view[c]
        return [(ids[bounds[i]:bounds[i + 1]], dist[bounds[i]:bounds[i + 1]]) for i in range(len(codes))]

    def nearest(self, codes: np.ndarray) -> list[tuple[int, int] | None]:
        """Per query: (id, distance) of the closest stored code within the radius (ties: smallest id), or None."""
        out: list[tuple[int, int] | None] = []
        for ids, dist in self.search(codes):
            out.append(min(zip(dist.tolist(), ids.tolist()))[::-1] if len(ids) else None)
        return out


class Deduplicator:
    """Streaming near-duplicate removal: the first row of a cluster is its representative, later rows within
    the radius of a representative are its duplicates. Feeding the same rows in the same order, in any batch
    sizes, gives the same answer (what lets a killed run resume from its journal).

    With ``fine_threshold``, a pHash candidate counts only when the rows' :func:`fine_descriptor` cosine reaches
    it too (the closest confirmed candidate wins): pHash finds near duplicates, the thumbnail confirms them."""

    def __init__(self, radius: int, bits: int = 64, fine_threshold: float | None = None):
        self.radius, self.fine_threshold = radius, fine_threshold
        self.index = HammingIndex(radius, bits)
        self.fine: dict[int, np.ndarray] = {}

    def add(self, codes: np.ndarray, rows: Sequence[int], fines: Sequence[np.ndarray] | None = None) -> None:
        """Register representatives without querying (rebuilding the state of an earlier run)."""
        self.index.add(codes, rows)
        if fines is not None:
            self.fine.update((r, f) for r, f in zip(rows, fines) if f is not None)

    def confirmed(self, fine: np.ndarray | None, row: int) -> bool:
        """Whether representative ``row`` passes the second check against ``fine`` (always, without one)."""
        if self.fine_threshold is None or fine is None or row not in self.fine:
            return True
        return cosine(fine, self.fine[row]) >= self.fine_threshold

    def assign(self, codes: np.ndarray, rows: Sequence[int],
               fines: Sequence[np.ndarray] | None = None) -> list[int | None]:
        """For each row in order: the representative it duplicates, or None (it becomes one)."""
        previous = self.index.search(codes)
        close = hamming(codes, codes) <= self.radius if len(codes) else np.empty((0, 0), bool)
        close[np.tril_indices(len(codes))] = False  # only earlier rows of the batch ...
        within = hamming(codes, codes) if close.any() else None
        out: list[int | None] = []
        new = np.zeros(len(rows), dtype=bool)  # ... that became representatives count
        for i in range(len(rows)):
            fine = fines[i] if fines is not None else None
            ids, dist = previous[i]
            candidates = list(zip(dist.tolist(), ids.tolist()))
            if within is not None:
                candidates += [(int(within[j, i]), rows[j]) for j in np.flatnonzero(close[:, i] & new)]
            best = min((c for c in candidates if self.confirmed(fine, c[1])), default=None)
            out.append(None if best is None else best[1])
            if best is None:
                new[i] = True
                if fine is not None:
                    self.fine[rows[i]] = fine
        new = np.flatnonzero(new).tolist()
        self.index.add(codes[new], [rows[j] for j in new])
        return out


def image_files(folders: Iterable[str | Path]) -> list[Path]:
    """Every image file under ``folders`` (recursively, sorted); FileNotFoundError naming a missing folder."""
    files: list[Path] = []
    for folder in folders:
        folder = Path(folder)
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: evaluation image folder not found")
        files += sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
    return files


def hash_files(files: Sequence[Path], hash_size: int = 8,
               log: BadSampleLog | None = None) -> tuple[np.ndarray, list[Path]]:
    """pHashes of the readable ``files`` -> ``(codes, files that had one)``; unreadable ones go to ``log``."""
    log = log if log is not None else BadSampleLog(name="eval images")
    codes, kept = [], []
    for path in tqdm(files, desc="hash evaluation images", leave=False):
        image = load_image(path, log)
        if image is not None:
            codes.append(phash(image, hash_size))
            kept.append(path)
    return (np.stack(codes) if codes else np.empty((0, hash_size**2 // 8), np.uint8)), kept


# ----------------------------------------------------------------------------------------------- captions
def shingles(text: str, k: int = 3) -> list[bytes]:
    """Word ``k``-grams (the whole text when shorter), the sets MinHash compares."""
    words = text.split()
    grams = [" ".join(words[i:i + k]) for i in range(max(1, len(words) - k + 1))]
    return [g.encode("utf-8") for g in grams]


def near_identical_groups(texts: Sequence[str], threshold: float = 0.8, num_perm: int = 128,
                          progress: bool = True) -> np.ndarray:
    """Group near-identical texts: ``group[i]`` is the smallest index of the group text ``i`` belongs to.

    Candidates come from MinHash LSH (banding tuned to ``threshold``); each candidate pair is confirmed by
    its estimated Jaccard similarity before the groups are joined (union-find), so bands only save work.
    """
    n = len(texts)
    parent = np.arange(n)

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm)
    signatures = np.empty((n, num_perm), dtype=np.uint32)  # hash values are < 2**32: half the memory of uint64
    minhashes = MinHash.generator((shingles(t) for t in texts), num_perm=num_perm)
    for i, m in enumerate(tqdm(minhashes, total=n, desc="minhash captions", leave=False, disable=not progress)):
        signatures[i] = m.hashvalues
        for j in lsh.query(m):
            if np.mean(signatures[j] == signatures[i]) >= threshold:
                a, b = find(i), find(j)
                parent[max(a, b)] = min(a, b)
        lsh.insert(i, m, check_duplication=False)
    return np.array([find(i) for i in range(n)])
