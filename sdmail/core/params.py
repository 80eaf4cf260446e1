"""The parameter registry: every main.cf parameter sdmail reads, declared once.

Each `Param` gives a name, a kind (how its value is converted), the default
exactly as `postconf -d` prints it (it may refer to other parameters with
`$name`), optional bounds, the default unit of a time value, and one line of
documentation.  Configuration loading (`config.py`), `postconf -d`, the manual
page of main.cf and the tests all read this one table; component code never
carries a literal default of its own.

A few defaults depend on the host (`myhostname`, `mydomain`, `myorigin`); they
are computed by `computed_defaults()` when a configuration is loaded, the way
Postfix's mail_params.c computes them.

Names follow Postfix's: an administrator's main.cf from Postfix means the same
here.  Parameters Postfix has and sdmail does not use are not listed; setting
one is harmless (postconf -n shows it, nothing reads it).
"""

from __future__ import annotations

import enum
import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path


class Kind(enum.Enum):
    """How a parameter's expanded text is converted for the code that reads it."""

    STR = "string"
    INT = "integer"
    BOOL = "boolean"
    TIME = "time"
    SIZE = "size"
    LIST = "list"


@dataclass(frozen=True)
class Param:
    """One main.cf parameter: its name, kind, default text, bounds and doc."""

    name: str
    kind: Kind
    default: str
    doc: str
    minimum: int | None = None
    maximum: int | None = None
    time_unit: str = "s"


DEFAULT_MAILNAME_FILE = Path("/etc/mailname")
DEFAULT_DOMAIN = "localdomain"


def _registry(*params: Param) -> dict[str, Param]:
    table: dict[str, Param] = {}
    for param in params:
        if param.name in table:
            raise ValueError(f"parameter declared twice: {param.name}")
        table[param.name] = param
    return table


def _s(name: str, default: str, doc: str) -> Param:
    return Param(name, Kind.STR, default, doc)


def _l(name: str, default: str, doc: str) -> Param:
    return Param(name, Kind.LIST, default, doc)


def _b(name: str, default: str, doc: str) -> Param:
    return Param(name, Kind.BOOL, default, doc)


def _i(
    name: str, default: str, doc: str, minimum: int | None = 0, maximum: int | None = None
) -> Param:
    return Param(name, Kind.INT, default, doc, minimum, maximum)


def _z(name: str, default: str, doc: str, minimum: int | None = 0) -> Param:
    return Param(name, Kind.SIZE, default, doc, minimum)


def _t(name: str, default: str, doc: str, unit: str = "s", minimum: int | None = 0) -> Param:
    return Param(name, Kind.TIME, default, doc, minimum, None, unit)


