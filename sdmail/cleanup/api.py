"""cleanup: the gate every message passes before it is queued.

WHAT IT DOES, in the order mail flows (Postfix's cleanup(8)):
  1. the envelope sender and recipients are brought to canonical form and through
     the canonical maps; recipients through virtual alias expansion; duplicates
     dropped; the original recipient kept;
  2. with `sendmail -t`, recipients are taken from To:, Cc:, Bcc: (the Resent-
     ones when there are any);
  3. the content is parsed (content.py), `message_drop_headers` removed (Bcc:,
     Return-Path:, ...), too many Received: headers refused, the front end's
     Received: put first, and for a local client Message-Id:, Date: and From: added
     when missing, header addresses completed and canonicalised;
  4. the size limit is enforced, and the queue file written durably (core/spool)
     into incoming/; only then does `submit` return the queue ID;
  5. `QUEUEID: message-id=<...>` is logged.

OWNS the decision whether a message is queued, and its final content. It writes
only `incoming/` (or `hold/`), through core/spool.

USED BY smtpd and pickup in-process (no hand-off on the hot path), and by the
cleanup service for agents that re-submit mail and for notices.

HOSTILE INPUT: content and addresses from any SMTP client.  Content is never
refused for its shape (content.py repairs it); addresses were parsed by the front
end.  Every refusal is a `CleanupError` carrying Postfix's reply: 552 5.3.4
message file too big, 554 5.4.0 too many hops, 550 5.1.0 no recipients,
451 4.6.0 alias expansion error, 451 4.3.0 queue file write error.  Nothing is
left in the queue when `submit` raises.
"""

from __future__ import annotations

import enum
import ipaddress
import logging
import time
from dataclasses import dataclass, field

from sdmail.cleanup.content import HeaderField, Message, header, parse, render
from sdmail.cleanup.envelope import RECIPIENT, SENDER, AddressMapper
from sdmail.cleanup.headers import (
    SmtpClient,
    add_missing_headers,
    drop_headers,
    message_id_of,
    received_from_smtp,
    received_local,
)
from sdmail.core.address import AddressError, HeaderAddress, parse_header_addresses, quote_address
from sdmail.core.config import Config, bind
from sdmail.core.dsn import DeliveryFailure, Status
from sdmail.core.log import msg_info
from sdmail.core.match_list import NetworkList
from sdmail.core.records import (
    BodyType,
    ClientInfo,
    DsnRet,
    Envelope,
    QueueName,
    Recipient,
    RewriteContext,
)
from sdmail.core.spool import Created, QueueWriteError, Spool, SpoolError
from sdmail.core.tables import open_table
from sdmail.trivial_rewrite.interfaces import interface_addresses

log = logging.getLogger("sdmail.cleanup")

# Header names whose addresses are senders / recipients (Postfix's header_opts).
_SENDER_HEADERS = frozenset(
    {
        "from",
        "sender",
        "reply-to",
        "errors-to",
        "return-receipt-to",
        "disposition-notification-to",
        "resent-from",
        "resent-sender",
        "resent-reply-to",
    }
)
_RECIPIENT_HEADERS = frozenset(
    {"to", "cc", "bcc", "apparently-to", "resent-to", "resent-cc", "resent-bcc"}
)


class Origin(enum.StrEnum):
    """Which way a message came in; decides Received: and header completion."""

    SMTP = "smtp"  # smtpd: a client on the network
    LOCAL = "local"  # pickup: sendmail on this host
    FORWARD = "forward"  # a delivery agent re-submitting (aliases, .forward)
    NOTICE = "notice"  # sdmail's own bounce and delay notices


@dataclass(frozen=True)
class Submission:
    """What a front end knows about a message besides its content.

    Addresses are in internal form (core/address.parse_path): the empty sender is
    the null sender.  `uid` is the submitting user for local mail.
    `received_comments` are smtpd's comment lines for Received: (TLS, SASL user),
    written between its `from` and `by` lines; only SMTP mail has them.
    """

    sender: str
    recipients: tuple[Recipient, ...]
    origin: Origin
    client: ClientInfo = field(default_factory=ClientInfo)
    uid: int | None = None
    full_name: str | None = None
    extract_recipients: bool = False
    ret: DsnRet | None = None
    envid: str | None = None
    smtputf8: bool = False
    body_type: BodyType | None = None
    arrival: float | None = None
    hold: bool = False
    received_comments: tuple[str, ...] = ()
    trace_flags: int = 0


