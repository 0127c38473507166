"""`dicom-rules query CONFIG DESTINATION KEY=VALUE...`: a C-FIND from the command line, as
DCMTK's findscu sends one, at a destination of the router's configuration.

The keys are checked against the DICOM dictionary before anything is sent. pynetdicom is
loaded when the command runs, so that the language commands start without it."""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time

from pydicom import Dataset
from pydicom.dataelem import DataElement
from pydicom.multival import MultiValue
from pydicom.sequence import Sequence

from ..config import load_config
from ..lang.paths import lookup_keyword, suggest_keywords
from .common import EXIT_FINDINGS, EXIT_OK, UsageError
from .router import _destination

LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")
DEFAULT_LEVEL = {"patient": "PATIENT", "study": "STUDY"}
NUMBERS = {"US": int, "SS": int, "UL": int, "SL": int, "UV": int, "SV": int, "FL": float, "FD": float}


def _add_options(parser: argparse.ArgumentParser, default=None) -> None:
    parser.add_argument("--model", choices=("patient", "study", "worklist"), default=default or "study",
                        help="the information model: Patient Root, Study Root (the default), Modality Worklist")
    parser.add_argument("--level", type=str.upper, choices=LEVELS, default=default,
                        help="the Query/Retrieve Level (default: PATIENT with --model patient, else STUDY)")
    parser.add_argument("--timeout", type=float, metavar="S", default=default,
                        help="seconds for the whole query (default: the destination's timeouts.dimse)")
    parser.add_argument("--format", choices=("text", "json"), default=default or "text", help="output format")


def add_query_arguments(parser: argparse.ArgumentParser) -> None:
    """The command's arguments. Its options may also come among or after the keys: what
    follows DESTINATION is read again by cmd_query (argparse alone stops taking positional
    arguments at the first option after them)."""
    parser.add_argument("config", help="router configuration (YAML)")
    parser.add_argument("destination", help="a dicom destination named in it")
    parser.add_argument("keys", nargs=argparse.REMAINDER, metavar="KEY=VALUE",
                        help="a keyword or a path through sequences (ScheduledProcedureStepSequence.Modality) "
                             "and the value to match; KEY= asks for it as a return key")
    _add_options(parser)


def _options_among_keys(args) -> None:
    """The keys, and the options given among or after them (over those given before CONFIG)."""
    if {"-h", "--help"} & set(args.keys):
        raise UsageError("-h goes before CONFIG: dicom-rules query -h")
    parser = argparse.ArgumentParser(prog="dicom-rules query CONFIG DESTINATION", add_help=False)
    parser.add_argument("keys", nargs="*")
    _add_options(parser, default=argparse.SUPPRESS)
    parsed = parser.parse_intermixed_args(args.keys)
    for name, value in vars(parsed).items():
        setattr(args, name, value)


def parse_key(text: str) -> tuple[tuple[str, ...], str]:
    """KEY=VALUE (KEY= asks for the element as a return key): the keywords along the path,
    and the value. A path runs through sequences: ScheduledProcedureStepSequence.Modality."""
    if "=" not in text:
        raise UsageError(f"{text!r}: a key is KEY=VALUE, or KEY= to have it returned")
    key, value = text.split("=", 1)
    path = tuple(key.strip().split("."))
    for depth, keyword in enumerate(path):
        info = lookup_keyword(keyword)
        if info is None or info.mask is not None:
            suggestions = suggest_keywords(keyword)
            hint = f"; did you mean {' or '.join(suggestions)}?" if suggestions else ""
            raise UsageError(f"{key}: {keyword!r} is not a DICOM keyword{hint}")
        if depth < len(path) - 1 and info.vr != "SQ":
            raise UsageError(f"{key}: {keyword} is not a sequence: nothing can be asked inside it")
    return path, value


def build_identifier(keys: list[str], model: str, level: str | None) -> tuple[Dataset, list[tuple[str, ...]]]:
    """The C-FIND identifier the keys ask for, and the key paths in the order given."""
    identifier = Dataset()
    if model != "worklist":
        identifier.QueryRetrieveLevel = level
    paths: list[tuple[str, ...]] = []
    for text in keys:
        path, value = parse_key(text)
        if path in paths:
            raise UsageError(f"{'.'.join(path)} is given twice")
        if path == ("QueryRetrieveLevel",):
            raise UsageError("QueryRetrieveLevel is set with --level")
        paths.append(path)
        dataset = identifier
        for keyword in path[:-1]:
            if keyword not in dataset or not dataset[keyword].value:
                setattr(dataset, keyword, [Dataset()])
            dataset = dataset[keyword].value[0]
        if path[-1] in dataset:
            raise UsageError(f"{'.'.join(path)}: a sequence cannot be asked for both whole and inside")
        dataset.add(_element(path, value))
    return identifier, paths


