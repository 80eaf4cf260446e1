"""The SMTP and LMTP conversation on one session: greeting, EHLO/HELO/LHLO, STARTTLS, and
one mail transaction (Postfix's smtp_proto.c).

`handshake` reads the greeting and says hello: SMTP sends EHLO (smtp_always_send_ehlo)
and falls back to HELO when EHLO is refused (a 421 ends the session), LMTP sends LHLO.
It then applies the TLS level (smtp/tls.py): STARTTLS when offered and wanted, the
certificate checks of verify/secure/dane, EHLO again inside TLS. A refusal to talk (non-2xx
greeting, HELO, LHLO) is a site failure: `host mx[192.0.2.1] refused to talk to me: 554 ...`,
a 5xx greeting counted as 4xx (smtp_skip_5xx_greeting).

`transaction` sends MAIL FROM (SIZE, BODY, SMTPUTF8, RET, ENVID as the server offers
them), one RCPT TO per recipient (NOTIFY, ORCPT), DATA and the message, pipelined when
the server offers PIPELINING, and reports each reply to a `Recorder`: a recipient
accepted at the end of DATA (`rcpt_done`), refused (`rcpt_fail`, with `host X said: 550
5.1.1 ... (in reply to RCPT TO command)`), or the whole message refused (`mesg_fail`).
LMTP reads one reply per accepted recipient after the final dot. Before MAIL FROM it
refuses a message larger than the server's SIZE (5.3.4) and converts 8-bit MIME to
7-bit for a server without 8BITMIME (smtp/downgrade.py); a message that needs SMTPUTF8
goes only to a server that offers it.

Failure modes: `handshake` raises `Trouble` (the session cannot be used: refused, TLS
required but impossible, certificate not verified, SMTPUTF8 missing) or
session.ConversationFailed / session.TlsFailed; `transaction` raises ConversationFailed
when the connection is lost or times out, after reporting what was decided before.
"""

from __future__ import annotations

import enum
import ipaddress
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from sdmail.core.address import AddressError, quote_address, with_ascii_domain
from sdmail.core.dns import TlsaRecord
from sdmail.core.dsn import Status
from sdmail.core.log import msg_info
from sdmail.core.records import Envelope, Notify
from sdmail.smtp import content as data
from sdmail.smtp.downgrade import DowngradeError, downgrade
from sdmail.smtp.reply import Features, Reply, ehlo_features
from sdmail.smtp.session import Session, TlsFailed
from sdmail.smtp.settings import ClientSettings
from sdmail.smtp.tls import REQUIRED_LEVELS, TlsContexts, certificate_matches, dane_verified


class TroubleKind(enum.Enum):
    SITE = "site"  # the server cannot be used: throttles the destination (site failure)
    MESSAGE = "message"  # this message cannot go to this server: no throttling
    SOFT_UNLESS_FINAL = "soft-unless-final"  # try other servers; bounce on the last one


class Trouble(Exception):
    """The session cannot deliver: STATUS for every remaining recipient, and how it counts.
    RETRY_PLAIN: an opportunistic TLS handshake failed and the same server may be tried
    again without TLS."""

    def __init__(self, status: Status, kind: TroubleKind, *, retry_plain: bool = False) -> None:
        super().__init__(status.text)
        self.status = status
        self.kind = kind
        self.retry_plain = retry_plain


@dataclass(frozen=True)
class TlsPlan:
    """What TLS the session must have: LEVEL (none, may, encrypt, verify, secure, dane),
    the names a verified certificate must carry, the TLSA records the dane level checks,
    and whether a failed opportunistic handshake may be retried in plain text."""

    level: str
    match_names: tuple[str, ...] = ()
    tlsa: tuple[TlsaRecord, ...] = ()
    plaintext_fallback: bool = False


