"""Mail addresses: parsing, quoting, and the canonical internal form.

Every address inside sdmail is kept in Postfix's *internal* form: `localpart@domain`
with the local part unquoted (`john doe@example.com`, not `"john doe"@example.com`);
the empty string is the null address `<>`.  The split between local part and domain
is always at the LAST `@`, so a quoted local part that holds an `@` (`"a@b"@c`)
survives the round trip.  Case is preserved in the queue and on the wire; lookups
fold it (`lookup_key`).  Quoting for output (`quote_address`) follows RFC 5322 as
Postfix's quote_822_local does: a local part that is not a plain dot-atom is
enclosed in double quotes with `\\` before `"` and `\\`.

This module parses the two outside forms an address arrives in: an RFC 5321 path
(`parse_path`: the argument of MAIL FROM / RCPT TO, with `<>`, source routes that
are stripped, quoted local parts, UTF-8 local parts and domains for SMTPUTF8,
address literals `[192.0.2.1]` and `[IPv6:2001:db8::1]`), and an RFC 5322 address
header (`parse_header_addresses`: To/Cc/Bcc for `sendmail -t`, with display names,
groups, comments and lists).  It also converts domains between IDNA A-labels and
U-labels, checks host names as Postfix's valid_hostname does, and splits address
extensions (`user+foo`) per recipient_delimiter.

Limits.  An address is at most 254 octets in its quoted (external) form: RFC 5321
limits a path to 256 octets including the angle brackets, and an address longer
than that cannot be relayed to a next hop that enforces it.  Domain labels are at
most 63 octets, as DNS requires.  The RFC's 64-octet limit on a local part is NOT
enforced: VERP, SRS and BATV senders exceed it every day and Postfix accepts them.
`%` and `!` are legal in a local part; the resolver flags such addresses "routed".

Failure modes: every malformed address raises `AddressError` (a ValueError) whose
text says what is wrong and shows the offending text with control characters
escaped -- unbalanced `<>`/quotes/parentheses, CR, LF, NUL or other control
characters, text that is not valid UTF-8 (lone surrogates), characters no address
may hold, a missing local part or domain, a bad address literal, an address over
the limits.  No other exception escapes the parsers, whatever the input.
`domain_to_ascii` / `domain_to_unicode` raise AddressError for a domain IDNA
cannot convert; `quote_address` raises it for an address holding control
characters (so a bad address can never inject a header line).
"""

from __future__ import annotations

import encodings.idna
import ipaddress
import re
import string
from dataclasses import dataclass

MAX_ADDRESS_OCTETS = 254
MAX_LABEL_OCTETS = 63
MAX_DOMAIN_OCTETS = 255

# Names that are never split at a recipient_delimiter (Postfix's mail_addr.h).
POSTMASTER = "postmaster"
MAILER_DAEMON = "MAILER-DAEMON"

_ATEXT = frozenset(string.ascii_letters + string.digits + "!#$%&'*+-/=?^_`{|}~")
_DOMAIN_ASCII = frozenset(string.ascii_letters + string.digits + "-._")
_HOSTNAME_ASCII = frozenset(string.ascii_letters + string.digits + "-_")
_HEADER_SPECIALS = frozenset('()<>[]:;@\\,."')
_ATOM_END = _HEADER_SPECIALS | {" ", "\t"}
_FOLD = re.compile(r"\r?\n(?=[ \t])")
_IPV4_CHARS = frozenset(string.digits + ".")
_IPV6_CHARS = frozenset(string.hexdigits + ":.")
_IPV6_TAG = "ipv6:"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class AddressError(ValueError):
    """An address that cannot be parsed or printed; the text says what and where."""


@dataclass(frozen=True)
class HeaderAddress:
    """One address of an address header: its display name (may be empty) and address."""

    display_name: str
    address: str


# --------------------------------------------------------------------------------------
# Characters
# --------------------------------------------------------------------------------------
def _show(text: str, limit: int = 100) -> str:
    """TEXT for an error message: quoted, shortened, control characters escaped."""
    shown = []
    for char in text[:limit]:
        code = ord(char)
        if code < 0x20 or code == 0x7F:
            shown.append(f"\\x{code:02x}")
        elif 0xD800 <= code <= 0xDFFF:
            shown.append(f"\\u{code:04x}")
        else:
            shown.append(char)
    more = "..." if len(text) > limit else ""
    return '"' + "".join(shown) + more + '"'


