"""Every error p2pdist raises on purpose says who is to blame: LocalError or RemoteError."""

from __future__ import annotations

import importlib
import inspect

from p2pdist.errors import LocalError, P2pdistError, RemoteError
from tests.support.modules import module_names

# Not raised to a caller as p2pdist errors: a ValueError a settings dataclass turns into its
# ConfigError line (the site server's URL rules, shared by config and publish).
OUTSIDE_THE_SPLIT = {"p2pdist.tracker.trust.Untrusted"}


def test_every_error_class_is_local_or_remote() -> None:
    strays = []
    for name in module_names():
        if name.endswith("__main__"):
            continue
        module = importlib.import_module(name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != name or not issubclass(cls, BaseException):
                continue
            if cls in (P2pdistError, LocalError, RemoteError) or f"{name}.{cls.__qualname__}" in OUTSIDE_THE_SPLIT:
                continue
            if not issubclass(cls, (LocalError, RemoteError)):
                strays.append(f"{name}.{cls.__qualname__}")
    assert strays == []
