"""What a listener accepts in association negotiation: which presentation contexts, in which
transfer syntax, and why it refuses the others.

pynetdicom negotiates each proposed context against the acceptor's contexts, one per
abstract syntax, taking the first of the acceptor's transfer syntaxes that the context
proposes, and it knows no wildcard abstract syntax. So the listener's contexts are made
for each association when its request arrives (EVT_REQUESTED, before negotiation): every
abstract syntax the sender proposes that the listener takes, with the transfer syntaxes
in the listener's order of preference:

- by default, each proposed context is accepted in its own first transfer syntax that the
  router takes (how the sender encoded the instances it sends on it), except that Implicit
  VR Little Endian is taken only when the context offers nothing else: it loses the VR of
  private elements; compressed syntaxes are taken as proposed, never decompressed by the
  sender to fit;
- with `transfer_syntaxes` configured, that list's order, and nothing else;
- with an association file, the file's contexts and order, and nothing else.

One list per abstract syntax cannot say "each context in its own first choice": a sender
that proposes [Explicit, Implicit] and then [JPEG, Explicit, Implicit] for one SOP class
(as DCMTK's storescu and dcmsend do for a mix of files) would get both accepted as
Explicit VR and have to decompress. So the contexts that follow the proposal are
`ProposalDrivenContext`s, and `install_per_context_negotiation` wraps pynetdicom's acceptor
negotiation so that each proposed context meets such a context's choice for that proposal
alone; everything else (roles, results, other acceptors) is pynetdicom's own negotiation.

Storage SOP classes pynetdicom does not know (private ones such as Siemens CSA Non-Image,
or newer than pynetdicom) are taken unless `accept_unknown_sop_classes` is false; for
those, a SOP Class Common Extended Negotiation item naming the Storage Service Class is
accepted (EVT_SOP_COMMON), which is how pynetdicom learns which service serves a SOP class
it does not know, for this association only.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Callable, Sequence

from pydicom.uid import UID, ImplicitVRLittleEndian
from pynetdicom import ALL_TRANSFER_SYNTAXES, acse
from pynetdicom.pdu_primitives import SCP_SCU_RoleSelectionNegotiation, SOPClassCommonExtendedNegotiation
from pynetdicom.presentation import PresentationContext
from pynetdicom.service_class import ServiceClass, StorageServiceClass
from pynetdicom.sop_class import uid_to_service_class

from ..config import Listener

log = logging.getLogger("rulesengine.listener")

IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
VERIFICATION = "1.2.840.10008.1.1"
STORAGE_SERVICE_CLASS = StorageServiceClass.uid
FIND_SOP_CLASSES = frozenset({
    "1.2.840.10008.5.1.4.1.2.1.1",  # Patient Root Query/Retrieve Information Model - FIND
    "1.2.840.10008.5.1.4.1.2.2.1",  # Study Root Query/Retrieve Information Model - FIND
    "1.2.840.10008.5.1.4.31",  # Modality Worklist Information Model - FIND
})
MOVE_SOP_CLASSES = frozenset({
    "1.2.840.10008.5.1.4.1.2.1.2",  # Patient Root Query/Retrieve Information Model - MOVE
    "1.2.840.10008.5.1.4.1.2.2.2",  # Study Root Query/Retrieve Information Model - MOVE
})
GET_SOP_CLASSES = frozenset({
    "1.2.840.10008.5.1.4.1.2.1.3",  # Patient Root Query/Retrieve Information Model - GET
    "1.2.840.10008.5.1.4.1.2.2.3",  # Study Root Query/Retrieve Information Model - GET
})
REQUEST_SOP_CLASSES = FIND_SOP_CLASSES | MOVE_SOP_CLASSES | GET_SOP_CLASSES
# A listener's `services`, by the kinds of abstract syntax each takes.
MPPS_SOP_CLASS = "1.2.840.10008.3.1.2.3.3"  # Modality Performed Procedure Step (N-CREATE, N-SET)
SERVICE_OF_KIND = {"verification": "echo", "storage": "store", "unknown": "store", "find": "find", "move": "move",
                   "get": "get", "mpps": "mpps"}
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"  # a DICOMDIR: pynetdicom knows no service for it
LISTED_REFUSALS = 10  # contexts named in one log line; the rest are counted


class AssociationFileError(Exception):
    pass


def read_association_file(path: str) -> dict[str, list[str]]:
    """SOP class -> transfer syntaxes, from lines `SOPClassUID\\TransferSyntaxUID`; a bare
    SOP class means Implicit VR Little Endian. Blank lines and # comments are skipped."""
    contexts: dict[str, list[str]] = {}
    try:
        with open(path, encoding="utf-8-sig") as fh:
            lines = fh.read().splitlines()
    except OSError as exc:
        raise AssociationFileError(f"{path}: cannot read: {exc.strerror or exc}") from None
    for number, raw in enumerate(lines, 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        sop_class, _, syntax = (part.strip() for part in line.partition("\\"))
        for uid in (sop_class, syntax):
            if uid and not all(part.isdigit() for part in uid.split(".")):
                raise AssociationFileError(f"{path}:{number}: {uid!r} is not a UID")
        syntaxes = contexts.setdefault(sop_class, [])
        syntax = syntax or IMPLICIT_VR_LITTLE_ENDIAN
        if syntax not in syntaxes:
            syntaxes.append(syntax)
    if not contexts:
        raise AssociationFileError(f"{path}: no presentation contexts")
    return contexts


class ProposalDrivenContext(PresentationContext):
    """An acceptor context whose transfer syntaxes are chosen for each proposed context of its
    abstract syntax, by `choose(proposed transfer syntaxes) -> accepted ones, best first`.
    Its own `transfer_syntax` is that choice for all the proposals together: what pynetdicom
    uses where the per-context negotiation is not installed."""

    def __init__(self, abstract_syntax: str, choose: Callable[[list[str]], list[str]], proposed: list[str]):
        super().__init__()
        self.abstract_syntax = abstract_syntax
        self.choose = choose
        self.transfer_syntax = choose(proposed)

    def for_proposal(self, proposed: Sequence[str]) -> PresentationContext:
        """A plain acceptor context for one proposed context: its transfer syntaxes chosen
        from that context's proposal, the same roles."""
        context = PresentationContext()
        context.abstract_syntax = self.abstract_syntax
        context.transfer_syntax = self.choose([str(syntax) for syntax in proposed])
        context.scu_role, context.scp_role = self.scu_role, self.scp_role
        return context


def _negotiate_per_proposed_context(rq_contexts, ac_contexts, roles=None):
    """pynetdicom's `negotiate_as_acceptor`, where each proposed context whose abstract
    syntax has a ProposalDrivenContext is negotiated against that context's choice for its
    own proposal. Same results, same SCP/SCU role replies (one per SOP class), same order."""
    pynetdicom_negotiate = _negotiate_per_proposed_context.pynetdicom
    if not any(isinstance(context, ProposalDrivenContext) for context in ac_contexts or ()):
        return pynetdicom_negotiate(rq_contexts, ac_contexts, roles)
    by_abstract_syntax = {context.abstract_syntax: context for context in ac_contexts}
    results, replies = [], {}
    for proposal in rq_contexts:
        own = by_abstract_syntax.get(proposal.abstract_syntax)
        acceptor = [own.for_proposal(proposal.transfer_syntax)] if isinstance(own, ProposalDrivenContext) \
            else ac_contexts
        result, role_items = pynetdicom_negotiate([proposal], acceptor, roles)
        results.extend(result)
        replies.update((item.sop_class_uid, item) for item in role_items)
    results.sort(key=lambda context: context.context_id)
    return results, sorted(replies.values(), key=lambda item: item.sop_class_uid)


def install_per_context_negotiation() -> None:
    """Make pynetdicom's acceptor negotiate ProposalDrivenContexts per proposed context
    (acse.py calls `negotiate_as_acceptor` by this module-level name). Idempotent."""
    current = getattr(acse, "negotiate_as_acceptor", None)
    if current is None:
        raise RuntimeError("this pynetdicom has no pynetdicom.acse.negotiate_as_acceptor to negotiate "
                           "presentation contexts one by one")
    if current is not _negotiate_per_proposed_context:
        _negotiate_per_proposed_context.pynetdicom = current
        acse.negotiate_as_acceptor = _negotiate_per_proposed_context


def _any_syntax(abstract_syntax: str) -> bool:
    """C-ECHO, C-FIND, C-MOVE, C-GET and MPPS in whatever the sender proposes: the association
    file and `transfer_syntaxes` choose how instances arrive, not requests."""
    return abstract_syntax in (VERIFICATION, MPPS_SOP_CLASS) or abstract_syntax in REQUEST_SOP_CLASSES


def proposed_scp_roles(assoc) -> set[str]:
    """The SOP classes for which the requestor proposes to be the SCP (a C-GET requester
    receiving the instances it asks for, on the same association)."""
    roles = set()
    for item in assoc.requestor.primitive.user_information or ():
        if isinstance(item, SCP_SCU_RoleSelectionNegotiation) and item.scp_role:
            roles.add(str(item.sop_class_uid))
    return roles


def _described(uid: str) -> str:
    name = UID(uid).name
    return uid if name == uid else f"{uid} {name}"


class Negotiation:
    """A listener's choice of presentation contexts; its methods are pynetdicom event handlers."""

    def __init__(self, config: Listener):
        self.config = config
        self.file = read_association_file(config.association_file) if config.association_file else None
        self.preference = tuple(config.transfer_syntaxes) if config.transfer_syntaxes else None

    # ---- the decision ----

    def kind(self, abstract_syntax: str) -> str:
        """verification, storage (a storage SOP class pynetdicom serves), unknown (one it
        does not know: served as storage), find (a C-FIND query model the router answers),
        mpps (Modality Performed Procedure Step, relayed), or other (a service the router does
        not provide)."""
        if abstract_syntax == VERIFICATION:
            return "verification"
        if abstract_syntax in FIND_SOP_CLASSES:
            return "find"
        if abstract_syntax in MOVE_SOP_CLASSES:
            return "move"
        if abstract_syntax in GET_SOP_CLASSES:
            return "get"
        if abstract_syntax == MPPS_SOP_CLASS:
            return "mpps"
        service = uid_to_service_class(abstract_syntax)
        if issubclass(service, StorageServiceClass):
            return "storage"
        if service is not ServiceClass or abstract_syntax == MEDIA_STORAGE_DIRECTORY:
            return "other"
        uid = UID(abstract_syntax)
        if not uid.is_valid or "." not in uid or uid.split(".")[0] not in ("0", "1", "2"):
            return "invalid"  # a UID is an OID: its root arc is 0, 1 or 2 (a garbled '31' is not one)
        # pydicom knows newer standard SOP classes than pynetdicom does
        if uid.type and not (uid.type == "SOP Class" and uid.name.endswith(" Storage")):
            return "other"
        return "unknown"

    def refusal(self, abstract_syntax: str, proposed: list[str], scp_roles: set[str] = frozenset()) -> str | None:
        """Why a context proposing `proposed` for `abstract_syntax` is refused; None if it is not.
        `scp_roles`: the SOP classes the requestor proposes to be the SCP of (C-GET)."""
        kind = self.kind(abstract_syntax)
        if kind == "invalid":
            return "the abstract syntax is not a valid UID"
        if kind == "other":
            return "a service the router does not provide (it takes C-ECHO, C-STORE, C-FIND, C-MOVE, C-GET and MPPS)"
        offered = self.config.offered_services
        # A C-GET requester's storage contexts carry the instances back to it: `get` takes them.
        returns_instances = kind in ("storage", "unknown") and "get" in offered and abstract_syntax in scp_roles
        if SERVICE_OF_KIND[kind] not in offered and not returns_instances:
            return f"a service this listener does not offer (services: {', '.join(self.config.offered_services)})"
        if kind in ("storage", "unknown"):
            if self.file is not None and abstract_syntax not in self.file:
                return "not in the listener's association file"
            if self.file is None and kind == "unknown" and not self.config.accept_unknown_sop_classes:
                return "an unknown SOP class, and accept_unknown_sop_classes is false"
        if not any(syntax in proposed for syntax in self.ranked(abstract_syntax, proposed)):
            return "none of its transfer syntaxes is accepted (" + ", ".join(map(_described, proposed)) + ")"
        return None

    def follows_proposal(self, abstract_syntax: str) -> bool:
        """Whether the transfer syntaxes accepted for `abstract_syntax` depend on what each
        context proposes (they do not with an association file or `transfer_syntaxes`)."""
        return _any_syntax(abstract_syntax) or (self.file is None and self.preference is None)

    def ranked(self, abstract_syntax: str, proposed: list[str]) -> list[str]:
        """The transfer syntaxes accepted for `abstract_syntax`, best first."""
        verification = _any_syntax(abstract_syntax)
        if self.file is not None and not verification:
            return list(self.file.get(abstract_syntax, ()))
        if self.preference is not None and not verification:
            return list(self.preference)
        known = [syntax for syntax in dict.fromkeys(proposed) if syntax in ALL_TRANSFER_SYNTAXES]
        return [syntax for syntax in known if syntax != ImplicitVRLittleEndian] + \
            [syntax for syntax in known if syntax == ImplicitVRLittleEndian]

    # ---- pynetdicom event handlers ----

    def on_requested(self, event) -> None:
        """EVT_REQUESTED: this association's acceptor contexts, from what the sender proposes."""
        assoc = event.assoc
        proposed: dict[str, list[str]] = {}  # abstract syntax -> transfer syntaxes, in the sender's order
        for context in assoc.requestor.primitive.presentation_context_definition_list:
            syntaxes = proposed.setdefault(str(context.abstract_syntax), [])
            syntaxes.extend(str(s) for s in context.transfer_syntax if str(s) not in syntaxes)
        contexts = []
        scp_roles = proposed_scp_roles(assoc)
        for abstract_syntax, syntaxes in proposed.items():
            if self.refusal(abstract_syntax, syntaxes, scp_roles) is not None:
                continue
            if self.follows_proposal(abstract_syntax):
                context = ProposalDrivenContext(abstract_syntax, partial(self.ranked, abstract_syntax), syntaxes)
            else:
                context = PresentationContext()
                context.abstract_syntax = abstract_syntax
                context.transfer_syntax = self.ranked(abstract_syntax, syntaxes)
            if abstract_syntax in scp_roles and "get" in self.config.offered_services:
                context.scu_role = context.scp_role = True  # the roles proposed are accepted
            contexts.append(context)
        assoc.acceptor.supported_contexts = contexts

    def on_sop_common(self, event) -> dict:
        """EVT_SOP_COMMON: serve the accepted SOP classes pynetdicom does not know as storage."""
        items = {}
        for context in event.assoc.acceptor.supported_contexts:
            uid = context.abstract_syntax
            if uid_to_service_class(uid) is ServiceClass:
                item = SOPClassCommonExtendedNegotiation()
                item.sop_class_uid = uid
                item.service_class_uid = STORAGE_SERVICE_CLASS
                items[uid] = item
        return items

    def on_accepted(self, event) -> None:
        """EVT_ACCEPTED: one WARNING line naming each refused context whose SOP class the
        sender can then not send at all, and why; a context refused while another one of
        its SOP class was accepted (a transfer syntax the sender offered besides) at DEBUG."""
        assoc = event.assoc
        refused = assoc.rejected_contexts
        if not refused:
            return
        accepted = {str(cx.abstract_syntax) for cx in assoc.accepted_contexts}
        requested = {cx.context_id: cx for cx in assoc.requestor.primitive.presentation_context_definition_list}
        lost, covered = [], []
        for context in refused:
            abstract_syntax = str(context.abstract_syntax)
            proposal = requested.get(context.context_id)
            syntaxes = [str(s) for s in proposal.transfer_syntax] if proposal else []
            why = self.refusal(abstract_syntax, syntaxes, proposed_scp_roles(assoc)) or "refused"
            text = f"context {context.context_id} ({_described(abstract_syntax)}): {why}"
            (covered if abstract_syntax in accepted else lost).append(text)
        requestor = assoc.requestor
        peer = f"{(requestor.ae_title or '').strip()} ({requestor.address}:{requestor.port})"
        if lost:
            more = f"; and {len(lost) - LISTED_REFUSALS} more" if len(lost) > LISTED_REFUSALS else ""
            log.warning("listener %s: association from %s: refused %d presentation context(s): %s%s",
                        self.config.name, peer, len(lost), "; ".join(lost[:LISTED_REFUSALS]), more)
        if covered:
            log.debug("listener %s: association from %s: refused %d presentation context(s) of SOP classes "
                      "accepted in another context: %s", self.config.name, peer, len(covered), "; ".join(covered))