def _is_control(char: str) -> bool:
    code = ord(char)
    return code < 0x20 or code == 0x7F


def _is_surrogate(char: str) -> bool:
    return 0xD800 <= ord(char) <= 0xDFFF


def _check_characters(text: str, *, allow_tab: bool = False) -> None:
    """Reject CR, LF, NUL, other controls and undecodable bytes anywhere in TEXT."""
    for char in text:
        if char == "\t" and allow_tab:
            continue
        if char in "\r\n":
            raise AddressError(f"bad address syntax: line break in {_show(text)}")
        if char == "\0":
            raise AddressError(f"bad address syntax: NUL character in {_show(text)}")
        if _is_control(char):
            raise AddressError(f"bad address syntax: control character in {_show(text)}")
        if _is_surrogate(char):
            raise AddressError(f"bad address syntax: text is not valid UTF-8: {_show(text)}")


def _is_atext(char: str) -> bool:
    # RFC 6532 widens atext to every non-ASCII character.
    return char in _ATEXT or (ord(char) > 0x7F and not _is_surrogate(char))


def _is_domain_char(char: str) -> bool:
    return char in _DOMAIN_ASCII or (ord(char) > 0x7F and not _is_surrogate(char))


def _octets(text: str) -> int:
    return len(text.encode("utf-8", "surrogatepass"))


# --------------------------------------------------------------------------------------
# Internal form, quoting
# --------------------------------------------------------------------------------------
def split_address(address: str) -> tuple[str, str]:
    """(local part, domain) of an internal address, split at the last `@`.

    An address without `@` has an empty domain: `split_address("bob") == ("bob", "")`.
    """
    local, at, domain = address.rpartition("@")
    if not at:
        return address, ""
    return local, domain


def is_dot_atom(text: str) -> bool:
    """True when TEXT needs no quoting as a local part: atoms joined by single dots."""
    if not text or text.startswith(".") or text.endswith(".") or ".." in text:
        return False
    return all(char == "." or _is_atext(char) for char in text)


def quote_local(local: str) -> str:
    """The local part as RFC 5322 wants it printed: as is when a dot-atom, else quoted.

    Raises AddressError when LOCAL holds a control character.
    """
    _check_characters(local)
    if is_dot_atom(local):
        return local
    return '"' + local.replace("\\", "\\\\").replace('"', '\\"') + '"'


def quote_address(address: str) -> str:
    """The external form of an internal address: `john doe@x` -> `"john doe"@x`.

    The null address stays empty.  Raises AddressError for control characters.
    """
    if address == "":
        return ""
    _check_characters(address)
    local, domain = split_address(address)
    if "@" not in address:
        return quote_local(address)
    return f"{quote_local(local)}@{domain}"


def lookup_key(text: str) -> str:
    """TEXT folded for table and list lookups (Postfix folds lookup keys).

    Full Unicode case folding, as Postfix's casefold does for UTF-8; for ASCII it is
    plain lower-casing.
    """
    return text.casefold()


def needs_smtputf8(address: str) -> bool:
    """True when the address holds non-ASCII characters (SMTPUTF8 needed to send it)."""
    return not address.isascii()


# --------------------------------------------------------------------------------------
# Domains: literals, host names, IDNA
# --------------------------------------------------------------------------------------
def is_address_literal(domain: str) -> bool:
    return domain.startswith("[")


def parse_address_literal(domain: str) -> IPAddress:
    """The IP address of an address literal `[192.0.2.1]` or `[IPv6:2001:db8::1]`.

    Raises AddressError for anything else: missing brackets, another tag, a bad
    address, an IPv6 address without the `IPv6:` tag, a zone index.
    """
    if not (domain.startswith("[") and domain.endswith("]")) or len(domain) < 3:
        raise AddressError(f"bad address literal: {_show(domain)}")
    inner = domain[1:-1]
    if inner[: len(_IPV6_TAG)].lower() == _IPV6_TAG:
        text = inner[len(_IPV6_TAG) :]
        # ipaddress accepts zone indexes (%eth0); addresses in mail never carry one.
        if not text or not set(text) <= _IPV6_CHARS:
            raise AddressError(f"bad IPv6 address literal: {_show(domain)}")
        try:
            return ipaddress.IPv6Address(text)
        except ValueError:
            raise AddressError(f"bad IPv6 address literal: {_show(domain)}") from None
    if not set(inner) <= _IPV4_CHARS:
        raise AddressError(f"bad address literal: {_show(domain)}")
    try:
        return ipaddress.IPv4Address(inner)
    except ValueError:
        raise AddressError(f"bad IPv4 address literal: {_show(domain)}") from None


