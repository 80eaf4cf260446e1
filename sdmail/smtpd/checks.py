"""smtpd's access control: Postfix's restriction lists and recipient validation.

A `Checks` is built once per listener configuration. It parses every restriction list
(`smtpd_client_restrictions`, `smtpd_helo_restrictions`, `smtpd_sender_restrictions`,
`smtpd_relay_restrictions`, `smtpd_recipient_restrictions`, `smtpd_data_restrictions`,
`smtpd_end_of_data_restrictions` and the lists named in `smtpd_restriction_classes`),
opens the tables they name, and answers the session's questions with a `Reply` to send
instead of the normal one, or None.

Semantics (Postfix's smtpd_check.c): each list is read left to right; the first
restriction that permits ends that list (the next list is still read), the first that
rejects or defers decides the command; DUNNO and no match go on. With
`smtpd_delay_reject = yes` (the default) the client, HELO and sender lists are read at
RCPT time, before the relay and recipient lists, so a client is always told which
recipient was refused; with `no` they are read at CONNECT (the verdict is kept and given
to every MAIL and RCPT), HELO and MAIL. After the lists pass, a recipient is checked
against the tables of its address class (`smtpd_reject_unlisted_recipient`): local
(`local_recipient_maps`; postmaster and double-bounce always pass), virtual alias
(`virtual_alias_maps`), virtual mailbox (`virtual_mailbox_maps`), relay
(`relay_recipient_maps` when set); an address that canonical or virtual alias maps know
is valid in any class. The class comes from trivial-rewrite's Resolver, after the address
is brought to standard form in the local context, so the relay disguises (`u%remote@local`,
`remote!u@local`, `"u@remote"@local`, `@local:u@remote`, `u@LOCAL.`) are seen for what
they are; an address whose local part still holds `@ ! %` is "routed" and never counts as
an authorized destination (allow_untrusted_routing = no).

Restrictions: permit, reject, defer, permit_mynetworks, permit_sasl_authenticated,
reject_sender_login_mismatch and its authenticated / known / unauthenticated variants
(smtpd_sender_login_maps: address -> owning SASL logins), reject_unauth_pipelining (when the
server let improper pipelining pass: smtpd_forbid_unauth_pipelining = no),
permit_auth_destination, reject_unauth_destination, defer_unauth_destination,
reject_unlisted_recipient, reject_unknown_recipient_domain, reject_unknown_sender_domain
(DNS, through the `MailDomains` door), reject_non_fqdn_recipient, reject_non_fqdn_sender,
reject_non_fqdn_helo_hostname, reject_invalid_helo_hostname, check_client_access,
check_helo_access, check_sender_access, check_recipient_access (access(5) tables with
Postfix's key order and results: OK or a number, REJECT, DEFER, 4NN/5NN text, DUNNO, HOLD,
DISCARD, DEFER_IF_PERMIT and DEFER_IF_REJECT (kept for the end of the evaluation: a permit
becomes the deferral, a 5xx refusal the other), a restriction or a restriction class), the
DNS blocklists reject_rbl_client and reject_rhsbl_client / _reverse_client / _helo / _sender /
_recipient (dnsbl.py; `554 5.7.1 Service unavailable; Client host [ADDR] blocked using
ZONE[; TXT reason]`, maps_rbl_reject_code), and check_policy_service (policy.py: the
server's action is read as an access table result naming the list's subject; a server that
gives none yields smtpd_policy_service_default_action). The `protocol_state` of a check is
the command at hand (CONNECT, HELO/EHLO, MAIL, RCPT, DATA, END-OF-MESSAGE, VRFY), so with
smtpd_delay_reject the client list's policy requests say RCPT, as Postfix's do.
Not yet: the other Postfix restrictions in `_NOT_YET` (logged at start and skipped, so a
Postfix main.cf still starts), the other access actions (FILTER, REDIRECT, PREPEND, WARN:
logged and treated as DUNNO).

Failure modes: building a Checks raises ConfigError naming the parameter for an unknown
restriction, a restriction missing its table, a class without a definition, or relay and
recipient lists without one of reject_unauth_destination, defer_unauth_destination,
reject or defer (Postfix's "specify at least one working instance"), a policy service it
cannot parse; a table that cannot
be opened is logged and every lookup in it then fails temporarily (Postfix's surrogate
table). At run time nothing raises: a table or resolver failure becomes `451 4.3.0
<address>: Temporary lookup failure`, a DNS failure a 450 of the unknown-domain kind.
"""

from __future__ import annotations

import enum
import ipaddress
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol

from sdmail.core.address import (
    is_address_literal,
    is_valid_hostname,
    split_address,
    split_extension,
)
from sdmail.core.config import Config, ConfigError, bind, split_list
from sdmail.core.dns import DnsError
from sdmail.core.match_list import MatchListError, NetworkList
from sdmail.core.records import RewriteContext
from sdmail.core.tables import open_table
from sdmail.core.tables.addr_find import LookupSettings, address_keys, search
from sdmail.core.tables.table import Table, TableError
from sdmail.smtpd.dnsbl import (
    Blocklist,
    BlocklistError,
    Dns,
    client_query,
    domain_query,
    listed,
    parse_blocklist,
)
from sdmail.smtpd.policy import PolicyClient, PolicyError, PolicySettings, parse_service
from sdmail.smtpd.replies import LOOKUP_FAILURE_TEXT, Reply, reply
from sdmail.smtpd.tls import TlsInfo
from sdmail.trivial_rewrite.resolve import (
    AddressClass,
    Resolved,
    ResolveError,
    ResolveFlag,
    Resolver,
    ResolveSettings,
)
from sdmail.trivial_rewrite.rewrite import rewrite_address

