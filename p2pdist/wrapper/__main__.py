"""``p2pdist-wrapper``: run an SMS program from the p2pdist cache, or ask SMS to retry later.

One invocation: read the options, pick the package, ask the agent (gate), run the command from
the cached folder under a lease (run), write one log line (log) and return the command's exit
code, or one of the codes in exitcodes. Nothing escapes as a traceback: SMS would only see a
generic failure.
"""

from __future__ import annotations

import os
import sys
import time

from p2pdist.errors import P2pdistError, UsageError, one_line
from p2pdist.wrapper import gate
from p2pdist.wrapper.exitcodes import EXIT_INTERNAL, EXIT_NO_PACKAGE, EXIT_NOT_FOUND, EXIT_USAGE, RETRY_DEFAULT, exit_status
from p2pdist.wrapper.log import LogRecord, default_log_path, write_record
from p2pdist.wrapper.resolve import (
    USAGE,
    Command,
    Invocation,
    NoPackageId,
    posix_command_line,
    resolve_package,
    start_in,
    windows_command_line,
)

TYPE_CHECKING = False  # typing is not imported at run time (see p2pdist.records)
if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence
    from contextlib import AbstractContextManager

    Opener = Callable[[Invocation], AbstractContextManager[gate.AgentControl]]

PROG = "p2pdist-wrapper"
HELP = f"""{USAGE}

Runs <command> from the p2pdist cache once the package is complete and re-verified, and
returns its exit code unchanged; otherwise exits with the retry code so that SMS tries again.

  --pkg ID           SMS PackageID (default: the current directory's name, e.g. PS100012)
  --version N        require this SourceVersion
  --retry-code N     exit code for "not ready yet" (default 1618)
  --wait SECONDS     wait up to this long while the download progresses (default 0)
  --unpublished-code N
                     exit code once the package has not been published for the grace
                     (default 7705: SMS reports the program failed instead of retrying)
  --unpublished-grace SECONDS
                     how long after the agent first hears "not published" the wrapper
                     still returns the retry code (default 86400)
  --agent ADDR       control API: unix:/path or http://127.0.0.1:PORT (default: the agent's)
  --token-file FILE  control API token (default: the agent's)
  --log FILE         log file (default: $P2PDIST_WRAPPER_LOG, else the machine's log directory)

Options end at '--' or at the first word that does not start with '--'.
Own exit codes: 7701 bad usage, 7702 no package id, 7703 command not found, 7704 internal error,
7705 not published.
"""

def _default_opener(invocation: Invocation) -> AbstractContextManager[gate.AgentControl]:
    return gate.open_control(invocation.agent, invocation.token_file, gate.QUICK_TIMEOUT)