PARAMS: Mapping[str, Param] = _registry(
    # --- identity of this system --------------------------------------------------------
    _s("myhostname", "", "The fully-qualified domain name of this mail system (from the host)."),
    _s("mydomain", "", "The internet domain of this system ($myhostname minus its first label)."),
    _s(
        "myorigin",
        "$myhostname",
        "The domain that locally-posted mail appears to come from (/etc/mailname on Debian).",
    ),
    _l(
        "mydestination",
        "$myhostname, localhost.$mydomain, localhost",
        "The domains this system delivers locally.",
    ),
    _l("mynetworks", "127.0.0.0/8 [::1]/128", "Trusted SMTP clients, allowed to relay."),
    _s("mynetworks_style", "host", "How mynetworks is computed when it is not set: host."),
    _l("inet_interfaces", "all", "The network addresses this mail system receives mail on."),
    _l("inet_protocols", "all", "The IP protocols used for mail: ipv4, ipv6 or all."),
    _l("proxy_interfaces", "", "Addresses of a proxy or NAT that forwards mail to this system."),
    _s("mail_name", "sdmail", "The mail system name shown in the SMTP greeting and Received:."),
    _s("mail_version", "0.1.0", "The version of sdmail."),
    _s(
        "compatibility_level",
        "3.6",
        "Accepted for Postfix main.cf compatibility; sdmail ignores it.",
    ),
    # --- files and users ------------------------------------------------------------------
    _s("config_directory", "/etc/sdmail", "The directory of main.cf and the lookup tables."),
    _s("queue_directory", "/var/spool/sdmail", "The top of the mail queue."),
    _s("data_directory", "/var/lib/sdmail", "Where sdmail keeps state other than the queue."),
    _s(
        "socket_directory",
        "/run/sdmail",
        "Where the services' UNIX sockets are (postdrop, cleanup, showq, qmgr, the agents).",
    ),
    _s("mail_owner", "sdmail", "The user that owns the queue and runs the unprivileged parts."),
    _s(
        "default_privs", "nobody", "The user local delivery uses for commands and files of aliases."
    ),
    _s("syslog_name", "sdmail", "The prefix of every program's log identifier (sdmail/smtpd)."),
    _s("syslog_facility", "mail", "The syslog facility of sdmail's log lines."),
    _s("default_database_type", "hash", "The table type postmap and postalias build by default."),
    _l(
        "alternate_config_directories",
        "",
        "Configuration directories that unprivileged users may name with -C or -c.",
    ),
    # --- tables and rewriting -------------------------------------------------------------
    _l("alias_maps", "hash:/etc/aliases", "The alias tables local delivery looks up."),
    _l("alias_database", "hash:/etc/aliases", "The alias tables newaliases builds."),
    _l(
        "local_recipient_maps",
        "proxy:unix:passwd.byname $alias_maps",
        "Tables of valid local recipients; unknown ones are rejected at RCPT.",
    ),
    _l("canonical_maps", "", "Address mapping of envelope and header addresses."),
    _l("sender_canonical_maps", "", "Address mapping of sender addresses."),
    _l("recipient_canonical_maps", "", "Address mapping of recipient addresses."),
    _l(
        "canonical_classes",
        "envelope_sender, envelope_recipient, header_sender, header_recipient",
        "Which addresses canonical_maps applies to.",
    ),
    _l(
        "sender_canonical_classes",
        "envelope_sender, header_sender",
        "Which addresses sender_canonical_maps applies to.",
    ),
    _l(
        "recipient_canonical_classes",
        "envelope_recipient, header_recipient",
        "Which addresses recipient_canonical_maps applies to.",
    ),
    _l("virtual_alias_maps", "$virtual_maps", "Aliases for recipients of any domain."),
    _l("virtual_maps", "", "The old name of virtual_alias_maps."),
    _l("virtual_alias_domains", "$virtual_alias_maps", "Domains whose every address is aliased."),
    _i("virtual_alias_recursion_limit", "1000", "Maximal nesting of virtual alias expansion.", 1),
    _i("virtual_alias_expansion_limit", "1000", "Maximal addresses from one virtual alias.", 1),
    _i(
        "virtual_alias_address_length_limit",
        "1000",
        "Maximal length of an address made by virtual alias expansion.",
        1,
    ),
    _l("transport_maps", "", "Per-recipient overrides of the transport and next hop."),
    _s("recipient_delimiter", "", "The characters that separate a user name from its extension."),
    _l(
        "propagate_unmatched_extensions",
        "canonical, virtual",
        "Lookups that copy an unmatched address extension to the result.",
    ),
    _b("owner_request_special", "yes", "Keep owner-list and list-request whole in lookups."),
    _b("append_at_myorigin", "yes", "Append @$myorigin to addresses without a domain."),
    _b("append_dot_mydomain", "no", "Append .$mydomain to domains without a dot."),
    _b("swap_bangpath", "yes", "Rewrite site!user to user@site."),
    _b("allow_percent_hack", "yes", "Rewrite user%domain to user@domain."),
    _s("remote_header_rewrite_domain", "", "The domain appended to incomplete remote addresses."),
    _l(
        "local_header_rewrite_clients",
        "permit_inet_interfaces",
        "Clients whose message headers are rewritten and completed as local mail's.",
    ),
    _b(
        "always_add_missing_headers",
        "no",
        "Add missing From:, Date:, Message-ID: for every client.",
    ),
    _l(
        "parent_domain_matches_subdomains",
        "debug_peer_list, fast_flush_domains, mynetworks, permit_mx_backup_networks, "
        "qmqpd_authorized_clients, relay_domains, smtpd_access_maps",
        "Features where a domain name also matches its subdomains.",
    ),
    _s("empty_address_recipient", "MAILER-DAEMON", "The recipient of mail addressed to <>."),
    _s("double_bounce_sender", "double-bounce", "The sender of postmaster notices about bounces."),
    _b("enable_original_recipient", "yes", "Keep each recipient's original address in the queue."),
    _i("duplicate_filter_limit", "1000", "Recipients remembered to drop duplicates."),
    _l("masquerade_domains", "", "Domains whose subdomains are hidden in addresses."),
    _l(
        "masquerade_classes",
        "envelope_sender, header_sender, header_recipient",
        "Which addresses masquerading applies to.",
    ),
    _l("masquerade_exceptions", "", "Users whose addresses are never masqueraded."),
    _b("resolve_numeric_domain", "no", "Resolve user@ipaddress as a domain name."),
    _b("resolve_dequoted_address", "yes", "Resolve an address after removing its quotes."),
    _b("resolve_null_domain", "no", "Resolve an address that ends in @ as local."),
    # --- address classes and transports ---------------------------------------------------
    _l("relay_domains", "", "Domains this system relays mail for, from any client."),
    _l("relay_recipient_maps", "", "Valid recipients in relay_domains."),
    _s("relayhost", "", "The next hop of non-local mail, instead of the recipient's MX."),
    _s("local_transport", "local:$myhostname", "The transport of mail for mydestination."),
    _s("virtual_transport", "virtual", "The transport of mail for virtual_mailbox_domains."),
    _s("relay_transport", "relay", "The transport of mail for relay_domains."),
    _s("default_transport", "smtp", "The transport of all other mail."),
    _l("virtual_mailbox_domains", "$virtual_mailbox_maps", "Domains delivered by virtual."),
    _l("virtual_mailbox_maps", "", "Mailbox paths of virtual recipients."),
    _s("virtual_mailbox_base", "", "The directory virtual mailbox paths are relative to."),
    _l("virtual_uid_maps", "", "The owner of each virtual mailbox."),
    _l("virtual_gid_maps", "", "The group of each virtual mailbox."),
    _z("virtual_mailbox_limit", "51200000", "Maximal size of a virtual mailbox (0: none)."),
    _i("virtual_minimum_uid", "100", "The lowest uid virtual delivery may use.", 1),
    _l("virtual_mailbox_lock", "fcntl, dotlock", "How virtual mbox mailboxes are locked."),
    _l("defer_transports", "", "Transports delivered only on a flush."),
    _s("error_notice_recipient", "postmaster", "Who gets notices about mail system errors."),
    # --- cleanup --------------------------------------------------------------------------
    _z("message_size_limit", "10240000", "Maximal size of a message in bytes (0: none)."),
    _z("header_size_limit", "102400", "Maximal size of a message header in bytes.", 1),
    _i("hopcount_limit", "50", "Maximal number of Received: headers.", 1),
    _i("line_length_limit", "2048", "Lines longer than this are stored in pieces.", 1),
    _s(
        "header_from_format", "standard", "The form of an added From: header: standard or obsolete."
    ),
    _l(
        "message_drop_headers",
        "bcc, content-length, resent-bcc, return-path",
        "Headers cleanup removes.",
    ),
    _s("undisclosed_recipients_header", "", "The header added when there is no To: or Cc:."),
    _b("cleanup_replace_stray_cr_lf", "yes", "Replace stray CR and LF in message lines by space."),
    _s("non_empty_end_of_header_action", "fix_quietly", "What to do with a header without end."),
    _t("in_flow_delay", "1s", "How long cleanup waits when the queue manager falls behind."),
    _b("strict_7bit_headers", "no", "Reject 8-bit text in message headers."),
    _b("strict_8bitmime", "no", "Reject 8-bit text in 7-bit messages."),
    _l("header_checks", "", "Restrictions on message headers."),
    _l("body_checks", "", "Restrictions on message body lines."),
    _z("body_checks_size_limit", "51200", "How much of each body part body_checks inspect."),
    _l("always_bcc", "", "An address that gets a copy of every message."),
    _l("sender_bcc_maps", "", "Copies of mail by sender."),
    _l("recipient_bcc_maps", "", "Copies of mail by recipient."),
    _t("delay_warning_time", "0h", "When to tell the sender that mail is delayed (0: never).", "h"),
    _i("delay_logging_resolution_limit", "2", "Decimals of delays in log lines.", 0, 6),
    # --- queue manager --------------------------------------------------------------------
    _i("qmgr_message_active_limit", "20000", "Maximal number of messages in the active queue.", 1),
    _i("qmgr_message_recipient_limit", "20000", "Maximal recipients held in memory.", 1),
    _i("qmgr_message_recipient_minimum", "10", "Recipients read from a message at once.", 1),
    _t("queue_run_delay", "300s", "Time between scans of the deferred queue.", "s", 1),
    _t(
        "minimal_backoff_time",
        "300s",
        "Minimal time between attempts to deliver a message.",
        "s",
        1,
    ),
    _t(
        "maximal_backoff_time",
        "4000s",
        "Maximal time between attempts to deliver a message.",
        "s",
        1,
    ),
    _t("maximal_queue_lifetime", "5d", "How long mail may stay queued before it bounces.", "d"),
    _t("bounce_queue_lifetime", "5d", "How long a bounce may stay queued.", "d"),
    _t("transport_retry_time", "60s", "Time before retrying a broken delivery agent.", "s", 1),
    _t("qmgr_clog_warn_time", "300s", "Time between warnings of a clogged active queue."),
    _i("default_destination_concurrency_limit", "20", "Parallel deliveries per destination.", 1),
    _i("local_destination_concurrency_limit", "2", "Parallel local deliveries per recipient.", 1),
    _i("initial_destination_concurrency", "5", "Starting parallel deliveries per destination.", 1),
    _i("default_destination_recipient_limit", "50", "Recipients per delivery request.", 1),
    _i("local_destination_recipient_limit", "1", "Recipients per local delivery request.", 1),
    _s(
        "default_destination_concurrency_positive_feedback",
        "1",
        "Concurrency increase after a successful delivery.",
    ),
    _s(
        "default_destination_concurrency_negative_feedback",
        "1",
        "Concurrency decrease after a failed connection.",
    ),
    _s(
        "default_destination_concurrency_failed_cohort_limit",
        "1",
        "Failed pseudo-cohorts before a destination is throttled.",
    ),
    _t("default_destination_rate_delay", "0s", "Pause between deliveries to one destination."),
    _t("default_transport_rate_delay", "0s", "Pause between deliveries over one transport."),
    _i("default_process_limit", "100", "Maximal processes of one component.", 1),
    _b("confirm_delay_cleared", "no", "Tell the sender when delayed mail is delivered."),
    _z("bounce_size_limit", "50000", "Largest original a notice returns whole.", 1),
    _b("soft_bounce", "no", "Defer mail that would bounce (for testing a configuration)."),
    _l("notify_classes", "resource, software", "Which problems are reported to the postmaster."),
    _s("bounce_notice_recipient", "postmaster", "Who gets postmaster copies of bounces."),
    _s("2bounce_notice_recipient", "postmaster", "Who gets undeliverable bounces (2bounce)."),
    _s("delay_notice_recipient", "postmaster", "Who gets postmaster copies of delay notices."),
    _l("authorized_flush_users", "static:anyone", "Users allowed to flush the queue."),
    _l("authorized_mailq_users", "static:anyone", "Users allowed to list the queue."),
    _l("authorized_submit_users", "static:anyone", "Users allowed to submit mail with sendmail."),
    _l("local_login_sender_maps", "static:*", "Which envelope senders each local user may use."),
    _s(
        "empty_address_local_login_sender_maps_lookup_key",
        "<>",
        "The local_login_sender_maps pattern that allows the null sender.",
    ),
    _s(
        "sendmail_fix_line_endings",
        "always",
        "How sendmail turns CRLF input into LF: always, strict (as the first line) or never.",
    ),
    _l("fast_flush_domains", "$relay_domains", "Destinations eligible for ETRN and postqueue -s."),
    _t(
        "fast_flush_refresh_time",
        "12h",
        "Send a destination's fast-flush log that was not read for this long.",
        "h",
        1,
    ),
    _t(
        "fast_flush_purge_time",
        "7d",
        "Remove a destination's empty fast-flush log not changed for this long.",
        "d",
        1,
    ),
    # --- processes ------------------------------------------------------------------------
    _t("max_idle", "100s", "How long a component waits for work before it exits.", "s", 1),
    _i("max_use", "100", "Requests a component serves before it exits.", 1),
    _t("ipc_timeout", "3600s", "Time limit of a request between sdmail's programs.", "s", 1),
    _t("daemon_timeout", "18000s", "Time limit of one request to a component.", "s", 1),
    _t(
        "reload_timeout",
        "30s",
        "How long systemctl reload sdmail waits for each running part to confirm.",
        "s",
        1,
    ),
    # --- smtpd ----------------------------------------------------------------------------
    _s("smtpd_banner", "$myhostname ESMTP $mail_name", "The text after 220 in the greeting."),
    _i("smtpd_recipient_limit", "1000", "Maximal recipients of one message over SMTP.", 1),
    _t("smtpd_timeout", "300s", "How long smtpd waits for a client.", "s", 1),
    _i("smtpd_soft_error_limit", "10", "Errors before smtpd slows down a client."),
    _i("smtpd_hard_error_limit", "20", "Errors before smtpd disconnects a client.", 1),
    _t("smtpd_error_sleep_time", "1s", "Pause before replying to a client in error."),
    _b("smtpd_helo_required", "no", "Require HELO or EHLO before MAIL."),
    _b("disable_vrfy_command", "no", "Refuse the VRFY command."),
    _b("smtputf8_enable", "yes", "Offer and accept SMTPUTF8."),
    _l(
        "smtpd_relay_restrictions",
        "permit_mynetworks, permit_sasl_authenticated, defer_unauth_destination",
        "Relay control at RCPT.",
    ),
    _l("smtpd_recipient_restrictions", "", "Restrictions at RCPT."),
    _l("smtpd_sender_restrictions", "", "Restrictions at MAIL."),
    _l("smtpd_client_restrictions", "", "Restrictions at connection."),
    _l("smtpd_helo_restrictions", "", "Restrictions at HELO/EHLO."),
    _l("smtpd_data_restrictions", "", "Restrictions at DATA."),
    _l("smtpd_end_of_data_restrictions", "", "Restrictions at the end of the message."),
    _l("smtpd_etrn_restrictions", "", "Restrictions on the ETRN command."),
    _l("smtpd_restriction_classes", "", "Names of user-defined restriction lists."),
    _b("smtpd_delay_reject", "yes", "Apply client, HELO and sender restrictions at RCPT."),
    _l("smtpd_sender_login_maps", "", "Which SASL login may use which sender address."),
    _b("smtpd_sasl_auth_enable", "no", "Offer SMTP AUTH."),
    _s("smtpd_sasl_type", "dovecot", "The SASL backend: dovecot, or table (hashed passwords)."),
    _s(
        "smtpd_sasl_path",
        "private/auth",
        "Dovecot's auth socket (relative: below queue_directory), or the type:name table.",
    ),
    _s("smtpd_sasl_service", "smtp", "The service name smtpd gives the SASL backend."),
    _l("smtpd_sasl_security_options", "noanonymous", "Which SASL mechanisms are offered."),
    _l(
        "smtpd_sasl_tls_security_options",
        "$smtpd_sasl_security_options",
        "Which SASL mechanisms are offered over TLS.",
    ),
    _b("smtpd_tls_auth_only", "no", "Offer AUTH only after STARTTLS."),
    _b("smtpd_sasl_authenticated_header", "no", "Show the SASL user in Received:."),
    _s("smtpd_tls_security_level", "", "TLS in smtpd: none, may or encrypt."),
    _s(
        "smtpd_tls_cert_file",
        "/etc/ssl/certs/ssl-cert-snakeoil.pem",
        "The server certificate for STARTTLS.",
    ),
    _s(
        "smtpd_tls_key_file",
        "/etc/ssl/private/ssl-cert-snakeoil.key",
        "The server private key for STARTTLS.",
    ),
    _b("smtpd_tls_received_header", "no", "Show the TLS protocol and cipher in Received:."),
    _i("smtpd_tls_loglevel", "0", "Log TLS handshakes in smtpd (1: a line per session).", 0, 4),
    _i("smtpd_client_connection_count_limit", "50", "Connections one client may have at once."),
    _b("smtpd_client_port_logging", "no", "Log the client's port."),
    _s("smtpd_reject_footer", "", "Text after every reject reply."),
    _t(
        "smtpd_policy_service_timeout",
        "100s",
        "Time limit to connect to, write to or read from a policy server.",
        "s",
        1,
    ),
    _t(
        "smtpd_policy_service_max_idle", "300s", "Close a policy connection idle this long.", "s", 1
    ),
    _t("smtpd_policy_service_max_ttl", "1000s", "Close a policy connection this old.", "s", 1),
    _i("smtpd_policy_service_try_limit", "2", "Attempts to send a policy request.", 1),
    _t("smtpd_policy_service_retry_delay", "1s", "Pause between policy request attempts.", "s", 1),
    _i(
        "smtpd_policy_service_request_limit",
        "0",
        "Policy requests per connection before it is closed (0: no limit).",
    ),
    _s(
        "smtpd_policy_service_default_action",
        "451 4.3.5 Server configuration problem",
        "The access result when a policy server gives no answer.",
    ),
    _s(
        "smtpd_policy_service_policy_context",
        "",
        "The policy_context attribute sent to policy servers.",
    ),
    _i(
        "unknown_local_recipient_reject_code",
        "550",
        "Reply code for unknown local users.",
        400,
        599,
    ),
    _i("unknown_address_reject_code", "450", "Reply code for unresolvable addresses.", 400, 599),
    _i(
        "unknown_virtual_alias_reject_code",
        "550",
        "Reply code for unknown virtual aliases.",
        400,
        599,
    ),
    _i(
        "unknown_virtual_mailbox_reject_code",
        "550",
        "Reply code for unknown virtual mailboxes.",
        400,
        599,
    ),
    _i(
        "unknown_relay_recipient_reject_code",
        "550",
        "Reply code for unknown relay users.",
        400,
        599,
    ),
    _i("relay_domains_reject_code", "554", "Reply code for relay attempts.", 400, 599),
    _i("maps_rbl_reject_code", "554", "Reply code for clients on a DNS blocklist.", 400, 599),
    _i("access_map_reject_code", "554", "Reply code of REJECT in access tables.", 400, 599),
    _i("access_map_defer_code", "450", "Reply code of DEFER in access tables.", 400, 599),
    _i("non_fqdn_reject_code", "504", "Reply code for addresses without a full domain.", 400, 599),
    _i("invalid_hostname_reject_code", "501", "Reply code for malformed host names.", 400, 599),
    _i("reject_code", "554", "Reply code of the reject restriction.", 400, 599),
    _i("defer_code", "450", "Reply code of the defer restriction.", 400, 599),
    _i(
        "smtpd_junk_command_limit",
        "100",
        "NOOP, VRFY, RSET commands before they count as errors.",
        1,
    ),
    _i(
        "smtpd_recipient_overshoot_limit",
        "1000",
        "Recipients over smtpd_recipient_limit before they count as errors.",
        1,
    ),
    _b("smtpd_reject_unlisted_recipient", "yes", "Reject recipients no table knows, at RCPT."),
    _b("show_user_unknown_table_name", "yes", "Name the table in User unknown replies."),
    _b("allow_untrusted_routing", "no", "Relay addresses with routing (@ ! %) from anyone."),
    _s("smtpd_null_access_lookup_key", "<>", "The access-table key of the null sender."),
    _l("smtpd_discard_ehlo_keywords", "", "EHLO keywords smtpd does not offer."),
    _b(
        "smtpd_forbid_unauth_pipelining",
        "yes",
        "Disconnect clients that pipeline without PIPELINING or past a command that ends a group.",
    ),
    _l(
        "smtpd_client_event_limit_exceptions",
        "$mynetworks",
        "Clients exempt from the connection count limit.",
    ),
    _b("smtpd_peername_lookup", "yes", "Look up the client's host name (reverse and forward DNS)."),
    _l("smtpd_forbidden_commands", "CONNECT GET POST", "Commands that end the session at once."),
    _b("strict_rfc821_envelopes", "no", "Require <> around MAIL FROM and RCPT TO addresses."),
    # --- smtp / lmtp client ---------------------------------------------------------------
    _t("smtp_connect_timeout", "30s", "Time limit of a TCP connection to a server.", "s", 1),
    _t("smtp_helo_timeout", "300s", "Time limit of the greeting and EHLO.", "s", 1),
    _t("smtp_mail_timeout", "300s", "Time limit of MAIL FROM.", "s", 1),
    _t("smtp_rcpt_timeout", "300s", "Time limit of RCPT TO.", "s", 1),
    _t("smtp_data_init_timeout", "120s", "Time limit of DATA.", "s", 1),
    _t("smtp_data_xfer_timeout", "180s", "Time limit of sending the message.", "s", 1),
    _t("smtp_data_done_timeout", "600s", "Time limit of the reply to the final dot.", "s", 1),
    _t("smtp_quit_timeout", "300s", "Time limit of QUIT.", "s", 1),
    _i("smtp_mx_address_limit", "5", "Maximal addresses tried for one destination."),
    _i("smtp_mx_session_limit", "2", "Maximal SMTP sessions for one destination."),
    _i("smtp_line_length_limit", "998", "Lines longer than this are folded when sent."),
    _s("smtp_helo_name", "$myhostname", "The name the client sends in EHLO."),
    _s("smtp_tls_security_level", "", "TLS in the smtp client: none, may, encrypt, verify."),
    _b("smtp_skip_5xx_greeting", "yes", "Try the next server after a 5xx greeting."),
    _b("disable_dns_lookups", "no", "Do not use DNS to find servers."),
    _s("lmtp_lhlo_name", "$myhostname", "The name the client sends in LHLO."),
    _t("lmtp_connect_timeout", "0s", "Time limit of an LMTP connection (0: none)."),
    _s("smtp_tcp_port", "smtp", "The port of remote SMTP servers when the next hop names none."),
    _t("smtp_rset_timeout", "20s", "Time limit of RSET.", "s", 1),
    _t("smtp_starttls_timeout", "300s", "Time limit of STARTTLS and the TLS handshake.", "s", 1),
    _b("smtp_randomize_addresses", "yes", "Shuffle servers of equal preference."),
    _s("smtp_address_preference", "any", "IP version tried first among equals: any, ipv4, ipv6."),
    _b("smtp_balance_inet_protocols", "yes", "Keep both IP versions within the address limit."),
    _l("fallback_relay", "", "Hosts tried when a destination's own servers cannot be reached."),
    _l("smtp_fallback_relay", "$fallback_relay", "Hosts the smtp client tries last."),
    _l("smtp_host_lookup", "dns", "How the smtp client finds addresses: dns, native, or both."),
    _s("smtp_dns_support_level", "", "DNS in the smtp client: disabled, enabled, dnssec."),
    _b("smtp_always_send_ehlo", "yes", "Send EHLO even when the greeting does not say ESMTP."),
    _b("smtp_never_send_ehlo", "no", "Send HELO, never EHLO."),
    _b(
        "smtp_defer_if_no_mx_address_found",
        "no",
        "Defer, not bounce, when no MX host has an address.",
    ),
    _b("ignore_mx_lookup_error", "no", "Use a domain's address when its MX look-up fails."),
    _b("smtp_connection_cache_on_demand", "yes", "Keep connections open for busy destinations."),
    _l(
        "smtp_connection_cache_destinations",
        "",
        "Destinations whose connections are always kept open for reuse.",
    ),
    _t("smtp_connection_cache_time_limit", "2s", "How long an idle connection is kept.", "s", 1),
    _t("smtp_connection_reuse_time_limit", "300s", "How long one connection is reused.", "s", 1),
    _i("smtp_connection_reuse_count_limit", "0", "Deliveries over one connection (0: no limit)."),
    _b("smtp_skip_quit_response", "yes", "Do not wait for the reply to QUIT."),
    _l("smtp_discard_ehlo_keywords", "", "EHLO keywords of servers the smtp client ignores."),
    _s("smtp_tls_CAfile", "", "Certificates of the authorities the smtp client trusts."),
    _s("smtp_tls_CApath", "", "A directory of authority certificates the smtp client trusts."),
    _s(
        "smtp_tls_cert_file", "", "The smtp client's own certificate (none: no client certificate)."
    ),
    _s("smtp_tls_key_file", "$smtp_tls_cert_file", "The private key of smtp_tls_cert_file."),
    _i("smtp_tls_loglevel", "0", "How much the smtp client logs about TLS (1: one line each)."),
    _l("smtp_tls_verify_cert_match", "hostname", "Names a certificate must match at verify."),
    _l(
        "smtp_tls_secure_cert_match",
        "nexthop, dot-nexthop",
        "Names a certificate must match at secure.",
    ),
    _b("smtp_tls_connection_reuse", "no", "Reuse TLS connections for several messages."),
    _b(
        "disable_mime_output_conversion", "no", "Send 8-bit mail as is to servers without 8BITMIME."
    ),
    _s("lmtp_tcp_port", "24", "The port of LMTP servers when the next hop names none."),
    _t("lmtp_lhlo_timeout", "300s", "Time limit of the greeting and LHLO.", "s", 1),
    _t("lmtp_mail_timeout", "300s", "Time limit of MAIL FROM over LMTP.", "s", 1),
    _t("lmtp_rcpt_timeout", "300s", "Time limit of RCPT TO over LMTP.", "s", 1),
    _t("lmtp_data_init_timeout", "120s", "Time limit of DATA over LMTP.", "s", 1),
    _t("lmtp_data_xfer_timeout", "180s", "Time limit of sending a message over LMTP.", "s", 1),
    _t("lmtp_data_done_timeout", "600s", "Time limit of the replies to the final dot.", "s", 1),
    _t("lmtp_quit_timeout", "300s", "Time limit of QUIT over LMTP.", "s", 1),
    _t("lmtp_rset_timeout", "20s", "Time limit of RSET over LMTP.", "s", 1),
    _t("lmtp_starttls_timeout", "300s", "Time limit of STARTTLS over LMTP.", "s", 1),
    _i("lmtp_mx_address_limit", "5", "Maximal addresses tried for one LMTP destination."),
    _i("lmtp_mx_session_limit", "2", "Maximal sessions for one LMTP destination."),
    _i("lmtp_line_length_limit", "998", "Lines longer than this are folded when sent over LMTP."),
    _s("lmtp_tls_security_level", "", "TLS in the lmtp client: none, may, encrypt, verify."),
    _b("lmtp_skip_5xx_greeting", "yes", "Try the next LMTP server after a 5xx greeting."),
    _b("lmtp_randomize_addresses", "yes", "Shuffle LMTP server addresses."),
    _s(
        "lmtp_address_preference", "any", "IP version the lmtp client tries first: any, ipv4, ipv6."
    ),
    _b("lmtp_balance_inet_protocols", "yes", "Keep both IP versions within the address limit."),
    _l("lmtp_fallback_relay", "", "Hosts the lmtp client tries last."),
    _l("lmtp_host_lookup", "dns", "How the lmtp client finds addresses: dns, native, or both."),
    _s("lmtp_dns_support_level", "", "DNS in the lmtp client: disabled, enabled, dnssec."),
    _b(
        "lmtp_defer_if_no_mx_address_found",
        "no",
        "Defer, not bounce, when an LMTP host has no address.",
    ),
    _b("lmtp_connection_cache_on_demand", "yes", "Keep LMTP connections open when busy."),
    _l(
        "lmtp_connection_cache_destinations",
        "",
        "LMTP destinations whose connections are always kept open for reuse.",
    ),
    _t(
        "lmtp_connection_cache_time_limit",
        "2s",
        "How long an idle LMTP connection is kept.",
        "s",
        1,
    ),
    _t(
        "lmtp_connection_reuse_time_limit",
        "300s",
        "How long one LMTP connection is reused.",
        "s",
        1,
    ),
    _i(
        "lmtp_connection_reuse_count_limit",
        "0",
        "Deliveries over one LMTP connection (0: no limit).",
    ),
    _b("lmtp_skip_quit_response", "no", "Do not wait for the reply to QUIT over LMTP."),
    _l("lmtp_discard_lhlo_keywords", "", "LHLO keywords of servers the lmtp client ignores."),
    _s("lmtp_tls_CAfile", "", "Certificates of the authorities the lmtp client trusts."),
    _s("lmtp_tls_CApath", "", "A directory of authority certificates the lmtp client trusts."),
    _s(
        "lmtp_tls_cert_file", "", "The lmtp client's own certificate (none: no client certificate)."
    ),
    _s("lmtp_tls_key_file", "$lmtp_tls_cert_file", "The private key of lmtp_tls_cert_file."),
    _i("lmtp_tls_loglevel", "0", "How much the lmtp client logs about TLS (1: one line each)."),
    _l("lmtp_tls_verify_cert_match", "hostname", "Names an LMTP certificate must match at verify."),
    _l("lmtp_tls_secure_cert_match", "nexthop", "Names an LMTP certificate must match at secure."),
    _b("lmtp_tls_connection_reuse", "no", "Reuse TLS connections over LMTP."),
    # --- local delivery -------------------------------------------------------------------
    _s("home_mailbox", "", "Mailbox path relative to the home directory (Maildir/ for maildir)."),
    _s("mail_spool_directory", "/var/mail", "The directory of users' mbox files."),
    _s("mailbox_command", "", "A command that delivers to the mailbox instead."),
    _z("mailbox_size_limit", "51200000", "Maximal size of a mailbox file (0: none)."),
    _l(
        "forward_path",
        "$home/.forward${recipient_delimiter}${extension}, $home/.forward",
        "Where local delivery looks for .forward files.",
    ),
    _s("luser_relay", "", "Where mail for unknown local users goes."),
    _l("mailbox_delivery_lock", "fcntl, dotlock", "How mailboxes are locked."),
    _b("biff", "no", "Notify logged-in users of new mail."),
    _l("allow_mail_to_commands", "alias, forward", "Where delivery to |command is allowed."),
    _l("allow_mail_to_files", "alias, forward", "Where delivery to /file is allowed."),
    _t("command_time_limit", "1000s", "Time limit of delivery to a command.", "s", 1),
    _s(
        "local_command_shell",
        "",
        "The shell of mailbox_command and alias commands (empty: /bin/sh).",
    ),
    _b("expand_owner_alias", "no", "Use owner-alias as the sender of alias mail."),
    _s("prepend_delivered_header", "command, file, forward", "When Delivered-To: is added."),
    _i("deliver_lock_attempts", "20", "Attempts to lock a mailbox before delivery is deferred.", 1),
    _t("deliver_lock_delay", "1s", "Time between attempts to lock a mailbox.", "s", 1),
    _t("stale_lock_time", "500s", "Age after which a mailbox dot-lock file is removed.", "s", 1),
    _l(
        "export_environment",
        "TZ MAIL_CONFIG LANG",
        "Environment variables delivery commands inherit from the agent.",
    ),
    _s(
        "command_expansion_filter",
        "1234567890!@%-_=+:,./abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ",
        "Characters allowed in $name values given to delivery commands; others become _.",
    ),
)


