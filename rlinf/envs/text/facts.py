"""`facts`: questions answerable only from a local corpus (Search-R1 style), for the retrieve tool.

A seeded synthetic knowledge base of fictional entities, one fact each ("the capital of zorbia is
quellen."): names are made of random syllables, so no model knows the answers; it has to look them up.

- `corpus_documents(seed)`: the corpus, one document per fact plus distractors: for every entity a longer
  document that names it but not its fact ("merchants from zorbia sell salt in darvo every winter."), and
  unrelated documents about other made-up places. Written as `.jsonl` with a `text` field by
  `python -m rlinf.envs.text.facts corpus --out FILE [--seed S]`.
- `data.task: facts` (`load_facts`): prompts "what is the capital of zorbia?", answer "quellen", from the
  knowledge base of `data.seed`; the eval split holds out whole entities (a deterministic 1/5).
- `warm_start_demos`: worked episodes on training entities for an SFT warm-start, played through the real
  retrieve tool over the corpus (the query is the entity's name, which ranks its fact first under BM25):

    what is the capital of zorbia?<tool_call>{"name": "retrieve", "input": "zorbia"}</tool_call>
    <tool_result>[1] the capital of zorbia is quellen.
    [2] merchants from zorbia sell salt in darvo every winter.</tool_result>
    <answer>quellen</answer>

  `python -m rlinf.envs.text.facts demos --corpus FILE --out demos.jsonl [--num 60] [--seed 0]`

Every character (prompts, documents, the tool's "[k] " numbering) is lowercase ASCII, digits, space and
`.?[]`, inside the character vocabulary of the tiny recipes (configs/grpo_retrieval_agent.yaml).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

from rlinf.config.schema import DataConfig
from rlinf.envs.agent.tool_env import ToolEnv
from rlinf.envs.text.conversations import write_conversations
from rlinf.envs.text.tasks import TaskSplit, TextSample
from rlinf.errors import InputError
from rlinf.tools.retrieve import load_index

NUM_ENTITIES = 2000
RELATIONS = ("capital", "founder", "currency", "language")
GOODS = ("salt", "wool", "copper", "glass", "spice", "timber", "silver", "honey")
SEASONS = ("spring", "summer", "autumn", "winter")
NUM_UNRELATED = 100  # distractor documents about places that are not entities

_ONSETS = "b c d f g k l m n p r s t v z br dr gr kl pr st tr".split()
_VOWELS = "a e i o u".split()
_CODAS = ["", "", "n", "r", "l", "s", "m"]


@dataclass(frozen=True)
class Fact:
    entity: str
    relation: str
    value: str
    place: str  # a distractor place of the entity's merchant document
    goods: str
    season: str

    @property
    def question(self) -> str:
        return f"what is the {self.relation} of {self.entity}?"

    @property
    def document(self) -> str:
        return f"the {self.relation} of {self.entity} is {self.value}."

    @property
    def distractor(self) -> str:
        return f"merchants from {self.entity} sell {self.goods} in {self.place} every {self.season}."


def _names(rng: random.Random, n: int, taken: set) -> List[str]:
    """`n` distinct made-up words of 2-3 syllables (6+ letters), none in `taken` (updated)."""
    out: List[str] = []
    while len(out) < n:
        word = "".join(rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS)
                       for _ in range(rng.choice((2, 2, 3))))
        if len(word) >= 6 and word not in taken:
            taken.add(word)
            out.append(word)
    return out


def knowledge_base(seed: int) -> List[Fact]:
    """The `NUM_ENTITIES` facts of seed `seed`, in generation order; entity, answer and place names are
    pairwise distinct (and distinct from every English word the corpus uses)."""
    rng = random.Random(seed)
    taken = set(RELATIONS) | set(GOODS) | set(SEASONS)
    entities = _names(rng, NUM_ENTITIES, taken)
    values = _names(rng, NUM_ENTITIES, taken)
    places = _names(rng, NUM_ENTITIES // 4, taken)
    return [Fact(e, rng.choice(RELATIONS), v, rng.choice(places), rng.choice(GOODS), rng.choice(SEASONS))
            for e, v in zip(entities, values)]


def corpus_documents(seed: int) -> List[str]:
    """Fact documents, per-entity distractors and unrelated documents, shuffled (seeded)."""
    facts = knowledge_base(seed)
    rng = random.Random(seed + 1)
    taken = {f.entity for f in facts} | {f.value for f in facts} | {f.place for f in facts}
    towns = _names(rng, NUM_UNRELATED, taken)
    unrelated = [f"the old road to {t} crosses {rng.choice(GOODS)} hills near the {rng.choice(SEASONS)} fair."
                 for t in towns]
    docs = [f.document for f in facts] + [f.distractor for f in facts] + unrelated
    rng.shuffle(docs)
    return docs


def write_corpus(path: Path, seed: int) -> int:
    """The corpus of seed `seed` as `.jsonl` rows {"id", "text"}; returns the number of documents."""
    docs = corpus_documents(seed)
    path.write_text("".join(json.dumps({"id": i, "text": d}) + "\n" for i, d in enumerate(docs)))
    return len(docs)


def _sample(fact: Fact) -> TextSample:
    return TextSample(prompt=fact.question, answer=fact.value,
                      meta={"task": "facts", "entity": fact.entity, "relation": fact.relation})


def split_facts(seed: int):
    """(held-out facts, training facts) of the knowledge base of `seed`: a deterministic 1/5 held out."""
    facts = knowledge_base(seed)
    order = list(range(len(facts)))
    random.Random(seed + 2).shuffle(order)
    n_eval = len(facts) // 5
    return [facts[i] for i in order[:n_eval]], [facts[i] for i in order[n_eval:]]


def load_facts(cfg: DataConfig) -> TaskSplit:
    """Train prompts drawn (with replacement) from the training entities; eval prompts are held-out ones."""
    held, train_facts = split_facts(cfg.seed)
    rng = random.Random(cfg.seed + 3)
    train = [_sample(train_facts[rng.randrange(len(train_facts))]) for _ in range(cfg.train_size)]
    evals = [_sample(f) for f in held[:cfg.eval_size]]
    return TaskSplit(train, evals)


def tool_call_text(query: str) -> str:
    """The documented call format (rlinf.envs.agent.tool_env) for the retrieve tool on `query`."""
    return '<tool_call>{"name": "retrieve", "input": "' + query + '"}</tool_call>'


def demo_episode(fact: Fact, corpus: str) -> Dict:
    """One scripted episode on `fact` through ToolEnv and the real retrieve tool over `corpus`."""
    env = ToolEnv(verifier=lambda response, answer: float(response == answer), tools=("retrieve",),
                  system_prompt=None, tool_options={"retrieve": {"corpus": corpus}})
    sample = _sample(fact)
    messages = [dict(m) for m in env.reset(sample)]
    call = tool_call_text(fact.entity)
    observation, _, done, info = env.step(call)
    if done or not info["tool_ok"]:
        raise RuntimeError(f"demo {sample.prompt!r}: the retrieve call failed ({info})")
    if f"[1] {fact.document}" not in observation:
        raise InputError(f"{corpus} does not rank the document of {fact.entity!r} first: is it the corpus of "
                         f"this seed?", key="--corpus")
    final = f"<answer>{fact.value}</answer>"
    _, reward, done, _ = env.step(final)
    if not (done and reward == 1.0):
        raise RuntimeError(f"demo {sample.prompt!r}: the scripted answer was not graded correct")
    messages += [{"role": "assistant", "content": call}, {"role": "tool", "content": observation},
                 {"role": "assistant", "content": final}]
    return {"messages": messages}


def warm_start_demos(num: int, seed: int, corpus: str, data_seed: int = DataConfig.seed) -> List[Dict]:
    """`num` demos on distinct training entities of the knowledge base of `data_seed` (never held-out ones)."""
    load_index(corpus)  # a missing or unreadable corpus: InputError naming it
    _, train_facts = split_facts(data_seed)
    if not 1 <= num <= len(train_facts):
        raise InputError(f"{num} demos from {len(train_facts)} training entities", key="--num")
    return [demo_episode(f, corpus) for f in random.Random(seed).sample(train_facts, num)]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlinf.envs.text.facts")
    sub = parser.add_subparsers(dest="command", required=True)
    corpus = sub.add_parser("corpus", help="write the retrieval corpus (jsonl, field text)")
    corpus.add_argument("--out", required=True)
    corpus.add_argument("--seed", type=int, default=DataConfig.seed, help="data.seed of the RL run")
    demos = sub.add_parser("demos", help="write retrieve-tool demonstrations (jsonl conversations)")
    demos.add_argument("--out", required=True)
    demos.add_argument("--corpus", required=True, help="the corpus written by `corpus` with the same --data-seed")
    demos.add_argument("--num", type=int, default=60)
    demos.add_argument("--seed", type=int, default=0)
    demos.add_argument("--data-seed", type=int, default=DataConfig.seed, help="data.seed of the RL run (its split)")
    args = parser.parse_args(argv)
    if args.command == "corpus":
        write_corpus(Path(args.out), args.seed)
        return 0
    return write_conversations(lambda: warm_start_demos(args.num, args.seed, args.corpus, args.data_seed), args.out)


if __name__ == "__main__":
    sys.exit(main())
