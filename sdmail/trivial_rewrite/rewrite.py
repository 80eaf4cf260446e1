"""trivial-rewrite's "rewrite": an address brought to the standard `user@domain` form.

Postfix's rewrite request, as a library.  The input and output are internal-form
addresses (sdmail.core.address: unquoted, split at the last `@`).  In the LOCAL
context (envelope addresses, and headers of mail from local clients) these rules
apply, in order, repeatedly until the address no longer changes:

1. a source route is stripped: `@a,@b:user@site` -> `user@site`;
2. with no `@` left: `site!user` -> `user@site` (swap_bangpath), else
   `user%domain` -> `user@domain` at the last `%` (allow_percent_hack), else
   `user` -> `user@$myorigin` (append_at_myorigin);
3. `user@host` -> `user@host.$mydomain` when the domain has no dot and is not an
   address literal (append_dot_mydomain, off by default);
4. one trailing dot is removed (`user@site.` -> `user@site`); `user@site..` and
   `user@.` are left alone for the resolver to call invalid.

The REMOTE context (headers of mail from remote clients) uses
`$remote_header_rewrite_domain` in place of both $myorigin and $mydomain, and
leaves an incomplete address unchanged when that parameter is empty.  The empty
address stays empty, and a lone `@` becomes empty; no other address ever does
(a lone `!` or `%` is completed like a user name, not swapped into a lone `@`).

Failure modes: none.  Any string is rewritten; garbage in, garbage out -- the
parser in sdmail.core.address is where bad addresses are refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Self

from sdmail.core.config import Config, bind
from sdmail.core.records import RewriteContext


@dataclass(frozen=True)
class RewriteSettings:
    """The parameters of address rewriting; field names are parameter names."""

    myorigin: str
    mydomain: str
    remote_header_rewrite_domain: str
    swap_bangpath: bool
    allow_percent_hack: bool
    append_at_myorigin: bool
    append_dot_mydomain: bool

    @classmethod
    def from_config(cls, cfg: Config) -> Self:
        """The settings bound from CFG; raises ConfigError for a value of the wrong kind."""
        return bind(cls, cfg)


def _completing_domains(context: RewriteContext, settings: RewriteSettings) -> tuple[str, str]:
    """(origin for `user`, domain for `user@host`) in CONTEXT."""
    if context is RewriteContext.LOCAL:
        return settings.myorigin, settings.mydomain
    return settings.remote_header_rewrite_domain, settings.remote_header_rewrite_domain


def strip_source_route(address: str) -> str:
    """`@a,@b:user@site` -> `user@site`: everything up to the first `:`."""
    if address.startswith("@"):
        _, colon, rest = address.partition(":")
        # `@a:@` would leave a lone `@`, which reads as the null address.
        if colon and rest and rest != "@":
            return rest
    return address


def _qualify(address: str, origin: str, settings: RewriteSettings) -> str:
    """Rule 2: an address without `@` gets one, from a bang path, a `%` or $myorigin.

    A lone `!` or `%` is not swapped: the result would be a lone `@`, which reads
    as the null address and would turn a recipient into a bounce-less sender.
    """
    if settings.swap_bangpath and "!" in address and address != "!":
        site, _, user = address.partition("!")
        return f"{user}@{site}"
    if settings.allow_percent_hack and "%" in address and address != "%":
        user, _, domain = address.rpartition("%")
        return f"{user}@{domain}"
    if settings.append_at_myorigin and origin:
        return f"{address}@{origin}"
    return address


def rewrite_step(address: str, context: RewriteContext, settings: RewriteSettings) -> str:
    """One pass of the rules over ADDRESS (Postfix's rewrite_tree)."""
    if address in ("", "@"):
        return ""
    origin, domain_suffix = _completing_domains(context, settings)
    address = strip_source_route(address)
    if "@" not in address:
        address = _qualify(address, origin, settings)
    _, at, domain = address.rpartition("@")
    if (
        settings.append_dot_mydomain
        and domain_suffix
        and at
        and domain
        and not domain.startswith("[")
        and "." not in domain
    ):
        address = f"{address}.{domain_suffix}"
    if "@" in address and address.endswith(".") and not address.endswith(("..", "@.")):
        address = address[:-1]
    return address


def rewrite_address(address: str, context: RewriteContext, settings: RewriteSettings) -> str:
    """ADDRESS in standard form: the rules applied until the address stops changing."""
    # Each pass that changes something removes a route or an operator, or adds the
    # one missing domain, so a handful of passes suffice; the bound is a safety net.
    for _ in range(len(address) + 10):
        rewritten = rewrite_step(address, context, settings)
        if rewritten == address:
            break
        address = rewritten
    return address