def is_valid_hostname(domain: str) -> bool:
    """Postfix's valid_hostname: labels of letters, digits, `-` and `_`, 1-63 octets,
    no hyphen at either end of a label, no empty label, at most 255 octets, and not
    all-numeric.  A U-label domain is checked in its A-label form.
    """
    if not domain.isascii():
        try:
            domain = domain_to_ascii(domain)
        except AddressError:
            return False
    if not domain or len(domain) > MAX_DOMAIN_OCTETS:
        return False
    numeric = True
    for label in domain.split("."):
        if not label or len(label) > MAX_LABEL_OCTETS:
            return False
        if not set(label) <= _HOSTNAME_ASCII or label[0] == "-" or label[-1] == "-":
            return False
        if not label.isdigit():
            numeric = False
    return not numeric


def is_ip_address(text: str) -> bool:
    """True for a bare IPv4 or IPv6 address (no brackets, no zone index)."""
    if not text or not set(text) <= _IPV6_CHARS:
        return False
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def domain_to_ascii(domain: str) -> str:
    """The A-label form of DOMAIN (`bücher.example` -> `xn--bcher-kva.example`).

    ASCII labels and address literals are returned unchanged.  Uses the standard
    library's IDNA 2003 codec.  Raises AddressError for a label IDNA cannot encode.
    """
    if domain.isascii():
        return domain
    _check_characters(domain)
    labels = []
    for label in domain.split("."):
        if label.isascii():
            labels.append(label)
            continue
        try:
            encoded = encodings.idna.ToASCII(label).decode("ascii")
        except UnicodeError as exc:
            raise AddressError(f"bad internationalized domain {_show(domain)}: {exc}") from None
        if not set(encoded) <= _HOSTNAME_ASCII:
            raise AddressError(f"bad internationalized domain: {_show(domain)}")
        labels.append(encoded)
    return ".".join(labels)


def domain_to_unicode(domain: str) -> str:
    """The U-label form of DOMAIN (`xn--bcher-kva.example` -> `bücher.example`).

    Labels that are not A-labels are returned unchanged.  Raises AddressError for
    an `xn--` label that is not valid Punycode.
    """
    _check_characters(domain)
    labels = []
    for label in domain.split("."):
        if not (label.isascii() and label[:4].lower() == "xn--"):
            labels.append(label)
            continue
        try:
            labels.append(encodings.idna.ToUnicode(label.lower()))
        except UnicodeError as exc:
            raise AddressError(f"bad A-label in domain {_show(domain)}: {exc}") from None
    return ".".join(labels)


def with_ascii_domain(address: str) -> str:
    """The internal ADDRESS with its domain in A-label form (for a non-SMTPUTF8 peer)."""
    local, domain = split_address(address)
    if not domain:
        return address
    return f"{local}@{domain_to_ascii(domain)}"


def with_unicode_domain(address: str) -> str:
    """The internal ADDRESS with its domain in U-label form."""
    local, domain = split_address(address)
    if not domain:
        return address
    return f"{local}@{domain_to_unicode(domain)}"


# --------------------------------------------------------------------------------------
# Address extensions
# --------------------------------------------------------------------------------------
def split_extension(
    localpart: str, delimiters: str, *, owner_request_special: bool, double_bounce_sender: str
) -> tuple[str, str]:
    """(base, extension) of a local part, split at the first of DELIMITERS found.

    The extension keeps its delimiter, so `base + extension == localpart`; it is ""
    when nothing is split: no delimiter configured or found, a delimiter at the start
    (the base would be empty), postmaster, MAILER-DAEMON and double_bounce_sender,
    and -- when `-` is a delimiter and owner_request_special is set -- `owner-*` and
    `*-request`.  `user+` splits into ("user", "+").
    """
    if not delimiters:
        return localpart, ""
    folded = localpart.lower()
    if folded in (POSTMASTER, MAILER_DAEMON.lower(), double_bounce_sender.lower()):
        return localpart, ""
    if "-" in delimiters and owner_request_special:
        if folded.startswith("owner-"):
            return localpart, ""
        if len(folded) > len("-request") and folded.endswith("-request"):
            return localpart, ""
    cut = next((i for i, char in enumerate(localpart) if char in delimiters), -1)
    if cut <= 0:
        return localpart, ""
    return localpart[:cut], localpart[cut:]