def _say(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


class _Logger:
    """Writes the invocation's single log line; a log that cannot be written is reported, not fatal."""

    def __init__(self, env: Mapping[str, str], started: float) -> None:
        self.env = env
        self.started = started
        self.path: str | None = None

    def use(self, invocation: Invocation) -> None:
        if invocation.log:
            self.path = invocation.log

    def write(self, outcome: str, code: int, **fields: object) -> int:
        path = self.path or default_log_path(self.env)
        record = LogRecord(outcome=outcome, exit_code=code, duration=time.monotonic() - self.started, **fields)  # type: ignore[arg-type]  # fields: LogRecord's optional fields by name
        if problem := write_record(path, record):
            _say(problem)
        return code


def _prepare(
    opener: Opener, invocation: Invocation, package_id: str, timing: gate.Timing
) -> gate.Ready | gate.NotReady:
    try:
        with opener(invocation) as control:
            return gate.prepare(
                control,
                package_id,
                pid=os.getpid(),
                version=invocation.version,
                wait=invocation.wait,
                timing=timing,
            )
    except (P2pdistError, OSError) as exc:
        return gate.NotReady(f"agent unavailable: {one_line(str(exc)) or type(exc).__name__}")


def _release(opener: Opener, invocation: Invocation, lease: str, timing: gate.Timing) -> str | None:
    try:
        with opener(invocation) as control:
            return gate.release(control, lease, timing=timing)
    except (P2pdistError, OSError) as exc:
        return f"lease not released ({one_line(str(exc))}); the agent ends it when this process exits"


def invoke(
    argv: Sequence[str] | None = None,
    *,
    cwd: str | None = None,
    env: Mapping[str, str] | None = None,
    opener: Opener = _default_opener,
    timing: gate.Timing = gate.Timing(),
) -> int:
    """One wrapper run; ``argv`` is the words after the program name (default: this process's).

    On Windows with ``argv`` None the command is taken verbatim from GetCommandLineW().
    """
    env = os.environ if env is None else env
    logger = _Logger(env, time.monotonic())
    retry, package_id, program = RETRY_DEFAULT, None, None
    cwd = os.getcwd() if cwd is None else cwd
    try:
        try:
            invocation, command = _read_command_line(argv)
        except UsageError as exc:
            _say(f"{exc}\n{USAGE}")
            return logger.write("usage", EXIT_USAGE, reason=str(exc))
        if invocation.help:
            print(HELP, end="")
            return 0
        logger.use(invocation)
        retry, program = invocation.retry_code, command.program
        try:
            package_id = resolve_package(invocation, cwd)
        except NoPackageId as exc:
            _say(str(exc))
            return logger.write("no-package", EXIT_NO_PACKAGE, program=program, reason=str(exc))
        return _run_package(invocation, command, package_id, start_in(cwd, package_id), env, logger, opener, timing)
    except KeyboardInterrupt:
        reason = "interrupted"
        _say(reason)
        return logger.write("interrupted", retry, package=package_id, program=program, reason=reason)
    except Exception as exc:  # the last line of defence: one line and a distinct code, never a traceback
        reason = f"internal error: {type(exc).__name__}: {one_line(str(exc))}"
        _say(reason)
        return logger.write("internal", EXIT_INTERNAL, package=package_id, program=program, reason=reason)


def _read_command_line(argv: Sequence[str] | None) -> tuple[Invocation, Command]:
    if argv is None and sys.platform == "win32":  # pragma: no cover - Windows only
        from p2pdist.wrapper.winargs import current_command_line

        return windows_command_line(current_command_line(), sys.orig_argv, sys.argv)
    return posix_command_line(sys.argv[1:] if argv is None else argv)


def _run_package(
    invocation: Invocation,
    command: Command,
    package_id: str,
    subfolder: tuple[str, ...],
    env: Mapping[str, str],
    logger: _Logger,
    opener: Opener,
    timing: gate.Timing,
) -> int:
    retry = invocation.retry_code
    try:
        prepared = _prepare(opener, invocation, package_id, timing)
    except KeyboardInterrupt:
        prepared = gate.NotReady("interrupted before the command started")
    if isinstance(prepared, gate.NotReady):
        if prepared.unpublished_since is not None:
            return _unpublished(invocation, command, package_id, prepared, logger)
        _say(f"{package_id} not ready: {prepared.reason}; exit {retry} so that SMS retries")
        return logger.write(
            "retry", retry, package=package_id, program=command.program, reason=prepared.reason, progress=prepared.progress
        )
    # Only a run needs these (subprocess, signals, threads): "not ready" answers without them.
    from p2pdist.wrapper import bitness
    from p2pdist.wrapper.run import CannotStart, find_program, run

    outcome, reason = "ran", None
    try:
        run_dir = _run_dir(prepared.path, subfolder)
        view = bitness.caller_view()  # a 32-bit SMS client's command runs as under WOW64
        program = bitness.program_name(command.program, env, view)
        executable = find_program(program, prepared.path, bitness.search_env(env, view), start_dir=run_dir)
        if executable is None:
            outcome, code = "not-found", EXIT_NOT_FOUND
            reason = f"{command.program!r} is not in the package folder {prepared.path} nor on the search path"
            _say(reason)
        else:
            try:
                code = run(*bitness.for_view(command, executable, env, view), run_dir)
            except CannotStart as exc:
                outcome, code, reason = "not-found", EXIT_NOT_FOUND, str(exc)
                _say(reason)
    finally:
        problem = _release(opener, invocation, prepared.lease, timing)
        if problem:
            _say(problem)
    if problem:
        reason = f"{reason}; {problem}" if reason else problem
    return logger.write(outcome, code, package=package_id, program=command.program, reason=reason)


def _run_dir(package_path: str, subfolder: tuple[str, ...]) -> str:
    """The cached copy of the folder the program was started in, when the package has it."""
    if not subfolder:
        return package_path
    folder = os.path.join(package_path, *subfolder)
    if os.path.isdir(folder):
        return folder
    _say(f"the package has no folder {os.path.join(*subfolder)!r}; running the command in its top folder")
    return package_path


def _unpublished(invocation: Invocation, command: Command, package_id: str, prepared: gate.NotReady, logger: _Logger) -> int:
    """Not published: the retry code during the grace, then the failure code, so SMS stops
    retrying a program whose package will not come."""
    assert prepared.unpublished_since is not None
    since = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(prepared.unpublished_since))
    waited = max(0.0, time.time() - prepared.unpublished_since)
    grace = invocation.unpublished_grace
    if waited >= grace:
        code = invocation.unpublished_code
        reason = f"{prepared.reason}; not published since {since}, past the {grace:g} s grace"
        _say(f"{package_id} {reason}; exit {code}: SMS reports the program failed")
        return logger.write("not-published", code, package=package_id, program=command.program, reason=reason)
    retry = invocation.retry_code
    reason = f"{prepared.reason}; not published since {since}, exit {invocation.unpublished_code} after the {grace:g} s grace"
    _say(f"{package_id} {reason}; exit {retry} so that SMS retries meanwhile")
    return logger.write("retry", retry, package=package_id, program=command.program, reason=reason, progress=prepared.progress)


def main() -> int:
    """Console entry point: the exit status that makes the parent see ``invoke()``'s code whole."""
    return exit_status(invoke())


if __name__ == "__main__":
    sys.exit(main())
