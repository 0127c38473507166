"""The Rules page: the rule files the router runs, highlighted, each line with an anchor
(`/rules#FILE:LINE`), how the last reload went, whether the files on disk still hold that
version; and a dry-run of an uploaded DICOM file under those rules (`dicom-rules dry-run
--explain`): nothing sent, journaled or spooled."""

from __future__ import annotations

from types import SimpleNamespace

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.responses import JSONResponse

from ...document import DocumentReadError
from ...dryrun import Scratch, dry_run_file, json_report, text_report
from ...explain import explain_lines
from ...intake import reason_of, short_error
from ...lang.ruleset import STORE
from ..actions import ActionError
from ..rules_in_use import RulesOfTheRouter, anchor, file_name
from ..uploads import saved, shown_name

_FILE = ("file", "file", False, "the DICOM file, as a multipart/form-data upload")
# When the console cannot read the router's hash key, what the rules hash differs from the router's.
HASH_NOTE = ("values made with the hash key (hash(), new UIDs) are made here with the development key, "
             "not the router's (the console cannot read it: {why}): the router's differ")


def dry_run_report(ruleset, path: str, name: str, arrival: float, config) -> dict:
    """What the router would do with the file at `path` (shown as `name`): the dry-run's JSON
    report with its explain, the text `dicom-rules dry-run --explain` prints, and each rule
    fired and edit with the anchor of its line. Raises ActionError for a file the router refuses."""
    args = SimpleNamespace(calling_aet=None, called_aet=None, source=None, arrival=arrival, message=STORE,
                           explain=True, out=None)
    scratch = Scratch()  # the copies the destinations would receive are written here, then removed
    try:
        decision = dry_run_file(ruleset, path, "upload.dcm", args, scratch)
    except DocumentReadError as exc:
        raise ActionError(f"{name}: the router would not take this file: {reason_of(exc, path)}") from None
    except Exception as exc:  # noqa: BLE001 - a bug: said as such, never a traceback
        raise ActionError(f"{name}: internal error: {type(exc).__name__}: {short_error(exc)} (a bug in "
                          f"dicom-rules: please report it with this file)", status=500) from None
    finally:
        scratch.close()
    report = json_report(name, decision, ruleset, explain=True)
    # Compiled here, the rules name their files from this process's working directory.
    for fired in report["rules_fired"]:
        fired["anchor"] = anchor(file_name(fired["file"], config), fired["line"]) if fired.get("file") else None
    for edit in report["edits"]:
        edit["anchor"] = anchor(file_name(edit["file"], config), edit["line"]) \
            if edit.get("file") and edit.get("line") else None
    report["explain_lines"] = explain_lines(ruleset, decision)
    report["text"] = text_report(name, decision, ruleset, explain=True)
    return report


def register(console) -> None:
    router_rules = RulesOfTheRouter(console.config, console.journal, console.clock)

    @console.both("/rules", "GET", "viewer")
    async def show_rules(request, user, params, api):
        """The rule files of the version the router runs (from the journal), the last reload's
        result and findings, and whether the files on disk differ from that version."""
        rules = await run_in_threadpool(router_rules.in_use)
        if api:
            return JSONResponse(rules.to_json())
        return console.page(request, "rules.html", user, rules=rules, report=None)

    @console.both("/rules/dry-run", "POST", "operator", parameters=(_FILE,), upload=True)
    async def dry_run(request, user, params, api):
        """What the rules in use would do with an uploaded DICOM file (`dicom-rules dry-run
        --explain`): outcome, rules fired, edits, explain. Nothing is sent, journaled or spooled.
        Parameter: file (multipart/form-data)."""
        upload = params.one("file")
        if upload is None:
            raise ActionError("file is needed: upload a DICOM file as the multipart/form-data field file")
        if not isinstance(upload, UploadFile):
            raise ActionError("file must be an uploaded file (a multipart/form-data part with a file name), "
                              "not a text field")
        name = shown_name(upload)

        def work():
            ruleset, origin = router_rules.ruleset()
            with saved(upload) as path:
                return dry_run_report(ruleset, path, name, console.clock(), console.config), origin
        try:
            report, origin = await run_in_threadpool(work)
        except ActionError as exc:
            await run_in_threadpool(console.audit, user.name, "rules dry-run", name, f"refused: {exc}")
            raise
        finally:
            await upload.close()
        # The report shows the file's patient data: who looked is kept in the audit log.
        await run_in_threadpool(console.audit, user.name, "rules dry-run", name, f"ok: {report['outcome']}")
        missing = router_rules.hash_key_missing
        note = HASH_NOTE.format(why=missing) if missing else None
        if api:
            return JSONResponse({"rules": origin, "note": note, "report": report})
        rules = await run_in_threadpool(router_rules.in_use)
        return console.page(request, "rules.html", user, rules=rules, report=report, report_rules=origin,
                            note=note)
