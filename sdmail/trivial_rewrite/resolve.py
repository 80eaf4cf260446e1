"""trivial-rewrite's "resolve": an address's class, transport, next hop and recipient.

Postfix's resolve request, as a library used by cleanup, smtpd and qmgr.  A
`Resolver` is built once per configuration (it opens its tables then) and answers
`resolve(address)` with a frozen `Resolved(addr_class, transport, nexthop,
recipient, flags)`.  The steps, in Postfix's order:

1. Local domains are stripped repeatedly: while the domain after the last `@` is
   local ($mydestination, or an `[ip]` literal of $inet_interfaces or
   $proxy_interfaces), it is cut off and the rest rewritten (`user%host`,
   `host!user`, `user@host` are routing operators here), so `user@remote@localhost`
   and `user%remote@localhost` resolve to `user@remote` and are NOT local.  An
   empty local part becomes $empty_address_recipient (MAILER-DAEMON); an address
   with no domain at all gets `@$myhostname`.  The last local domain stripped is
   put back on the recipient.
2. The recipient domain is checked: an invalid host name, or a bare IP address
   without resolve_numeric_domain (with it, `user@1.2.3.4` becomes
   `user@[1.2.3.4]`), sets the ERROR flag and the class DEFAULT with transport
   `error` (qmgr bounces such mail with 5.1.3 bad address syntax).
3. A local part that still holds `@`, `!` or `%` sets the ROUTED flag (smtpd
   must not relay such addresses), whatever swap_bangpath and allow_percent_hack say.
4. The class: LOCAL (local_transport, next hop the domain), VIRTUAL_ALIAS
   ($virtual_alias_domains: transport `error`, next hop `5.1.1 User unknown in
   virtual alias table`, since cleanup must have aliased every valid address
   away), VIRTUAL_MAILBOX ($virtual_mailbox_domains: virtual_transport, the
   domain), RELAY ($relay_domains: relay_transport, $relayhost or the domain),
   DEFAULT (default_transport, $relayhost or the domain).  A class transport
   written `transport:nexthop` overrides the next hop (`local:$myhostname` puts
   every local domain in one queue).
5. $transport_maps overrides transport and next hop, except for VIRTUAL_ALIAS,
   with Postfix's semantics: `:` changes nothing; `smtp:` sets the transport and
   resets the next hop to the recipient domain; `:[gw]` keeps the transport and
   sets the next hop; `error:` alone means "Address is undeliverable".  The keys
   are tried in transport(5) order as sdmail.core.tables.addr_find gives it:
   `user+ext@domain`, `user@domain`, `domain`, its parents (`.parent`, or `parent`
   when transport_maps is in parent_domain_matches_subdomains), then `*`; regexp
   and pcre tables are asked for the whole address only.

The address extension stays on the recipient; `sdmail.core.address.split_extension`
splits it where a caller needs to.  Quoted local parts are looked into for routing
operators (Postfix's resolve_dequoted = yes; `no` is not supported), since the
internal form carries no quotes.

Failure modes: building a Resolver raises ResolveError for a class transport with
an empty transport name, and MatchListError (naming the parameter) for a bad
domain list or a table that cannot be opened.  `resolve` raises ResolveError when
an interface list cannot be turned into addresses or the address does not settle,
and lets a table's TableError through: both mean "try again later", never "no
such domain".
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from sdmail.core.address import (
    IPAddress,
    is_address_literal,
    is_ip_address,
    is_valid_hostname,
    parse_address_literal,
    split_address,
)
from sdmail.core.match_list import (
    DomainList,
    LookupTable,
    MatchListError,
    StringList,
    TableOpener,
    open_registered_table,
)
from sdmail.core.records import RewriteContext
from sdmail.core.tables.addr_find import LookupSettings, transport_keys
from sdmail.trivial_rewrite.interfaces import InterfaceError, interface_addresses
from sdmail.trivial_rewrite.rewrite import RewriteSettings, rewrite_step

# Postfix's fixed service name for mail that bounces with the next hop as its text.
ERROR_TRANSPORT = "error"
VIRTUAL_ALIAS_NEXTHOP = "5.1.1 User unknown in virtual alias table"
BAD_SYNTAX_NEXTHOP = "5.1.3 bad address syntax"
UNDELIVERABLE_NEXTHOP = "Address is undeliverable"
_ROUTING_OPERATORS = frozenset("@!%")


class ResolveError(Exception):
    """A configuration or address the resolver cannot work with; the text says which."""


class AddressClass(enum.Enum):
    """Postfix's address classes, in the order the resolver checks them."""

    LOCAL = "local"
    VIRTUAL_ALIAS = "alias"
    VIRTUAL_MAILBOX = "virtual"
    RELAY = "relay"
    DEFAULT = "default"