@dataclass(frozen=True)
class Accepted:
    queue_id: str
    message_id: str | None
    recipients: int
    size: int


class CleanupError(Exception):
    """A message cleanup refuses; `code` and `status` are the SMTP reply to give."""

    def __init__(self, code: int, status: Status) -> None:
        self.code = code
        self.status = status
        super().__init__(f"{code} {status.dsn} {status.text}")

    @property
    def temporary(self) -> bool:
        return self.code < 500


TOO_BIG = CleanupError(552, Status("5.3.4", "Error: message file too big"))
TOO_MANY_HOPS = CleanupError(554, Status("5.4.0", "Error: too many hops"))
NO_RECIPIENTS = CleanupError(550, Status("5.1.0", "Error: no recipients specified"))
WRITE_ERROR = CleanupError(451, Status("4.3.0", "Error: queue file write error"))


@dataclass(frozen=True)
class CleanupSettings:
    """The parameters cleanup reads; field names are parameter names."""

    myhostname: str
    mail_name: str
    queue_directory: str
    message_size_limit: int
    header_size_limit: int
    hopcount_limit: int
    message_drop_headers: tuple[str, ...]
    header_from_format: str
    always_add_missing_headers: bool
    local_header_rewrite_clients: tuple[str, ...]
    remote_header_rewrite_domain: str
    mynetworks: tuple[str, ...]
    inet_interfaces: tuple[str, ...]
    inet_protocols: tuple[str, ...]
    duplicate_filter_limit: int
    enable_original_recipient: bool
    delay_warning_time: int


