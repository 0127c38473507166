"""The code rules compile to: readable, placed in the rule file, and named in tracebacks.
Also the one way the syntax tree is walked (Node.children, NodeVisitor) and the document
interface compiled rules call (lang.document_api)."""

from __future__ import annotations

import gc
import re
import traceback
from pathlib import Path

import pytest

import rulesengine
from rulesengine import Document
from rulesengine.lang import nodes as n
from rulesengine.lang.document_api import RuleDocument
from rulesengine.lang.syntax import parse
from rulesengine.lang.visitor import NodeVisitor, walk, walk_actions

REPOSITORY = Path(__file__).resolve().parent.parent
SHIPPED_RULES = sorted(path for path in (REPOSITORY / "rules").rglob("*.rules") if not path.stem.endswith("_test"))
# Names of the lookup-table kind the generated code once used: _op7, _k12, _f_lower, _t_evaluate.
OPAQUE_NAME = re.compile(r"\b(_op\d+|_k\d+|_f_\w+|_t_\w+|_deep\d+|_block\d+|_copy\d+|_iter|_NO)\b")
POSITION = re.compile(r"  # \S+(:\d+:\d+)?$")


# ---- the generated code -----------------------------------------------------------------

@pytest.mark.parametrize("path", SHIPPED_RULES, ids=lambda path: path.name)
@pytest.mark.parametrize("traced", [False, True], ids=["fast", "traced"])
def test_the_code_of_the_shipped_rules_prints_with_readable_names(path, traced):
    ruleset = rulesengine.compile_file(path)
    code = ruleset.generated_code(traced=traced)
    assert "def evaluate(doc, ev):" in code
    assert not OPAQUE_NAME.search(code), OPAQUE_NAME.search(code).group(0)
    compile(code, "<printed>", "exec")  # the printed code, constants header included, is Python


def test_main_rules_read_without_a_lookup_table():
    ruleset = rulesengine.compile_file(REPOSITORY / "rules" / "main.rules")
    code = ruleset.generated_code(constants=False)
    assert "not_in(" in code  # `DataSet.Modality not in [...]`
    assert "cache = doc.cache" in code
    assert "one_of_CR_CT_DX_MR_SR_US" in code
    header = ruleset.generated_code()
    assert "#   path_DataSet_Modality = DataSet.Modality" in header
    assert header.endswith(code)


def test_every_generated_line_names_its_rule_file_position():
    ruleset = rulesengine.compile_source(
        'rule "ct" {\n  when DataSet.Modality == "CT" and DataSet.StudyDate >= "20240101"\n'
        '  then {\n    set DataSet.InstitutionName = lower("X")\n    route to PACS\n  }\n}\n',
        filename="main.rules")
    for traced in (False, True):
        lines = [line for line in ruleset.generated_code(traced, constants=False).splitlines() if line]
        assert all(POSITION.search(line) for line in lines), lines
        assert any(line.endswith("# main.rules:2:8") for line in lines)
        assert any(line.endswith("# main.rules:4:5") for line in lines)
    fast = ruleset.generated_code(constants=False)
    assert "date_at_least(" in fast and "fn_lower(" in fast and "text_CT" in fast
    traced = ruleset.generated_code(traced=True, constants=False)
    assert "ev.check(" in traced and "ev.branch(" in traced and "ev.check(" not in fast


def test_a_let_named_like_an_operator_leaves_the_operator_alone():
    # let values are locals named v_<name>: they never shadow what generated code calls
    ruleset = rulesengine.compile_source('rule "r" {\n  then {\n    let not_in = "CT"\n'
                                         '    if DataSet.Modality not in [not_in] { route to A }\n  }\n}\n')
    document = Document()
    document.set("DataSet.Modality", "MR")
    assert list(ruleset.evaluate(document).destinations) == ["A"]


# ---- a failure at run time names the rule file and line --------------------------------------

FAILING = '''\
rule "route first" {
  then route to A
}

rule "dates" {
  when exists DataSet.PatientID
  then {
    log "about to fail"
    set DataSet.StudyDate = DataSet.PatientID
  }
}
'''


def _failing_document() -> Document:
    document = Document()
    document.set("DataSet.PatientID", "not-a-date")
    return document


@pytest.mark.parametrize("trace", [False, True])
def test_a_run_time_error_traceback_names_the_rule_file_line(tmp_path, trace):
    rules = tmp_path / "main.rules"
    rules.write_text(FAILING)
    ruleset = rulesengine.compile_file(rules)
    decision = ruleset.evaluate(_failing_document(), trace=trace)
    assert decision.outcome == "quarantine"
    assert decision.error.startswith(f"{rules}:9: rule 'dates': DataSet.StudyDate:")  # as before
    text = "".join(traceback.format_exception(decision.exception))
    assert f'File "{rules}", line 9, in rule \'dates\'' in text
    assert "    set DataSet.StudyDate = DataSet.PatientID\n" in text  # the rule-file line itself
    assert "not a valid DA value" in text


