"""Who may submit local mail, as which sender, and the maildrop envelope made of a request.

This module owns postdrop's decisions (see the package docstring for the order):
`authorized_submit_users`, the sender a user gets and may use
(`local_login_sender_maps`), the checks of the addresses in a request, and the
`Envelope` written to maildrop/.  It does no I/O of its own besides table
lookups and the password file (`submitter_of`).

Failure modes: `SubmitPolicy(...)` raises MatchListError or TableError for a list
or table that cannot be opened (the daemon treats both as a configuration error).
`SubmitPolicy.envelope` raises `Refusal` carrying Postfix's reply (code, enhanced
status, text) for a request that must not be queued, and TableError or
MatchListError when a table or list file cannot be read now (the caller answers
4xx: try again later).
"""

from __future__ import annotations

import pwd
import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from sdmail.core.address import (
    AddressError,
    parse_header_addresses,
    parse_path,
    quote_address,
    strip_extension,
)
from sdmail.core.mail_stream import SubmitRequest
from sdmail.core.match_list import StringList
from sdmail.core.records import (
    BodyType,
    ClientInfo,
    DsnRet,
    Envelope,
    Notify,
    Recipient,
    RewriteContext,
)
from sdmail.core.tables import Table, open_table
from sdmail.core.user_acl import UNKNOWN_USER, refused_user

WILDCARD_SENDER = "*"
EXTRACT_RECIPIENTS_ATTRIBUTE = "extract_recipients"
UID_ATTRIBUTE = "uid"
SUBMIT_ACL = "authorized_submit_users"
# The one request attribute postdrop honours: `sendmail -G` asks for "remote".
REWRITE_CONTEXT_ATTRIBUTE = "rewrite_context"
_RECIPIENT_HEADERS = frozenset({"to", "cc", "bcc"})
_RESENT_RECIPIENT_HEADERS = frozenset({"resent-to", "resent-cc", "resent-bcc"})
_HEADER_NAME = re.compile(rb"([\x21-\x39\x3b-\x7e]+)[ \t]*:")


@dataclass(frozen=True)
class PostdropSettings:
    """The main.cf parameters postdrop reads (bound with config.bind)."""

    queue_directory: str
    authorized_submit_users: tuple[str, ...]
    local_login_sender_maps: tuple[str, ...]
    empty_address_local_login_sender_maps_lookup_key: str
    recipient_delimiter: str
    owner_request_special: bool
    double_bounce_sender: str
    message_size_limit: int
    ipc_timeout: int


class Refusal(Exception):
    """A submission postdrop will not queue; code, dsn and text are the reply."""

    def __init__(self, code: int, dsn: str, text: str) -> None:
        super().__init__(f"{code} {dsn} {text}")
        self.code, self.dsn, self.text = code, dsn, text


@dataclass(frozen=True)
class Submitter:
    """The user at the other end of the socket, as the kernel and the password file say."""

    uid: int
    login: str | None
    gecos_name: str | None = None

    @property
    def acl_name(self) -> str:
        """The name authorized_submit_users is matched against."""
        return self.login if self.login is not None else UNKNOWN_USER

    @property
    def sender_lookup_key(self) -> str:
        """The key local_login_sender_maps is searched with (Postfix 3.6: uid:N without a name)."""
        return self.login if self.login is not None else f"uid:{self.uid}"

    def describe(self) -> str:
        return f"{self.acl_name}({self.uid})"


def submitter_of(uid: int) -> Submitter:
    """The Submitter for UID from the password file (no entry: no login name)."""
    try:
        entry = pwd.getpwuid(uid)
    except KeyError:
        return Submitter(uid, None)
    return Submitter(uid, entry.pw_name, gecos_full_name(entry.pw_gecos, entry.pw_name))


def gecos_full_name(gecos: str, login: str) -> str | None:
    """The full name in a GECOS field as Postfix's fullname() reads it: up to the first
    comma, `&` standing for the login name with a capital first letter."""
    name = gecos.split(",", 1)[0].replace("&", login[:1].upper() + login[1:]).strip()
    return name or None