class ResolveFlag(enum.Flag):
    NONE = 0
    ROUTED = enum.auto()  # the local part still holds @ ! or %
    ERROR = enum.auto()  # the recipient domain is not a valid host name or literal


@dataclass(frozen=True)
class Resolved:
    """Where one recipient goes: class, transport, next hop, and the recipient itself."""

    addr_class: AddressClass
    transport: str
    nexthop: str
    recipient: str
    flags: ResolveFlag


@dataclass(frozen=True)
class ResolveSettings(RewriteSettings):
    """The parameters of resolving (and of the rewriting it does on the way)."""

    myhostname: str
    mydestination: tuple[str, ...]
    inet_interfaces: tuple[str, ...]
    proxy_interfaces: tuple[str, ...]
    inet_protocols: tuple[str, ...]
    virtual_alias_domains: tuple[str, ...]
    virtual_mailbox_domains: tuple[str, ...]
    relay_domains: tuple[str, ...]
    parent_domain_matches_subdomains: tuple[str, ...]
    local_transport: str
    virtual_transport: str
    relay_transport: str
    default_transport: str
    relayhost: str
    transport_maps: tuple[str, ...]
    recipient_delimiter: str
    owner_request_special: bool
    double_bounce_sender: str
    empty_address_recipient: str
    resolve_numeric_domain: bool
    resolve_null_domain: bool


class _CachingOpener:
    """Opens each table spec once, however many lists name it."""

    def __init__(self, opener: TableOpener) -> None:
        self._opener = opener
        self._open: dict[str, LookupTable] = {}

    def __call__(self, spec: str) -> LookupTable:
        if spec not in self._open:
            self._open[spec] = self._opener(spec)
        return self._open[spec]


