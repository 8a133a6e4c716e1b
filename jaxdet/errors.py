"""The error type for problems the user can fix (config, data, workdir).

Mains catch `ConfigError` and print its message without a traceback; anything else is
a bug and keeps its traceback.
"""


class ConfigError(ValueError):
    """A bad config value, data set-up or workdir; the message says what and how to fix it."""


class NonFiniteError(ConfigError):
    """Training stopped after too many consecutive non-finite steps (printed like ConfigError:
    the fix is the user's, e.g. a lower learning rate or a data problem)."""