@dataclass(frozen=True)
class Job:
    """One delivery request as the conversation needs it."""

    queue_id: str
    nexthop: str
    sender: str
    envelope: Envelope
    recipients: tuple[JobRecipient, ...]
    content: bytes
    header_block: bytes
    encoding: str
    requires_smtputf8: bool
    verify_only: bool = False  # sendmail -bv: MAIL and RCPT, then RSET; no DATA

    @property
    def size(self) -> int:
        """The message size as SMTP counts it (CRLF line ends)."""
        return len(self.content) + self.content.count(b"\n")


@dataclass(frozen=True)
class JobRecipient:
    address: str
    orig_address: str | None
    notify: int
    orcpt: str | None


class Recorder(Protocol):
    """Where the conversation reports its verdicts (smtp/delivery.py applies Postfix's
    final-server rules to them)."""

    def rcpt_done(self, index: int, reply: Reply, session: Session) -> None: ...

    def rcpt_fail(self, index: int, status: Status, session: Session) -> None: ...

    def mesg_fail(self, status: Status, session: Session) -> None: ...

    def pending(self) -> list[int]: ...


STARTTLS_STAGE = "receiving the STARTTLS response"
GREETING_STAGE = "receiving the initial server greeting"


# --------------------------------------------------------------------------------------
# Handshake
# --------------------------------------------------------------------------------------
async def handshake(
    session: Session,
    settings: ClientSettings,
    job: Job,
    plan: TlsPlan,
    contexts: TlsContexts,
    *,
    loop_detect: bool,
) -> None:
    """Greeting, hello and TLS on a new SESSION (see the module docstring)."""
    greeting = await greet(session, settings)
    session.features = await hello(
        session, settings, greeting, job.nexthop, loop_detect=loop_detect
    )
    require_smtputf8(session, job)
    if plan.level == "none":
        return
    if not session.features.starttls:
        if plan.level in REQUIRED_LEVELS:
            raise tls_not_offered(session)
        return
    reply = await session.command("STARTTLS", settings.tls.handshake_timeout, STARTTLS_STAGE)
    if not reply.is_positive:
        if plan.level in REQUIRED_LEVELS:
            raise tls_refused(session, reply)
        return
    host = session.endpoint.host
    server_name = "" if session.endpoint.unix or _is_address(host) else host
    try:
        await session.start_tls(
            contexts.for_level(plan.level), server_name, settings.tls.handshake_timeout
        )
    except TlsFailed as exc:
        if exc.verification:
            raise not_verified() from None
        opportunistic = plan.level == "may"
        raise Trouble(
            Status("4.7.5", "Cannot start TLS: handshake failure"),
            TroubleKind.MESSAGE if opportunistic else TroubleKind.SITE,
            retry_plain=opportunistic and plan.plaintext_fallback,
        ) from None
    trust = _check_certificate(session, plan)
    if settings.tls.loglevel >= 1:
        msg_info(
            job.queue_id,
            f"{trust} TLS connection established to {session.endpoint.namaddrport}: "
            f"{session.tls_summary}",
        )
    session.features = await hello(session, settings, None, job.nexthop, loop_detect=loop_detect)


def _check_certificate(session: Session, plan: TlsPlan) -> str:
    """How far the certificate is trusted (Untrusted, Verified); Trouble when the level
    demands more."""
    der, fields = session.peer_certificate()
    if plan.level in ("verify", "secure"):
        if not certificate_matches(fields, plan.match_names):
            raise not_verified()
        return "Verified"
    if plan.level == "dane":
        certificates, leaf_fields = session.peer_chain()
        if not certificates and der is not None:
            certificates = [der]  # DANE-EE needs no more
        if not dane_verified(certificates, leaf_fields, plan.tlsa, plan.match_names):
            raise not_verified()
        return "Verified"
    return "Untrusted"


def not_verified() -> Trouble:
    return Trouble(Status("4.7.5", "Server certificate not verified"), TroubleKind.SITE)


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


async def greet(session: Session, settings: ClientSettings) -> Reply:
    """Read the greeting; Trouble (site) when it is not 2xx."""
    greeting = await session.read_reply(settings.helo_timeout, GREETING_STAGE)
    if not greeting.is_positive:
        if greeting.is_permanent and settings.skip_5xx_greeting:
            greeting = greeting.with_dsn_class("4")
        raise refused(session, greeting)
    return greeting


