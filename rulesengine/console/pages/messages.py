"""The Messages page: the instances the router received, searched by their header facts, how
they arrived and what the rules decided, a page at a time, newest first; the latest
requests (queries, retrievals, MPPS) beside them; and the trace of one instance: how it
arrived, the rules that fired, every edit, every delivery with its attempts.

Patient data is masked for a viewer (masking.py); a viewer may still search by it."""

from __future__ import annotations

import json
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.responses import JSONResponse

from ...runtime.journal import Instance, InstanceTrace, Request
from .. import masking
from ..actions import ActionError
from ..params import LARGEST_ID, MAX_LIMIT, PAGE_LIMIT, moment, optional_whole, states, text, whole
from ..rules_in_use import rule_link

OUTCOMES = ("route", "drop", "quarantine", "reject")
REQUEST_MESSAGES = ("C-FIND", "C-MOVE", "C-GET", "N-CREATE", "N-SET")
REQUESTS_SHOWN = 20  # the requests table shows the latest ones, whatever the instance filters

# The exact-match filters: the parameter, the search_instances argument, what it means.
EXACT_FILTERS = (
    ("patient_id", "patient_id", "the Patient ID, exactly"),
    ("accession_number", "accession_number", "the Accession Number, exactly"),
    ("study_instance_uid", "study_instance_uid", "the Study Instance UID"),
    ("series_instance_uid", "series_instance_uid", "the Series Instance UID"),
    ("sop_instance_uid", "sop_instance_uid", "the SOP Instance UID"),
    ("calling_aet", "calling_aet", "the calling AE title of the sender"),
    ("source", "source_name", "the name of the listener or watched folder it came through"),
)
TIME_HELP = "an ISO 8601 local date or date-time (2026-12-03, 2026-12-03T10:15) or seconds since the epoch"


def _peer(address: str | None, port: int | None) -> str | None:
    return f"{address}:{port}" if address and port else address


def instance_row(instance: Instance, role: str) -> dict:
    """An instance as the list shows it, masked for `role`."""
    arrival, outcome = instance.arrival, instance.outcome
    return masking.instance_facts({
        "id": instance.id, "received_at": instance.received_at, "source_kind": arrival.source_kind,
        "source_name": arrival.source_name, "calling_aet": arrival.calling_aet, "called_aet": arrival.called_aet,
        "patient_id": arrival.patient_id, "patient_name": arrival.patient_name,
        "accession_number": arrival.accession_number, "modality": arrival.modality,
        "study_instance_uid": arrival.study_instance_uid, "series_instance_uid": arrival.series_instance_uid,
        "sop_instance_uid": arrival.sop_instance_uid, "state": str(instance.state), "outcome": outcome.outcome,
        "reason": outcome.reason, "destinations": list(outcome.destinations),
        "ruleset_version": outcome.ruleset_version,
    }, role)


def request_row(request: Request, role: str) -> dict:
    """A request (C-FIND, C-MOVE, C-GET, N-CREATE, N-SET) and how it ended, its keys masked for `role`."""
    arrival, result = request.arrival, request.result
    return {
        "id": request.id, "received_at": request.received_at, "finished_at": request.finished_at,
        "seconds": None if request.seconds is None else round(request.seconds, 3), "message": request.message,
        "source_name": arrival.source_name, "calling_aet": arrival.calling_aet, "called_aet": arrival.called_aet,
        "peer": _peer(arrival.peer_address, arrival.peer_port), "level": request.level,
        "matching_keys": masking.matching_keys(request.matching_keys, role),
        "move_destination": request.move_destination,
        "outcome": str(result.outcome) if result else None, "status": result.status if result else None,
        "matches": result.matches if result else None, "completed": result.completed if result else None,
        "failed": result.failed if result else None, "warning": result.warning if result else None,
        "error": result.error if result else None,
        "answers": [answer.to_json() for answer in result.answers] if result else [],
    }


def trace_view(found: InstanceTrace, role: str) -> dict:
    """The trace of one instance as the API answers it, masked for `role`."""
    instance, arrival = found.instance, found.instance.arrival
    facts = {**instance_row(instance, role), "processed_at": instance.processed_at,
             "peer": _peer(arrival.peer_address, arrival.peer_port), "sop_class_uid": arrival.sop_class_uid,
             "retrieve_requester": arrival.retrieve_requester, "move_destination": arrival.move_destination,
             "retrieve_message": arrival.retrieve_message}
    deliveries = []
    for each in found.deliveries:
        delivery = each.delivery
        deliveries.append({
            "id": delivery.id, "destination": delivery.destination, "state": str(delivery.state),
            "attempts": delivery.attempts, "sop_instance_uid": delivery.sop_instance_uid,
            "transfer_syntax": delivery.transfer_syntax, "next_attempt_at": delivery.next_attempt_at if delivery.state in ("queued", "retrying") else None,
            "last_error": delivery.last_error, "created_at": each.created_at, "updated_at": each.updated_at,
            "delivered_at": each.delivered_at,
            "tries": [{"started_at": attempt.started_at, "finished_at": attempt.finished_at,
                       "seconds": round(attempt.seconds, 3), "ok": attempt.ok, "detail": attempt.detail}
                      for attempt in each.attempts]})
    return {"instance": facts, "trace": masking.trace(found.trace, role), "deliveries": deliveries}


