"""Each transport's delivery limits, from main.cf (Postfix's `<transport>_*` parameters).

`TransportPolicies(cfg)` answers `policy(transport)` with a schedule.TransportPolicy:
for each limit, `<transport>_<name>` when main.cf (or the registry, as for
`local_destination_concurrency_limit`) defines it, else `default_<name>` (or the
general parameter: initial_destination_concurrency, transport_retry_time,
minimal_backoff_time, default_process_limit).  A destination rate delay above
zero makes the destination concurrency limit 1, as in Postfix.  Answers are kept
per transport until the next reload builds a new TransportPolicies.

Failure modes: `policy` raises ConfigError (naming the parameter) for a value that
is not a number, out of range, or an unknown feedback form.
"""

from __future__ import annotations

from sdmail.core.config import Config, ConfigError
from sdmail.qmgr.schedule import Feedback, TransportPolicy, parse_feedback


class TransportPolicies:
    """The limits of every transport under one configuration."""

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self._known: dict[str, TransportPolicy] = {}

    def policy(self, transport: str) -> TransportPolicy:
        known = self._known.get(transport)
        if known is None:
            known = self._build(transport)
            self._known[transport] = known
        return known

    def _build(self, transport: str) -> TransportPolicy:
        rate_delay = self.cfg.get_time(
            self._name(transport, "destination_rate_delay", "default_destination_rate_delay")
        )
        concurrency_limit = self._int(
            transport, "destination_concurrency_limit", "default_destination_concurrency_limit"
        )
        return TransportPolicy(
            recipient_limit=self._int(
                transport, "destination_recipient_limit", "default_destination_recipient_limit"
            ),
            concurrency_limit=1 if rate_delay > 0 else concurrency_limit,
            initial_concurrency=self._int(
                transport, "initial_destination_concurrency", "initial_destination_concurrency"
            ),
            process_limit=self.cfg.get_int("default_process_limit"),
            positive_feedback=self._feedback(
                transport,
                "destination_concurrency_positive_feedback",
                "default_destination_concurrency_positive_feedback",
            ),
            negative_feedback=self._feedback(
                transport,
                "destination_concurrency_negative_feedback",
                "default_destination_concurrency_negative_feedback",
            ),
            failed_cohort_limit=self._number(
                transport,
                "destination_concurrency_failed_cohort_limit",
                "default_destination_concurrency_failed_cohort_limit",
            ),
            retry_time=float(self.cfg.get_time("transport_retry_time")),
            destination_rest=float(self.cfg.get_time("minimal_backoff_time")),
            rate_delay=float(rate_delay),
        )

    def _name(self, transport: str, suffix: str, fallback: str) -> str:
        own = f"{transport}_{suffix}"
        return own if self.cfg.known(own) else fallback

    def _int(self, transport: str, suffix: str, fallback: str) -> int:
        name = self._name(transport, suffix, fallback)
        value = self.cfg.get_int(name)
        if value < 1:
            raise self._error(name, f"bad numerical value {value}: must be at least 1")
        return value

    def _feedback(self, transport: str, suffix: str, fallback: str) -> Feedback:
        name = self._name(transport, suffix, fallback)
        try:
            return parse_feedback(self.cfg.get(name))
        except ValueError as exc:
            raise self._error(name, str(exc)) from None

    def _number(self, transport: str, suffix: str, fallback: str) -> float:
        name = self._name(transport, suffix, fallback)
        text = self.cfg.get(name).strip()
        try:
            value = float(text)
        except ValueError:
            value = -1.0
        if not value > 0:
            raise self._error(name, f"bad numerical value {text!r}: must be above 0")
        return value

    def _error(self, name: str, message: str) -> ConfigError:
        setting = self.cfg.overrides().get(name) or self.cfg.explicit().get(name)
        if setting is None:
            return ConfigError(message, name=name)
        return ConfigError(message, setting.path, setting.line, name)
