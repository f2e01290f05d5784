"""A synthetic preference task with a hidden gold reward, in the style of reward-model over-optimisation
studies (Gao et al. 2022): a gold scorer labels pairs of responses, with label noise; a reward model is
trained on the noisy labels; an RL run then optimises the learned (proxy) reward and is measured
against the gold one.

Prompts name a letter: `"say k:"` (one of the 26 letters a-z). The gold reward of a response r to a
prompt naming letter c is

    gold(prompt, r) = (hits - 0.5 * max(0, len(r) - 8)) / 8,    hits = number of c's in lower(r)

so each occurrence of the named letter is worth 1/8 and every character past the eighth costs 1/16.
It is prompt-conditional (the same response scores differently for another letter), learnable by the
tiny character-level reward model (match response characters against one prompt character, count
them, read the length off the end-of-sequence position) and raisable by RL from a randomly initialised
tiny policy (emitting the named letter more often, and stopping, raises it); a policy that learns
only "longer runs of the letter are better" keeps gaining proxy reward while the length penalty makes
the gold one grow half as fast — the kind of gap over-optimisation studies measure.

Pairs (`data.task: synthetic_preference`): for each prompt two responses of 1-12 characters: a
count a uniform in 0..length and a count b uniform in the remaining places, one of them (a fair coin)
the number of the named letter, the other the number of a decoy letter (one other letter per pair,
shared by both responses), the rest drawn from the default tokenizer alphabet (letters, digits, space, punctuation), shuffled; pairs of equal gold reward are redrawn. The decoy makes prompt-blind rules
weak: "more of the most repeated letter" agrees with the gold preference on ~60 % of held-out pairs
and "longer is better" on ~55 % (measured on 4,000 pairs), while counting the prompt's letter agrees
on ~90 %: a reward model needs the prompt to pass 80 %. `chosen` is the response with the higher gold
reward, except that in `LABEL_NOISE` (10 %) of the training pairs, chosen by a seeded coin, the
labels are swapped. Held-out pairs are labelled by the gold reward without noise, so held-out pair
accuracy is agreement with the gold preference. `data.train_size` / `data.eval_size` pairs, seeded by
`data.seed` (the held-out split by a disjoint seed).

Prompts (`data.task: synthetic_prompts`): prompts of the same distribution, answer = the named
letter, for RL against a reward model trained on the pairs; evaluate a policy with `gold_reward`.
Every character is in the default character tokenizer's alphabet (rlinf.models.tokenizer.DEFAULT_CHARS).
"""

import random
import re
import string
from typing import List

from rlinf.config.schema import DataConfig
from rlinf.envs.text.tasks import PreferencePair, TaskSplit, TextSample
from rlinf.models.tokenizer import DEFAULT_CHARS

LETTERS = string.ascii_lowercase
# Characters a response is made of: the whole default tokenizer alphabet, so that every character a
# policy over that alphabet can emit appears in the pairs (a reward model never shown ':' scores it
# arbitrarily, and RL finds such holes at once).
FILLER = DEFAULT_CHARS
LABEL_NOISE = 0.1  # fraction of training pairs whose labels are swapped
FREE_CHARS = 8     # characters a response may have before each further one costs 0.5 / FREE_CHARS
MAX_RESPONSE = 12  # longest response in the pairs
_EVAL_SEED_OFFSET = 7_919_113
_PROMPT = re.compile(r"^say ([a-z]):$")


def make_prompt(letter: str) -> str:
    return f"say {letter}:"


def prompt_letter(prompt: str) -> str:
    """The letter a task prompt names; ValueError for text that is not a prompt of this task."""
    m = _PROMPT.match(prompt.strip().lower())
    if m is None:
        raise ValueError(f"not a synthetic_preference prompt (expected 'say <letter>:'): {prompt!r}")
    return m.group(1)


def gold_reward(prompt: str, response: str) -> float:
    """The hidden gold reward (module docstring): (hits - 0.5 * max(0, len - 8)) / 8."""
    letter, text = prompt_letter(prompt), response.lower()
    return (text.count(letter) - 0.5 * max(0, len(text) - FREE_CHARS)) / FREE_CHARS


def _response(rng: random.Random, letter: str, decoy: str) -> str:
    length = rng.randint(1, MAX_RESPONSE)
    hits = rng.randint(0, length)
    decoys = rng.randint(0, length - hits)
    if rng.random() < 0.5:  # the named letter and the decoy are exchangeable: counts alone say nothing
        hits, decoys = decoys, hits
    others = FILLER.replace(letter, "").replace(decoy, "")
    chars = [letter] * hits + [decoy] * decoys + [rng.choice(others) for _ in range(length - hits - decoys)]
    rng.shuffle(chars)
    return "".join(chars)


def make_pairs(n: int, seed: int, noise: float) -> List[PreferencePair]:
    """`n` pairs labelled by the gold reward, a `noise` fraction of them (seeded coin) swapped;
    meta: letter, gold rewards of chosen and rejected, and whether the label was flipped."""
    rng = random.Random(seed)
    pairs = []
    while len(pairs) < n:
        letter, decoy = rng.sample(LETTERS, 2)
        prompt = make_prompt(letter)
        a, b = _response(rng, letter, decoy), _response(rng, letter, decoy)
        ga, gb = gold_reward(prompt, a), gold_reward(prompt, b)
        if ga == gb:
            continue
        (chosen, g_c), (rejected, g_r) = sorted([(a, ga), (b, gb)], key=lambda x: -x[1])
        flipped = rng.random() < noise
        if flipped:
            chosen, rejected, g_c, g_r = rejected, chosen, g_r, g_c
        pairs.append(PreferencePair(prompt=prompt, chosen=chosen, rejected=rejected,
                                    meta={"letter": letter, "gold_chosen": g_c, "gold_rejected": g_r,
                                          "flipped": flipped}))
    return pairs


def make_prompts(n: int, seed: int) -> List[TextSample]:
    rng = random.Random(seed)
    letters = [rng.choice(LETTERS) for _ in range(n)]
    return [TextSample(prompt=make_prompt(c), answer=c, meta={"letter": c}) for c in letters]


def load_synthetic(cfg: DataConfig) -> TaskSplit:
    """`synthetic_preference`: noisy training pairs, clean held-out pairs; `synthetic_prompts`: prompts."""
    eval_seed = cfg.seed + _EVAL_SEED_OFFSET
    if cfg.task == "synthetic_prompts":
        return TaskSplit(make_prompts(cfg.train_size, cfg.seed), make_prompts(cfg.eval_size, eval_seed))
    return TaskSplit(make_pairs(cfg.train_size, cfg.seed, LABEL_NOISE), make_pairs(cfg.eval_size, eval_seed, 0.0))