def test_a_traceback_through_a_block_names_the_block_and_its_file(tmp_path):
    (tmp_path / "lib.rules").write_text('block stamp {\n  set DataSet.StudyDate = DataSet.PatientID\n}\n')
    (tmp_path / "main.rules").write_text('import "lib.rules" as lib\n\nrule "r" {\n  then {\n'
                                         '    route to A\n    apply lib.stamp\n  }\n}\n')
    ruleset = rulesengine.compile_file(tmp_path / "main.rules")
    decision = ruleset.evaluate(_failing_document())
    text = "".join(traceback.format_exception(decision.exception))
    assert "main.rules\", line 6, in rule 'r'" in text
    assert "lib.rules\", line 2, in block stamp" in text


def test_rules_compiled_from_text_show_that_text_in_tracebacks():
    ruleset = rulesengine.compile_source(FAILING, filename="given.rules")
    text = "".join(traceback.format_exception(ruleset.evaluate(_failing_document()).exception))
    assert 'File "given.rules", line 9, in rule \'dates\'' in text
    assert "set DataSet.StudyDate = DataSet.PatientID" in text


def test_the_generated_source_is_registered_for_tracebacks():
    import linecache

    ruleset = rulesengine.compile_source(FAILING, filename="given.rules")
    filename = ruleset._code[False].filename
    assert "given.rules" in filename
    assert linecache.getline(filename, 1).startswith("def evaluate(doc, ev):")
    del ruleset
    gc.collect()
    assert filename not in linecache.cache  # forgotten with its rule set


# ---- the syntax tree: children and the visitor ------------------------------------------------

SOURCE = '''\
rule "r" {
  when DataSet.Modality == "CT" or not exists DataSet.PatientID
  then {
    if any s in DataSet.ScheduledProcedureStepSequence: s.Modality == "CT" {
      for each item in DataSet.ScheduledProcedureStepSequence {
        set item.Modality = "CT"
      }
    } else {
      copy to B {
        delete DataSet.PatientName
      }
    }
    route to A
  }
}
'''


def test_children_are_the_nodes_in_the_fields_in_order():
    rule = parse(SOURCE, "x.rules").rules[0]
    kinds = [type(child).__name__ for child in rule.children()]
    assert kinds == ["Or", "IfAction", "RouteAction"]
    binary = rule.when.operands[0]
    assert [type(c).__name__ for c in binary.children()] == ["PathRef", "StringLit"]
    assert list(n.StringLit(binary.span, "x").children()) == []


def test_walk_reaches_every_node_and_walk_actions_every_action():
    rule_file = parse(SOURCE, "x.rules")
    names = [type(node).__name__ for node in walk(rule_file)]
    assert names[:3] == ["RuleFile", "Rule", "Or"]
    assert {"Quantifier", "ForEachAction", "CopyAction", "DeleteAction", "Element"} <= set(names)
    actions = [type(a).__name__ for a in walk_actions(rule_file.rules[0].actions)]
    assert actions == ["IfAction", "ForEachAction", "SetAction", "CopyAction", "DeleteAction", "RouteAction"]


def test_a_visitor_dispatches_on_the_class_name_and_walks_the_rest():
    class Paths(NodeVisitor):
        def __init__(self):
            self.seen = []

        def visit_Path(self, path, prefix):
            self.seen.append(prefix + path.text())

    visitor = Paths()
    visitor.visit(parse(SOURCE, "x.rules"), "> ")
    assert visitor.seen[:2] == ["> DataSet.Modality", "> DataSet.PatientID"]
    assert "> item.Modality" in visitor.seen


# ---- facts found by the checks ----------------------------------------------------------------

def test_can_reject_is_found_by_the_checks(tmp_path):
    nested = rulesengine.compile_source('rule "r" {\n  then {\n    for each s in DataSet.ScheduledProcedureStepSequence {\n'
                                        '      if exists s.Modality { reject "no" }\n    }\n    route to A\n  }\n}\n')
    assert nested.analysis.can_reject and nested.can_reject
    routing = rulesengine.compile_source('rule "r" {\n  then route to A\n}\n')
    assert not routing.can_reject
    assert rulesengine.compile_source('rule "r" {\n  then route to A\n}\n', no_destination="reject").can_reject


# ---- the document interface -------------------------------------------------------------------

def test_document_is_what_compiled_rules_call():
    from rulesengine.document import compile_path

    document = Document()
    assert isinstance(document, RuleDocument)
    document.set("DataSet.Modality", "CT")
    assert document.read_path(compile_path("DataSet.Modality")) == "CT"
    assert document.cache == {"DataSet.Modality": "CT"}  # what generated code reads through
    document.set("DataSet.Modality", "MR")
    assert document.cache == {}  # emptied by an edit