def strip_extension(
    address: str, delimiters: str, *, owner_request_special: bool, double_bounce_sender: str
) -> str:
    """The internal ADDRESS without its extension: `user+foo@x` -> `user@x`."""
    local, domain = split_address(address)
    base, _ = split_extension(
        local,
        delimiters,
        owner_request_special=owner_request_special,
        double_bounce_sender=double_bounce_sender,
    )
    if "@" not in address:
        return base
    return f"{base}@{domain}"


# --------------------------------------------------------------------------------------
# RFC 5321 paths
# --------------------------------------------------------------------------------------
def parse_path(text: str, *, strict: bool = False) -> str:
    """The internal form of an RFC 5321 path: `<john@x>` -> `john@x`, `<>` -> "".

    Accepts a source route (`<@a,@b:user@c>`, stripped), a quoted local part, UTF-8
    local parts and domains, address literals, and an address without a domain
    (`<postmaster>`).  Without STRICT the angle brackets may be left out (Postfix's
    strict_rfc821_envelopes = no); phrases and comments are never accepted.
    Raises AddressError for anything malformed.
    """
    _check_characters(text)
    stripped = text.strip(" ")
    if stripped.startswith("<"):
        if not stripped.endswith(">") or len(stripped) < 2:
            raise AddressError(f"bad address syntax: unbalanced angle brackets in {_show(text)}")
        inner = stripped[1:-1]
    elif strict:
        raise AddressError(f"bad address syntax: address must be enclosed in <>: {_show(text)}")
    else:
        inner = stripped
    if _has_unquoted(inner, "<>"):
        raise AddressError(f"bad address syntax: unbalanced angle brackets in {_show(text)}")
    if inner == "":
        return ""
    address = _parse_mailbox(_strip_source_route(inner, text), text)
    _check_length(address, text)
    return address


def _has_unquoted(text: str, chars: str) -> bool:
    """True when one of CHARS occurs in TEXT outside a quoted string."""
    quoted = escaped = False
    for char in text:
        if escaped:
            escaped = False
        elif quoted and char == "\\":
            escaped = True
        elif char == '"':
            quoted = not quoted
        elif not quoted and char in chars:
            return True
    return False


def _strip_source_route(inner: str, original: str) -> str:
    """`@a,@b:user@c` -> `user@c`; checks that each route hop is a domain."""
    if not inner.startswith("@"):
        return inner
    route, colon, rest = inner.partition(":")
    if not colon:
        raise AddressError(f"bad address syntax: missing local part in {_show(original)}")
    for hop in route.split(","):
        if not hop.startswith("@") or len(hop) < 2:
            raise AddressError(f"bad address syntax: bad source route in {_show(original)}")
        _check_domain(hop[1:], original)
    return rest


def _parse_mailbox(text: str, original: str) -> str:
    """`local@domain` or a bare local part (dot-string or quoted string) -> internal form."""
    if text.startswith('"'):
        local, end = _read_quoted(text, 0, original)
    else:
        end = 0
        while end < len(text) and text[end] != "@":
            end += 1
        local = text[:end]
        if not local:
            raise AddressError(f"bad address syntax: missing local part in {_show(original)}")
        bad = next((char for char in local if char != "." and not _is_atext(char)), None)
        if bad is not None:
            raise AddressError(
                f"bad address syntax: character {_show(bad)} not allowed unquoted in local part"
                f" of {_show(original)}"
            )
    if end == len(text):
        return local
    if text[end] != "@":
        raise AddressError(
            f"bad address syntax: unexpected text after quoted local part in {_show(original)}"
        )
    domain = text[end + 1 :]
    _check_domain(domain, original)
    return f"{local}@{domain}"