def sender_patterns(value: str) -> list[str]:
    """The patterns of a local_login_sender_maps result, split at commas and white space
    outside double quotes (a quoted local part may hold both)."""
    patterns: list[str] = []
    current: list[str] = []
    quoted = escaped = False
    for char in value:
        if escaped:
            escaped = False
        elif char == "\\" and quoted:
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif not quoted and (char == "," or char.isspace()):
            if current:
                patterns.append("".join(current))
                current = []
            continue
        current.append(char)
    if current:
        patterns.append("".join(current))
    return patterns


def valid_internal_address(address: str) -> bool:
    """True when ADDRESS is an internal-form address that quotes and parses back to itself."""
    try:
        return parse_path(f"<{quote_address(address)}>") == address
    except AddressError:
        return False


def header_recipients_present(content: bytes) -> bool:
    """True when the header of CONTENT names at least one recipient in To:, Cc: or Bcc:
    (or their Resent- forms), as `sendmail -t` will extract them."""
    found = False
    for name, value in _header_fields(content):
        if name in _RECIPIENT_HEADERS or name in _RESENT_RECIPIENT_HEADERS:
            try:
                found = bool(parse_header_addresses(value))
            except AddressError:
                continue  # cleanup decides about a malformed header; look further
            if found:
                return True
    return False


def _header_fields(content: bytes) -> list[tuple[str, str]]:
    """(lower-case name, unfolded value) of each header field before the first blank line."""
    fields: list[tuple[str, list[str]]] = []
    for raw in content.split(b"\n"):
        line = raw.rstrip(b"\r")
        if not line:
            break
        if line[:1] in (b" ", b"\t") and fields:
            fields[-1][1].append(line.decode("utf-8", "surrogateescape"))
            continue
        match = _HEADER_NAME.match(line)
        if match is None:
            break  # not a header: the body starts here, as in Postfix's is_header()
        text = line[match.end() :].decode("utf-8", "surrogateescape")
        fields.append((match.group(1).decode("ascii").lower(), [text]))
    return [(name, " ".join(parts)) for name, parts in fields]


TableOpener = Callable[[str], Table]