log = logging.getLogger("sdmail.smtpd")

_MAX_CLASS_NESTING = 20
_TEMPORARY_RELAY_CODE = 454  # defer_unauth_destination's reply code (Postfix's)
_RELAY_STOPPERS = frozenset(
    {"reject_unauth_destination", "defer_unauth_destination", "reject", "defer"}
)
# DNS blocklists: what each looks up, and how its reply names it (Postfix's $rbl_class).
_BLOCKLISTS: dict[str, str] = {
    "reject_rbl_client": "Client host",
    "reject_rhsbl_client": "Client host",
    "reject_rhsbl_reverse_client": "Unverified Client host",
    "reject_rhsbl_helo": "Helo command",
    "reject_rhsbl_sender": "Sender address",
    "reject_rhsbl_recipient": "Recipient address",
}
_TABLE_RESTRICTIONS = frozenset(
    {"check_client_access", "check_helo_access", "check_sender_access", "check_recipient_access"}
)
# smtpd_sender_login_maps restrictions: (check authenticated clients, only for addresses the
# map knows, check unauthenticated clients).
_LOGIN_MISMATCH: dict[str, tuple[bool, bool, bool]] = {
    "reject_sender_login_mismatch": (True, False, True),
    "reject_authenticated_sender_login_mismatch": (True, False, False),
    "reject_known_sender_login_mismatch": (True, True, True),
    "reject_unauthenticated_sender_login_mismatch": (False, False, True),
}
_LOGIN_MISMATCH_CODE = 553  # Postfix's, fixed
_SIMPLE_RESTRICTIONS = frozenset(
    {
        "permit",
        "reject",
        "defer",
        "dunno",
        "permit_mynetworks",
        "permit_sasl_authenticated",
        "permit_auth_destination",
        "reject_unauth_destination",
        "defer_unauth_destination",
        "reject_unlisted_recipient",
        "reject_unknown_recipient_domain",
        "reject_unknown_sender_domain",
        "reject_non_fqdn_recipient",
        "reject_non_fqdn_sender",
        "reject_non_fqdn_helo_hostname",
        "reject_invalid_helo_hostname",
        "reject_invalid_hostname",
        "reject_non_fqdn_hostname",
        "reject_unauth_pipelining",
        *_LOGIN_MISMATCH,
    }
)
# Postfix restrictions sdmail does not do yet, with the number of arguments each takes: a
# main.cf written for Postfix still starts; each is logged once at start and skipped.
_NOT_YET: dict[str, int] = {
    "check_reverse_client_hostname_access": 1,
    "check_client_mx_access": 1,
    "check_client_ns_access": 1,
    "check_helo_mx_access": 1,
    "check_helo_ns_access": 1,
    "check_sender_mx_access": 1,
    "check_sender_ns_access": 1,
    "check_recipient_mx_access": 1,
    "check_recipient_ns_access": 1,
    "check_ccert_access": 1,
    "sleep": 1,
    "reject_unknown_client_hostname": 0,
    "reject_unknown_reverse_client_hostname": 0,
    "reject_unknown_helo_hostname": 0,
    "reject_unverified_recipient": 0,
    "reject_unverified_sender": 0,
    "reject_unlisted_sender": 0,
    "reject_multi_recipient_bounce": 0,
    "reject_plaintext_session": 0,
    "permit_tls_client_certs": 0,
    "permit_tls_all_clientcerts": 0,
    "permit_mx_backup": 0,
    "warn_if_reject": 0,
}
_POSTMASTER = "postmaster"


@dataclass(frozen=True)
class CheckSettings:
    """The parameters the restrictions read; field names are parameter names."""

    mynetworks: tuple[str, ...]
    smtpd_client_restrictions: tuple[str, ...]
    smtpd_helo_restrictions: tuple[str, ...]
    smtpd_sender_restrictions: tuple[str, ...]
    smtpd_relay_restrictions: tuple[str, ...]
    smtpd_recipient_restrictions: tuple[str, ...]
    smtpd_data_restrictions: tuple[str, ...]
    smtpd_end_of_data_restrictions: tuple[str, ...]
    smtpd_etrn_restrictions: tuple[str, ...]
    smtpd_restriction_classes: tuple[str, ...]
    smtpd_sender_login_maps: tuple[str, ...]
    smtpd_delay_reject: bool
    smtpd_reject_unlisted_recipient: bool
    smtpd_null_access_lookup_key: str
    smtpd_reject_footer: str
    local_recipient_maps: tuple[str, ...]
    virtual_alias_maps: tuple[str, ...]
    virtual_mailbox_maps: tuple[str, ...]
    relay_recipient_maps: tuple[str, ...]
    canonical_maps: tuple[str, ...]
    recipient_canonical_maps: tuple[str, ...]
    relay_domains_reject_code: int
    maps_rbl_reject_code: int
    access_map_reject_code: int
    access_map_defer_code: int
    reject_code: int
    defer_code: int
    unknown_local_recipient_reject_code: int
    unknown_virtual_alias_reject_code: int
    unknown_virtual_mailbox_reject_code: int
    unknown_relay_recipient_reject_code: int
    unknown_address_reject_code: int
    non_fqdn_reject_code: int
    invalid_hostname_reject_code: int
    show_user_unknown_table_name: bool
    allow_untrusted_routing: bool
    soft_bounce: bool
    parent_domain_matches_subdomains: tuple[str, ...]
    recipient_delimiter: str
    owner_request_special: bool
    double_bounce_sender: str