def shown(value) -> str | None:
    """An edit's value as the page shows it: text as it is, anything else (a number, a list of
    values, a sequence's items) as JSON."""
    return value if value is None or isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def register(console) -> None:
    config, journal = console.config, console.journal

    @console.both("/messages", "GET", "viewer", parameters=(
            *((name, "string", False, meaning) for name, _column, meaning in EXACT_FILTERS),
            ("outcome", "string", False, f"what the rules decided: {', '.join(OUTCOMES)}"),
            ("received_from", "string", False, f"received at or after: {TIME_HELP}"),
            ("received_to", "string", False, f"received before: {TIME_HELP}; a date alone takes in that whole day"),
            ("message", "string", True, f"only these requests: {', '.join(REQUEST_MESSAGES)}"),
            ("before", "integer", False, "the next page: the next_before of the page before"),
            ("limit", "integer", False, f"instances per page, 1 to {MAX_LIMIT}; default {PAGE_LIMIT}"),
            ("requests_before", "integer", False, "the next page of requests: the requests_next_before of the "
                                                  "page before")))
    async def search(request, user, params, api):
        """The instances received, newest first, matching every filter given (exact values, as the
        journal keeps them), a page at a time; and the latest requests (C-FIND, C-MOVE, C-GET,
        N-CREATE, N-SET). Patient names, IDs and accession numbers are masked for a viewer.
        Parameters: patient_id, accession_number, study_instance_uid, series_instance_uid,
        sop_instance_uid, calling_aet, source, outcome (route, drop, quarantine, reject),
        received_from, received_to (ISO 8601 local date or date-time, or seconds since the
        epoch), message (repeatable: which requests), before (the next page: the `next_before`
        of the page before), limit (1 to 500), requests_before (the next page of requests).
        calling_aet and the time range choose the requests too."""
        exact = {column: text(params.one(name), name) for name, column, _meaning in EXACT_FILTERS}
        outcome = params.one("outcome") or None
        if outcome is not None:
            states([outcome], OUTCOMES, "outcome")
        received_from = moment(params.one("received_from"), "received_from")
        received_to = moment(params.one("received_to"), "received_to", whole_day=True)
        messages = states(params.all("message"), REQUEST_MESSAGES, "message")
        before_id = optional_whole(params, "before", 1, LARGEST_ID)
        limit = optional_whole(params, "limit", 1, MAX_LIMIT, default=PAGE_LIMIT)
        requests_before = optional_whole(params, "requests_before", 1, LARGEST_ID)

        def read():
            found = journal.search_instances(**exact, outcome=outcome, received_from=received_from,
                                             received_to=received_to, before_id=before_id, limit=limit + 1)
            return found, journal.requests(messages, REQUESTS_SHOWN + 1, calling_aet=exact.get("calling_aet"),
                                           received_from=received_from, received_to=received_to,
                                           before_id=requests_before)
        found, asked = await run_in_threadpool(read)
        more = len(found) > limit
        found = found[:limit]
        next_before = found[-1].id if more and found else None
        more_requests = len(asked) > REQUESTS_SHOWN
        asked = asked[:REQUESTS_SHOWN]
        requests_next_before = asked[-1].id if more_requests and asked else None
        instances = [instance_row(instance, user.role) for instance in found]
        requests = [request_row(each, user.role) for each in asked]
        if api:
            return JSONResponse({"instances": instances, "next_before": next_before, "requests": requests,
                                 "requests_next_before": requests_next_before})
        given = {name: params.one(name) for name in
                 [name for name, *_ in EXACT_FILTERS] + ["outcome", "received_from", "received_to"]}
        given = {name: str(value) for name, value in given.items() if value not in (None, "")}
        kept = {**given, **({"message": list(messages)} if messages else {}), "limit": limit}
        next_query = urlencode({**kept, "before": next_before}, doseq=True) if next_before else None
        requests_next_query = urlencode({**kept, **({"before": before_id} if before_id else {}),
                                         "requests_before": requests_next_before}, doseq=True) \
            if requests_next_before else None
        return console.page(request, "messages.html", user, instances=instances, requests=requests,
                            next_query=next_query, requests_next_query=requests_next_query, given=given, filters=EXACT_FILTERS, outcomes=OUTCOMES,
                            messages=messages, request_messages=REQUEST_MESSAGES, limit=limit,
                            masked=not masking.sees_patient_data(user.role), requests_shown=REQUESTS_SHOWN)

    @console.both("/messages/{instance_id}", "GET", "viewer")
    async def show_trace(request, user, params, api):
        """The trace of one instance: how and when it arrived, the rule set version, every rule
        that fired (file and line), every edit (path, old and new value, the destination whose
        copy it changed), each delivery with every attempt (when, how long, the status or the
        error). Patient data is masked for a viewer."""
        instance_id = whole(request.path_params["instance_id"], "the instance number", 1, LARGEST_ID)
        found = await run_in_threadpool(journal.trace, instance_id)
        if found is None:
            raise ActionError(f"no instance {instance_id} in the journal (never received, or purged since)",
                              status=404)
        view = trace_view(found, user.role)
        if api:
            return JSONResponse(view)
        decided = view["trace"]
        edits: dict[str, list[dict]] = {}
        if decided:
            for change in decided["edits"]:
                edits.setdefault(change.get("destination") or "", []).append(
                    {**change, "old": shown(change.get("old")), "new": shown(change.get("new")),
                     "link": rule_link(change.get("file"), change.get("line"), config)})
            fired = [{**rule, "link": rule_link(rule.get("file"), rule.get("line"), config)}
                     for rule in decided.get("rules_fired") or ()]
        else:
            fired = []
        return console.page(request, "trace.html", user, view=view, decided=decided, fired=fired, edits=edits,
                            masked=not masking.sees_patient_data(user.role))
