"""Sending one notification through its notifier: a webhook's HTTP POST (httpx) or a mail
through SMTP (smtplib), its templates rendered in the sandbox (config/notification_templates.py).

`deliver` returns what the other side answered, or raises NotifyFailed: `permanent` when
trying again cannot help (a template that does not render, a request the server refuses as
bad), else the attempt is retried after the notifier's backoff.
"""

from __future__ import annotations

import smtplib
import ssl
import time
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from typing import Any, Mapping

import httpx

from ..config import EmailNotifier, Notifier, SecretHeader, WebhookNotifier
from ..config.notification_context import with_paths
from ..config.notification_templates import TemplateProblem, render

# Answers that say the request itself is wrong: sending it again gets the same answer.
# 408 (timeout), 425 (too early) and 429 (too many requests) are worth another try.
_RETRIED_CLIENT_ERRORS = {408, 425, 429}
MAX_SUBJECT_CHARS = 250
MAX_ANSWER_BYTES = 4096  # of a failed answer's body, for its reason


class NotifyFailed(Exception):
    def __init__(self, message: str, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


def template_values(context: Mapping[str, Any], patient_data: bool) -> dict[str, Any]:
    """What a template reads: the notification's values, by their bare names and by the
    language's paths (`DataSet.Modality`, `Association.CallingAET`), and all of them as one
    mapping; patient data only for a notifier that opted in."""
    return with_paths(dict(context), patient_data)


def _rendered(source: str, kind: str, context: Mapping[str, Any], what: str, patient_data: bool) -> str:
    try:
        return render(source, kind, template_values(context, patient_data))
    except TemplateProblem as exc:
        raise NotifyFailed(f"{what}: {exc}", permanent=True) from None


def deliver(notifier: Notifier, context: Mapping[str, Any]) -> str:
    if isinstance(notifier, WebhookNotifier):
        return _post(notifier, context)
    return _mail(notifier, context)


def _tls_context(ca_certificates: str | None) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=ca_certificates)


def _post(notifier: WebhookNotifier, context: Mapping[str, Any]) -> str:
    body = _rendered(notifier.body, "json", context, "body", notifier.patient_data)
    headers = {"Content-Type": "application/json", "User-Agent": "rulesengine"}
    for name, value in notifier.headers.items():
        try:
            headers[name] = value.read() if isinstance(value, SecretHeader) else value
        except ValueError as exc:  # a secret gone since the configuration was read: may come back
            raise NotifyFailed(f"header {name}: {exc}") from None
    verify: Any = _tls_context(notifier.ca_certificates) if notifier.ca_certificates else True
    try:
        with httpx.Client(timeout=notifier.timeout, verify=verify, follow_redirects=False, trust_env=False) as client:
            with client.stream("POST", notifier.url, content=body.encode("utf-8"), headers=headers) as answer:
                text = _start_of_body(answer, time.monotonic() + notifier.timeout)
    except httpx.TimeoutException as exc:
        raise NotifyFailed(f"no answer within {notifier.timeout:g} s ({type(exc).__name__})") from None
    except (httpx.HTTPError, ssl.SSLError, OSError) as exc:
        raise NotifyFailed(f"cannot post to {notifier.url}: {exc}") from None
    if 200 <= answer.status_code < 300:
        return f"HTTP {answer.status_code}"
    message = f"HTTP {answer.status_code} {answer.reason_phrase}" + (f": {text}" if text else "")
    if 300 <= answer.status_code < 400:  # never followed (a notification goes where it is configured to)
        location = answer.headers.get("location", "")[:200]
        raise NotifyFailed(f"{message}: redirected to {location or 'nowhere'}, not followed; set the notifier's "
                           "url to the new address", permanent=True)
    permanent = 400 <= answer.status_code < 500 and answer.status_code not in _RETRIED_CLIENT_ERRORS
    raise NotifyFailed(message, permanent=permanent)


def _start_of_body(answer: httpx.Response, deadline: float) -> str:
    """The first characters of an answer's body, for the reason of a failure: read up to
    MAX_ANSWER_BYTES and until `deadline`, never the whole of a huge or endless body."""
    if 200 <= answer.status_code < 300:
        return ""  # a success is read no further
    read = b""
    for chunk in answer.iter_bytes():
        read += chunk
        if len(read) >= MAX_ANSWER_BYTES or time.monotonic() > deadline:
            break
    return read[:MAX_ANSWER_BYTES].decode("utf-8", "replace")[:200].strip()


def _mail(notifier: EmailNotifier, context: Mapping[str, Any]) -> str:
    subject = " ".join(_rendered(notifier.subject, "text", context, "subject", notifier.patient_data).split())[:MAX_SUBJECT_CHARS]
    body = _rendered(notifier.body, "text", context, "body", notifier.patient_data)
    message = EmailMessage()
    message["From"] = notifier.sender
    message["To"] = ", ".join(notifier.to)
    message["Subject"] = subject
    message["Date"] = formatdate(localtime=False, usegmt=True)
    message["Message-ID"] = make_msgid(domain=notifier.sender.rpartition("@")[2] or None)
    message.set_content(body)
    try:
        password = notifier.password()
    except ValueError as exc:
        raise NotifyFailed(f"the SMTP password: {exc}") from None
    try:
        if notifier.tls == "implicit":
            smtp: smtplib.SMTP = smtplib.SMTP_SSL(notifier.host, notifier.smtp_port(), timeout=notifier.timeout,
                                                  context=_tls_context(notifier.ca_certificates))
        else:
            smtp = smtplib.SMTP(notifier.host, notifier.smtp_port(), timeout=notifier.timeout)
        with smtp:
            if notifier.tls == "starttls":
                smtp.starttls(context=_tls_context(notifier.ca_certificates))  # refused: an error, never plain text
            if notifier.username:
                smtp.login(notifier.username, password or "")
            refused = smtp.send_message(message)
    except smtplib.SMTPNotSupportedError as exc:
        raise NotifyFailed(f"the SMTP server {notifier.host} does not offer STARTTLS ({exc})") from None
    except smtplib.SMTPRecipientsRefused as exc:
        raise NotifyFailed(f"every recipient refused: {_refusals(exc.recipients)}") from None
    except smtplib.SMTPResponseException as exc:
        text = exc.smtp_error.decode("utf-8", "replace") if isinstance(exc.smtp_error, bytes) else str(exc.smtp_error)
        raise NotifyFailed(f"SMTP {exc.smtp_code}: {text}") from None
    except (smtplib.SMTPException, ssl.SSLError, OSError) as exc:
        raise NotifyFailed(f"cannot send through {notifier.host}:{notifier.smtp_port()}: {exc}") from None
    if refused:
        return f"sent; refused by {_refusals(refused)}"
    return f"sent to {len(notifier.to)} recipient(s)"


def _refusals(recipients: Mapping[str, tuple]) -> str:
    return ", ".join(f"{address} ({code})" for address, (code, _text) in recipients.items())