async def hello(
    session: Session,
    settings: ClientSettings,
    greeting: Reply | None,
    nexthop: str,
    *,
    loop_detect: bool,
) -> Features:
    """EHLO (falling back to HELO) or LHLO; the features offered. GREETING None: again
    after STARTTLS, EHLO only."""
    name = settings.helo_name
    if settings.lmtp:
        reply = await session.command(
            f"LHLO {name}", settings.helo_timeout, "performing the LHLO handshake"
        )
        if not reply.is_positive:
            raise refused(session, reply)
        return _features(session, settings, reply, nexthop, loop_detect)
    shared = settings.shared
    esmtp = greeting is None or shared.smtp_always_send_ehlo or _says_esmtp(greeting)
    if greeting is not None and shared.smtp_never_send_ehlo:
        esmtp = False
    if esmtp:
        reply = await session.command(
            f"EHLO {name}", settings.helo_timeout, "performing the EHLO handshake"
        )
        if reply.is_positive:
            return _features(session, settings, reply, nexthop, loop_detect)
        if reply.code == 421:
            raise refused(session, reply)
    reply = await session.command(
        f"HELO {name}", settings.helo_timeout, "performing the HELO handshake"
    )
    if not reply.is_positive:
        raise refused(session, reply)
    return Features()


def _says_esmtp(greeting: Reply) -> bool:
    return any("ESMTP" in line[4:].upper().split() for line in greeting.lines)


def _features(
    session: Session, settings: ClientSettings, reply: Reply, nexthop: str, loop_detect: bool
) -> Features:
    features = ehlo_features(reply, settings.discard_ehlo_keywords)
    myhostname = settings.shared.myhostname
    if loop_detect and features.helo_name.lower() == myhostname.lower():
        best = session.endpoint.best_mx
        raise Trouble(
            Status("5.4.6" if best else "4.4.6", f"mail for {nexthop} loops back to myself"),
            TroubleKind.SITE,
        )
    return features


def refused(session: Session, reply: Reply) -> Trouble:
    status = _reply_status(reply, f"host {session.endpoint.namaddr} refused to talk to me: ")
    return Trouble(status, TroubleKind.SITE)


def _reply_status(reply: Reply, prefix: str, suffix: str = "") -> Status:
    """Postfix's vsmtp_fill_dsn: a reply that is neither 4xx nor 5xx is a protocol error."""
    dsn = reply.dsn
    if dsn[0] not in "45":
        return Status("5.5.0", f"Protocol error: {prefix}{reply.text}{suffix}")
    return Status(dsn, f"{prefix}{reply.text}{suffix}")


def require_smtputf8(session: Session, job: Job) -> None:
    if job.requires_smtputf8 and not session.features.smtputf8:
        raise Trouble(
            Status(
                "5.6.7",
                "message requires SMTPUTF8, but no server was found that supports SMTPUTF8."
                f" The last attempted server was {session.endpoint.namaddr}",
            ),
            TroubleKind.SOFT_UNLESS_FINAL,
        )


def tls_refused(session: Session, reply: Reply) -> Trouble:
    status = _reply_status(
        reply, f"TLS is required, but host {session.endpoint.namaddr} refused to start TLS: "
    )
    return Trouble(status, TroubleKind.SITE)


def tls_not_offered(session: Session) -> Trouble:
    return Trouble(
        Status("4.7.4", f"TLS is required, but was not offered by host {session.endpoint.namaddr}"),
        TroubleKind.SITE,
    )