# --------------------------------------------------------------------------------------
# What the checks look at, and what they say
# --------------------------------------------------------------------------------------
@dataclass
class Facts:
    """What is known about the session when a check runs; None: not (yet) known."""

    client_name: str
    client_address: str
    helo: str | None = None
    sender: str | None = None
    recipient: str | None = None
    sasl_username: str | None = None
    improper_pipelining: bool = False
    # What only policy servers are told (policy.py).
    state: str = "CONNECT"  # Postfix's protocol_state: the command being checked
    protocol_name: str = "SMTP"
    recipient_count: int = 0
    size: int = 0
    instance: str = ""
    sasl_method: str | None = None
    tls: TlsInfo | None = None
    client_port: int | None = None
    server_address: str | None = None
    server_port: int | None = None
    etrn_site: str | None = None

    @property
    def client(self) -> str:
        return f"{self.client_name}[{self.client_address}]"


class Action(enum.Enum):
    """What an accepted message must become besides queued (access HOLD / DISCARD)."""

    HOLD = "hold"
    DISCARD = "discard"


@dataclass(frozen=True)
class Verdict:
    """A refusal (REPLY), or an action to remember for the message (ACTION) with its text."""

    reply: Reply | None = None
    action: Action | None = None
    text: str = ""


class DomainState(enum.Enum):
    EXISTS = "exists"
    NOT_FOUND = "not found"
    NULL_MX = "null MX"
    UNKNOWN = "temporary failure"


class MailDomains(Protocol):
    """The door to DNS: whether mail can be sent to a domain (MX, else A or AAAA)."""

    def state(self, domain: str) -> DomainState: ...


class DnsMailDomains:
    """MailDomains through the process's resolver (dnsbl.Dns)."""

    def __init__(self, dns: Dns) -> None:
        self.dns = dns

    def state(self, domain: str) -> DomainState:
        try:
            mx = self.dns.mx(domain)
            if mx.null_mx:
                return DomainState.NULL_MX
            if not mx.records:
                self.dns.addresses(domain)  # no MX: the domain's own address takes mail
            return DomainState.EXISTS
        except DnsError as exc:
            return DomainState.UNKNOWN if exc.temporary else DomainState.NOT_FOUND


# --------------------------------------------------------------------------------------
# Tables that could not be opened
# --------------------------------------------------------------------------------------
class _UnavailableTable(Table):
    """A table that failed to open: every lookup fails (Postfix's surrogate table)."""

    def __init__(self, spec: str, reason: str) -> None:
        super().__init__(spec)
        self.reason = reason

    def lookup(self, key: str) -> str | None:
        raise TableError(f"{self.spec} is unavailable: {self.reason}")


def _open_tables(specs: Sequence[str], parameter: str, cache: dict[str, Table]) -> list[Table]:
    tables = []
    for spec in specs:
        if spec not in cache:
            try:
                cache[spec] = open_table(spec)
            except TableError as exc:
                log.warning("%s: %s is unavailable: %s", parameter, spec, exc)
                cache[spec] = _UnavailableTable(spec, str(exc))
        tables.append(cache[spec])
    return tables


# --------------------------------------------------------------------------------------
# Parsed restriction lists
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Step:
    name: str
    tables: tuple[Table, ...] = ()
    argument: str = ""
    blocklist: Blocklist | None = None
    policy: PolicyClient | None = None


@dataclass(frozen=True)
class _Subject:
    """Who a reply names: `<name>: Class rejected: ...`."""

    name: str
    what: str


class _TemporaryFailure(Exception):
    """A lookup that could not be made; the reply names the address."""


@dataclass
class _Evaluation:
    """One RCPT's (or MAIL's...) evaluation: caches the resolved recipient, keeps actions."""

    facts: Facts
    resolved: dict[str, Resolved] = field(default_factory=dict)
    actions: list[Verdict] = field(default_factory=list)
    # DEFER_IF_PERMIT / DEFER_IF_REJECT met on the way: the reply that replaces a permit
    # (the lists all passed) or a 5xx reject.
    defer_if_permit: Verdict | None = None
    defer_if_reject: Verdict | None = None


