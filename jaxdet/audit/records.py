"""The audit's records, streamed: every image, annotated box and unexplained detection goes
to a JSON-lines file as its batch comes back, and only the highest of each ranking stays in
memory (a bounded heap per ranking), so an audit of COCO's 118k training images holds what
an audit of 600 does. audit.json then carries the top of each ranking and names the files
that hold everything."""

from __future__ import annotations

import heapq
import itertools
import json
import os
from collections.abc import Iterator

from jaxdet.audit.suspects import KINDS

ALL_KINDS = (*KINDS, "missing_box")
FILES = {"images": "images.jsonl", "boxes": "boxes.jsonl", "missing": "missing.jsonl"}


class TopK:
    """The `k` items with the highest scores seen so far, in O(k) memory; equal scores keep
    the order they came in (as a stable sort of every item would)."""

    def __init__(self, k: int):
        self.k, self._heap, self._seq = k, [], itertools.count()

    def push(self, score: float, item: dict) -> None:
        # Min-heap on (score, -arrival): the root is the lowest score, the latest among equals.
        entry = (score, -next(self._seq), item)
        if len(self._heap) < self.k:
            heapq.heappush(self._heap, entry)
        elif self.k and entry[:2] > self._heap[0][:2]:
            heapq.heapreplace(self._heap, entry)

    def __len__(self) -> int:
        return len(self._heap)

    def sorted(self) -> list[dict]:
        """Highest score first; among equal scores, first come first."""
        return [item for _, _, item in sorted(self._heap, key=lambda e: e[:2], reverse=True)]


class JsonLines:
    """A JSON-lines file read lazily; iterating again reads it again."""

    def __init__(self, path: str):
        self.path = path

    def __iter__(self) -> Iterator[dict]:
        with open(self.path) as f:
            for line in f:
                yield json.loads(line)


class RecordWriter:
    """Writes images.jsonl, boxes.jsonl and missing.jsonl into `out` (as .partial files,
    renamed by `close`, removed by `discard`) and keeps the top `keep` of each ranking: images
    by gradient norm, boxes (detections for missing_box) by each kind's score, and every item
    as a suspect of its most likely kind."""

    def __init__(self, out: str, keep: int):
        self.out, self.counts = out, {name: 0 for name in FILES}
        self._files = {name: open(self._partial(name), "w") for name in FILES}
        self.top_images = TopK(keep)
        self.rankings = {kind: TopK(keep) for kind in ALL_KINDS}
        self.suspects = TopK(keep)

    def _partial(self, name: str) -> str:
        return os.path.join(self.out, FILES[name] + ".partial")

    def _write(self, name: str, record: dict) -> None:
        self._files[name].write(json.dumps(record) + "\n")
        self.counts[name] += 1

    def add(self, images: list[dict], boxes: list[dict], missing: list[dict]) -> None:
        """One batch's records (runner._records)."""
        for r in images:
            self._write("images", r)
            self.top_images.push(r["grad_norm"], r)
        for b in boxes:
            self._write("boxes", b)
            for kind in KINDS:
                if b[kind] > 0:
                    self.rankings[kind].push(b[kind], {"kind": kind, "suspicion": b[kind], **b})
            kind = max(KINDS, key=lambda k: b[k])
            if b[kind] > 0:
                self.suspects.push(b[kind], {"kind": kind, "suspicion": b[kind], **b})
        for d in missing:
            self._write("missing", d)
            item = {"kind": "missing_box", "suspicion": d["missing_box"], **d}
            self.rankings["missing_box"].push(d["missing_box"], item)
            self.suspects.push(d["missing_box"], item)

    def close(self) -> dict[str, str]:
        """Finishes the files; returns {name: file name in out}."""
        for name, f in self._files.items():
            f.close()
            os.replace(self._partial(name), os.path.join(self.out, FILES[name]))
        return dict(FILES)

    def discard(self) -> None:
        """Closes and removes the partial files (an audit that did not finish)."""
        for name, f in self._files.items():
            f.close()
            if os.path.exists(self._partial(name)):
                os.remove(self._partial(name))

    def gallery_order(self, k: int) -> list[dict]:
        """Up to `k` suspects for the gallery, taken in turn from each kind's ranking (the
        kinds' scores are not on one scale, and one kind would fill the gallery otherwise)."""
        ranked = {kind: top.sorted() for kind, top in self.rankings.items()}
        out: list[dict] = []
        for r in range(max((len(v) for v in ranked.values()), default=0)):
            out += [ranked[kind][r] for kind in ALL_KINDS if r < len(ranked[kind])]
        return out[:k]
