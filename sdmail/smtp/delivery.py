"""One delivery request across the destination's servers, with Postfix's rules for trouble
(smtp_connect.c and smtp_trouble.c).

The next hop gives destinations (smtp/nexthop.py), then the fallback relays; each gives
servers (smtp/servers.py), at most smtp_mx_address_limit addresses and
smtp_mx_session_limit sessions that got past the greeting. A connection that fails is
logged (`connect to mx[192.0.2.1]:25: Connection refused`) and the next server tried; so is
a greeting, HELO or TLS failure. The last server to be tried is the "final server": there
a temporary problem defers the recipients it concerns; on any earlier server a temporary
problem keeps them for the next one (logged as `QUEUEID: host mx[...] said: 451 ...`). A
permanent reply bounces at once, whichever server gave it (`soft_bounce = yes` defers
instead). Recipients left when every server was tried take the last problem's status, or
`4.3.0 server unavailable or unable to receive mail`; a permanent problem with relayhost or
a fallback relay is deferred as a configuration problem (4.3.5).

Per recipient the verdict is a status (the server's own words for 2xx: `250 2.0.0 Ok:
queued as ...`; `host mx[...] said: 550 5.1.1 ... (in reply to RCPT TO command)` for a
refusal) and the relay to log (`mx.example.org[192.0.2.1]:25`, `none` without a session).
`site_failure` is set when recipients were deferred because the destination itself failed
(connection, greeting, TLS, a lost session) and no session with it completed: qmgr's
negative feedback.

Clean sessions go to the connection cache (smtp/cache.py) and the next request for the
same destination starts with one of them, after an RSET probe, when the cache's policy
for the destination allows (busy, or in smtp_connection_cache_destinations).

Each verdict carries Postfix's message statistics for the log's `delays=a/b/c/d` and
`conn_use=N`: c runs until the transaction starts (MAIL FROM) on the session that
carried it, so DNS, connecting, greeting, EHLO, TLS, an RSET probe and earlier sessions
that failed are set-up time; d is the transaction. A recipient that fails before any
transaction has all its time as set-up (Postfix's smtp_bulk_fail).

Failure modes: `Delivery.run` never raises for what a server, DNS or the next hop does;
every recipient gets a verdict.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from dataclasses import dataclass, field, replace

from sdmail.core.dns import DnsError, Resolver
from sdmail.core.dsn import Status
from sdmail.core.log import msg_info, msg_warning
from sdmail.core.match_list import StringList
from sdmail.core.tables.table import TableError
from sdmail.smtp.cache import CachePolicy, ConnectionCache
from sdmail.smtp.nexthop import (
    InetDestination,
    NexthopError,
    UnixDestination,
    parse_destination,
    parse_lmtp_nexthop,
    parse_smtp_nexthop,
)
from sdmail.smtp.protocol import Job, TlsPlan, Trouble, TroubleKind, handshake, transaction
from sdmail.smtp.reply import Reply
from sdmail.smtp.servers import Finder, LookupFailure
from sdmail.smtp.session import ConnectFailed, ConversationFailed, Endpoint, Session, connect
from sdmail.smtp.settings import ClientSettings
from sdmail.smtp.tls import TlsContexts, match_names, usable_tlsa

log = logging.getLogger("sdmail")

NO_RELAY = "none"
_SMTP_PORT = 25


@dataclass(frozen=True)
class Verdict:
    """One recipient's status and relay, with Postfix's message statistics: when the
    connection was set up (the start of the transaction; the moment of failure when no
    connection got that far), when the verdict came, and which transaction of its
    connection it was (CONN_USE)."""

    status: Status
    relay: str
    conn_setup_done: float = 0.0
    done: float = 0.0
    conn_use: int = 1
    dsn_passed: bool = False  # the server took DSN: NOTIFY=SUCCESS is its to honour


@dataclass
class Client:
    """What every delivery of this agent shares: settings, DNS, TLS contexts, the cache,
    and the destinations whose connections are always cached."""

    settings: ClientSettings
    finder: Finder
    resolver: Resolver | None
    tls: TlsContexts
    cache: ConnectionCache = field(default_factory=ConnectionCache)
    cache_destinations: StringList = field(default_factory=lambda: StringList(()))


@dataclass
class Outcome:
    verdicts: list[Verdict]
    site_failure: bool


class Delivery:
    """One request: JOB over TRANSPORT, with CLIENT's settings; `run()` gives the verdicts."""

    def __init__(self, client: Client, job: Job, transport: str, preactive_delay: float) -> None:
        self.client = client
        self.settings = client.settings
        self.job = job
        self.label = f"{transport}:{job.nexthop}"
        self.preactive_delay = preactive_delay
        self.verdicts: dict[int, Verdict] = {}
        self.kept: set[int] = set()
        self.final_server = False
        self.why: Status | None = None
        self.completed_session = False
        self.site_failure = False
        self.setup_done: float | None = None  # the current session's transaction began
        self.conn_use = 1
        self.caching = CachePolicy()

    # -- the Recorder the conversation reports to ---------------------------------------------
    def pending(self) -> list[int]:
        return [
            i
            for i in range(len(self.job.recipients))
            if i not in self.verdicts and i not in self.kept
        ]

    def left(self) -> bool:
        return len(self.verdicts) < len(self.job.recipients)

    def rcpt_done(self, index: int, reply: Reply, session: Session) -> None:
        dsn = reply.dsn if reply.dsn.startswith("2") else "2.0.0"
        verdict = self._verdict(Status(dsn, reply.text), session.endpoint.namaddrport)
        self.verdicts[index] = replace(verdict, dsn_passed=session.features.dsn)

    def rcpt_fail(self, index: int, status: Status, session: Session) -> None:
        self.why = status
        if self._soft(status) and not self.final_server:
            msg_info(self.job.queue_id, status.text)
            self.kept.add(index)
            return
        self.verdicts[index] = self._verdict(self._final(status), session.endpoint.namaddrport)

    def mesg_fail(self, status: Status, session: Session) -> None:
        self._bulk_fail(status, session.endpoint.namaddrport, throttle=False)

    # -- trouble --------------------------------------------------------------------------------
    def _soft(self, status: Status) -> bool:
        return status.is_temporary or (status.is_permanent and self.settings.shared.soft_bounce)

    def _final(self, status: Status) -> Status:
        if status.is_permanent and self.settings.shared.soft_bounce:
            return Status("4" + status.dsn[1:], status.text)
        return status

    def _bulk_fail(
        self, status: Status, relay: str, *, throttle: bool, soft: bool | None = None
    ) -> None:
        """Postfix's smtp_bulk_fail: keep the pending recipients for the next server, or give
        them all this status."""
        self.why = status
        is_soft = self._soft(status) if soft is None else soft
        pending = self.pending()
        if is_soft and not self.final_server:
            msg_info(self.job.queue_id, status.text)
            self.kept.update(pending)
            return
        final = self._final(status)
        for index in pending:
            self.verdicts[index] = self._verdict(final, relay)
        deferred = bool(pending) and final.is_temporary
        if throttle and deferred and not self.completed_session:
            self.site_failure = True

    def _verdict(self, status: Status, relay: str) -> Verdict:
        """STATUS now; outside a transaction all the time so far was set-up (Postfix's
        smtp_bulk_fail: `delays=.../.../30/0` for a connection that timed out)."""
        now = time.time()
        if self.setup_done is None:
            return Verdict(status, relay, now, now)
        return Verdict(status, relay, self.setup_done, now, self.conn_use)

    # -- the run ----------------------------------------------------------------------------------
    async def run(self) -> Outcome:
        try:
            destinations = self._destinations()
        except NexthopError as exc:
            msg_warning(self.job.queue_id, f"bad next-hop destination {self.job.nexthop!r}: {exc}")
            destinations = []
            self.why = Status("4.3.5", "server configuration error")
        if destinations:
            first_site = destinations[0]
            key = first_site.path if isinstance(first_site, UnixDestination) else first_site.host
            try:
                always = self.client.cache_destinations.matches(key)
            except TableError as exc:
                msg_warning(self.job.queue_id, f"connection cache destinations: {exc}")
                always = False
            self.caching = self.client.cache.begin(self.label, self.settings, always=always)
        try:
            await self._each(destinations)
        finally:
            if destinations:
                self.client.cache.end(self.label)
        if self.left():
            self._give_up(destinations)
        verdicts = [self.verdicts[i] for i in range(len(self.job.recipients))]
        return Outcome(verdicts, self.site_failure)

    async def _each(self, destinations: list[InetDestination | UnixDestination]) -> None:
        first = True
        for index, destination in enumerate(destinations):
            final_nexthop = index == len(destinations) - 1
            if isinstance(destination, UnixDestination):
                await self._unix(destination)
            else:
                final_nexthop = await self._inet(destination, final_nexthop, first=first)
            first = False
            if not self.left() or final_nexthop:
                break

    def _destinations(self) -> list[InetDestination | UnixDestination]:
        s = self.settings
        found: list[InetDestination | UnixDestination]
        if s.lmtp:
            found = list(parse_lmtp_nexthop(self.job.nexthop, s.tcp_port))
            if isinstance(found[0], UnixDestination):
                return found
        else:
            found = list(parse_smtp_nexthop(self.job.nexthop, s.tcp_port))
        self.non_fallback = len(found)
        for relay in s.fallback_relay:
            for site in relay.replace(",", " ").split():
                found.append(parse_destination(site, s.tcp_port, lookup_mx=not s.lmtp))
        return found

    def _give_up(self, destinations: list[InetDestination | UnixDestination]) -> None:
        """The recipients no server took: Postfix's final smtp_sess_fail."""
        status = self.why or Status("4.3.0", "server unavailable or unable to receive mail")
        if not status.is_temporary and destinations and self._configured_relay(destinations):
            status = Status("4.3.5", status.text)
        self.final_server = True
        self.kept.clear()
        self._bulk_fail(status, NO_RELAY, throttle=True, soft=status.is_temporary)

    def _configured_relay(self, destinations: list[InetDestination | UnixDestination]) -> bool:
        """Whether the last problem concerned relayhost or a fallback relay (configuration)."""
        if self.settings.lmtp:
            return False
        relayhost = self.settings.shared.relayhost.strip()
        tried_fallback = len(destinations) > getattr(self, "non_fallback", len(destinations))
        return tried_fallback or (bool(relayhost) and self.job.nexthop.strip() == relayhost)

    # -- LMTP over a UNIX-domain socket ------------------------------------------------------------
    async def _unix(self, destination: UnixDestination) -> None:
        endpoint = Endpoint(self.settings.shared.myhostname, destination.path, 0)
        self.final_server = True
        reused = self.client.cache.take(self.label) if self.caching.load else None
        if reused is not None and await self._reuse(reused, final=True):
            return
        level = (
            "none" if self.settings.tls.level in ("", "none", "may") else self.settings.tls.level
        )
        await self._attempt(endpoint, TlsPlan(level), counted=[0], limit=1)

    # -- TCP ------------------------------------------------------------------------------------
    async def _inet(
        self, destination: InetDestination, final_nexthop: bool, *, first: bool
    ) -> bool:
        """Try DESTINATION's servers; whether no later destination may be tried."""
        try:
            servers = await self.client.finder.find_servers(self.job.queue_id, destination)
        except LookupFailure as exc:
            self.why = exc.status
            return final_nexthop or exc.loops
        if servers.i_am_mx:
            final_nexthop = True
        endpoints = list(servers.endpoints)
        sessions = [0]
        if first and self.caching.load:
            reused = self.client.cache.take(self.label)
            if reused is not None:
                endpoints = [e for e in endpoints if e.address != reused.endpoint.address]
                last = not endpoints or self.settings.mx_session_limit == 1
                if await self._reuse(reused, final_nexthop and last):
                    sessions[0] = 1
                if not self.left():
                    return True
        limit = self.settings.mx_address_limit
        if limit > 0:
            endpoints = endpoints[: max(0, limit - sessions[0])]
        session_limit = self.settings.mx_session_limit
        position = 0
        plain_retry = False
        while position < len(endpoints) and self.left():
            if session_limit and sessions[0] >= session_limit:
                break
            endpoint = endpoints[position]
            self.final_server = final_nexthop and position == len(endpoints) - 1
            try:
                plan = TlsPlan("none") if plain_retry else await self._plan(endpoint, destination)
            except Trouble as exc:
                self._bulk_fail(exc.status, NO_RELAY, throttle=True)
                position += 1
                continue
            retry = await self._attempt(
                endpoint, plan, counted=sessions, limit=session_limit, final_nexthop=final_nexthop
            )
            if retry and not plain_retry:
                plain_retry = True  # the same address again, without TLS
                continue
            plain_retry = False
            position += 1
        self.kept.clear()
        return final_nexthop

    async def _reuse(self, session: Session, final: bool) -> bool:
        """Deliver over a cached SESSION after an RSET probe; False when it was dead."""
        try:
            reply = await session.command("RSET", self.settings.rset_timeout, "sending RSET probe")
        except ConversationFailed:
            await session.close()
            return False
        if not reply.is_positive:
            await session.quit(self.settings.quit_timeout, wait_for_reply=False)
            return False
        self.final_server = final
        await self._transfer(session)
        self.kept.clear()
        return True

    async def _plan(self, endpoint: Endpoint, destination: InetDestination) -> TlsPlan:
        """The TLS this server must offer (see smtp/tls.py)."""
        tls = self.settings.tls
        level = tls.level or "none"
        fallback = (
            level == "may" and self.preactive_delay >= self.settings.shared.minimal_backoff_time
        )
        if level in ("verify", "secure"):
            names = match_names(level, tls, endpoint.host, destination.host)
            return TlsPlan(level, tuple(names))
        if level not in ("dane", "dane-only"):
            return TlsPlan(level, plaintext_fallback=fallback)
        resolver = self.client.resolver
        if resolver is None or _is_address(endpoint.host):
            if level == "dane-only":
                raise Trouble(_no_tlsa(endpoint), TroubleKind.SITE)
            return TlsPlan("may")
        try:
            answer = await resolver.tlsa(endpoint.host, endpoint.port)
        except DnsError:
            raise Trouble(
                Status("4.7.5", f"TLSA lookup error for {endpoint.host}:{endpoint.port}"),
                TroubleKind.SITE,
            ) from None
        usable = usable_tlsa(answer.records) if answer.secure else []
        if usable:
            # DANE-TA's names: the TLSA base domain (the MX host) or the next-hop domain.
            bases = tuple(n.lower().rstrip(".") for n in (endpoint.host, destination.host))
            return TlsPlan("dane", match_names=bases, tlsa=tuple(usable))
        if answer.secure and answer.records:
            return TlsPlan("encrypt")
        if level == "dane-only":
            raise Trouble(_no_tlsa(endpoint), TroubleKind.SITE)
        return TlsPlan("may")

    # -- one server ------------------------------------------------------------------------------
    async def _attempt(
        self,
        endpoint: Endpoint,
        plan: TlsPlan,
        *,
        counted: list[int],
        limit: int,
        final_nexthop: bool = True,
    ) -> bool:
        """Connect, handshake and transfer to ENDPOINT; True when the same server should be
        tried again without TLS."""
        s = self.settings
        try:
            session = await connect(endpoint, s.connect_timeout)
        except ConnectFailed as exc:
            self.why = exc.status
            log.info("%s", exc.status.text)  # Postfix logs these without the queue ID
            return False
        loop_detect = not s.lmtp and endpoint.port == _SMTP_PORT
        try:
            await handshake(session, s, self.job, plan, self.client.tls, loop_detect=loop_detect)
        except Trouble as exc:
            retry = exc.retry_plain
            soft = None
            if exc.kind is TroubleKind.SOFT_UNLESS_FINAL:
                soft = not self.final_server
            if not retry:
                self._bulk_fail(
                    exc.status,
                    session.endpoint.namaddrport,
                    throttle=exc.kind is TroubleKind.SITE,
                    soft=soft,
                )
            else:
                msg_info(self.job.queue_id, f"{exc.status.text}; trying again without TLS")
            await session.quit(s.quit_timeout, wait_for_reply=not s.skip_quit_response)
            self.kept.clear()
            return retry
        except ConversationFailed as exc:
            await session.close()
            self.kept.clear()
            if session.tls and plan.level == "may" and plan.plaintext_fallback:
                # Postfix retries after a TLS session failure as after a handshake failure.
                msg_info(self.job.queue_id, f"{exc.status.text}; trying again without TLS")
                return True
            self._bulk_fail(exc.status, session.endpoint.namaddrport, throttle=True)
            return False
        counted[0] += 1
        if limit and counted[0] >= limit:
            self.final_server = final_nexthop
        await self._transfer(session)
        self.kept.clear()
        return False

    async def _transfer(self, session: Session) -> None:
        """One transaction on SESSION, then cache or close it."""
        s = self.settings
        self.setup_done = time.time()  # Postfix takes it at MAIL FROM
        self.conn_use = session.deliveries + 1
        try:
            clean = await transaction(session, s, self.job, self)
        except ConversationFailed as exc:
            self._bulk_fail(exc.status, session.endpoint.namaddrport, throttle=True)
            await session.close()
            return
        finally:
            # Time spent with this session counts as set-up for the next one.
            self.setup_done = None
            self.conn_use = 1
        self.completed_session = True
        if clean and self.caching.store and self.client.cache.store(self.label, session, s):
            return
        await session.quit(s.quit_timeout, wait_for_reply=not s.skip_quit_response)


def _no_tlsa(endpoint: Endpoint) -> Status:
    return Status("4.7.5", f"no usable TLSA records for {endpoint.host}:{endpoint.port}")


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True