class Checks:
    """The restrictions of one listener; see the module docstring."""

    def __init__(
        self,
        cfg: Config,
        resolver: Resolver | None = None,
        domains: MailDomains | None = None,
        dns: Dns | None = None,
    ) -> None:
        self.settings = s = bind(CheckSettings, cfg)
        self.policy_settings = bind(PolicySettings, cfg)
        self._policies: dict[str, PolicyClient] = {}
        self.resolver = resolver or Resolver(bind(ResolveSettings, cfg))
        self.rewrite_settings = self.resolver.settings
        self.dns = dns or Dns()
        self.domains = domains or DnsMailDomains(self.dns)
        self.lookup_settings = LookupSettings(
            recipient_delimiter=s.recipient_delimiter,
            owner_request_special=s.owner_request_special,
            double_bounce_sender=s.double_bounce_sender,
            propagate_unmatched_extensions=(),
        )
        self._access_parent_style = "smtpd_access_maps" in s.parent_domain_matches_subdomains
        try:
            self.mynetworks = NetworkList(s.mynetworks, name="mynetworks")
        except MatchListError as exc:
            raise ConfigError(exc.message, name="mynetworks") from None
        self._tables: dict[str, Table] = {}
        self._classes: dict[str, tuple[_Step, ...]] = {}
        for name in s.smtpd_restriction_classes:
            if not cfg.known(name):
                raise ConfigError(
                    "restriction class is listed but not defined", name="smtpd_restriction_classes"
                )
            self._classes[name] = ()
        for name in s.smtpd_restriction_classes:
            self._classes[name] = self._parse(split_list(cfg.get(name)), name)
        self.client_steps = self._parse(s.smtpd_client_restrictions, "smtpd_client_restrictions")
        self.helo_steps = self._parse(s.smtpd_helo_restrictions, "smtpd_helo_restrictions")
        self.sender_steps = self._parse(s.smtpd_sender_restrictions, "smtpd_sender_restrictions")
        self.relay_steps = self._parse(s.smtpd_relay_restrictions, "smtpd_relay_restrictions")
        self.recipient_steps = self._parse(
            s.smtpd_recipient_restrictions, "smtpd_recipient_restrictions"
        )
        self.data_steps = self._parse(s.smtpd_data_restrictions, "smtpd_data_restrictions")
        self.end_of_data_steps = self._parse(
            s.smtpd_end_of_data_restrictions, "smtpd_end_of_data_restrictions"
        )
        self.etrn_steps = self._parse(s.smtpd_etrn_restrictions, "smtpd_etrn_restrictions")
        self._check_relay_protection()
        self.local_recipient_maps = _open_tables(
            s.local_recipient_maps, "local_recipient_maps", self._tables
        )
        self.virtual_alias_maps = _open_tables(
            s.virtual_alias_maps, "virtual_alias_maps", self._tables
        )
        self.virtual_mailbox_maps = _open_tables(
            s.virtual_mailbox_maps, "virtual_mailbox_maps", self._tables
        )
        self.relay_recipient_maps = _open_tables(
            s.relay_recipient_maps, "relay_recipient_maps", self._tables
        )
        self.canonical_maps = _open_tables(
            (*s.recipient_canonical_maps, *s.canonical_maps), "canonical_maps", self._tables
        )
        self.sender_login_maps = _open_tables(
            s.smtpd_sender_login_maps, "smtpd_sender_login_maps", self._tables
        )

    # -- building ------------------------------------------------------------------------
    def _parse(self, items: Sequence[str], parameter: str) -> tuple[_Step, ...]:
        steps: list[_Step] = []
        words = iter(items)
        for word in words:
            name = word.lower()
            if name in _TABLE_RESTRICTIONS:
                spec = next(words, None)
                if spec is None:
                    raise ConfigError(f'restriction "{name}" needs a table', name=parameter)
                steps.append(_Step(name, tuple(_open_tables([spec], parameter, self._tables))))
            elif name in _BLOCKLISTS:
                text = next(words, None)
                try:
                    blocklist = parse_blocklist(text or "")
                except BlocklistError as exc:
                    raise ConfigError(f"{name}: {exc}", name=parameter) from None
                steps.append(_Step(name, argument=text or "", blocklist=blocklist))
            elif name == "check_policy_service":
                text = next(words, None)
                if text is None:
                    raise ConfigError(f'restriction "{name}" needs a server', name=parameter)
                steps.append(_Step(name, argument=text, policy=self._policy(text, parameter)))
            elif name in _NOT_YET:
                argument = " ".join(next(words, "") for _ in range(_NOT_YET[name]))
                shown = f"{name} {argument}".rstrip()
                log.warning("%s: %s is not supported yet; skipped", parameter, shown)
            elif name in _SIMPLE_RESTRICTIONS or word in self._classes:
                steps.append(_Step(name if name in _SIMPLE_RESTRICTIONS else word))
            else:
                raise ConfigError(f'unknown restriction "{word}"', name=parameter)
        return tuple(steps)

    def _policy(self, text: str, parameter: str) -> PolicyClient:
        """One client per service text, shared by every list that names it."""
        if text not in self._policies:
            try:
                endpoint, limits = parse_service(text, self.policy_settings)
            except PolicyError as exc:
                raise ConfigError(f"check_policy_service: {exc}", name=parameter) from None
            version = self.policy_settings.mail_version
            self._policies[text] = PolicyClient(endpoint, limits, version)
        return self._policies[text]

    def close(self) -> None:
        """Close the policy servers' idle connections (a reload replaced these Checks)."""
        for client in self._policies.values():
            client.close()

    def _check_relay_protection(self) -> None:
        names = {step.name for step in (*self.relay_steps, *self.recipient_steps)}
        if not names & _RELAY_STOPPERS:
            raise ConfigError(
                "in parameter smtpd_relay_restrictions or smtpd_recipient_restrictions, "
                "specify at least one working instance of: reject_unauth_destination, "
                "defer_unauth_destination, reject or defer",
                name="smtpd_relay_restrictions",
            )

    # -- the session's questions ---------------------------------------------------------
    def at_connect(self, facts: Facts) -> Verdict | None:
        """smtpd_client_restrictions now, unless they wait for RCPT (smtpd_delay_reject)."""
        if self.settings.smtpd_delay_reject:
            return None
        return self._run_lists(replace(facts, state="CONNECT"), [("client", self.client_steps)])

    def at_helo(self, facts: Facts) -> Verdict | None:
        if self.settings.smtpd_delay_reject:
            return None
        return self._run_lists(facts, [("helo", self.helo_steps)])

    def at_mail(self, facts: Facts) -> Verdict | None:
        if self.settings.smtpd_delay_reject:
            return None
        return self._run_lists(facts, [("sender", self.sender_steps)])

    def at_rcpt(self, facts: Facts) -> list[Verdict]:
        """Every list that applies at RCPT, then recipient validation.

        The result holds at most one refusal (last), after the HOLD/DISCARD actions met.
        """
        lists: list[tuple[str, tuple[_Step, ...]]] = []
        if self.settings.smtpd_delay_reject:
            lists += [
                ("client", self.client_steps),
                ("helo", self.helo_steps),
                ("sender", self.sender_steps),
            ]
        lists += [("recipient", self.relay_steps), ("recipient", self.recipient_steps)]
        evaluation = _Evaluation(replace(facts, state="RCPT"))
        refusal = self._unsettled(evaluation, lists)
        if refusal is None and self.settings.smtpd_reject_unlisted_recipient:
            refusal = self._guarded(evaluation, self._unlisted_recipient)
        refusal = self._settled(evaluation, refusal)
        return [*evaluation.actions, *([refusal] if refusal else [])]

    def at_data(self, facts: Facts) -> Verdict | None:
        return self._run_lists(facts, [("data", self.data_steps)])

    def at_end_of_data(self, facts: Facts) -> Verdict | None:
        facts = replace(facts, state="END-OF-MESSAGE")
        return self._run_lists(facts, [("end-of-data", self.end_of_data_steps)])

    def at_etrn(self, facts: Facts, site: str) -> Verdict | None:
        """ETRN SITE: the client and HELO lists that wait (smtpd_delay_reject), then
        smtpd_etrn_restrictions, whose refusals name `<SITE>: Etrn command`."""
        lists: list[tuple[str, tuple[_Step, ...]]] = []
        if self.settings.smtpd_delay_reject:
            lists += [("client", self.client_steps), ("helo", self.helo_steps)]
        lists.append(("etrn", self.etrn_steps))
        return self._run_lists(replace(facts, etrn_site=site, state="ETRN"), lists)

    def at_vrfy(self, facts: Facts) -> Verdict | None:
        """VRFY: the recipient's existence, as the unlisted-recipient check sees it."""
        return self._guarded(_Evaluation(facts), self._unlisted_recipient)

    # -- evaluation ----------------------------------------------------------------------
    def _run_lists(
        self, facts: Facts, lists: list[tuple[str, tuple[_Step, ...]]]
    ) -> Verdict | None:
        evaluation = _Evaluation(facts)
        return self._settled(evaluation, self._unsettled(evaluation, lists))

    @staticmethod
    def _settled(evaluation: _Evaluation, refusal: Verdict | None) -> Verdict | None:
        """REFUSAL, or what DEFER_IF_PERMIT / DEFER_IF_REJECT make of the outcome."""
        if refusal is None:
            return evaluation.defer_if_permit
        reply = refusal.reply
        if evaluation.defer_if_reject is not None and reply is not None and reply.code >= 500:
            return evaluation.defer_if_reject
        return refusal

    def _unsettled(
        self, evaluation: _Evaluation, lists: list[tuple[str, tuple[_Step, ...]]]
    ) -> Verdict | None:
        """The first refusal of LISTS (None: they all passed), DEFER_IF_* not yet applied."""
        facts = evaluation.facts
        for context, steps in lists:
            subject = self._subject(context, facts)

            def run(e: _Evaluation, s: tuple[_Step, ...] = steps, c: _Subject = subject) -> object:
                return self._run_steps(e, s, c, 0)

            outcome = self._guarded(evaluation, run)
            if isinstance(outcome, Verdict):
                return outcome
        return None

    def _guarded(
        self, evaluation: _Evaluation, check: Callable[[_Evaluation], object]
    ) -> Verdict | None:
        try:
            outcome = check(evaluation)
        except (TableError, ResolveError, _TemporaryFailure) as exc:
            log.warning("%s", exc)
            name = evaluation.facts.recipient or evaluation.facts.sender or ""
            return Verdict(self._reply(451, "4.3.0", f"<{name}>: {LOOKUP_FAILURE_TEXT}"))
        return outcome if isinstance(outcome, Verdict) else None

    def _subject(self, context: str, facts: Facts) -> _Subject:
        if context == "client":
            return _Subject(facts.client, "Client host")
        if context == "helo":
            return _Subject(facts.helo or "", "Helo command")
        if context == "sender":
            return _Subject(facts.sender or "", "Sender address")
        if context == "end-of-data":
            return _Subject("END-OF-MESSAGE", "End-of-data")
        if context == "etrn":
            return _Subject(facts.etrn_site or "", "Etrn command")
        if context == "recipient" or facts.recipient is not None:
            return _Subject(facts.recipient or "", "Recipient address")
        return _Subject("DATA", "Data command")

    def _run_steps(
        self, evaluation: _Evaluation, steps: Sequence[_Step], subject: _Subject, depth: int
    ) -> Verdict | bool | None:
        """True: permitted (the list ends); a Verdict with a reply: refused; None: no decision."""
        if depth > _MAX_CLASS_NESTING:
            raise _TemporaryFailure("restriction classes nested too deeply")
        for step in steps:
            outcome = self._step(evaluation, step, subject, depth)
            if outcome is True or (isinstance(outcome, Verdict) and outcome.reply is not None):
                return outcome
            if isinstance(outcome, Verdict):
                evaluation.actions.append(outcome)
        return None

    def _step(
        self, evaluation: _Evaluation, step: _Step, subject: _Subject, depth: int
    ) -> Verdict | bool | None:
        facts = evaluation.facts
        s = self.settings
        name = step.name
        if name in self._classes:
            return self._run_steps(evaluation, self._classes[name], subject, depth + 1)
        if name == "permit":
            return True
        if name == "dunno":
            return None
        if name == "reject":
            return self._refuse(s.reject_code, "5.7.1", subject, "Access denied")
        if name == "defer":
            return self._refuse(s.defer_code, "4.7.1", subject, "Access denied")
        if name == "permit_mynetworks":
            return self.mynetworks.matches(facts.client_address) or None
        if name == "permit_sasl_authenticated":
            return bool(facts.sasl_username) or None
        if name == "reject_unauth_pipelining":
            if not facts.improper_pipelining:
                return None
            text = "Improper use of SMTP command pipelining"
            return self._refuse(503, "5.5.0", subject, text)
        if name in _TABLE_RESTRICTIONS:
            return self._check_access(evaluation, step, subject, depth)
        if step.policy is not None:
            action = step.policy.ask(facts).strip()
            return self._access_result(evaluation, action, subject, depth)
        if name in ("reject_non_fqdn_helo_hostname", "reject_non_fqdn_hostname"):
            return self._non_fqdn_helo(facts)
        if name in ("reject_invalid_helo_hostname", "reject_invalid_hostname"):
            return self._invalid_helo(facts)
        if name == "reject_non_fqdn_sender":
            return self._non_fqdn(facts.sender, "Sender address")
        if name == "reject_unknown_sender_domain":
            return self._unknown_domain(evaluation, facts.sender, "Sender address", "4.1.8")
        if name in _LOGIN_MISMATCH:
            return self._sender_login_mismatch(facts, *_LOGIN_MISMATCH[name])
        if step.blocklist is not None:
            return self._blocklisted(facts, name, step.blocklist)
        if facts.recipient is None:
            return None  # a recipient restriction where there is no recipient yet
        if name == "reject_non_fqdn_recipient":
            return self._non_fqdn(facts.recipient, "Recipient address")
        if name == "reject_unknown_recipient_domain":
            return self._unknown_domain(evaluation, facts.recipient, "Recipient address", "4.1.2")
        if name == "reject_unlisted_recipient":
            return self._unlisted_recipient(evaluation)
        authorized = self._auth_destination(evaluation)
        if name == "permit_auth_destination":
            return authorized or None
        if authorized:
            return None
        code = s.relay_domains_reject_code
        if name == "defer_unauth_destination":
            code = _TEMPORARY_RELAY_CODE
        return Verdict(self._reply(code, "5.7.1", f"<{facts.recipient}>: Relay access denied"))

    # -- replies -------------------------------------------------------------------------
    def _reply(self, code: int, dsn: str, text: str) -> Reply:
        if self.settings.soft_bounce and code >= 500:
            code -= 100
        made = reply(code, f"{dsn} {text}").adjusted()
        return made.with_footer(self.settings.smtpd_reject_footer)

    def _refuse(self, code: int, dsn: str, subject: _Subject, text: str) -> Verdict:
        return Verdict(self._reply(code, dsn, f"<{subject.name}>: {subject.what} rejected: {text}"))

    # -- address class and relay ---------------------------------------------------------
    def resolve(self, evaluation: _Evaluation, address: str) -> Resolved:
        if address not in evaluation.resolved:
            canonical = rewrite_address(address, RewriteContext.LOCAL, self.rewrite_settings)
            evaluation.resolved[address] = self.resolver.resolve(canonical)
        return evaluation.resolved[address]

    def _auth_destination(self, evaluation: _Evaluation) -> bool:
        """Postfix's permit_auth_destination: a final or relay_domains destination."""
        recipient = evaluation.facts.recipient or ""
        resolved = self.resolve(evaluation, recipient)
        if "@" not in resolved.recipient:
            return True
        if resolved.flags & ResolveFlag.ERROR:
            return False
        if not self.settings.allow_untrusted_routing and resolved.flags & ResolveFlag.ROUTED:
            return False
        return resolved.addr_class is not AddressClass.DEFAULT

    # -- recipient validation --------------------------------------------------------------
    def _unlisted_recipient(self, evaluation: _Evaluation) -> Verdict | None:
        s = self.settings
        given = evaluation.facts.recipient or ""
        resolved = self.resolve(evaluation, given)
        address = resolved.recipient
        if resolved.flags & ResolveFlag.ERROR:
            return None  # qmgr bounces it; Postfix accepts it here too
        if self._found(self.canonical_maps, address) or self._found(
            self.virtual_alias_maps, address
        ):
            return None
        klass = resolved.addr_class
        if klass is AddressClass.LOCAL:
            if not s.local_recipient_maps or self._always_local(address):
                return None
            if self._found(self.local_recipient_maps, address):
                return None
            return self._user_unknown(s.unknown_local_recipient_reject_code, given, "local")
        if klass is AddressClass.VIRTUAL_ALIAS:
            return self._user_unknown(s.unknown_virtual_alias_reject_code, given, "virtual alias")
        if klass is AddressClass.VIRTUAL_MAILBOX:
            if self._found(self.virtual_mailbox_maps, address):
                return None
            return self._user_unknown(
                s.unknown_virtual_mailbox_reject_code, given, "virtual mailbox"
            )
        if klass is AddressClass.RELAY and self.relay_recipient_maps:
            if self._found(self.relay_recipient_maps, address):
                return None
            return self._user_unknown(s.unknown_relay_recipient_reject_code, given, "relay")
        return None

    def _always_local(self, address: str) -> bool:
        local, _ = split_address(address)
        folded = local.lower()
        return folded in (_POSTMASTER, self.settings.double_bounce_sender.lower())

    def _found(self, tables: Sequence[Table], address: str) -> bool:
        if not tables:
            return False
        keys = address_keys(address, self.lookup_settings, self.resolver.is_local_domain)
        return search(tables, keys) is not None

    def _user_unknown(self, code: int, given: str, table: str) -> Verdict:
        suffix = f" in {table} recipient table" if table in ("local", "relay") else ""
        if table in ("virtual alias", "virtual mailbox"):
            suffix = f" in {table} table"
        if not self.settings.show_user_unknown_table_name:
            suffix = ""
        text = f"<{given}>: Recipient address rejected: User unknown{suffix}"
        return Verdict(self._reply(code, "5.1.1", text))

    # -- DNS blocklists ------------------------------------------------------------------------
    def _blocklisted(self, facts: Facts, name: str, blocklist: Blocklist) -> Verdict | None:
        what, query = self._blocklist_query(facts, name, blocklist.zone)
        if query is None:
            return None
        listing = listed(self.dns, query, blocklist)
        if listing is None:
            return None
        text = f"Service unavailable; {_BLOCKLISTS[name]} [{what}] blocked using {listing.zone}"
        if listing.reason:
            text += f"; {listing.reason}"
        return Verdict(self._reply(self.settings.maps_rbl_reject_code, "5.7.1", text))

    @staticmethod
    def _blocklist_query(facts: Facts, name: str, zone: str) -> tuple[str, str | None]:
        """(what the reply names, the DNS name to look up or None when there is nothing)."""
        if name == "reject_rbl_client":
            return facts.client_address, client_query(facts.client_address, zone)
        if name in ("reject_rhsbl_client", "reject_rhsbl_reverse_client"):
            return facts.client_name, domain_query(facts.client_name, zone)
        if name == "reject_rhsbl_helo":
            return facts.helo or "", domain_query(facts.helo or "", zone)
        address = facts.sender if name == "reject_rhsbl_sender" else facts.recipient
        if not address or "@" not in address:
            return "", None
        domain = split_address(address)[1]
        return domain, domain_query(domain, zone)

    # -- SASL logins and sender addresses ------------------------------------------------------
    def _sender_login_mismatch(
        self, facts: Facts, authenticated: bool, known_only: bool, unauthenticated: bool
    ) -> Verdict | None:
        """Postfix's reject_*sender_login_mismatch: smtpd_sender_login_maps names each address's
        owners (SASL logins); a logged-in client may use only its own addresses, a client that
        did not log in none that has an owner."""
        sender = facts.sender
        if not sender:
            return None  # the null sender belongs to nobody
        owners = self._sender_owners(sender)
        login = facts.sasl_username
        if login:
            if not authenticated or (owners is None and known_only):
                return None
            if owners is not None and login.lower() in owners:
                return None
            text = f"<{sender}>: Sender address rejected: not owned by user {login}"
        elif unauthenticated and owners is not None:
            text = f"<{sender}>: Sender address rejected: not logged in"
        else:
            return None
        return Verdict(self._reply(_LOGIN_MISMATCH_CODE, "5.7.1", text))

    def _sender_owners(self, sender: str) -> set[str] | None:
        """The logins smtpd_sender_login_maps gives SENDER (lower-cased), None if not listed."""
        if not self.sender_login_maps:
            return None
        keys = address_keys(sender, self.lookup_settings, self.resolver.is_local_domain)
        found = search(self.sender_login_maps, keys)
        if found is None:
            return None
        return {owner.lower() for owner in found[2].replace(",", " ").split()}

    # -- address shape and DNS ---------------------------------------------------------------
    def _non_fqdn(self, address: str | None, what: str) -> Verdict | None:
        if not address:
            return None
        _, domain = split_address(address)
        if "@" in address and (is_address_literal(domain) or _is_fqdn(domain)):
            return None
        text = f"<{address}>: {what} rejected: need fully-qualified address"
        return Verdict(self._reply(self.settings.non_fqdn_reject_code, "5.5.2", text))

    def _non_fqdn_helo(self, facts: Facts) -> Verdict | None:
        helo = facts.helo
        if helo is None or is_address_literal(helo) or _is_fqdn(helo.rstrip(".")):
            return None
        text = f"<{helo}>: Helo command rejected: need fully-qualified hostname"
        return Verdict(self._reply(self.settings.non_fqdn_reject_code, "5.5.2", text))

    def _invalid_helo(self, facts: Facts) -> Verdict | None:
        helo = facts.helo
        if helo is None:
            return None
        if is_address_literal(helo) or is_valid_hostname(helo.rstrip(".")):
            return None
        text = f"<{helo}>: Helo command rejected: Invalid name"
        return Verdict(self._reply(self.settings.invalid_hostname_reject_code, "5.5.2", text))

    def _unknown_domain(
        self, evaluation: _Evaluation, address: str | None, what: str, dsn: str
    ) -> Verdict | None:
        if not address or "@" not in address:
            return None
        resolved = self.resolve(evaluation, address)
        if resolved.addr_class is not AddressClass.DEFAULT and what == "Recipient address":
            return None  # a final destination of ours
        _, domain = split_address(resolved.recipient)
        if not domain or is_address_literal(domain):
            return None
        state = self.domains.state(domain.rstrip("."))
        if state is DomainState.EXISTS:
            return None
        if state is DomainState.NULL_MX:
            text = f"<{address}>: {what} rejected: Domain {domain} does not accept mail (nullMX)"
            return Verdict(self._reply(556, "5.1.10", text))
        code = self.settings.unknown_address_reject_code
        if state is DomainState.UNKNOWN:
            code = min(code, 450)
        text = f"<{address}>: {what} rejected: Domain not found"
        return Verdict(self._reply(code, dsn, text))

    # -- access tables ---------------------------------------------------------------------
    def _check_access(
        self, evaluation: _Evaluation, step: _Step, subject: _Subject, depth: int
    ) -> Verdict | bool | None:
        facts = evaluation.facts
        if step.name == "check_client_access":
            keys = list(self._client_keys(facts))
            own = _Subject(facts.client, "Client host")
        elif step.name == "check_helo_access":
            if facts.helo is None:
                return None
            keys = list(self._domain_keys(facts.helo.rstrip(".")))
            own = _Subject(facts.helo, "Helo command")
        elif step.name == "check_sender_access":
            if facts.sender is None:
                return None
            keys = list(self._address_keys(facts.sender))
            own = _Subject(facts.sender, "Sender address")
        else:
            if facts.recipient is None:
                return None
            keys = list(self._address_keys(facts.recipient))
            own = _Subject(facts.recipient, "Recipient address")
        for key in keys:
            for table in step.tables:
                value = table.lookup(key)
                if value is not None:
                    return self._access_result(evaluation, value.strip(), own, depth)
        return None

    def _address_keys(self, address: str) -> Iterator[str]:
        """access(5) order: user@domain, domain and its parents, user@ (extension first)."""
        if address == "":
            yield self.settings.smtpd_null_access_lookup_key
            return
        local, domain = split_address(address)
        user, extension = split_extension(
            local,
            self.settings.recipient_delimiter,
            owner_request_special=self.settings.owner_request_special,
            double_bounce_sender=self.settings.double_bounce_sender,
        )
        has_domain = "@" in address
        yield address
        if extension and has_domain:
            yield f"{user}@{domain}"
        if has_domain and domain:
            yield from self._domain_keys(domain.rstrip("."))
        yield f"{local}@"
        if extension:
            yield f"{user}@"

    def _domain_keys(self, domain: str) -> Iterator[str]:
        yield domain
        labels = domain.split(".")
        for start in range(1, len(labels)):
            parent = ".".join(labels[start:])
            yield parent if self._access_parent_style else "." + parent

    def _client_keys(self, facts: Facts) -> Iterator[str]:
        if facts.client_name and facts.client_name != "unknown":
            yield from self._domain_keys(facts.client_name)
        address = facts.client_address
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return
        yield address
        separator = "." if ip.version == 4 else ":"
        parts = address.split(separator)
        for end in range(len(parts) - 1, 0, -1):
            prefix = separator.join(parts[:end])
            if prefix:
                yield prefix

    def _access_result(
        self, evaluation: _Evaluation, value: str, subject: _Subject, depth: int
    ) -> Verdict | bool | None:
        s = self.settings
        word, _, text = value.partition(" ")
        text = text.strip()
        upper = word.upper()
        if upper == "OK" or (word.isdigit() and len(word) != 3):
            return True
        if word.isdigit() and word[0] in "45":
            dsn, _, rest = text.partition(" ")
            if not _looks_like_dsn(dsn):
                dsn, rest = ("4.7.1" if word[0] == "4" else "5.7.1"), text
            return self._refuse(int(word), dsn, subject, rest or "Access denied")
        if upper == "REJECT":
            return self._refuse(s.access_map_reject_code, "5.7.1", subject, text or "Access denied")
        if upper == "DEFER":
            return self._refuse(s.access_map_defer_code, "4.7.1", subject, text or "Access denied")
        if upper == "DUNNO":
            return None
        if upper in ("DEFER_IF_PERMIT", "DEFER_IF_REJECT"):
            deferral = self._refuse(
                s.access_map_defer_code, "4.7.1", subject, text or "Service unavailable"
            )
            if upper == "DEFER_IF_PERMIT":
                evaluation.defer_if_permit = evaluation.defer_if_permit or deferral
            else:
                evaluation.defer_if_reject = evaluation.defer_if_reject or deferral
            return None
        if upper in ("HOLD", "DISCARD"):
            action = Action.HOLD if upper == "HOLD" else Action.DISCARD
            return Verdict(None, action, f"<{subject.name}>: {subject.what} {text}".rstrip())
        if upper in ("FILTER", "REDIRECT", "PREPEND", "WARN", "BCC", "INFO"):
            log.warning("access table action %s is not supported yet; ignored", upper)
            return None
        try:
            steps = self._parse(split_list(value), "access table result")
        except ConfigError as exc:
            log.warning("%s: %s", exc, value)
            return Verdict(self._reply(451, "4.3.5", "Server configuration error"))
        return self._run_steps(evaluation, steps, subject, depth + 1)


def _is_fqdn(domain: str) -> bool:
    return "." in domain and is_valid_hostname(domain)


def _looks_like_dsn(text: str) -> bool:
    parts = text.split(".")
    return len(parts) == 3 and parts[0] in ("4", "5") and all(p.isdigit() for p in parts)
