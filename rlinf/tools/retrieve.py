"""`retrieve`: local BM25 search over a corpus file with `bm25s` (Search-R1-style retrieval, offline).

The corpus is a `.jsonl` file (one JSON object per line; the document is its `field`, default `text`,
with `title` prepended when present) or any other text file with one document per line. The index is
built on first use and cached per (file, modification time, field). The result is the top `k`
documents as text, numbered, best first; documents with no query term in common are left out.
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import OrderedDict
from typing import Any, List, Tuple

from rlinf.errors import InputError

from .base import TOOLS, ToolError, ToolResult

logger = logging.getLogger(__name__)

MAX_DOC_CHARS = 2000  # a document longer than this is cut in the tool's output
_CACHE_SIZE = 4


class BM25Index:
    """BM25 (Okapi, bm25s defaults k1=1.5, b=0.75) over `docs`, English stop words removed."""

    def __init__(self, docs: List[str]):
        import bm25s

        self._bm25s = bm25s
        self.docs = docs
        self.retriever = bm25s.BM25()
        tokens = bm25s.tokenize(docs, stopwords="en", show_progress=False)
        self.retriever.index(tokens, show_progress=False)
        self.vocab = tokens.vocab

    def search(self, query: str, k: int) -> List[Tuple[int, float]]:
        """(document index, score) of the best `k` documents sharing a term with `query`, best first."""
        words = self._bm25s.tokenize([query], stopwords="en", return_ids=False, show_progress=False)[0]
        ids = [self.vocab[w] for w in words if w in self.vocab]
        if not ids:
            return []
        k = min(k, len(self.docs))
        found, scores = self.retriever.retrieve([ids], k=k, show_progress=False, n_threads=0)
        return [(int(i), float(s)) for i, s in zip(found[0], scores[0]) if s > 0]


def read_corpus(path: str, field: str = "text") -> List[str]:
    """Documents of a corpus file; InputError naming the file (and line) when it cannot be read."""
    if not os.path.isfile(path):
        raise InputError(f"corpus file not found: {path}", key="corpus")
    docs: List[str] = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            line = line.strip()
            if not line:
                continue
            if not path.endswith(".jsonl"):
                docs.append(line)
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{path} line {n} is not JSON: {exc.msg}", key="corpus") from None
            if not isinstance(row, dict) or not isinstance(row.get(field), str):
                raise InputError(f"{path} line {n} has no text field '{field}'", key="corpus")
            title = row.get("title")
            docs.append(f"{title}. {row[field]}" if isinstance(title, str) and title else row[field])
    if not docs:
        raise InputError(f"corpus file has no documents: {path}", key="corpus")
    return docs


_CACHE: "OrderedDict[Tuple[str, float, str], BM25Index]" = OrderedDict()
_LOCK = threading.Lock()


def load_index(path: str, field: str = "text") -> BM25Index:
    """The (cached) index of a corpus file."""
    real = os.path.realpath(path)
    try:
        key = (real, os.path.getmtime(real), field)
    except OSError:
        raise InputError(f"corpus file not found: {path}", key="corpus") from None
    with _LOCK:
        if key in _CACHE:
            _CACHE.move_to_end(key)
            return _CACHE[key]
    index = BM25Index(read_corpus(real, field))
    logger.info("BM25 index of %s: %d documents", path, len(index.docs))
    with _LOCK:
        _CACHE[key] = index
        while len(_CACHE) > _CACHE_SIZE:
            _CACHE.popitem(last=False)
    return index


@TOOLS.register("retrieve", "search")
def retrieve(text: str, corpus: Any = None, k: int = 3, field: str = "text", **_: object) -> ToolResult:
    """Top-`k` documents of `corpus` for the query `text`."""
    if not corpus:
        raise InputError("the retrieve tool needs a corpus file (option corpus=PATH)", key="corpus")
    if not isinstance(k, int) or k < 1:
        raise InputError(f"k must be a positive integer, not {k!r}", key="k")
    query = text.strip()
    if not query:
        raise ToolError("empty query")
    index = load_index(str(corpus), field)
    hits = index.search(query, k)
    if not hits:
        return ToolResult(True, output="no document matches the query", meta={"hits": []})
    lines = []
    for rank, (i, _score) in enumerate(hits, 1):
        doc = index.docs[i]
        lines.append(f"[{rank}] {doc[:MAX_DOC_CHARS]}{'...' if len(doc) > MAX_DOC_CHARS else ''}")
    meta = {"hits": [{"doc": i, "score": round(s, 4)} for i, s in hits]}
    return ToolResult(True, output="\n".join(lines), meta=meta)
