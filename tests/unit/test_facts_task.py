"""The facts task (questions answerable from a local corpus), its corpus, its warm-start demonstrations and
BM25 retrieval of an entity's document by its name."""

import json

import pytest

from rlinf.config.schema import DataConfig
from rlinf.envs.text.conversations import render_conversation
from rlinf.envs.text.facts import (corpus_documents, knowledge_base, load_facts, main, split_facts,
                                   warm_start_demos, write_corpus)
from rlinf.envs.text.tasks import load_task
from rlinf.errors import InputError
from rlinf.models.tokenizer import CharTokenizer
from rlinf.tools import call as call_tool
from rlinf.tools.retrieve import load_index

CHARS = "0123456789+-*/=<>_{}[]():,.!?;#%&\" \nabcdefghijklmnopqrstuvwxyz"  # configs/grpo_retrieval_agent.yaml


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("facts") / "corpus.jsonl"
    write_corpus(path, seed=7)
    return path


def test_knowledge_base_and_corpus_are_seeded():
    assert knowledge_base(7) == knowledge_base(7) and corpus_documents(7) == corpus_documents(7)
    assert knowledge_base(7) != knowledge_base(8)
    facts = knowledge_base(7)
    names = [f.entity for f in facts] + [f.value for f in facts]
    assert len(set(names)) == len(names)  # entities and answers pairwise distinct


def test_split_holds_out_whole_entities_and_is_the_task():
    data = DataConfig(task="facts", seed=7, train_size=500, eval_size=50)
    split = load_task(data)
    assert split.train == load_facts(data).train
    held = {s.meta["entity"] for s in split.eval}
    assert len(held) == len(split.eval) == 50
    assert not held & {s.meta["entity"] for s in split.train}
    held_all, train_all = split_facts(7)
    assert len(held_all) == len(knowledge_base(7)) // 5
    assert not {f.entity for f in held_all} & {f.entity for f in train_all}
    s = split.eval[0]
    assert s.prompt == f"what is the {s.meta['relation']} of {s.meta['entity']}?" and s.meta["task"] == "facts"


def test_every_answer_is_in_the_corpus_and_every_character_in_the_vocabulary(corpus):
    docs = [json.loads(line)["text"] for line in corpus.read_text().splitlines()]
    assert docs == corpus_documents(7)
    for f in knowledge_base(7):
        assert f"the {f.relation} of {f.entity} is {f.value}." in docs
    split = load_facts(DataConfig(task="facts", seed=7, train_size=100, eval_size=100))
    text = "".join(docs) + "".join(s.prompt + s.answer for s in split.train + split.eval)
    assert set(text) <= set(CHARS)


def test_bm25_ranks_the_entity_s_fact_first_for_its_name(corpus):
    index = load_index(str(corpus))
    facts = knowledge_base(7)
    for f in facts:
        hits = index.search(f.entity, k=3)
        assert index.docs[hits[0][0]] == f.document, f
        assert len(hits) >= 2  # its distractor document matches too, ranked below
    result = call_tool("retrieve", facts[0].entity, corpus=str(corpus))
    assert result.ok and result.output.startswith(f"[1] {facts[0].document}\n[2] ")


def test_demo_is_the_episode_the_env_plays_on_training_entities(corpus):
    demos = warm_start_demos(30, 0, str(corpus), data_seed=7)
    held = {f.entity for f in split_facts(7)[0]}
    by_question = {f.question: f for f in knowledge_base(7)}
    for row in demos:
        user, call, tool, answer = row["messages"]
        fact = by_question[user["content"]]
        assert fact.entity not in held
        assert call["content"] == '<tool_call>{"name": "retrieve", "input": "' + fact.entity + '"}</tool_call>'
        assert tool["role"] == "tool" and tool["content"].startswith(f"\n<tool_result>[1] {fact.document}\n")
        assert answer["content"] == f"<answer>{fact.value}</answer>"
    tok = CharTokenizer(CHARS)
    rendered = render_conversation(tok, demos[0]["messages"], max_length=320)
    assert not rendered.info.get("truncated") and tok.decode(rendered.prompt_ids) == demos[0]["messages"][0]["content"]
    with pytest.raises(InputError, match="--num"):
        warm_start_demos(len(split_facts(7)[1]) + 1, 0, str(corpus), data_seed=7)


def test_cli_writes_corpus_and_demos_and_refuses_a_wrong_corpus(tmp_path, capsys):
    corpus = tmp_path / "c.jsonl"
    assert main(["corpus", "--out", str(corpus), "--seed", "7"]) == 0
    out = tmp_path / "d.jsonl"
    assert main(["demos", "--corpus", str(corpus), "--out", str(out), "--num", "3", "--data-seed", "7"]) == 0
    assert len([json.loads(line) for line in out.read_text().splitlines()]) == 3
    bad = tmp_path / "bad.jsonl"  # the corpus of another seed does not hold the demo entities' facts
    assert main(["demos", "--corpus", str(corpus), "--out", str(bad), "--num", "3", "--data-seed", "8"]) == 2
    assert not bad.exists() and "--corpus" in capsys.readouterr().err
    assert main(["demos", "--corpus", str(tmp_path / "none.jsonl"), "--out", str(bad)]) == 2
    assert not bad.exists() and "corpus" in capsys.readouterr().err