def _read_quoted(text: str, start: int, original: str) -> tuple[str, int]:
    """The content of the quoted string at START and the index after its closing quote."""
    out = []
    index = start + 1
    while index < len(text):
        char = text[index]
        if char == "\\":
            if index + 1 >= len(text):
                break
            out.append(text[index + 1])
            index += 2
        elif char == '"':
            return "".join(out), index + 1
        else:
            out.append(char)
            index += 1
    raise AddressError(f"bad address syntax: unbalanced quotes in {_show(original)}")


def _check_domain(domain: str, original: str) -> None:
    """A domain or address literal, syntactically; host name rules are the resolver's."""
    if not domain:
        raise AddressError(f"bad address syntax: missing domain after @ in {_show(original)}")
    if domain.startswith("["):
        parse_address_literal(domain)
        return
    bad = next((char for char in domain if not _is_domain_char(char)), None)
    if bad is not None:
        raise AddressError(
            f"bad address syntax: character {_show(bad)} not allowed in domain of {_show(original)}"
        )
    if any(_octets(label) > MAX_LABEL_OCTETS for label in domain.split(".")):
        raise AddressError(f"bad address syntax: domain label too long in {_show(original)}")


def _check_length(address: str, original: str) -> None:
    if _octets(quote_address(address)) > MAX_ADDRESS_OCTETS:
        raise AddressError(
            f"bad address syntax: address longer than {MAX_ADDRESS_OCTETS} octets:"
            f" {_show(original)}"
        )


# --------------------------------------------------------------------------------------
# RFC 5322 address headers
# --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Token:
    kind: str  # "atom", "qstring", "literal" or "special"
    text: str  # unquoted content for qstring, the character for special


def _unfold(value: str) -> str:
    return _FOLD.sub("", value)


def _tokenize_header(value: str) -> list[_Token]:
    """RFC 5322 tokens of an address header; comments and white space dropped."""
    text = _unfold(value)
    _check_characters(text, allow_tab=True)
    tokens: list[_Token] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char in " \t":
            index += 1
        elif char == "(":
            index = _skip_comment(text, index, value)
        elif char == '"':
            content, index = _read_quoted(text, index, value)
            # Folding white space inside a quoted string is a space.
            tokens.append(_Token("qstring", content.replace("\t", " ")))
        elif char == "[":
            close = text.find("]", index)
            literal = text[index : close + 1]
            if close < 0 or "[" in literal[1:] or "\\" in literal:
                raise AddressError(f"bad address syntax: bad domain literal in {_show(value)}")
            tokens.append(_Token("literal", literal))
            index = close + 1
        elif char in ")]\\":
            raise AddressError(f"bad address syntax: unexpected {_show(char)} in {_show(value)}")
        elif char in _HEADER_SPECIALS:
            tokens.append(_Token("special", char))
            index += 1
        else:
            start = index
            while index < len(text) and text[index] not in _ATOM_END:
                index += 1
            tokens.append(_Token("atom", text[start:index]))
    return tokens


def _skip_comment(text: str, start: int, original: str) -> int:
    """The index after the (possibly nested) comment that opens at START."""
    depth = 0
    index = start
    while index < len(text):
        char = text[index]
        if char == "\\":
            index += 2
            continue
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth == 0:
                return index + 1
        index += 1
    raise AddressError(f"bad address syntax: unbalanced parentheses in {_show(original)}")


