"""The CLI's one error map: library errors -> a clean message and an exit code.

Exit 2 for bad input (config, dataset, URLs, SQL, arguments, a request the sweep
cannot meet), 1 for runtime failures (a server down, a database that refuses us).
Commands raise library errors and never catch them; ``HpsweepGroup`` turns every
expected one into a one-line message on stderr, with no traceback. Anything not
in the map is a bug and keeps its traceback.
"""

from __future__ import annotations

import sys
from typing import Any

import click

BAD_INPUT = 2
RUNTIME = 1

# (module, class, exit code, message prefix). Subclasses come before their bases:
# the first match wins. Modules are named, not imported: an error can only be an
# instance of a class whose module is loaded, and `hpsweep --help` stays fast.
ERROR_MAP: tuple[tuple[str, str, int, str], ...] = (
    ("coordinator.config", "ConfigError", BAD_INPUT, "invalid sweep config\n"),
    ("worker.data", "DatasetError", BAD_INPUT, ""),
    ("coordinator.query", "QueryError", BAD_INPUT, ""),
    ("storage.db", "BadDatabaseURL", BAD_INPUT, ""),
    ("storage.db", "DatabaseNotFound", BAD_INPUT, ""),
    ("storage.schema", "SchemaOutdated", BAD_INPUT, ""),
    ("storage.schema", "SchemaTooNew", BAD_INPUT, ""),
    ("worker.process", "WrongDatabase", BAD_INPUT, ""),
    ("coordinator.runner", "WorkersRefused", BAD_INPUT, ""),
    ("coordinator.dashboard.server", "DashboardError", BAD_INPUT, ""),
    ("coordinator.dashboard.server", "ListenError", RUNTIME, ""),
    ("worker.queue", "BadRedisURL", BAD_INPUT, ""),
    ("coordinator.ensemble", "EnsembleUsageError", BAD_INPUT, ""),
    ("coordinator.extend", "ExtendError", BAD_INPUT, ""),
    ("coordinator.gradcheck", "GradcheckUsageError", BAD_INPUT, ""),
    ("storage.db", "StorageError", RUNTIME, ""),
    ("worker.queue", "QueueError", RUNTIME, ""),
    ("coordinator.ensemble", "EnsembleError", RUNTIME, ""),
    ("coordinator.plots", "PlotError", RUNTIME, ""),
    ("coordinator.embedded", "EmbeddedRedisError", RUNTIME, ""),
)


class CliError(click.ClickException):
    """A mapped library error: ``Error: message`` on stderr, then ``exit_code``."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def cli_error(exc: BaseException) -> CliError | None:
    """The ``CliError`` for an expected library error, or None for anything else."""
    for module, name, code, prefix in ERROR_MAP:
        loaded = sys.modules.get(module)
        if loaded is not None and isinstance(exc, getattr(loaded, name)):
            return CliError(f"{prefix}{exc}", code)
    return None


class HpsweepGroup(click.Group):
    """A ``click.Group`` whose subcommands' library errors go through ``ERROR_MAP``."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.ClickException:
            raise
        except Exception as exc:
            mapped = cli_error(exc)
            if mapped is None:
                raise
            raise mapped from None
