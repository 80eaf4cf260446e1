"""One SMTP session: the state of the dialogue and one method per verb, each returning a Reply.

The session knows nothing of sockets: server.py reads lines and message data and writes
replies; here each command line becomes a `Reply` (or, for BDAT, a `ChunkExpected` that
tells the server how many octets to read), in Postfix's words (replies.py). Methods may
block (table and DNS lookups in the restrictions, cleanup's durable write), so the server
calls them in worker threads, one at a time per session.

State: the client (name, address, port; the server's address and port), HELO name and
protocol (SMTP or ESMTP), the mail transaction (sender, recipients with DSN NOTIFY/ORCPT,
RET, ENVID, SMTPUTF8, BODY, SIZE then the size received, the instance name policy servers
see, the HOLD/DISCARD actions of access tables, the BDAT content so far), per-command
statistics for
the `disconnect from` line, the error and junk-command counts that slow down and end
abusive sessions, and `where` (the last stage, for `lost connection after ...`).

Parameters of MAIL and RCPT are parsed here, not by aiosmtpd (which upper-cases them): DSN's
ENVID and ORCPT keep their case, decoded from xtext. An address is parsed by core/address
(RFC 5321 path) and must declare SMTPUTF8 when it is not ASCII. A message is handed to the
cleanup library (`Cleanup.submit`), which writes the queue file durably before it returns;
only then is `250 2.0.0 Ok: queued as ID` given, `ID: client=NAME[ADDR]` logged and qmgr
woken (a failed wake-up only delays the mail).

STARTTLS: `starttls` answers READY_TO_START_TLS and the server does the handshake, then
calls `tls_started`, which forgets HELO, transaction and login (RFC 3207). AUTH: `auth`
starts a sasl.Exchange; while `sasl_pending`, the server hands each line to
`sasl_response` instead of `command`. A login sets `sasl_username` (Facts, the queue file's
client record, the `client=` log line); Received: says ESMTPS / ESMTPA / ESMTPSA.

Failure modes: no method raises for anything a client sends; a bad command gets its reply.
Cleanup's refusals become their replies; an unexpected error while queueing is logged with
its traceback and answered `451 4.3.0 Error: queue file write error`.
"""

from __future__ import annotations

import logging
import os
import string
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Self

from sdmail.cleanup.api import CleanupError, Origin, Submission
from sdmail.core import flush_proto
from sdmail.core.address import AddressError, parse_path
from sdmail.core.config import Config, bind
from sdmail.core.flush_proto import FlushStatus
from sdmail.core.log import format_reject, log_traceback
from sdmail.core.records import BodyType, ClientInfo, DsnRet, Notify, Recipient
from sdmail.core.trigger import WAKEUP, trigger
from sdmail.smtpd import replies
from sdmail.smtpd.checks import Action, Facts, Verdict
from sdmail.smtpd.replies import Reply, reply
from sdmail.smtpd.sasl import Challenge, Credentials, Exchange, Peer
from sdmail.smtpd.tls import TlsInfo, TlsLevel

if TYPE_CHECKING:
    from sdmail.smtpd.listeners import Service

log = logging.getLogger("sdmail.smtpd")

# Postfix's order of the disconnect statistics.
STATISTICS_ORDER = (
    "helo",
    "ehlo",
    "starttls",
    "auth",
    "mail",
    "rcpt",
    "data",
    "bdat",
    "rset",
    "noop",
    "vrfy",
    "etrn",
    "help",
    "quit",
    "unknown",
)
# Commands after which the client must wait for the reply (RFC 2920 and Postfix's table).
# Postfix's Received: line after the TLS one when it did not ask for a client certificate.
NO_CLIENT_CERTIFICATE = "(No client certificate requested)"
ENDS_PIPELINE_GROUP = frozenset({"HELO", "EHLO", "DATA", "NOOP", "VRFY", "STARTTLS", "QUIT"})
_JUNK_COMMANDS = frozenset({"NOOP", "VRFY", "RSET", "ETRN"})
_XTEXT_CHARS = frozenset(chr(c) for c in range(33, 127)) - {"+", "="}
_MAX_ENVID = 100