# --------------------------------------------------------------------------------------
# The mail transaction
# --------------------------------------------------------------------------------------
async def transaction(
    session: Session, settings: ClientSettings, job: Job, recorder: Recorder
) -> bool:
    """Deliver JOB to the recipients the recorder has pending; True when the session ended
    the transaction cleanly (it may carry another message)."""
    features = session.features
    name = session.endpoint.namaddr
    if features.size_limit and job.size > features.size_limit:
        recorder.mesg_fail(
            Status(
                "5.3.4",
                f"message size {job.size} exceeds size limit {features.size_limit} "
                f"of server {name}",
            ),
            session,
        )
        return True
    downgrading = (
        not features.eightbitmime
        and job.encoding == data.EIGHT_BIT
        and not settings.shared.disable_mime_output_conversion
    )
    body = job.content
    if downgrading:
        try:
            body = downgrade(body)
        except DowngradeError as exc:
            recorder.mesg_fail(exc.status, session)
            return True
    payload, folded = data.data_bytes(body, settings.line_length_limit)
    if folded:
        msg_info(
            job.queue_id,
            f"breaking line > {settings.line_length_limit} bytes with <CR><LF>SPACE",
        )
    indexes = recorder.pending()
    commands = [mail_command(job, features, downgrading)]
    commands += [rcpt_command(job.recipients[i], features) for i in indexes]
    if job.verify_only:
        return await _probe(session, settings, recorder, indexes, commands)
    commands.append("DATA")
    if features.pipelining:
        await session.send(
            "".join(c + "\r\n" for c in commands).encode("utf-8", "surrogateescape"),
            settings.mail_timeout,
            "sending MAIL FROM",
        )
    accepted = await _envelope_replies(session, settings, recorder, indexes, commands)
    if accepted is None:
        return await _reset(session, settings)
    data_reply = await _reply_to(session, settings, "DATA", features.pipelining)
    if data_reply.kind != 3:
        if accepted:
            recorder.mesg_fail(_said(name, data_reply, "DATA command"), session)
        return await _reset(session, settings)
    if not accepted:  # a pipelining server said 354 with no recipient: send an empty message
        await session.send(b".\r\n", settings.data_xfer_timeout, "sending message body")
        await session.read_reply(settings.data_done_timeout, _DOT_STAGE)
        return await _reset(session, settings)
    await session.send(payload, settings.data_xfer_timeout, "sending message body")
    if settings.lmtp:
        for index in accepted:
            reply = await session.read_reply(settings.data_done_timeout, _DOT_STAGE)
            if reply.is_positive:
                recorder.rcpt_done(index, reply, session)
            else:
                recorder.rcpt_fail(index, _said(name, reply, "end of DATA command"), session)
    else:
        reply = await session.read_reply(settings.data_done_timeout, _DOT_STAGE)
        if reply.is_positive:
            for index in accepted:
                recorder.rcpt_done(index, reply, session)
        else:
            recorder.mesg_fail(_said(name, reply, "end of DATA command"), session)
    session.deliveries += 1
    return True


_DOT_STAGE = "sending end of data -- message may be sent more than once"


async def _probe(
    session: Session,
    settings: ClientSettings,
    recorder: Recorder,
    indexes: Sequence[int],
    commands: list[str],
) -> bool:
    """Ask the server about the recipients (MAIL, RCPT) and end with RSET: what a
    `sendmail -bv` probe learns, without sending the message."""
    name = session.endpoint.namaddr
    pipelined = session.features.pipelining
    if pipelined:
        await session.send(
            "".join(c + "\r\n" for c in commands).encode("utf-8", "surrogateescape"),
            settings.mail_timeout,
            "sending MAIL FROM",
        )
    mail = await _reply_to(session, settings, commands[0], pipelined)
    if not mail.is_positive:
        recorder.mesg_fail(_said(name, mail, "MAIL FROM command"), session)
        if not pipelined:
            return await _reset(session, settings)
    for index, command in zip(indexes, commands[1:], strict=True):
        reply = await _reply_to(session, settings, command, pipelined)
        if not mail.is_positive:
            continue
        if reply.is_positive:
            recorder.rcpt_done(index, reply, session)
        else:
            recorder.rcpt_fail(index, _said(name, reply, "RCPT TO command"), session)
    return await _reset(session, settings)