class Cleanup:
    """cleanup for one configuration; `submit` queues one message or raises CleanupError."""

    def __init__(self, cfg: Config, spool: Spool | None = None) -> None:
        self.settings = bind(CleanupSettings, cfg)
        self.mapper = AddressMapper(cfg)
        self.spool = spool or Spool(self.settings.queue_directory)
        self._local_clients = LocalClients(self.settings)

    # -- the one door ---------------------------------------------------------------
    def submit(self, submission: Submission, content: bytes) -> Accepted:
        try:
            return self._submit(submission, content)
        except DeliveryFailure as failure:
            code = 451 if failure.status.is_temporary else 550
            raise CleanupError(code, failure.status) from None

    def _submit(self, submission: Submission, content: bytes) -> Accepted:
        arrival = time.time() if submission.arrival is None else submission.arrival
        local_client = self.is_local_client(submission)
        context = RewriteContext.LOCAL if local_client else RewriteContext.REMOTE
        message = parse(content, self.settings.header_size_limit)
        if message.count("Received") >= self.settings.hopcount_limit:
            raise TOO_MANY_HOPS
        sender = self.mapper.canonical(submission.sender, SENDER, "envelope", RewriteContext.LOCAL)
        given = list(submission.recipients)
        if submission.extract_recipients:
            given += [Recipient(a) for a in recipients_from_headers(message)]
        recipients = self._recipients(given)
        if not recipients:
            raise NO_RECIPIENTS
        drop_headers(message, list(self.settings.message_drop_headers))
        if local_client or self.settings.remote_header_rewrite_domain:
            self._rewrite_header_addresses(message, context)
        envelope = self._envelope(submission, sender, recipients, arrival, context)
        made: dict[str, object] = {}

        def content_for(created: Created) -> bytes:
            data = self._final_content(
                submission=submission,
                message=message,
                created=created,
                arrival=arrival,
                sender=sender,
                recipients=recipients,
            )
            made["message_id"] = message_id_of(message)
            if self.settings.message_size_limit and len(data) > self.settings.message_size_limit:
                raise TOO_BIG
            made["size"] = len(data)
            return data

        queue = QueueName.HOLD if submission.hold else QueueName.INCOMING
        try:
            created = self.spool.create(queue, envelope, content_for)
        except (QueueWriteError, SpoolError) as exc:
            log.warning("%s", exc)
            raise WRITE_ERROR from None
        message_id = made.get("message_id")
        msg_info(created.queue_id, f"message-id={message_id or '<>'}")
        return Accepted(
            created.queue_id,
            message_id if isinstance(message_id, str) else None,
            len(recipients),
            int(str(made["size"])),
        )

    # -- who is local ----------------------------------------------------------------
    def is_local_client(self, submission: Submission) -> bool:
        """Whether headers are completed and rewritten as for local mail."""
        if submission.origin is not Origin.SMTP or self.settings.always_add_missing_headers:
            return True
        return self._local_clients.matches(submission.client)

    # -- envelope --------------------------------------------------------------------
    def _recipients(self, given: list[Recipient]) -> list[Recipient]:
        out: list[Recipient] = []
        seen: set[str] = set()
        for recipient in given:
            canonical = self.mapper.canonical(
                recipient.address, RECIPIENT, "envelope", RewriteContext.LOCAL
            )
            original = recipient.orig_address or recipient.address
            for address in self.mapper.expand_virtual(canonical):
                key = address.lower()
                if key in seen:
                    continue
                if len(seen) < self.settings.duplicate_filter_limit:
                    seen.add(key)
                out.append(
                    Recipient(
                        address,
                        original if self.settings.enable_original_recipient else None,
                        recipient.notify,
                        recipient.orcpt,
                    )
                )
        return out

    def _envelope(
        self,
        submission: Submission,
        sender: str,
        recipients: list[Recipient],
        arrival: float,
        context: RewriteContext,
    ) -> Envelope:
        seconds = int(arrival)
        warning = self.settings.delay_warning_time
        client = submission.client
        if client.rewrite_context is None:
            client = _with_context(client, context)
        return Envelope(
            sender=sender,
            recipients=tuple(recipients),
            arrival_sec=seconds,
            arrival_usec=int((arrival - seconds) * 1_000_000),
            delay_warning_time=seconds + warning if warning and sender else 0,
            sender_fullname=submission.full_name,
            ret=submission.ret,
            envid=submission.envid,
            smtputf8=submission.smtputf8,
            body_type=submission.body_type,
            client=client,
            trace_flags=submission.trace_flags,
        )

    # -- content ---------------------------------------------------------------------
    def _final_content(
        self,
        *,
        submission: Submission,
        message: Message,
        created: Created,
        arrival: float,
        sender: str,
        recipients: list[Recipient],
    ) -> bytes:
        s = self.settings
        queue_id = created.queue_id
        received = self._received(submission, queue_id, arrival, recipients)
        final = Message(list(message.headers), message.body, message.header_truncated)
        if received is not None:
            final.headers.insert(0, received)
        if self.is_local_client(submission):
            add_missing_headers(
                final,
                queue_id=queue_id,
                created=created.created_at.timestamp(),
                arrival=arrival,
                myhostname=s.myhostname,
                sender=sender,
                full_name=submission.full_name,
                header_from_format=s.header_from_format,
            )
        message.headers = final.headers
        return render(final)

    def _received(
        self, submission: Submission, queue_id: str, arrival: float, recipients: list[Recipient]
    ) -> HeaderField | None:
        s = self.settings
        client = submission.client
        if submission.origin is Origin.SMTP:
            smtp_client = SmtpClient(
                client.log_helo_name,
                client.log_client_name or "unknown",
                client.log_client_address or "unknown",
                client.log_protocol_name or "SMTP",
            )
            rcpts = [quote_address(r.address) for r in recipients]
            return received_from_smtp(
                smtp_client,
                myhostname=s.myhostname,
                mail_name=s.mail_name,
                queue_id=queue_id,
                recipients=rcpts,
                when=arrival,
                comments=submission.received_comments,
            )
        if submission.origin is Origin.FORWARD:
            return None  # the agent wrote its own Received: with the original queue ID
        uid = submission.uid if submission.origin is Origin.LOCAL else None
        return received_local(
            myhostname=s.myhostname, mail_name=s.mail_name, queue_id=queue_id, when=arrival, uid=uid
        )

    def _rewrite_header_addresses(self, message: Message, context: RewriteContext) -> None:
        """Complete and canonicalise the addresses in address headers (Postfix's cleanup_addr)."""
        for index, field_ in enumerate(message.headers):
            if field_.lname in _SENDER_HEADERS:
                kind = SENDER
            elif field_.lname in _RECIPIENT_HEADERS:
                kind = RECIPIENT
            else:
                continue
            try:
                addresses = parse_header_addresses(field_.text())
            except AddressError:
                continue  # a header we cannot parse is kept as it was written
            rewritten = [
                HeaderAddress(
                    a.display_name, self.mapper.canonical(a.address, kind, "header", context)
                )
                for a in addresses
            ]
            if rewritten != addresses and not _has_group(field_.text()):
                message.headers[index] = header(field_.name, _format_addresses(rewritten))


