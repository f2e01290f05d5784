"""The retrieve tool: BM25 over a hand-built corpus puts the right document first; bad corpora are named."""

import json

import pytest

from rlinf.errors import InputError
from rlinf.tools import call
from rlinf.tools.retrieve import load_index

DOCS = [
    {"title": "Paris", "text": "Paris is the capital and largest city of France, on the Seine."},
    {"title": "Berlin", "text": "Berlin is the capital of Germany and its most populous city."},
    {"title": "Photosynthesis", "text": "Plants turn light, water and carbon dioxide into sugar and oxygen."},
    {"title": "Seine", "text": "The Seine is a river flowing through Paris into the English Channel."},
    {"title": "Everest", "text": "Mount Everest is the highest mountain above sea level, in the Himalayas."},
]


@pytest.fixture
def corpus(tmp_path):
    path = tmp_path / "docs.jsonl"
    path.write_text("\n".join(json.dumps(d) for d in DOCS) + "\n")
    return path


@pytest.mark.parametrize("query, first", [
    ("What is the capital of Germany?", "Berlin"),
    ("highest mountain in the Himalayas", "Everest"),
    ("how do plants make oxygen from carbon dioxide", "Photosynthesis"),
    ("which river flows into the English Channel", "Seine"),
])
def test_right_document_ranks_first(corpus, query, first):
    res = call("retrieve", query, corpus=str(corpus), k=2)
    assert res.ok, res.error
    lines = res.output.splitlines()
    assert lines[0].startswith(f"[1] {first}."), res.output
    assert len(lines) <= 2
    scores = [h["score"] for h in res.meta["hits"]]
    assert scores == sorted(scores, reverse=True)


def test_plain_text_corpus_one_document_per_line(tmp_path):
    path = tmp_path / "docs.txt"
    path.write_text("apples are red\n\nbananas are yellow\nthe sky is blue\n")
    res = call("retrieve", "yellow fruit bananas", corpus=str(path), k=1)
    assert res.ok and res.output == "[1] bananas are yellow"


def test_query_without_known_terms(corpus):
    res = call("retrieve", "zyzzyva quokka", corpus=str(corpus))
    assert res.ok and res.output == "no document matches the query"


def test_bad_corpus_is_an_error_naming_it(tmp_path, corpus):
    res = call("retrieve", "capital", corpus=str(tmp_path / "nope.jsonl"))
    assert not res.ok and "corpus file not found" in res.error and "nope.jsonl" in res.error
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "fine"}\n{"body": "no text"}\n')
    with pytest.raises(InputError, match="line 2 has no text field 'text'"):
        load_index(str(bad))
    assert not call("retrieve", "capital").ok  # no corpus given