class SubmitPolicy:
    """postdrop's decisions for one configuration; share it among threads (lookups only)."""

    def __init__(self, settings: PostdropSettings, table_opener: TableOpener = open_table) -> None:
        self.settings = settings
        # Built once here only so that a bad list stops the daemon at start (EX_CONFIG).
        StringList(settings.authorized_submit_users, name=SUBMIT_ACL)
        self._sender_maps = [table_opener(spec) for spec in settings.local_login_sender_maps]

    def close(self) -> None:
        for table in self._sender_maps:
            table.close()

    # -- the decisions ------------------------------------------------------------------
    def check_user(self, submitter: Submitter) -> None:
        """Refusal unless the user is in authorized_submit_users (root too, as in Postfix's
        postdrop: only the queue tools exempt root and mail_owner)."""
        name = refused_user(
            self.settings.authorized_submit_users,
            submitter.uid,
            parameter=SUBMIT_ACL,
            exempt=frozenset(),
        )
        if name is not None:
            raise Refusal(
                550, "5.7.1", f"User {name}({submitter.uid}) is not allowed to submit mail"
            )

    def sender_of(self, submitter: Submitter, requested: str | None) -> str:
        """The envelope sender: REQUESTED (-f), else the login name; Refusal when the user
        may not use it or has no login name."""
        if requested is None:
            if submitter.login is None:
                raise Refusal(550, "5.7.1", f"no login name found for user ID {submitter.uid}")
            sender = submitter.login
        else:
            sender = requested
        if sender and not valid_internal_address(sender):
            raise Refusal(501, "5.1.7", "Bad sender address syntax")
        if not self.sender_allowed(submitter, sender):
            shown = quote_address(sender) if sender else ""
            raise Refusal(
                550,
                "5.7.1",
                f"User {submitter.describe()} is not allowed to use sender address <{shown}>",
            )
        return sender

    def sender_allowed(self, submitter: Submitter, sender: str) -> bool:
        """Whether local_login_sender_maps lets the user use SENDER (internal form)."""
        value = self._find_patterns(submitter.sender_lookup_key)
        if value is None:
            return False
        stripped: str | None = None
        for pattern in sender_patterns(value):
            if pattern.startswith("@"):
                _, at, domain = sender.rpartition("@")
                if at and ("@" + domain).casefold() == pattern.casefold():
                    return True
            elif pattern == WILDCARD_SENDER:
                return True
            elif pattern.casefold() == (
                self.settings.empty_address_local_login_sender_maps_lookup_key.casefold()
            ):
                if sender == "":
                    return True
            else:
                if stripped is None:
                    stripped = self._external_without_extension(sender)
                if pattern.casefold() == stripped.casefold():
                    return True
        return False

    def _find_patterns(self, key: str) -> str | None:
        for table in self._sender_maps:
            value = table.lookup(key)
            if value is not None:
                return value
        return None

    def _external_without_extension(self, sender: str) -> str:
        if not sender:
            return ""
        base = strip_extension(
            sender,
            self.settings.recipient_delimiter,
            owner_request_special=self.settings.owner_request_special,
            double_bounce_sender=self.settings.double_bounce_sender,
        )
        return quote_address(base)

    def recipients_of(self, req: SubmitRequest) -> tuple[Recipient, ...]:
        """The request's recipients, checked; Refusal for a bad address or a bad NOTIFY."""
        recipients = []
        for given in req.recipients:
            if not given.address or not valid_internal_address(given.address):
                raise Refusal(501, "5.1.3", "Bad recipient address syntax")
            try:
                notify = Notify(given.notify)
            except ValueError:
                raise Refusal(501, "5.5.4", "Bad NOTIFY parameter syntax") from None
            recipients.append(Recipient(given.address, notify=notify, orcpt=given.orcpt))
        return tuple(recipients)

    def envelope(
        self, submitter: Submitter, req: SubmitRequest, content: bytes, *, now: float | None = None
    ) -> Envelope:
        """The maildrop envelope of REQ from SUBMITTER, or Refusal (in Postfix's order)."""
        self.check_user(submitter)
        sender = self.sender_of(submitter, req.sender)
        recipients = self.recipients_of(req)
        if not recipients:
            if not req.extract_recipients:
                raise Refusal(
                    550,
                    "5.1.0",
                    "Recipient addresses must be specified on the command line or via the -t option",
                )
            if not header_recipients_present(content):
                raise Refusal(550, "5.1.0", "No recipient addresses found in message header")
        arrival = time.time() if now is None else now
        seconds = int(arrival)
        full_name = req.full_name if req.full_name is not None else submitter.gecos_name
        attributes = [(UID_ATTRIBUTE, str(submitter.uid))]
        if req.extract_recipients:
            attributes.append((EXTRACT_RECIPIENTS_ATTRIBUTE, "yes"))
        return Envelope(
            sender=sender,
            recipients=recipients,
            arrival_sec=seconds,
            arrival_usec=int((arrival - seconds) * 1_000_000),
            sender_fullname=full_name or None,
            ret=_ret(req.ret),
            envid=_envid(req.envid),
            smtputf8=bool(req.smtputf8),
            body_type=_body_type(req.body_type),
            client=ClientInfo(
                log_message_origin="local",
                rewrite_context=_rewrite_context(req.attributes.get(REWRITE_CONTEXT_ATTRIBUTE)),
            ),
            attributes=tuple(attributes),
            trace_flags=req.trace_flags,
        )


def _ret(value: str | None) -> DsnRet | None:
    if value is None:
        return None
    try:
        return DsnRet(value.upper())
    except ValueError:
        raise Refusal(501, "5.5.4", "Bad RET parameter syntax") from None


def _envid(value: str | None) -> str | None:
    if value is None:
        return None
    if len(value) > 100 or not value.isprintable() or not value.isascii():
        raise Refusal(501, "5.5.4", "Bad ENVID parameter syntax")
    return value


def _body_type(value: str | None) -> BodyType | None:
    if value is None:
        return None
    try:
        return BodyType(value.upper())
    except ValueError:
        raise Refusal(501, "5.5.4", "Bad BODY parameter syntax") from None


def _rewrite_context(requested: str | None) -> RewriteContext:
    """`sendmail -G` (gateway submission) asks for the remote rewriting context."""
    if requested is None:
        return RewriteContext.LOCAL
    try:
        return RewriteContext(requested)
    except ValueError:
        raise Refusal(501, "5.5.4", "Bad rewrite context") from None