class Resolver:
    """Resolves addresses under one configuration; tables are opened once, here."""

    def __init__(self, settings: ResolveSettings, table_opener: TableOpener | None = None) -> None:
        self.settings = settings
        for name in (
            "local_transport",
            "virtual_transport",
            "relay_transport",
            "default_transport",
        ):
            if not getattr(settings, name).partition(":")[0]:
                raise ResolveError(f"parameter {name}: null transport is not allowed")
        opener = _CachingOpener(table_opener or open_registered_table)
        parent_style = set(settings.parent_domain_matches_subdomains)
        self._mydestination = StringList(settings.mydestination, opener, name="mydestination")
        self._virtual_alias_domains = StringList(
            settings.virtual_alias_domains, opener, name="virtual_alias_domains"
        )
        self._virtual_mailbox_domains = StringList(
            settings.virtual_mailbox_domains, opener, name="virtual_mailbox_domains"
        )
        self._relay_domains = DomainList(
            settings.relay_domains, "relay_domains" in parent_style, opener, name="relay_domains"
        )
        self._transport_parent_style = "transport_maps" in parent_style
        # Transport lookups never copy an extension into the result.
        self._lookup_settings = LookupSettings(
            recipient_delimiter=settings.recipient_delimiter,
            owner_request_special=settings.owner_request_special,
            double_bounce_sender=settings.double_bounce_sender,
            propagate_unmatched_extensions=(),
        )
        self._transport_maps = [
            _open_named(opener, spec, "transport_maps") for spec in settings.transport_maps
        ]
        self._own_addresses: frozenset[IPAddress] | None = None

    # -- step 1: local domains ---------------------------------------------------------
    def _own_interface_addresses(self) -> frozenset[IPAddress]:
        if self._own_addresses is None:
            s = self.settings
            try:
                self._own_addresses = interface_addresses(
                    s.inet_interfaces, s.inet_protocols, name="inet_interfaces"
                ) | interface_addresses(
                    s.proxy_interfaces, s.inet_protocols, name="proxy_interfaces"
                )
            except InterfaceError as exc:
                raise ResolveError(str(exc)) from None
        return self._own_addresses

    def is_local_domain(self, domain: str) -> bool:
        """True for a domain in $mydestination or an `[ip]` of this machine's interfaces.

        One trailing dot is ignored, as in Postfix's resolve_local.
        """
        if domain.endswith("."):
            domain = domain[:-1]
        if not domain or domain.endswith("."):
            return False
        if self._mydestination.matches(domain):
            return True
        if is_address_literal(domain):
            try:
                address = parse_address_literal(domain)
            except ValueError:
                return False
            return address in self._own_interface_addresses()
        return False

    def _strip_local_domains(self, address: str) -> tuple[str, bool]:
        """(recipient, remote): ADDRESS with local domains stripped and put back."""
        s = self.settings
        saved_domain: str | None = None
        current = address
        for _ in range(len(address) + 100):
            if "@" in current and current.endswith(".") and not current.endswith(("..", "@.")):
                current = current[:-1]
            if s.resolve_null_domain and current.endswith("@"):
                current = current[:-1]
            local, at, domain = current.rpartition("@")
            if at:
                if domain and not self.is_local_domain(domain):
                    return current, True
                current, saved_domain = local, domain
            if (
                "@" in current
                or (s.swap_bangpath and "!" in current)
                or (s.allow_percent_hack and "%" in current)
            ):
                current = rewrite_step(current, RewriteContext.LOCAL, s)
                continue
            if not current:
                current = s.empty_address_recipient
                continue
            if saved_domain is None:
                current = f"{current}@{s.myhostname}"
                continue
            return f"{current}@{saved_domain}", False
        raise ResolveError(f"resolve_addr: <{address}>: giving up after too many iterations")

    # -- the whole request -------------------------------------------------------------
    def resolve(self, address: str) -> Resolved:
        """Class, transport, next hop and final recipient of the internal-form ADDRESS."""
        s = self.settings
        recipient, remote = self._strip_local_domains(address)
        local, domain = split_address(recipient)
        flags = ResolveFlag.NONE
        if is_address_literal(domain):
            if not _valid_literal(domain):
                flags |= ResolveFlag.ERROR
        elif not is_valid_hostname(domain):
            if s.resolve_numeric_domain and is_ip_address(domain) and ":" not in domain:
                domain = f"[{domain}]"
                recipient = f"{local}@{domain}"
                remote = remote and not self.is_local_domain(domain)
            else:
                flags |= ResolveFlag.ERROR
        if flags & ResolveFlag.ERROR:
            return Resolved(
                AddressClass.DEFAULT, ERROR_TRANSPORT, BAD_SYNTAX_NEXTHOP, recipient, flags
            )
        if _ROUTING_OPERATORS & set(local):
            flags |= ResolveFlag.ROUTED

        addr_class, channel, nexthop = self._classify(domain, remote)
        transport, _, class_nexthop = channel.partition(":")
        if class_nexthop:
            nexthop = class_nexthop
        if addr_class is not AddressClass.VIRTUAL_ALIAS and self._transport_maps:
            transport, nexthop = self._apply_transport_maps(recipient, domain, transport, nexthop)
        return Resolved(addr_class, transport, nexthop, recipient, flags)

    def _classify(self, domain: str, remote: bool) -> tuple[AddressClass, str, str]:
        """(class, class transport as configured, next hop) of a recipient domain."""
        s = self.settings
        if not remote:
            return AddressClass.LOCAL, s.local_transport, domain
        if self._virtual_alias_domains.matches(domain):
            return AddressClass.VIRTUAL_ALIAS, ERROR_TRANSPORT, VIRTUAL_ALIAS_NEXTHOP
        if self._virtual_mailbox_domains.matches(domain):
            return AddressClass.VIRTUAL_MAILBOX, s.virtual_transport, domain
        nexthop = s.relayhost or domain
        if self._relay_domains.matches(domain):
            return AddressClass.RELAY, s.relay_transport, nexthop
        return AddressClass.DEFAULT, s.default_transport, nexthop

    # -- step 5: transport_maps ----------------------------------------------------------
    def _lookup_transport(self, recipient: str) -> str | None:
        keys = transport_keys(recipient, self._lookup_settings, self._transport_parent_style)
        for key in keys:
            for table in self._transport_maps:
                if key.fixed_only and not table.fixed:
                    continue
                value = table.lookup(key.text)
                if value is not None:
                    return value
        return None

    def _apply_transport_maps(
        self, recipient: str, domain: str, transport: str, nexthop: str
    ) -> tuple[str, str]:
        value = self._lookup_transport(recipient)
        if value is None:
            return transport, nexthop
        new_transport, _, new_nexthop = value.strip().partition(":")
        if not new_transport:
            return transport, new_nexthop or nexthop
        if new_nexthop:
            return new_transport, new_nexthop
        if new_transport == ERROR_TRANSPORT:
            return new_transport, UNDELIVERABLE_NEXTHOP
        return new_transport, domain


def _valid_literal(domain: str) -> bool:
    try:
        parse_address_literal(domain)
    except ValueError:
        return False
    return True


def _open_named(opener: TableOpener, spec: str, name: str) -> LookupTable:
    try:
        return opener(spec)
    except MatchListError as exc:
        raise MatchListError(exc.message, name) from None