async def _envelope_replies(
    session: Session,
    settings: ClientSettings,
    recorder: Recorder,
    indexes: Sequence[int],
    commands: list[str],
) -> list[int] | None:
    """Send (unless pipelined) and read MAIL and RCPT; the accepted recipients, or None
    when the transaction must be abandoned (sender refused, no recipient accepted)."""
    pipelined = session.features.pipelining
    name = session.endpoint.namaddr
    mail = await _reply_to(session, settings, commands[0], pipelined)
    mail_refused = not mail.is_positive
    if mail_refused:
        recorder.mesg_fail(_said(name, mail, "MAIL FROM command"), session)
        if not pipelined:
            return None
    accepted: list[int] = []
    for index, command in zip(indexes, commands[1:-1], strict=True):
        reply = await _reply_to(session, settings, command, pipelined)
        if mail_refused:
            continue
        if reply.is_positive:
            accepted.append(index)
        else:
            recorder.rcpt_fail(index, _said(name, reply, "RCPT TO command"), session)
    if not pipelined and not accepted:
        return None
    if mail_refused:
        await _reply_to(session, settings, "DATA", pipelined)  # read and ignore
        return None
    return accepted


async def _reply_to(
    session: Session, settings: ClientSettings, command: str, pipelined: bool
) -> Reply:
    """The reply to COMMAND, sending it first unless it went in a pipelined batch."""
    verb = command.split(" ", 1)[0].upper()
    timeout, stage = {
        "MAIL": (settings.mail_timeout, "sending MAIL FROM"),
        "RCPT": (settings.rcpt_timeout, "sending RCPT TO"),
        "DATA": (settings.data_init_timeout, "sending DATA command"),
    }[verb]
    if pipelined:
        return await session.read_reply(timeout, stage)
    return await session.command(command, timeout, stage)


async def _reset(session: Session, settings: ClientSettings) -> bool:
    """RSET after an abandoned transaction; True when the server took it."""
    reply = await session.command("RSET", settings.rset_timeout, "sending final RSET")
    return reply.is_positive


def _said(name: str, reply: Reply, request: str) -> Status:
    return _reply_status(reply, f"host {name} said: ", f" (in reply to {request})")


def mail_command(job: Job, features: Features, downgrading: bool) -> str:
    command = f"MAIL FROM:<{smtp_path(job.sender, features)}>"
    if features.size and not downgrading:
        command += f" SIZE={job.size}"
    if features.eightbitmime:
        if job.encoding == data.EIGHT_BIT:
            command += " BODY=8BITMIME"
        elif job.encoding == data.SEVEN_BIT:
            command += " BODY=7BIT"
    envelope = job.envelope
    if features.dsn:
        if envelope.envid:
            command += f" ENVID={data.xtext(envelope.envid)}"
        if envelope.ret is not None:
            command += f" RET={envelope.ret.value}"
    if features.smtputf8 and envelope.smtputf8:
        command += " SMTPUTF8"
    return command


def rcpt_command(recipient: JobRecipient, features: Features) -> str:
    command = f"RCPT TO:<{smtp_path(recipient.address, features)}>"
    if features.dsn:
        orcpt = recipient.orcpt
        if not orcpt and recipient.orig_address:
            kind = "rfc822" if recipient.orig_address.isascii() else "utf-8"
            orcpt = f"{kind};{recipient.orig_address}"
        if orcpt:
            command += f" ORCPT={data.orcpt_parameter(orcpt)}"
        if recipient.notify:
            command += f" NOTIFY={notify_text(recipient.notify)}"
    return command


def notify_text(notify: int) -> str:
    """The NOTIFY= value of the core/records.Notify bits (NEVER, or SUCCESS,FAILURE,DELAY)."""
    flags = Notify(notify)
    if Notify.NEVER in flags:
        return "NEVER"
    names = [n for n in ("SUCCESS", "FAILURE", "DELAY") if Notify[n] in flags]
    return ",".join(names)


def smtp_path(address: str, features: Features) -> str:
    """ADDRESS as an RFC 5321 path: the local part quoted when it must be, an IDN domain in
    ASCII for a server without SMTPUTF8."""
    if not address:
        return ""
    try:
        if not features.smtputf8:
            address = with_ascii_domain(address)
        return quote_address(address)
    except AddressError:
        return address