@dataclass(frozen=True)
class SessionSettings:
    """The parameters a session reads; field names are parameter names."""

    myhostname: str
    smtpd_banner: str
    smtpd_helo_required: bool
    disable_vrfy_command: bool
    smtputf8_enable: bool
    message_size_limit: int
    smtpd_recipient_limit: int
    smtpd_recipient_overshoot_limit: int
    smtpd_soft_error_limit: int
    smtpd_hard_error_limit: int
    smtpd_error_sleep_time: int
    smtpd_junk_command_limit: int
    smtpd_discard_ehlo_keywords: tuple[str, ...]
    smtpd_forbidden_commands: tuple[str, ...]
    smtpd_forbid_unauth_pipelining: bool
    strict_rfc821_envelopes: bool
    smtpd_client_port_logging: bool
    smtpd_timeout: int
    line_length_limit: int
    smtpd_peername_lookup: bool
    smtpd_client_connection_count_limit: int
    smtpd_client_event_limit_exceptions: tuple[str, ...]
    smtpd_sasl_authenticated_header: bool
    socket_directory: str
    ipc_timeout: int

    @classmethod
    def from_config(cls, cfg: Config) -> Self:
        return bind(cls, cfg)


@dataclass(frozen=True)
class Client:
    """Who is connected: NAME is `unknown` without a verified reverse name."""

    name: str
    address: str
    port: int | None = None
    local_address: str | None = None
    local_port: int | None = None

    def namaddr(self, with_port: bool = False) -> str:
        text = f"{self.name}[{self.address}]"
        return f"{text}:{self.port}" if with_port and self.port is not None else text


@dataclass(frozen=True)
class ChunkExpected:
    """BDAT: read SIZE octets, then call `Session.bdat_chunk`."""

    size: int
    last: bool


@dataclass
class Transaction:
    """One mail transaction, from MAIL to the end of its message (or RSET)."""

    sender: str
    ret: DsnRet | None = None
    envid: str | None = None
    smtputf8: bool = False
    body_type: BodyType | None = None
    size: int = 0  # MAIL's SIZE=, then the size of the message received
    instance: str = ""  # the policy servers' name for this transaction
    recipients: list[Recipient] = field(default_factory=list)
    actions: list[Verdict] = field(default_factory=list)
    mode: str | None = None  # "DATA" or "BDAT" once content started
    content: bytearray = field(default_factory=bytearray)
    received: int = 0
    failure: Reply | None = None  # BDAT: the reply every chunk gets after a failure