def _element(path: tuple[str, ...], value: str) -> DataElement:
    info = lookup_keyword(path[-1])
    if info.vr == "SQ":
        if value:
            raise UsageError(f"{'.'.join(path)} is a sequence: ask for elements inside it "
                             f"({path[-1]}.KEYWORD=VALUE), or give it empty to have it returned whole")
        return DataElement(info.tag, "SQ", [])
    vr = info.vr.split(" or ")[0]
    if not value:
        return DataElement(info.tag, vr, None)
    if vr in NUMBERS:
        try:
            return DataElement(info.tag, vr, NUMBERS[vr](value))
        except ValueError:
            raise UsageError(f"{'.'.join(path)}: {value!r} is not a number ({vr})") from None
    return DataElement(info.tag, vr, value)


def _value_text(match: Dataset, path: tuple[str, ...]):
    """The value at `path` in a match, for printing: text, a list of texts (several values),
    a list of items (a sequence asked whole), or None when the match does not hold it."""
    dataset = match
    for keyword in path[:-1]:
        items = dataset.get(keyword)
        if not items:
            return None
        dataset = items[0]
    if path[-1] not in dataset:
        return None
    return _printable(dataset[path[-1]].value)


def _printable(value):
    if isinstance(value, Sequence):
        return [{element.keyword or str(element.tag): _printable(element.value) for element in item} for item in value]
    if isinstance(value, MultiValue):
        return [str(v) for v in value]
    return "" if value is None else str(value)


def _text_line(match: Dataset, paths: list[tuple[str, ...]]) -> str:
    """KEY=VALUE for each key asked; a value with blanks (or none) quoted, several values
    joined with a backslash as DICOM writes them, a sequence as JSON."""
    fields = []
    for path in paths:
        value = _value_text(match, path)
        if isinstance(value, list) and value and isinstance(value[0], dict):
            text = json.dumps(value, ensure_ascii=False)
        else:
            text = "\\".join(value) if isinstance(value, list) else (value or "")
            if not text or any(c.isspace() or c == '"' for c in text):
                text = json.dumps(text, ensure_ascii=False)
        fields.append(f"{'.'.join(path)}={text}")
    return "  ".join(fields)


def cmd_query(args) -> int:
    from ..runtime.pynetdicom_setup import configure_pynetdicom
    from ..runtime.queries import FindResult, find
    _options_among_keys(args)
    model = args.model
    if model == "worklist" and args.level:
        raise UsageError("--level is for the patient and study models: a worklist has no levels")
    level = args.level or DEFAULT_LEVEL.get(model)
    if model == "study" and level == "PATIENT":
        raise UsageError("the study root model has no PATIENT level: use --model patient")
    if args.timeout is not None and args.timeout <= 0:
        raise UsageError("--timeout must be more than 0 seconds")
    identifier, paths = build_identifier(args.keys, model, level)
    config = load_config(args.config, secrets=False)
    destination = _destination(config, args.destination)
    if destination.type != "dicom":
        raise UsageError(f"{destination.name} is a {destination.type} destination: query sends a C-FIND over the "
                         "network, to dicom destinations only")
    configure_pynetdicom()
    timeout = args.timeout if args.timeout is not None else destination.timeouts.dimse
    cancel = threading.Event()
    matches: list[Dataset] = []
    outcome: FindResult | None = None
    started = time.monotonic()
    responses = find(destination, identifier, model, timeout, cancel)
    try:
        for item in responses:
            if isinstance(item, FindResult):
                outcome = item
            else:
                matches.append(item)
                if args.format == "text":
                    print(_text_line(item, paths), flush=True)
    except KeyboardInterrupt:
        cancel.set()  # the peer is sent a C-CANCEL; the association ends before we do
        for _ in responses:
            pass
        raise
    finally:
        responses.close()
    if args.format == "json":
        print(json.dumps([{".".join(path): _value_text(match, path) for path in paths} for match in matches],
                         indent=2, ensure_ascii=False))
    seconds = time.monotonic() - started
    where = f"{destination.name} ({destination.ae_title}@{destination.host}:{destination.port})"
    if outcome is None or not outcome.ok:
        print(f"{where}: {outcome.failure if outcome else 'no answer'}", file=sys.stderr)
        return EXIT_FINDINGS
    status = f"0x{outcome.status:04X}" + (f" ({outcome.comment})" if outcome.comment else "")
    print(f"{len(matches)} match{'es' * (len(matches) != 1)} from {where} in {seconds:.1f} s, status {status}",
          file=sys.stderr)
    return EXIT_OK
