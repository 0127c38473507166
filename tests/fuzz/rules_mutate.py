"""A seeded generator of broken rule files, from valid ones that use group rules (`per series`,
`per study`, `complete after`, `complete when`, `late`, the aggregates), `urgent` and `during`.

`mutants(seed, count)` yields the same texts for the same seed; each mutant has a random
generator of its own (seed and number), so the first N of a long run are those of a short one.
A mutation works on the tokens of a base file: one is deleted, duplicated, swapped with its
neighbour or replaced by a word a tired or hostile author would write there (keywords of group
rules in the wrong place, durations that are zero, negative, huge or malformed, levels that do not
exist, aggregates nested or empty); or the text is cut short, or a stray character is inserted.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass

BASES = (
    '''rule "AI: brain MR with two series" per study {
  complete after 10m  # quiet time since the group's last arrival
  complete when any(DataSet.SeriesDescription matches /axial t2/i)
    and any(DataSet.SeriesDescription matches /sag t1/i)
  late refire
  when DataSet.Modality == "MR" and count() >= 20
  then route to AI
}
''',
    '''rule "whole series to the archive at night" per series {
  complete after 1.5h
  late quarantine
  when all(DataSet.Modality == "CT") and count(DataSet.ImageType contains "LOCALIZER") < 3
  then {
    log "n = " + count()
    route to ARCHIVE during night
  }
}
rule "urgent strokes" {
  when DataSet.StudyDescription matches /stroke/i
  then {
    urgent
    route to PACS
  }
}
''',
    '''rule "distinct series" per study {
  complete when "T2" in distinct(DataSet.SeriesDescription) and count() > 2
  late drop
  when any(DataSet.Modality == "MR")
  then copy to AI during night {
    set DataSet.StudyDescription = "for AI"
  }
}
rule "everything" {
  then route to PACS
}
''',
)

_TOKEN = re.compile(r'"(?:[^"\\\n]|\\.)*"|/(?:[^/\\\n]|\\.)+/i?|\d+(?:\.\d+)?[smhd]?|[A-Za-z_][\w.]*|==|>=|<=|\S')

# What lands where it should not: the words of group rules, durations and levels that are wrong,
# aggregates nested or with a wrong argument, and plain noise.
HOSTILE = (
    "per", "series", "study", "patient", "complete", "after", "when", "late", "refire", "quarantine",
    "drop", "urgent", "during", "night", "nowhere", "count()", "any(", "all(", "distinct(", "count(count())",
    "any(any(DataSet.Modality == \"MR\"))", "distinct()", "count(DataSet.Modality)", "0s", "-1m", "1e400h",
    "99999999999999999999d", "31d", "10x", "1.5.5h", "0.0000001s", "NaN", "inf", "m", "10", "{", "}", "(",
    ")", "then", "route to", "to", "reject", "\"\"", "/(/", "/a{99999999}/", "\u00e9", "\u202e", "\x00", "#",
    "and", "or", "not", "==", "in", "let", "on C-FIND", "test",
)


@dataclass(frozen=True)
class RulesMutant:
    number: int
    kind: str
    text: str


KINDS = ("delete", "duplicate", "swap", "replace", "insert", "truncate", "stray character", "like for like",
         "like for like", "like for like")

# Like for like: a word of one kind replaced by another of the same kind, so that the file still
# parses and the checks (durations, levels, policies, aggregates, windows) are what is tested.
LIKE_FOR_LIKE = (
    (re.compile(r"(?<=complete after )\S+"), ("0s", "-1m", "1e400h", "99999999999999999999d", "31d", "30d", "10x",
                                              "1.5.5h", "0.0000001s", "1s", "NaN", "10", "m", "0.5s")),
    (re.compile(r"(?<=per )\w+"), ("series", "study", "patient", "instance", "STUDY", "Series", "")),
    (re.compile(r"(?<=late )\w+"), ("refire", "quarantine", "drop", "reject", "route", "ignore", "")),
    (re.compile(r"(?<=during )\w+"), ("night", "day", "NIGHT", "during", "urgent", "\u00e9t\u00e9")),
    (re.compile(r"\b(?:count|any|all|distinct)(?=\()"), ("count", "any", "all", "distinct", "sum", "max")),
    (re.compile(r"(?<=count\()[^)]*(?=\))|(?<=any\()[^)]*(?=\))|(?<=distinct\()[^)]*(?=\))"),
     ("", "DataSet.Modality", "count()", "any(DataSet.Modality == \"MR\")", "DataSet.Modality == \"MR\"",
      "distinct(DataSet.SeriesDescription)", "\"text\"", "1 / 0")),
    (re.compile(r"\burgent\b"), ("urgent", "urgent urgent", "urgent during night", "urgent to PACS", "")),
    (re.compile(r"\bper (?:series|study)\b"), ("per series", "per study", "", "per", "per series per study",
                                                "on C-FIND per study", "per study on C-STORE")),
    (re.compile(r"\bcomplete (?=after|when)"), ("complete ", "", "complete complete ", "late ")),
)


def _tokens(text: str) -> list[re.Match]:
    return list(_TOKEN.finditer(text))


def _mutate(text: str, kind: str, rng: random.Random) -> str:
    if kind == "like for like":
        candidates = [(p, c) for p, c in LIKE_FOR_LIKE if p.search(text)]
        if not candidates:  # an earlier mutation took them all away
            return text
        pattern, choices = rng.choice(candidates)
        found = rng.choice(list(pattern.finditer(text)))
        return text[:found.start()] + rng.choice(choices) + text[found.end():]
    tokens = _tokens(text)
    if not tokens:  # truncated to nothing
        return rng.choice(HOSTILE)
    token = rng.choice(tokens)
    start, end = token.span()
    if kind == "delete":
        return text[:start] + text[end:]
    if kind == "duplicate":
        return text[:end] + " " + token.group() + text[end:]
    if kind == "swap":
        index = tokens.index(token)
        other = tokens[min(index + 1, len(tokens) - 1)]
        if other is token:
            return text
        return text[:start] + other.group() + text[end:other.start()] + token.group() + text[other.end():]
    if kind == "replace":
        return text[:start] + rng.choice(HOSTILE) + text[end:]
    if kind == "insert":
        return text[:start] + rng.choice(HOSTILE) + " " + text[start:]
    if kind == "truncate":
        return text[:rng.randrange(len(text) + 1)]
    position = rng.randrange(len(text) + 1)
    return text[:position] + rng.choice("{}()\"/\\\n\t:;,.=<>!~`$") + text[position:]


def mutants(seed: int, count: int):
    for number in range(count):
        rng = random.Random(f"{seed}-rules-{number}")
        text = rng.choice(BASES)
        kinds = []
        for _ in range(rng.choice((1, 1, 2, 3))):  # several mutations now and then
            kind = KINDS[(number + len(kinds)) % len(KINDS)] if not kinds else rng.choice(KINDS)
            kinds.append(kind)
            text = _mutate(text, kind, rng)
        yield RulesMutant(number, "+".join(kinds), text)