class Session:
    """The dialogue with one client under one listener's Service."""

    def __init__(self, service: Service, client: Client) -> None:
        self.service = service
        self.settings = service.settings
        self.client = client
        self.helo_name: str | None = None
        self.esmtp = False
        self.pipelining = False
        self.transaction: Transaction | None = None
        self.stats: Counter[str] = Counter()
        self.ok_stats: Counter[str] = Counter()
        self.error_count = 0
        self.junk_count = 0
        self.overshoot = 0
        self.where = "CONNECT"
        self.bare_lf = False
        self.connect_refusal: Reply | None = None
        self.improper_pipelining = False
        self.tls: TlsInfo | None = None
        self.sasl_username: str | None = None
        self.sasl_method: str | None = None
        self._exchange: Exchange | None = None
        self._pending: ChunkExpected | None = None
        self._transactions = 0

    # -- helpers -------------------------------------------------------------------------
    @property
    def protocol(self) -> str:
        """SMTP or ESMTP, as reject log lines show it (`proto=ESMTP`)."""
        return "ESMTP" if self.esmtp else "SMTP"

    @property
    def received_protocol(self) -> str:
        """The `with` of Received: ESMTP plus RFC 3848's S (TLS) and A (AUTH) suffixes."""
        if not self.esmtp:
            return self.protocol
        return self.protocol + ("S" if self.tls else "") + ("A" if self.sasl_username else "")

    def received_comments(self) -> tuple[str, ...]:
        """The comment lines Postfix's smtpd puts in Received: between `from` and `by`.

        `(using TLSv1.3 with cipher ...)` and `(No client certificate requested)` (smtpd
        never asks for one) with smtpd_tls_received_header, `(Authenticated sender: USER)`
        with smtpd_sasl_authenticated_header. They go to cleanup with the Submission,
        which writes Received:."""
        lines = []
        if self.tls is not None and self.service.tls.received_header:
            lines.append(self.tls.received_comment())
            lines.append(NO_CLIENT_CERTIFICATE)
        if self.sasl_username is not None and self.settings.smtpd_sasl_authenticated_header:
            lines.append(f"(Authenticated sender: {self.sasl_username})")
        return tuple(lines)

    @property
    def sasl_pending(self) -> bool:
        """Whether the next line is the client's answer to a 334 challenge, not a command."""
        return self._exchange is not None

    @property
    def namaddr(self) -> str:
        return self.client.namaddr()

    def facts(self, recipient: str | None = None) -> Facts:
        transaction = self.transaction
        return Facts(
            client_name=self.client.name,
            client_address=self.client.address,
            helo=self.helo_name,
            sender=transaction.sender if transaction else None,
            recipient=recipient,
            sasl_username=self.sasl_username,
            improper_pipelining=self.improper_pipelining,
            state=self.where,
            protocol_name=self.protocol,
            recipient_count=len(transaction.recipients) if transaction else 0,
            size=transaction.size if transaction else 0,
            instance=transaction.instance if transaction else "",
            sasl_method=self.sasl_method,
            tls=self.tls,
            client_port=self.client.port,
            server_address=self.client.local_address,
            server_port=self.client.local_port,
        )

    def offers(self, keyword: str) -> bool:
        """Whether EHLO offers KEYWORD (smtpd_discard_ehlo_keywords may take it away)."""
        return keyword.lower() not in {k.lower() for k in self.settings.smtpd_discard_ehlo_keywords}

    def reply_delay(self) -> float:
        """Seconds to wait before an error reply (smtpd_soft_error_limit)."""
        if self.error_count >= self.settings.smtpd_soft_error_limit:
            return float(self.settings.smtpd_error_sleep_time)
        return 0.0

    def too_many_errors(self) -> bool:
        return self.error_count >= self.settings.smtpd_hard_error_limit

    def must_wait_after(self, verb: str) -> bool:
        """Whether the client may not send more before it has this command's reply."""
        return verb in ENDS_PIPELINE_GROUP or not self.pipelining

    def _log_reject(self, stage: str, refusal: Reply, recipient: str | None = None) -> None:
        sender = self.transaction.sender if self.transaction else None
        log.info(
            "%s",
            format_reject(
                stage,
                self.namaddr,
                refusal.logged(),
                sender=sender,
                recipient=recipient,
                proto=self.protocol,
                helo=self.helo_name,
            ),
        )

    # -- the session's frame -------------------------------------------------------------
    def greeting(self) -> Reply:
        verdict = self.service.checks.at_connect(self.facts())
        if verdict is not None and verdict.reply is not None:
            self.connect_refusal = verdict.reply
            self._log_reject("CONNECT", verdict.reply)
        return reply(220, self.settings.smtpd_banner)

    def disconnect_line(self) -> str:
        parts = []
        total = ok = 0
        for name in STATISTICS_ORDER:
            count = self.stats[name]
            if not count:
                continue
            good = self.ok_stats[name]
            total += count
            ok += good
            parts.append(f"{name}={good}" if good == count else f"{name}={good}/{count}")
        parts.append(f"commands={ok}" if ok == total else f"commands={ok}/{total}")
        if self.bare_lf:
            parts.append("notes=bare_lf")
        return f"disconnect from {self.namaddr} {' '.join(parts)}"

    def too_many_errors_reply(self) -> Reply:
        return replies.too_many_errors(self.settings.myhostname)

    # -- commands --------------------------------------------------------------------------
    def command(self, line: bytes) -> Reply | ChunkExpected:
        """Answer one command line (CRLF removed, already cut to line_length_limit)."""
        text = line.decode("utf-8", "surrogateescape").strip(" \t")
        verb_text, _, argument = text.partition(" ")
        verb = verb_text.upper()
        argument = argument.strip(" \t")
        if not text or "\0" in text:
            outcome: Reply | ChunkExpected = replies.BAD_SYNTAX
            stat = "unknown"
        elif verb in {v.upper() for v in self.settings.smtpd_forbidden_commands}:
            log.warning("non-SMTP command from %s: %s", self.namaddr, _printable(text[:100]))
            outcome, stat = replies.FORBIDDEN_COMMAND, "unknown"
        else:
            method = _VERBS.get(verb) if verb.isascii() else None
            if method is None:
                outcome, stat = replies.UNKNOWN_COMMAND, "unknown"
                self.where = "UNKNOWN"
            else:
                self.where = verb
                outcome, stat = method(self, argument), verb.lower()
        self._count(verb, stat, outcome)
        return outcome

    def _count(self, verb: str, stat: str, outcome: Reply | ChunkExpected) -> None:
        if isinstance(outcome, ChunkExpected):
            return  # counted when the chunk is answered
        self.stats[stat] += 1
        if outcome is replies.START_DATA or outcome is replies.READY_TO_START_TLS:
            return  # a success only once the message is queued / the handshake is done
        if outcome.code == 334:
            return  # AUTH goes on: counted when the exchange ends (sasl_response)
        if not outcome.is_error:
            self.ok_stats[stat] += 1
        elif (
            outcome is not replies.TOO_MANY_RECIPIENTS
            or self.overshoot > self.settings.smtpd_recipient_overshoot_limit
        ):
            self.error_count += 1
        if verb in _JUNK_COMMANDS:
            self.junk_count += 1
            if self.junk_count > self.settings.smtpd_junk_command_limit:
                self.error_count += 1

    def helo(self, argument: str) -> Reply:
        return self._hello(argument, extended=False)

    def ehlo(self, argument: str) -> Reply:
        return self._hello(argument, extended=True)

    def _hello(self, argument: str, *, extended: bool) -> Reply:
        if not argument:
            return replies.EHLO_SYNTAX if extended else replies.HELO_SYNTAX
        self.transaction = None
        self.helo_name = argument
        self.esmtp = extended
        self.pipelining = extended and self.offers("PIPELINING")
        verdict = self.service.checks.at_helo(self.facts())
        if verdict is not None and verdict.reply is not None:
            self._log_reject("HELO" if not extended else "EHLO", verdict.reply)
            self.helo_name, self.esmtp, self.pipelining = None, False, False
            return verdict.reply
        if not extended:
            return reply(250, self.settings.myhostname)
        return Reply(250, (self.settings.myhostname, *self._extensions()))

    def _extensions(self) -> list[str]:
        s = self.settings
        size = f"SIZE {s.message_size_limit}" if s.message_size_limit else "SIZE"
        mechanisms = self._mechanisms()
        offered = [
            ("PIPELINING", "PIPELINING"),
            ("SIZE", size),
            ("VRFY", None if s.disable_vrfy_command else "VRFY"),
            ("ETRN", "ETRN"),
            ("STARTTLS", "STARTTLS" if self.service.tls.offered and not self.tls else None),
            ("AUTH", " ".join(("AUTH", *mechanisms)) if mechanisms else None),
            ("ENHANCEDSTATUSCODES", "ENHANCEDSTATUSCODES"),
            ("8BITMIME", "8BITMIME"),
            ("DSN", "DSN"),
            ("SMTPUTF8", "SMTPUTF8" if s.smtputf8_enable else None),
            ("CHUNKING", "CHUNKING"),
        ]
        return [line for keyword, line in offered if line and self.offers(keyword)]

    def mail(self, argument: str) -> Reply:
        s = self.settings
        if s.smtpd_helo_required and self.helo_name is None:
            return replies.SEND_HELO_FIRST
        if self.transaction is not None:
            return replies.NESTED_MAIL
        if self.service.tls.required and self.tls is None:
            return replies.STARTTLS_FIRST
        if self.connect_refusal is not None:
            return self.connect_refusal
        split = _split_path_argument(argument, "FROM:")
        if split is None:
            return replies.MAIL_SYNTAX
        path, parameters = split
        try:
            sender = parse_path(path, strict=s.strict_rfc821_envelopes)
        except AddressError:
            return replies.BAD_SENDER
        transaction = Transaction(sender, instance=self._new_instance())
        refusal = self._mail_parameters(transaction, parameters)
        if refusal is not None:
            return refusal
        if not sender.isascii() and not transaction.smtputf8:
            return replies.UNICODE_ADDRESS
        self.transaction = transaction
        verdict = self.service.checks.at_mail(self.facts())
        if verdict is not None and verdict.reply is not None:
            self._log_reject("MAIL", verdict.reply)
            self.transaction = None
            return verdict.reply
        return replies.MAIL_OK

    def _mail_parameters(self, transaction: Transaction, parameters: list[str]) -> Reply | None:
        s = self.settings
        dsn = self.offers("DSN")
        for parameter in parameters:
            name, equals, value = parameter.partition("=")
            keyword = name.upper()
            if not self.esmtp:
                return replies.MAIL_SYNTAX
            if keyword == "SIZE" and equals:
                if not value.isascii() or not value.isdigit():
                    return replies.bad_parameter("SIZE")
                if s.message_size_limit and int(value) > s.message_size_limit:
                    return replies.SIZE_EXCEEDS_LIMIT
                transaction.size = int(value)
            elif keyword == "BODY" and equals:
                try:
                    transaction.body_type = BodyType(value.upper())
                except ValueError:
                    return replies.reply(501, "5.5.4 Unsupported BODY parameter")
            elif keyword == "SMTPUTF8" and not equals and s.smtputf8_enable:
                transaction.smtputf8 = True
            elif keyword == "RET" and equals and dsn:
                if transaction.ret is not None or value.upper() not in ("FULL", "HDRS"):
                    return replies.bad_parameter("RET")
                transaction.ret = DsnRet(value.upper())
            elif keyword == "ENVID" and equals and dsn:
                envid = _xtext_decode(value)
                if transaction.envid is not None or envid is None or len(value) > _MAX_ENVID:
                    return replies.bad_parameter("ENVID")
                transaction.envid = envid
            elif keyword == "AUTH" and equals:
                continue  # RFC 4954: ignored from a client that did not authenticate
            else:
                return replies.unsupported_option(name)
        return None

    def rcpt(self, argument: str) -> Reply:
        s = self.settings
        transaction = self.transaction
        if transaction is None:
            return replies.NEED_MAIL
        if self.connect_refusal is not None:
            return self.connect_refusal
        if len(transaction.recipients) >= s.smtpd_recipient_limit:
            self.overshoot += 1
            return replies.TOO_MANY_RECIPIENTS
        split = _split_path_argument(argument, "TO:")
        if split is None:
            return replies.RCPT_SYNTAX
        path, parameters = split
        try:
            address = parse_path(path, strict=s.strict_rfc821_envelopes)
        except AddressError:
            return replies.BAD_RECIPIENT
        if address == "":
            return replies.BAD_RECIPIENT
        notify, orcpt, refusal = self._rcpt_parameters(parameters)
        if refusal is not None:
            return refusal
        if not address.isascii() and not transaction.smtputf8:
            return replies.UNICODE_ADDRESS
        verdicts = self.service.checks.at_rcpt(self.facts(address))
        for verdict in verdicts:
            if verdict.reply is not None:
                self._log_reject("RCPT", verdict.reply, address)
                return verdict.reply
        transaction.actions += verdicts
        transaction.recipients.append(Recipient(address, notify=notify, orcpt=orcpt))
        return replies.RCPT_OK

    def _rcpt_parameters(self, parameters: list[str]) -> tuple[Notify, str | None, Reply | None]:
        notify = Notify(0)
        orcpt: str | None = None
        dsn = self.offers("DSN")
        for parameter in parameters:
            name, equals, value = parameter.partition("=")
            keyword = name.upper()
            if not self.esmtp:
                return notify, orcpt, replies.RCPT_SYNTAX
            if keyword == "NOTIFY" and equals and dsn and not notify:
                parsed = _parse_notify(value)
                if parsed is None:
                    return notify, orcpt, replies.bad_parameter("NOTIFY")
                notify = parsed
            elif keyword == "ORCPT" and equals and dsn and orcpt is None:
                orcpt = _parse_orcpt(value)
                if orcpt is None:
                    return notify, orcpt, replies.bad_parameter("ORCPT")
            else:
                return notify, orcpt, replies.unsupported_option(name)
        return notify, orcpt, None

    def data(self, argument: str) -> Reply:
        transaction = self.transaction
        if transaction is None:
            return replies.NEED_RCPT
        if not transaction.recipients:
            return replies.NO_VALID_RECIPIENTS
        if argument:
            return replies.DATA_SYNTAX
        if transaction.mode == "BDAT":
            return replies.MIXED_DATA_BDAT
        if self.connect_refusal is not None:
            return self.connect_refusal
        verdict = self.service.checks.at_data(self.facts())
        if verdict is not None and verdict.reply is not None:
            self._log_reject("DATA", verdict.reply)
            return verdict.reply
        transaction.mode = "DATA"
        return replies.START_DATA

    def end_of_data(self, content: bytes, received: int, too_big: bool) -> Reply:
        """The message after DATA: RECEIVED octets came, CONTENT holds them unless TOO_BIG."""
        self.where = "END-OF-MESSAGE"
        transaction = self.transaction
        self.transaction = None
        if transaction is None:
            return replies.NEED_RCPT
        outcome = replies.MESSAGE_TOO_BIG if too_big else self._queue(transaction, content)
        if outcome.is_error:
            self.error_count += 1
        else:
            self.ok_stats["data"] += 1  # DATA itself was counted with its 354
        return outcome

    def bdat(self, argument: str) -> Reply | ChunkExpected:
        words = argument.split()
        if not self.offers("CHUNKING"):
            return replies.NOT_IMPLEMENTED
        if not 1 <= len(words) <= 2 or not words[0].isascii() or not words[0].isdigit():
            return replies.BDAT_SYNTAX
        if len(words) == 2 and words[1].upper() != "LAST":
            return replies.BDAT_SYNTAX
        chunk = ChunkExpected(int(words[0]), len(words) == 2)
        self._pending = chunk
        return chunk

    def bdat_chunk(self, data: bytes | None) -> Reply:
        """Answer the BDAT chunk just read (DATA None: it was read and thrown away)."""
        chunk = self._pending
        self._pending = None
        assert chunk is not None
        outcome = self._bdat_outcome(chunk, data)
        self.where = "END-OF-MESSAGE" if chunk.last and not outcome.is_error else "BDAT"
        self._count("BDAT", "bdat", outcome)
        return outcome

    def wants_chunk(self) -> bool:
        """Whether the chunk being read is kept (else it is read and thrown away)."""
        transaction = self.transaction
        if transaction is None or not transaction.recipients or transaction.failure:
            return False
        limit = self.settings.message_size_limit
        size = self._pending.size if self._pending else 0
        return not limit or transaction.received + size <= limit

    def _bdat_outcome(self, chunk: ChunkExpected, data: bytes | None) -> Reply:
        transaction = self.transaction
        if transaction is None:
            return replies.NEED_RCPT
        if not transaction.recipients:
            return replies.NO_VALID_RECIPIENTS
        if transaction.mode == "DATA":
            return replies.MIXED_DATA_BDAT
        transaction.mode = "BDAT"
        transaction.received += chunk.size
        limit = self.settings.message_size_limit
        if transaction.failure is None and limit and transaction.received > limit:
            transaction.failure = replies.MESSAGE_TOO_BIG
            transaction.content = bytearray()
        if transaction.failure is not None:
            if chunk.last:
                self.transaction = None
            return transaction.failure
        if data is not None:
            transaction.content += data
        if not chunk.last:
            return replies.bdat_chunk_ok(chunk.size)
        self.transaction = None
        outcome = self._queue(transaction, bytes(transaction.content))
        if outcome.code == 250 and outcome.text.startswith("2.0.0 Ok: queued as "):
            queue_id = outcome.text.rsplit(" ", 1)[1]
            return replies.bytes_queued(transaction.received, queue_id)
        return outcome

    def rset(self, argument: str) -> Reply:
        if argument:
            return replies.RSET_SYNTAX
        self.transaction = None
        return replies.OK

    def noop(self, argument: str) -> Reply:
        return replies.OK

    def quit(self, argument: str) -> Reply:
        return replies.BYE

    def vrfy(self, argument: str) -> Reply:
        if self.settings.disable_vrfy_command:
            return replies.VRFY_DISABLED
        if not argument:
            return replies.VRFY_SYNTAX
        if self.service.tls.required and self.tls is None:
            return replies.STARTTLS_FIRST
        if self.connect_refusal is not None:
            return self.connect_refusal
        try:
            address = parse_path(argument)
        except AddressError:
            return replies.BAD_RECIPIENT
        verdict = self.service.checks.at_vrfy(self.facts(address))
        if verdict is not None and verdict.reply is not None:
            self._log_reject("VRFY", verdict.reply, address)
            return verdict.reply
        return reply(252, f"2.0.0 {argument}")

    def etrn(self, argument: str) -> Reply:
        """ETRN site (RFC 1985): the flush service makes the mail deferred for SITE due now."""
        if self.helo_name is None:
            return replies.ETRN_SEND_HELO_FIRST
        if self.transaction is not None:
            return replies.ETRN_MAIL_IN_PROGRESS
        words = argument.split()
        if len(words) != 1:
            return replies.ETRN_SYNTAX
        site = flush_proto.etrn_site(words[0])
        if not flush_proto.valid_site(site):
            return replies.ETRN_BAD_SITE
        if self.connect_refusal is not None:
            return self.connect_refusal
        verdict = self.service.checks.at_etrn(self.facts(), site)
        if verdict is not None and verdict.reply is not None:
            self._log_reject("ETRN", verdict.reply)
            return verdict.reply
        answer = flush_proto.send_site(
            self.settings.socket_directory, site, timeout=self.settings.ipc_timeout
        )
        if answer.status is FlushStatus.OK:
            return replies.ETRN_STARTED
        if answer.status is FlushStatus.DENY:
            log.warning("reject: ETRN %.100s... from %s", site, self.namaddr)
            return replies.etrn_not_eligible(site)
        if answer.status is FlushStatus.BAD:
            log.warning("bad ETRN %.100s... from %s", site, self.namaddr)
        else:
            log.warning("unable to talk to fast flush service: %s", answer.text or answer.status)
        return replies.ETRN_UNABLE

    def help(self, argument: str) -> Reply:
        names = ["HELO", "EHLO", "MAIL", "RCPT", "DATA", "BDAT", "RSET", "NOOP", "VRFY", "ETRN"]
        names.append("QUIT")
        return reply(214, "2.0.0 Commands: " + " ".join(names))

    def starttls(self, argument: str) -> Reply:
        """READY_TO_START_TLS, after which the server does the handshake, or a refusal."""
        tls = self.service.tls
        if self.tls is not None:
            return replies.TLS_ALREADY_ACTIVE
        if argument:
            return replies.STARTTLS_SYNTAX
        if tls.level is TlsLevel.NONE or not self.offers("STARTTLS"):
            return replies.NOT_IMPLEMENTED
        if tls.context is None:
            return replies.TLS_UNAVAILABLE
        if self.transaction is not None:
            return replies.MAIL_IN_PROGRESS
        return replies.READY_TO_START_TLS

    def tls_started(self, info: TlsInfo) -> None:
        """The handshake after STARTTLS is done: forget what the client said before (RFC 3207)."""
        self.tls = info
        self.ok_stats["starttls"] += 1
        self.sasl_username = self.sasl_method = None
        self._exchange = None
        self.helo_name = None
        self.esmtp = False
        self.pipelining = False
        self.transaction = None
        if self.service.tls.loglevel >= 1:
            log.info(
                "Anonymous TLS connection established from %s: %s", self.namaddr, info.summary()
            )

    def _mechanisms(self) -> tuple[str, ...]:
        sasl = self.service.sasl
        if sasl is None or not self.offers("AUTH"):
            return ()
        return sasl.mechanisms(tls_active=self.tls is not None)

    def auth(self, argument: str) -> Reply:
        """AUTH MECHANISM [INITIAL-RESPONSE]: a 334 challenge, or the exchange's outcome."""
        mechanisms = self._mechanisms()
        if not mechanisms:
            return replies.AUTH_NOT_ENABLED
        if self.transaction is not None:
            return replies.MAIL_IN_PROGRESS
        if self.sasl_username is not None:
            return replies.ALREADY_AUTHENTICATED
        words = argument.split()
        if not 1 <= len(words) <= 2:
            return replies.AUTH_SYNTAX
        mechanism = words[0].upper()
        if mechanism not in mechanisms:
            return self._auth_refused(mechanism, "Invalid authentication mechanism")
        self._exchange = Exchange(mechanism)
        return self._auth_step(words[1] if len(words) == 2 else None)

    def sasl_response(self, line: bytes) -> Reply:
        """The client's line after a 334: the next challenge or the exchange's outcome."""
        exchange = self._exchange
        assert exchange is not None
        text = line.decode("ascii", "replace").strip()
        if text == "*":
            self._exchange = None
            log.warning("%s: SASL %s authentication aborted", self.namaddr, exchange.mechanism)
            self.error_count += 1
            return replies.AUTH_ABORTED
        outcome = self._auth_step(text)
        if outcome.code != 334:
            self._count("AUTH", "auth", outcome)
            self.stats["auth"] -= 1  # the AUTH command itself was counted already
        return outcome

    def _auth_step(self, response: str | None) -> Reply:
        exchange = self._exchange
        assert exchange is not None
        step = exchange.step(response)
        if isinstance(step, Challenge):
            return replies.auth_challenge(step.text)
        self._exchange = None
        if not isinstance(step, Credentials):
            return self._auth_refused(exchange.mechanism, step.reason)
        sasl = self.service.sasl
        assert sasl is not None
        peer = Peer(self.client.address, self.client.local_address, secured=self.tls is not None)
        checked = sasl.backend.check(step, peer)
        if checked.ok:
            self.sasl_username = checked.username
            self.sasl_method = exchange.mechanism
            return replies.AUTHENTICATED
        if checked.temporary:
            return self._auth_refused(exchange.mechanism, checked.reason, temporary=True)
        return self._auth_refused(exchange.mechanism, checked.reason)

    def _auth_refused(self, mechanism: str, reason: str, *, temporary: bool = False) -> Reply:
        log.warning("%s: SASL %s authentication failed: %s", self.namaddr, mechanism, reason)
        if temporary:
            return replies.auth_failed_temporarily(reason)
        return replies.auth_failed(reason)

    # -- queueing --------------------------------------------------------------------------
    def _new_instance(self) -> str:
        """Postfix's instance attribute: process, time and a count, new for each MAIL."""
        self._transactions += 1
        now = time.time()
        seconds, micro = int(now), int(now % 1 * 1_000_000)
        return f"{os.getpid():x}.{seconds:x}.{micro:x}.{self._transactions:x}"

    def _queue(self, transaction: Transaction, content: bytes) -> Reply:
        transaction.size = len(content)
        self.transaction = transaction  # the facts of END-OF-MESSAGE are this transaction's
        try:
            verdict = self.service.checks.at_end_of_data(self.facts())
        finally:
            self.transaction = None
        if verdict is not None and verdict.reply is not None:
            self._log_reject("END-OF-MESSAGE", verdict.reply)
            return verdict.reply
        actions = {v.action for v in transaction.actions}
        if Action.DISCARD in actions:
            log.info("NOQUEUE: discard: message from %s", self.namaddr)
            return reply(250, "2.0.0 Ok: discarded")
        submission = Submission(
            sender=transaction.sender,
            recipients=tuple(transaction.recipients),
            origin=Origin.SMTP,
            client=ClientInfo(
                log_client_name=self.client.name,
                log_client_address=self.client.address,
                log_client_port=self.client.port,
                log_helo_name=self.helo_name,
                log_protocol_name=self.received_protocol,
                sasl_method=self.sasl_method,
                sasl_username=self.sasl_username,
            ),
            ret=transaction.ret,
            envid=transaction.envid,
            smtputf8=transaction.smtputf8,
            body_type=transaction.body_type,
            hold=Action.HOLD in actions,
            received_comments=self.received_comments(),
        )
        try:
            accepted = self.service.cleanup.submit(submission, content)
        except CleanupError as exc:
            return reply(exc.code, f"{exc.status.dsn} {exc.status.text}")
        except Exception as exc:
            log.error("cannot queue a message from %s: %s", self.namaddr, exc)
            log_traceback(log, exc)
            return reply(451, "4.3.0 Error: queue file write error")
        client = self.client.namaddr(self.settings.smtpd_client_port_logging)
        if self.sasl_username is not None:
            client += f", sasl_method={self.sasl_method}, sasl_username={self.sasl_username}"
        log.info("client=%s", client, extra={"queue_id": accepted.queue_id})
        trigger(str(Path(self.settings.socket_directory) / "qmgr"), WAKEUP, timeout=1.0)
        return replies.queued(accepted.queue_id)


