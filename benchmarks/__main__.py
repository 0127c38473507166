"""`python -m benchmarks`: compile and evaluation times of generated rule files, as a table.

What each figure means and how it is measured: benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import platform
import pstats
import statistics
import sys
import time
from dataclasses import dataclass

import pydicom

from rulesengine import compile_source

from .interpreter import ReferenceInterpreter, summarise
from .workload import DESTINATIONS, SAMPLE_CALLING_AET, SAMPLE_FILE, generate_rules, sample_document

COMPILE_SIZES = (10, 100, 1000)
EVALUATION_SIZES = (1, 10, 100, 1000)
COMPILE_REPETITIONS = {10: 7, 100: 5, 1000: 3}
EVALUATION_REPETITIONS = 7
BATCH_NS = 40_000_000  # each timed batch runs about 40 ms: long enough to swamp timer resolution

TARGET_RULES = 100
TARGET_SPEEDUP = 10.0
TARGET_MICROSECONDS = 50.0
RULES_FILENAME = "benchmark.rules"


@dataclass
class CompileRow:
    rules: int
    milliseconds: float


@dataclass
class EvaluationRow:
    rules: int
    fired: int
    compiled_us: float
    interpreted_us: float
    same_decision: bool

    @property
    def speedup(self) -> float:
        return self.interpreted_us / self.compiled_us


def _timed_batch(evaluate, document, iterations: int) -> int:
    """Nanoseconds for `iterations` evaluations of the same document."""
    invalidate = document.invalidate
    start = time.perf_counter_ns()
    for _ in range(iterations):
        invalidate()  # forget values read by the previous evaluation, as for a newly arrived document
        evaluate(document)
    return time.perf_counter_ns() - start


def _calibrated_iterations(evaluate, document) -> int:
    """How many evaluations make a batch of about BATCH_NS."""
    iterations = 1
    while _timed_batch(evaluate, document, iterations) < BATCH_NS // 8:  # calibrate on short batches
        iterations *= 2
    return iterations * 8


def microseconds_per_document(*engines, repetitions: int = EVALUATION_REPETITIONS) -> list[float]:
    """For each (evaluate, document): the median, over `repetitions` batches, of the time per evaluation.

    The engines' batches alternate, so that a change in machine load affects them alike.
    """
    iterations = [_calibrated_iterations(evaluate, document) for evaluate, document in engines]
    batches: list[list[int]] = [[] for _ in engines]
    gc_was_enabled = gc.isenabled()
    gc.disable()  # as timeit does: a collection landing in one batch would skew it
    try:
        for _ in range(repetitions):
            for (evaluate, document), count, times in zip(engines, iterations, batches):
                times.append(_timed_batch(evaluate, document, count))
    finally:
        if gc_was_enabled:
            gc.enable()
    return [statistics.median(times) / count / 1000 for times, count in zip(batches, iterations)]


def compile_milliseconds(text: str, repetitions: int):
    """Median compile time of `text`, and the last rule set compiled."""
    times = []
    for _ in range(repetitions):
        start = time.perf_counter_ns()
        ruleset = compile_source(text, DESTINATIONS, filename=RULES_FILENAME)
        times.append(time.perf_counter_ns() - start)
    return statistics.median(times) / 1e6, ruleset


def measure_evaluation(count: int, ruleset) -> EvaluationRow:
    text = generate_rules(count)
    interpreter = ReferenceInterpreter.from_source(text, filename=RULES_FILENAME, destinations=DESTINATIONS)
    compiled_decision = ruleset.evaluate(sample_document())
    interpreted_decision = interpreter.evaluate(sample_document())
    same = summarise(compiled_decision) == summarise(interpreted_decision)

    # The same document is evaluated again and again: the first evaluation applies the
    # workload's edits, after which they are no-ops (they write the value already there).
    compiled_document, interpreted_document = sample_document(), sample_document()
    ruleset.evaluate(compiled_document)
    interpreter.evaluate(interpreted_document)
    again = ruleset.evaluate(compiled_document)
    if again.edits and any(edit.destination is None for edit in again.edits):
        raise RuntimeError(f"the {count}-rule workload is not idempotent: {again.edits}")

    compiled_us, interpreted_us = microseconds_per_document((ruleset.evaluate, compiled_document),
                                                            (interpreter.evaluate, interpreted_document))
    return EvaluationRow(count, len(compiled_decision.rules_fired), compiled_us, interpreted_us, same)


def copy_microseconds() -> float:
    """What one firing `copy to` costs on top: a copy of the sample (Document.copy)."""
    document = sample_document()
    iterations = 20
    times = []
    for _ in range(5):
        start = time.perf_counter_ns()
        for _ in range(iterations):
            document.copy()
        times.append((time.perf_counter_ns() - start) / iterations)
    return statistics.median(times) / 1000


def _verdict(passed: bool) -> str:
    return "PASS" if passed else "MISS"


def profile_compiled(count: int, evaluations: int = 5000, lines: int = 20) -> None:
    """cProfile of the compiled path: `evaluations` evaluations of the sample with `count` rules."""
    ruleset = compile_source(generate_rules(count), DESTINATIONS, filename=RULES_FILENAME)
    document = sample_document()
    ruleset.evaluate(document)  # applies the workload's edits once; later evaluations change nothing
    profiler = cProfile.Profile()
    profiler.enable()
    _timed_batch(ruleset.evaluate, document, evaluations)
    profiler.disable()
    stats = pstats.Stats(profiler)
    for order in ("cumulative", "tottime"):
        print(f"---- {count} rules, {evaluations} evaluations, by {order} time ----")
        stats.sort_stats(order).print_stats(lines)


def _process_counts(text: str) -> tuple[int, ...]:
    try:
        counts = tuple(int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a comma-separated list of whole numbers: {text!r}") from None
    if not counts or any(not 1 <= count <= 64 for count in counts):
        raise argparse.ArgumentTypeError(f"each count of processes must be 1 to 64: {text!r}")
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks",
                                     description="Compile and evaluation times of generated rule files.")
    parser.add_argument("--profile", type=int, metavar="RULES",
                        help="instead of the table, profile the compiled path with this many rules")
    parser.add_argument("--only", choices=("rules", "router", "cost", "groups", "nodes", "queries", "retrieve",
                                                        "console"),
                        help="only the rules table, only the routing tables (DCMTK needed), only the "
                             "table of CPU per instance and concurrent senders (cost), only a study rule against an "
                             "instance rule (groups), "
                             "only the query round trip or only the C-MOVE of a study (Orthanc needed), "
                             "only the console on a generated journal (CONSOLE_BENCH_INSTANCES: its size)")
    parser.add_argument("--runs", type=int, default=3, help="routing: runs of the small set (median)")
    parser.add_argument("--quick", action="store_true", help="routing: one large instance instead of three")
    parser.add_argument("--instances", type=int, default=200, help="routing: instances of 0.5 MB in the small set")
    parser.add_argument("--processes", type=_process_counts, default=(),
                        help="cost: the router's receiving processes to measure with 8 senders, a comma-separated "
                             "list (default: 1 and the cores of this machine)")
    options = parser.parse_args(argv)
    compile_source('rule "warm-up" { then route to PACS_MAIN }', DESTINATIONS)  # loads the grammar once
    if options.profile:
        profile_compiled(options.profile)
        return 0
    status = 0
    if options.only in (None, "rules"):
        status = rules_table()
        from . import deid_profile
        print()
        deid_profile.table()
        from . import pixels
        print()
        pixels.table()
    if options.only in (None, "router", "cost"):
        from . import router
        status = router.run(options.runs, options.quick, options.only == "cost", options.instances,
                            options.processes) or status
    if options.only in (None, "groups"):
        from . import groups
        status = groups.run(options.runs, options.instances) or status
    if options.only in (None, "nodes"):
        from . import nodes
        status = nodes.run(options.runs if options.only == "nodes" else 1, options.instances) or status
    if options.only in (None, "queries"):
        from . import queries
        status = queries.run() or status
    if options.only in (None, "retrieve"):
        from . import retrieve
        status = retrieve.run() or status
    if options.only in (None, "console"):
        from . import console
        status = console.run(runs=options.runs) or status
    return status


def rules_table() -> int:

    compile_rows, rulesets = [], {}
    for count in sorted(set(COMPILE_SIZES) | set(EVALUATION_SIZES)):
        milliseconds, rulesets[count] = compile_milliseconds(generate_rules(count),
                                                             COMPILE_REPETITIONS.get(count, 1))
        if count in COMPILE_SIZES:
            compile_rows.append(CompileRow(count, milliseconds))
    evaluation_rows = [measure_evaluation(count, rulesets[count]) for count in EVALUATION_SIZES]

    print(f"rulesengine benchmark: Python {platform.python_version()}, pydicom {pydicom.__version__}; "
          f"sample {SAMPLE_FILE} from {SAMPLE_CALLING_AET}")
    print()
    print("Compile time (compile_source: parse + checks + code generation), median of 3 to 7 runs")
    print(f"{'rules':>7}  {'total ms':>10}  {'ms per rule':>11}")
    for row in compile_rows:
        print(f"{row.rules:>7}  {row.milliseconds:>10.1f}  {row.milliseconds / row.rules:>11.3f}")
    print()
    print(f"Evaluation time per document (microseconds, median of {EVALUATION_REPETITIONS} batches)")
    print(f"{'rules':>7}  {'fired':>5}  {'compiled us':>11}  {'interpreted us':>14}  {'speed-up':>8}  "
          f"{'same decision':>13}")
    for row in evaluation_rows:
        print(f"{row.rules:>7}  {row.fired:>5}  {row.compiled_us:>11.1f}  {row.interpreted_us:>14.1f}  "
              f"{row.speedup:>7.1f}x  {'yes' if row.same_decision else 'NO':>13}")
    print()
    print(f"Not in the figures above: each destination of a firing `copy to` with edits adds a copy of "
          f"the document (Document.copy): {copy_microseconds():.0f} us for the sample.")
    print()
    target = next(row for row in evaluation_rows if row.rules == TARGET_RULES)
    print(f"Targets at {TARGET_RULES} rules: compiled >= {TARGET_SPEEDUP:.0f}x faster than interpreted: "
          f"{target.speedup:.1f}x {_verdict(target.speedup >= TARGET_SPEEDUP)}; "
          f"compiled < {TARGET_MICROSECONDS:.0f} us per document: {target.compiled_us:.1f} us "
          f"{_verdict(target.compiled_us < TARGET_MICROSECONDS)}")
    if not all(row.same_decision for row in evaluation_rows):
        print("The compiled rule set and the reference interpreter disagree: the figures are not comparable.")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