def recipients_from_headers(message: Message) -> list[str]:
    """The recipients `sendmail -t` takes: To, Cc, Bcc (Resent- ones when present)."""
    prefix = "resent-" if message.has_resent_headers() else ""
    names = {prefix + name for name in ("to", "cc", "bcc")}
    found: list[str] = []
    for field_ in message.headers:
        if field_.lname in names:
            try:
                found += [a.address for a in parse_header_addresses(field_.text())]
            except AddressError as exc:
                log.warning("ignoring malformed %s header: %s", field_.name, exc)
    return found


def _format_addresses(addresses: list[HeaderAddress]) -> str:
    from sdmail.cleanup.headers import _phrase  # noqa: PLC0415

    parts = []
    for item in addresses:
        quoted = quote_address(item.address)
        parts.append(f"{_phrase(item.display_name)} <{quoted}>" if item.display_name else quoted)
    return ", ".join(parts)


def _has_group(text: str) -> bool:
    """A group (`team: a@x, b@y;`) would be flattened by a rewrite: leave such headers."""
    in_quotes = False
    depth = 0
    for char in text:
        if char == '"':
            in_quotes = not in_quotes
        elif not in_quotes and char == "<":
            depth += 1
        elif not in_quotes and char == ">":
            depth -= 1
        elif not in_quotes and depth == 0 and char == ":":
            return True
    return False


def _with_context(client: ClientInfo, context: RewriteContext) -> ClientInfo:
    from dataclasses import replace  # noqa: PLC0415

    return replace(client, rewrite_context=context)


class LocalClients:
    """local_header_rewrite_clients: which SMTP clients get local mail's header treatment.

    Items: permit_inet_interfaces, permit_mynetworks, permit_sasl_authenticated,
    static:all, and check_address_map followed by a table of client addresses.
    """

    def __init__(self, settings: CleanupSettings) -> None:
        self.items = list(settings.local_header_rewrite_clients)
        self._mynetworks = NetworkList(list(settings.mynetworks), name="mynetworks")
        self._interfaces = interface_addresses(
            list(settings.inet_interfaces), list(settings.inet_protocols), name="inet_interfaces"
        )

    def matches(self, client: ClientInfo) -> bool:
        address = (client.log_client_address or "").removeprefix("IPv6:")
        items = iter(self.items)
        for item in items:
            if item == "check_address_map":
                table = next(items, "")
                if address and table and open_table(table).lookup(address) is not None:
                    return True
            elif self._matches(item, address, client):
                return True
        return False

    def _matches(self, item: str, address: str, client: ClientInfo) -> bool:
        if item == "static:all":
            return True
        if item == "permit_sasl_authenticated":
            return bool(client.sasl_username)
        if not address:
            return False
        if item == "permit_mynetworks":
            return self._mynetworks.matches(address)
        if item == "permit_inet_interfaces":
            try:
                return ipaddress.ip_address(address) in self._interfaces
            except ValueError:
                return False
        return False