# --------------------------------------------------------------------------------------
# Parsing the arguments of MAIL and RCPT
# --------------------------------------------------------------------------------------
def _split_path_argument(argument: str, keyword: str) -> tuple[str, list[str]] | None:
    """(path, parameters) of `FROM:<path> P=V ...`; None when the keyword is missing."""
    if argument[: len(keyword)].upper() != keyword:
        return None
    rest = argument[len(keyword) :].lstrip(" \t")
    if not rest:
        return None
    if rest.startswith("<"):
        end = _closing_bracket(rest)
        if end < 0:
            return rest, []
        return rest[: end + 1], rest[end + 1 :].split()
    path, _, parameters = rest.partition(" ")
    return path, parameters.split()


def _closing_bracket(text: str) -> int:
    """Index of the `>` that closes the path, skipping quoted strings; -1 if none."""
    quoted = escaped = False
    for index, char in enumerate(text):
        if escaped:
            escaped = False
        elif char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif char == ">" and not quoted:
            return index
    return -1


def _xtext_decode(value: str) -> str | None:
    """RFC 3461 xtext, decoded; None when it is not xtext. Case is kept."""
    out = []
    index = 0
    while index < len(value):
        char = value[index]
        if char == "+":
            digits = value[index + 1 : index + 3]
            if len(digits) != 2 or not all(c in string.hexdigits for c in digits):
                return None
            out.append(chr(int(digits, 16)))
            index += 3
            continue
        if char not in _XTEXT_CHARS:
            return None
        out.append(char)
        index += 1
    decoded = "".join(out)
    if not decoded or any(ord(c) < 32 or ord(c) > 126 for c in decoded):
        return None
    return decoded