def computed_defaults(explicit_mydomain: str | None) -> dict[str, str]:
    """The defaults that depend on the host, as Postfix's mail_params.c computes them.

    myhostname: the host's name, with `.$mydomain` (or `.localdomain`) appended when
    it has no dot.  mydomain: myhostname minus its first label, or `localdomain`
    when that would leave a single label.  myorigin: /etc/mailname when it exists
    (Debian's habit), else `$myhostname`.
    """
    hostname = _host_name()
    if "." not in hostname:
        hostname = f"{hostname}.{explicit_mydomain or DEFAULT_DOMAIN}"
    defaults = {"myhostname": hostname, "mydomain": domain_of_hostname(hostname)}
    if DEFAULT_MAILNAME_FILE.is_file():
        defaults["myorigin"] = str(DEFAULT_MAILNAME_FILE)
    return defaults


def domain_of_hostname(hostname: str) -> str:
    """mydomain's default: the host name minus its first label, if that has a dot."""
    _, _, rest = hostname.partition(".")
    return rest if "." in rest else DEFAULT_DOMAIN


def _host_name() -> str:
    # Postfix asks only gethostname(), never DNS: a look-up here would slow every
    # sendmail call and hang on a host without a resolver.
    return socket.gethostname().lower().rstrip(".")
