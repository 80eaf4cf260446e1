"""smtpd's TLS: a listener's server context and security level, and what a session's TLS says.

`smtpd_tls_security_level` is Postfix's: empty or `none` offers no STARTTLS, `may` offers
it, `encrypt` offers it and refuses mail (and AUTH) before it. STARTTLS is offered only
when `smtpd_tls_cert_file` and `smtpd_tls_key_file` load (Debian's snakeoil pair by default,
readable by the `sdmail` user through group `ssl-cert`). A pair that does not load is not a
configuration error, as in Postfix: it is logged (`warning: cannot load the TLS certificate
...`), the listener offers no STARTTLS, answers STARTTLS with `454 4.7.0 TLS not available
due to local problem`, and with `encrypt` refuses mail until an administrator fixes it. The
files are read again at each reload, so a renewed certificate is used by new sessions.

The context asks for no client certificate (Postfix's default), and takes Python's defaults
for protocols and ciphers (TLS 1.2 and later). `TlsInfo` is what a handshake gave: the
protocol and cipher, as Postfix shows them in the `Anonymous TLS connection established`
log line (smtpd_tls_loglevel >= 1) and in Received: (smtpd_tls_received_header = yes).

Failure modes: `server_tls` raises ConfigError (naming smtpd_tls_security_level) for a level
other than none, may or encrypt; unreadable or mismatched files are logged, never raised.
`TlsInfo.of` does not fail: what the ssl object cannot tell is shown as `unknown`.
"""

from __future__ import annotations

import enum
import logging
import ssl
from dataclasses import dataclass

from sdmail.core.config import Config, ConfigError, bind

log = logging.getLogger("sdmail.smtpd")


class TlsLevel(enum.Enum):
    NONE = "none"
    MAY = "may"
    ENCRYPT = "encrypt"


@dataclass(frozen=True)
class TlsSettings:
    """The parameters of a listener's TLS; field names are parameter names."""

    smtpd_tls_security_level: str
    smtpd_tls_cert_file: str
    smtpd_tls_key_file: str
    smtpd_tls_received_header: bool
    smtpd_tls_loglevel: int


@dataclass(frozen=True)
class ServerTls:
    """A listener's TLS: its level and, when the certificate loaded, its server context."""

    level: TlsLevel
    context: ssl.SSLContext | None
    received_header: bool = False
    loglevel: int = 0

    @property
    def offered(self) -> bool:
        """Whether EHLO offers STARTTLS (a level above none and a context that loaded)."""
        return self.level is not TlsLevel.NONE and self.context is not None

    @property
    def required(self) -> bool:
        """Whether mail and AUTH must wait for STARTTLS (level encrypt)."""
        return self.level is TlsLevel.ENCRYPT


def server_tls(cfg: Config) -> ServerTls:
    """The TLS of a listener under CFG; ConfigError for an unknown security level."""
    settings = bind(TlsSettings, cfg)
    text = settings.smtpd_tls_security_level.strip().lower() or TlsLevel.NONE.value
    try:
        level = TlsLevel(text)
    except ValueError:
        raise ConfigError(
            f"unknown TLS security level {text!r} (expected none, may or encrypt)",
            name="smtpd_tls_security_level",
        ) from None
    context = None
    if level is not TlsLevel.NONE:
        context = load_server_context(settings.smtpd_tls_cert_file, settings.smtpd_tls_key_file)
    return ServerTls(
        level, context, settings.smtpd_tls_received_header, settings.smtpd_tls_loglevel
    )


def load_server_context(cert_file: str, key_file: str) -> ssl.SSLContext | None:
    """A server context with CERT_FILE and KEY_FILE; None (and a warning) if they do not load."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.verify_mode = ssl.CERT_NONE
    try:
        context.load_cert_chain(cert_file, key_file)
    except (OSError, ssl.SSLError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        log.warning(
            "cannot load the TLS certificate %s and key %s: %s; STARTTLS is not offered",
            cert_file,
            key_file,
            reason,
        )
        return None
    return context


@dataclass(frozen=True)
class TlsInfo:
    """What a finished handshake gave, as Postfix shows it."""

    protocol: str
    cipher: str
    bits: int

    @classmethod
    def of(cls, ssl_object: ssl.SSLObject | ssl.SSLSocket | None) -> TlsInfo:
        if ssl_object is None:
            return cls("unknown", "unknown", 0)
        cipher = ssl_object.cipher()
        name, _, bits = cipher if cipher else ("unknown", "", 0)
        return cls(ssl_object.version() or "unknown", name, bits or 0)

    def summary(self) -> str:
        """`TLSv1.3 with cipher TLS_AES_256_GCM_SHA384 (256/256 bits)`."""
        return f"{self.protocol} with cipher {self.cipher} ({self.bits}/{self.bits} bits)"

    def received_comment(self) -> str:
        """The line smtpd_tls_received_header = yes adds to Received:."""
        return f"(using {self.summary()})"