def _parse_notify(value: str) -> Notify | None:
    words = [w.upper() for w in value.split(",")]
    if words == ["NEVER"]:
        return Notify.NEVER
    flags = Notify(0)
    for word in words:
        if word not in ("SUCCESS", "FAILURE", "DELAY"):
            return None
        flags |= Notify[word]
    return flags


def _parse_orcpt(value: str) -> str | None:
    """`rfc822;xtext` -> `rfc822;decoded`, the address type and address as given."""
    address_type, semicolon, address = value.partition(";")
    if not semicolon or not address_type or not address_type.isascii():
        return None
    if not all(c.isalnum() or c == "-" for c in address_type):
        return None
    if address_type.lower() == "utf-8":
        decoded: str | None = address if address.isprintable() else None
    else:
        decoded = _xtext_decode(address)
    if decoded is None or len(value) > 500:
        return None
    return f"{address_type};{decoded}"


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else "?" for c in text)


_VERBS = {
    "HELO": Session.helo,
    "EHLO": Session.ehlo,
    "MAIL": Session.mail,
    "RCPT": Session.rcpt,
    "DATA": Session.data,
    "BDAT": Session.bdat,
    "RSET": Session.rset,
    "NOOP": Session.noop,
    "QUIT": Session.quit,
    "VRFY": Session.vrfy,
    "ETRN": Session.etrn,
    "HELP": Session.help,
    "STARTTLS": Session.starttls,
    "AUTH": Session.auth,
}