class _HeaderParser:
    """Recursive-descent parser over the tokens of one address header."""

    def __init__(self, tokens: list[_Token], original: str) -> None:
        self.tokens = tokens
        self.index = 0
        self.original = original

    def error(self, what: str) -> AddressError:
        return AddressError(f"bad address syntax: {what} in {_show(self.original)}")

    def peek(self) -> _Token | None:
        return self.tokens[self.index] if self.index < len(self.tokens) else None

    def at_special(self, chars: str) -> bool:
        token = self.peek()
        return token is not None and token.kind == "special" and token.text in chars

    def take(self) -> _Token:
        token = self.tokens[self.index]
        self.index += 1
        return token

    def address_list(self) -> list[HeaderAddress]:
        found: list[HeaderAddress] = []
        while self.peek() is not None:
            if self.at_special(","):
                self.take()
                continue
            found.extend(self.address(in_group=False))
            if self.peek() is not None and not self.at_special(","):
                raise self.error(f"unexpected {_show(self.take().text)} after an address")
        return found

    def words(self) -> list[_Token]:
        """The run of atoms, quoted strings and dots that starts here."""
        run: list[_Token] = []
        while True:
            token = self.peek()
            if token is None or not (
                token.kind in ("atom", "qstring") or (token.kind == "special" and token.text == ".")
            ):
                return run
            run.append(self.take())

    def address(self, *, in_group: bool) -> list[HeaderAddress]:
        run = self.words()
        if self.at_special("<"):
            return self.angle_address(_phrase(run))
        if self.at_special(":"):
            if in_group:
                raise self.error("group inside a group")
            self.take()
            return self.group_members()
        if not run:
            token = self.peek()
            shown = _show(token.text) if token else "end of header"
            raise self.error(f"expected an address, found {shown}")
        return [HeaderAddress("", self.addr_spec(run))]

    def group_members(self) -> list[HeaderAddress]:
        members: list[HeaderAddress] = []
        while self.peek() is not None and not self.at_special(";"):
            if self.at_special(","):
                self.take()
                continue
            members.extend(self.address(in_group=True))
            if self.peek() is not None and not self.at_special(",;"):
                raise self.error(f"unexpected {_show(self.take().text)} in a group")
        # A group that the header ends without its `;` is common and harmless.
        if self.at_special(";"):
            self.take()
        return members

    def angle_address(self, display_name: str) -> list[HeaderAddress]:
        self.take()  # <
        if self.at_special(">"):
            self.take()
            return []
        if self.at_special("@"):
            self.obsolete_route()
        address = self.addr_spec(self.words())
        if not self.at_special(">"):
            raise self.error("unbalanced angle brackets")
        self.take()
        return [HeaderAddress(display_name, address)]

    def obsolete_route(self) -> None:
        while self.at_special("@,"):
            if self.take().text == "@":
                self.domain()
        if not self.at_special(":"):
            raise self.error("bad source route")
        self.take()

    def addr_spec(self, run: list[_Token]) -> str:
        if not run:
            raise self.error("missing local part")
        local = _local_part(run, self)
        if not self.at_special("@"):
            address = local
        else:
            self.take()
            address = f"{local}@{self.domain()}"
        _check_length(address, self.original)
        return address

    def domain(self) -> str:
        token = self.peek()
        if token is not None and token.kind == "literal":
            self.take()
            parse_address_literal(token.text)
            return token.text
        parts: list[str] = []
        while True:
            token = self.peek()
            if token is None or not (token.kind == "atom" or self.at_special(".")):
                break
            # Two atoms in a row were separated by white space: the next address.
            if token.kind == "atom" and parts and parts[-1] != ".":
                break
            parts.append(self.take().text)
        domain = "".join(parts)
        _check_domain(domain, self.original)
        return domain


def _phrase(run: list[_Token]) -> str:
    """A display name: words joined by single spaces, dots kept where they were."""
    text = ""
    for token in run:
        if token.kind == "special":
            text += token.text
        else:
            text = f"{text} {token.text}" if text else token.text
    return text


def _local_part(run: list[_Token], parser: _HeaderParser) -> str:
    """The unquoted local part from words and dots (`"john"."doe"` -> `john.doe`)."""
    pieces = []
    previous_was_word = False
    for token in run:
        if token.kind == "special":
            pieces.append(".")
            previous_was_word = False
            continue
        if previous_was_word:
            raise parser.error("unquoted white space in local part")
        if token.kind == "atom":
            bad = next((char for char in token.text if not _is_atext(char)), None)
            if bad is not None:
                raise parser.error(f"character {_show(bad)} not allowed unquoted in local part")
        pieces.append(token.text)
        previous_was_word = True
    return "".join(pieces)


def parse_header_addresses(value: str) -> list[HeaderAddress]:
    """The addresses of an RFC 5322 address header value (To, Cc, Bcc, From, ...).

    Handles display names (`John Doe <john@x>`), groups (`team: a@x, b@x;`, whose
    members are returned; an empty group yields nothing), comments, obsolete routes
    and folded lines.  An address without a domain (`To: bob`) is returned as is for
    the rewriter to complete; `<>` is skipped.  Display names are returned as
    written (RFC 2047 encoded words are not decoded).  Raises AddressError for
    anything malformed.
    """
    return _HeaderParser(_tokenize_header(value), value).address_list()
