"""trivial_rewrite.rewrite: addresses in standard form, in local and remote context."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from sdmail.core.config import ConfigError, load_config
from sdmail.core.records import RewriteContext
from sdmail.trivial_rewrite.rewrite import (
    RewriteSettings,
    rewrite_address,
    rewrite_step,
    strip_source_route,
)

LOCAL = RewriteContext.LOCAL
REMOTE = RewriteContext.REMOTE

MAIN_CF = """\
myhostname = mail.example.com
mydomain = example.com
myorigin = $mydomain
"""


def settings_from_main_cf(tmp_path: Path, *overrides: str) -> RewriteSettings:
    (tmp_path / "main.cf").write_text(MAIN_CF)
    return RewriteSettings.from_config(load_config(tmp_path, overrides=list(overrides)))


# (address, context, extra main.cf settings) -> canonical form
GOLDEN = [
    # Postfix's defaults: append_at_myorigin yes, append_dot_mydomain no.
    ("user", LOCAL, (), "user@example.com"),
    ("user@host", LOCAL, (), "user@host"),
    ("user@example.org", LOCAL, (), "user@example.org"),
    ("User.Name+tag@Example.ORG", LOCAL, (), "User.Name+tag@Example.ORG"),
    ("", LOCAL, (), ""),
    ("@", LOCAL, (), ""),
    ("!", LOCAL, (), "!@example.com"),
    ("%", LOCAL, (), "%@example.com"),
    ("@a.example:@", LOCAL, (), "@a.example:@"),
    ("site!", LOCAL, (), "@site"),
    ("!user", LOCAL, (), "user@"),
    # Source routes.
    ("@a.example,@b.example:user@c.example", LOCAL, (), "user@c.example"),
    ("@a.example:user", LOCAL, (), "user@example.com"),
    ("@a.example:@b.example:user@c.example", LOCAL, (), "user@c.example"),
    # Bang paths and the percent hack, only when there is no @.
    ("site!user", LOCAL, (), "user@site"),
    ("a.example!b.example!user", LOCAL, (), "b.example!user@a.example"),
    ("site!user@host.example", LOCAL, (), "site!user@host.example"),
    ("site!user", LOCAL, ("swap_bangpath=no",), "site!user@example.com"),
    ("user%domain.example", LOCAL, (), "user@domain.example"),
    ("user%a.example%b.example", LOCAL, (), "user%a.example@b.example"),
    ("user%domain.example@host.example", LOCAL, (), "user%domain.example@host.example"),
    ("user%domain.example", LOCAL, ("allow_percent_hack=no",), "user%domain.example@example.com"),
    ("site!user%x.example", LOCAL, (), "user%x.example@site"),
    # append_at_myorigin.
    ("user", LOCAL, ("append_at_myorigin=no",), "user"),
    ("user", LOCAL, ("myorigin=origin.example",), "user@origin.example"),
    # append_dot_mydomain.
    ("user@host", LOCAL, ("append_dot_mydomain=yes",), "user@host.example.com"),
    ("user@host.sub", LOCAL, ("append_dot_mydomain=yes",), "user@host.sub"),
    ("user@[192.0.2.1]", LOCAL, ("append_dot_mydomain=yes",), "user@[192.0.2.1]"),
    ("user", LOCAL, ("append_dot_mydomain=yes", "myorigin=host"), "user@host.example.com"),
    ("site!user", LOCAL, ("append_dot_mydomain=yes",), "user@site.example.com"),
    # One trailing dot goes; more make the address invalid and stay.
    ("user@site.example.", LOCAL, (), "user@site.example"),
    ("user@site.example..", LOCAL, (), "user@site.example.."),
    ("user@.", LOCAL, (), "user@."),
    # Remote context: $remote_header_rewrite_domain, or nothing when it is empty.
    ("user", REMOTE, (), "user"),
    ("user@host", REMOTE, ("append_dot_mydomain=yes",), "user@host"),
    ("user", REMOTE, ("remote_header_rewrite_domain=domain.invalid",), "user@domain.invalid"),
    (
        "user@host",
        REMOTE,
        ("remote_header_rewrite_domain=domain.invalid", "append_dot_mydomain=yes"),
        "user@host.domain.invalid",
    ),
    ("site!user", REMOTE, (), "user@site"),
    ("@a.example:user@c.example", REMOTE, (), "user@c.example"),
]


@pytest.mark.parametrize(("address", "context", "extra", "canonical"), GOLDEN)
def test_rewrite_golden(
    tmp_path: Path, address: str, context: RewriteContext, extra: tuple[str, ...], canonical: str
) -> None:
    settings = settings_from_main_cf(tmp_path, *extra)
    assert rewrite_address(address, context, settings) == canonical


def test_settings_come_from_main_cf(tmp_path: Path) -> None:
    (tmp_path / "main.cf").write_text(MAIN_CF + "swap_bangpath = no\nappend_dot_mydomain = yes\n")
    settings = RewriteSettings.from_config(load_config(tmp_path))
    assert settings.myorigin == "example.com"
    assert settings.mydomain == "example.com"
    assert settings.swap_bangpath is False
    assert settings.allow_percent_hack is True
    assert settings.append_dot_mydomain is True
    assert settings.remote_header_rewrite_domain == ""


def test_bad_boolean_in_main_cf_is_a_config_error_naming_the_parameter(tmp_path: Path) -> None:
    (tmp_path / "main.cf").write_text(MAIN_CF + "swap_bangpath = maybe\n")
    with pytest.raises(ConfigError, match="line 4: swap_bangpath"):
        RewriteSettings.from_config(load_config(tmp_path))


def test_one_step_swaps_only_one_operator(tmp_path: Path) -> None:
    settings = settings_from_main_cf(tmp_path)
    assert rewrite_step("a!b!user", LOCAL, settings) == "b!user@a"


def test_strip_source_route_leaves_a_bare_route_alone() -> None:
    assert strip_source_route("@a.example:") == "@a.example:"
    assert strip_source_route("user@site") == "user@site"


@given(st.text(max_size=80), st.sampled_from([LOCAL, REMOTE]))
def test_rewrite_settles_and_is_idempotent(address: str, context: RewriteContext) -> None:
    settings = RewriteSettings(
        myorigin="example.com",
        mydomain="example.com",
        remote_header_rewrite_domain="remote.example",
        swap_bangpath=True,
        allow_percent_hack=True,
        append_at_myorigin=True,
        append_dot_mydomain=True,
    )
    once = rewrite_address(address, context, settings)
    assert rewrite_address(once, context, settings) == once
    if address not in ("", "@"):
        assert "@" in once
