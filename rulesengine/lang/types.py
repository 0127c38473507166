"""Static types of expressions, from the dictionary's VRs, for the checks."""

from __future__ import annotations

from dataclasses import dataclass, replace

from ..values import BINARY_VRS, NUMBER_VRS, concrete_vr, is_multi_vm
from . import nodes as n
from .paths import ARRIVAL, ARRIVAL_TIME_VRS, ResolvedPath

STRING, NUMBER, DATE, TIME, DATETIME, UID = "string", "number", "date", "time", "datetime", "uid"
BYTES, ITEMS, ITEM, REGEX, BOOL, ANY, TABLE = "bytes", "items", "item", "regex", "bool", "any", "table"

TEXTUAL = frozenset({STRING, DATE, TIME, DATETIME, UID, ANY})
DATE_KINDS = {"DA": DATE, "TM": TIME, "DT": DATETIME}


@dataclass(frozen=True, slots=True)
class Type:
    kind: str
    multi: bool = False  # several values of one element (a tuple)
    many: bool = False  # a path that fans out with [*] or ** (a list)
    vr: str | None = None
    table_cell: str | None = None  # text read from a table (`sites.limit`): named when used as a number

    def single(self) -> "Type":
        return replace(self, multi=False, many=False)

    def describe(self) -> str:
        base = {ITEMS: "a sequence", ITEM: "a sequence item", BYTES: "binary data", REGEX: "a regular expression",
                BOOL: "a condition", TABLE: "a table", ANY: "a value"}.get(self.kind, f"a {self.kind}")
        if self.vr and self.kind not in (ITEMS, ITEM):
            base += f" ({self.vr})"
        if self.many:
            return f"many values ({base})"
        if self.multi:
            return f"one or more values ({base})"
        return base


T_STRING, T_NUMBER, T_BOOL, T_ANY, T_REGEX = Type(STRING), Type(NUMBER), Type(BOOL), Type(ANY), Type(REGEX)


def kind_for_vr(vr: str | None) -> str:
    vr = concrete_vr(vr)
    if vr is None:
        return ANY
    if vr == "SQ":
        return ITEMS
    if vr in DATE_KINDS:
        return DATE_KINDS[vr]
    if vr == "UI":
        return UID
    if vr in NUMBER_VRS:
        return NUMBER
    if vr in BINARY_VRS:
        return BYTES
    return STRING


def path_type(path: ResolvedPath) -> Type:
    if path.is_arrival:
        if path.root == ARRIVAL and path.field in ARRIVAL_TIME_VRS:
            vr = ARRIVAL_TIME_VRS[path.field]
            return Type(DATE_KINDS[vr], vr=vr)
        return T_NUMBER if path.field == "PeerPort" else T_STRING
    step = path.last
    vr = concrete_vr(step.vr)
    kind = kind_for_vr(vr)
    if step.mask is not None:
        kind = ANY
    many = path.fans_out
    if kind == ITEMS:
        if isinstance(step.index, int):
            return Type(ITEM, many=many, vr="SQ")
        if step.index == n.STAR:
            return Type(ITEM, many=True, vr="SQ")
        return Type(ITEMS, many=many, vr="SQ")
    multi = is_multi_vm(step.vm) and step.index is None
    return Type(kind, multi=multi and not many, many=many, vr=vr)
