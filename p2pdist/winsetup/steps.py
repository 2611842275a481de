"""Carrying out an install, upgrade or uninstall on Windows, one logged step at a time.

Every step says what it does on stdout and in ``%ProgramData%\\p2pdist\\logs\\install.log`` (SMS
keeps only the exit code), and the first failure stops the run with one line and exit 1. An
install over an existing one is the upgrade: the service is stopped gracefully (resume data
saved), the program files are replaced, the cache, state and agent.toml stay.
"""

from __future__ import annotations

import contextlib
import ctypes
import datetime
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from p2pdist.control.schema import TOKEN_FILE_NAME
from p2pdist.errors import LocalError
from p2pdist.winsetup import plan, scm

STOP_TIMEOUT = 90.0  # the service host ends the agent itself after 60 s
START_TIMEOUT = 60.0
RESTART_PAUSE = 2.0
OLD_SUFFIX = ".p2pdist-old"
MOVEFILE_DELAY_UNTIL_REBOOT = 0x4
KEY_WOW64_64KEY = 0x0100


class StepError(LocalError):
    """A step failed; the message is the line the administrator reads."""


class Log:
    """Prints each line and appends it to install.log (created on first use)."""

    def __init__(self, layout: plan.Layout) -> None:
        self.path = Path(layout.log_dir, "install.log")

    def __call__(self, text: str) -> None:
        print(f"p2pdist setup: {text}", flush=True)
        stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        with contextlib.suppress(OSError):
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a", encoding="utf-8") as handle:
                handle.write(f"{stamp} {text}\n")


def machine_layout() -> plan.Layout:
    """This machine's layout, the data folders exactly where the agent and wrapper look by default."""
    from p2pdist.agent.config import default_cache_dir
    from p2pdist.control.schema import default_state_dir

    layout = plan.Layout.for_machine(dict(os.environ), cache_dir=str(default_cache_dir()))
    return plan.Layout(layout.install_dir, str(default_state_dir()), layout.cache_dir, layout.windir)


_NOT_WINDOWS = "a Windows setup step"


def is_admin() -> bool:
    if sys.platform != "win32":  # also tells a type checker elsewhere that the Windows API is absent
        raise OSError(_NOT_WINDOWS)
    return bool(ctypes.windll.shell32.IsUserAnAdmin())


def run_command(argv: Sequence[str], log: Log, *, check: bool = True) -> int:
    """A system tool, its output into the log; StepError on a non-zero exit when ``check``."""
    log("run " + subprocess.list2cmdline(list(argv)))
    try:
        result = subprocess.run(list(argv), capture_output=True, timeout=300, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError) as exc:
        raise StepError(f"{argv[0]} could not run: {exc}") from None
    output = (result.stdout + result.stderr).decode("mbcs", "replace").strip()
    if output:
        log(f"  {argv[0]}: {' / '.join(line.strip() for line in output.splitlines() if line.strip())[:500]}")
    if check and result.returncode:
        raise StepError(f"{argv[0]} failed with exit code {result.returncode}: {output[:300]}")
    return result.returncode


# ---------------------------------------------------------------------------- files


def _place(source: Path, target: Path) -> None:
    """Copy ``source`` over ``target``; a target in use (a running wrapper) is moved aside first
    (Windows lets a running program be renamed, not replaced) and deleted at the next reboot."""
    target.parent.mkdir(parents=True, exist_ok=True)
    temp = target.with_name(target.name + ".p2pdist-new")
    shutil.copyfile(source, temp)
    try:
        os.replace(temp, target)
    except PermissionError:
        aside = target.with_name(target.name + OLD_SUFFIX)
        with contextlib.suppress(OSError):
            aside.unlink()
        os.replace(target, aside)
        os.replace(temp, target)
        _delete_at_reboot(aside)


def _delete_at_reboot(path: Path) -> None:
    if sys.platform != "win32":  # also tells a type checker elsewhere that the Windows API is absent
        raise OSError(_NOT_WINDOWS)
    ctypes.windll.kernel32.MoveFileExW(str(path), None, MOVEFILE_DELAY_UNTIL_REBOOT)


def _remove(path: Path) -> None:
    """Delete a file; one in use is renamed aside and deleted at the next reboot."""
    try:
        path.unlink()
    except FileNotFoundError:
        return
    except PermissionError:
        aside = path.with_name(path.name + OLD_SUFFIX)
        with contextlib.suppress(OSError):
            aside.unlink()
        os.replace(path, aside)
        _delete_at_reboot(aside)


def copy_tree(source: Path, target: Path, log: Callable[[str], None]) -> None:
    """Make ``target`` hold exactly the bundle's files: new ones placed, stale ones removed."""
    wanted = {p.relative_to(source) for p in source.rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    for rel in sorted(wanted):
        _place(source / rel, target / rel)
    stale = [
        p for p in target.rglob("*")
        if p.is_file() and p.relative_to(target) not in wanted and "__pycache__" not in p.parts and not p.name.endswith(OLD_SUFFIX)
    ]
    for path in stale:
        _remove(path)
    log(f"{len(wanted)} files in {target}" + (f", {len(stale)} of the previous version removed" if stale else ""))


def copy_runtime(bundle: Path, target: Path) -> int:
    """python/ and lib/ of ``bundle`` into ``target``, for an uninstall that removes ``bundle``."""
    try:
        for part in ("python", "lib"):
            # copyfile, not copytree's default copy2: 3.12's copy2 calls CopyFile2, which Wine 8 lacks.
            shutil.copytree(bundle / part, target / part, ignore=shutil.ignore_patterns("__pycache__"),
                            copy_function=shutil.copyfile, dirs_exist_ok=True)
    except OSError as exc:
        print(f"p2pdist setup: error: cannot copy python to {target}: {exc}", file=sys.stderr, flush=True)
        return 1
    return 0


def remove_tree(path: Path, log: Callable[[str], None]) -> None:
    if not path.exists():
        return
    failures: list[str] = []

    def on_error(function: Callable[..., object], name: str, exc: BaseException) -> None:
        failures.append(name)

    shutil.rmtree(path, onexc=on_error)  # type: ignore[call-arg]  # 3.12
    if path.exists():
        for left in failures:
            with contextlib.suppress(OSError):
                _remove(Path(left))
    log(f"removed {path}" + (f" ({len(failures)} files in use, deleted at the next reboot)" if failures else ""))


# ---------------------------------------------------------------------------- registry


def write_registry(layout: plan.Layout, version: str, log: Log) -> None:
    """HKLM\\SOFTWARE\\p2pdist (64-bit view): where the %windir% copy of the wrapper finds python."""
    if sys.platform != "win32":  # also tells a type checker elsewhere that the Windows API is absent
        raise OSError(_NOT_WINDOWS)
    import winreg

    with winreg.CreateKeyEx(winreg.HKEY_LOCAL_MACHINE, plan.REGISTRY_KEY, 0, winreg.KEY_WRITE | KEY_WOW64_64KEY) as key:
        winreg.SetValueEx(key, "InstallDir", 0, winreg.REG_SZ, layout.install_dir)
        winreg.SetValueEx(key, "DataDir", 0, winreg.REG_SZ, layout.data_dir)  # the service host's agent.toml
        winreg.SetValueEx(key, "Version", 0, winreg.REG_SZ, version)
    log(f"HKLM\\{plan.REGISTRY_KEY} InstallDir = {layout.install_dir}")


def delete_registry(log: Log) -> None:
    if sys.platform != "win32":  # also tells a type checker elsewhere that the Windows API is absent
        raise OSError(_NOT_WINDOWS)
    import winreg

    try:
        winreg.DeleteKeyEx(winreg.HKEY_LOCAL_MACHINE, plan.REGISTRY_KEY, KEY_WOW64_64KEY, 0)
    except FileNotFoundError:
        return
    log(f"HKLM\\{plan.REGISTRY_KEY} removed")


# ---------------------------------------------------------------------------- service


def stop_service(log: Log) -> bool:
    """Stop the agent's service gracefully if it runs; True if it exists."""
    with scm.Manager() as manager:
        status = manager.status(plan.SERVICE)
        if status is None:
            return False
        if status.state != scm.STOPPED:
            log("stopping the service (the agent announces 'stopped' and saves its resume data)...")
            manager.request_stop(plan.SERVICE)
            status = manager.wait_until(plan.SERVICE, lambda s: s.state == scm.STOPPED, STOP_TIMEOUT)
            if status is not None and status.state != scm.STOPPED:
                raise StepError(f"the service did not stop within {STOP_TIMEOUT:g} s (state {status.name})")
            log("service stopped")
        return True


def register_service(layout: plan.Layout, log: Log) -> None:
    with scm.Manager() as manager:
        existed = manager.exists(plan.SERVICE)
        manager.create_or_update(plan.SERVICE, plan.SERVICE_DISPLAY, layout.service_binary)
        manager.describe(plan.SERVICE, plan.SERVICE_DESCRIPTION)
        flag = manager.restart_on_failure(plan.SERVICE, plan.RESTART_DELAYS_MS, plan.RESTART_RESET_SECONDS)
    if not flag:
        log("this system has no failure-actions flag (Windows XP, Wine): a restart follows a crash of the service host only")
    log(f"service {plan.SERVICE} {'updated' if existed else 'registered'}: automatic start, LocalSystem, "
        f"restart on failure after {', '.join(f'{d // 1000} s' for d in plan.RESTART_DELAYS_MS)}")


def start_service(layout: plan.Layout, log: Log) -> None:
    """Start the service and wait for the agent itself: the service host reports running as
    soon as it has started python, so an agent that fails at start (a port taken, a bad
    agent.toml) shows only as the service stopping a moment later, or as its control token
    never being written. A start that ends at once is tried once more (what the failure
    actions would do a minute later), its reason logged first."""
    service_log = Path(layout.log_dir, "service.log")
    token = Path(layout.data_dir, TOKEN_FILE_NAME)
    for attempt in (1, 2):
        before = _mtime(token)

        def agent_up() -> bool:  # a control token written since this start
            return _mtime(token) not in (None, before)

        with scm.Manager() as manager:
            manager.start(plan.SERVICE)  # returns once the service is start-pending or further
            status = manager.wait_until(
                plan.SERVICE, lambda s: s.state == scm.STOPPED or (s.state == scm.RUNNING and agent_up()), START_TIMEOUT
            )
        if status is not None and status.state == scm.RUNNING:
            log("service running, the agent's control API answering" if agent_up() else
                f"service running; the agent is still starting after {START_TIMEOUT:g} s (see {service_log})")
            return
        reason = f"{describe(status)}: {last_line(service_log) or 'it wrote nothing'} (in {service_log})"
        if attempt == 1 and status is not None and status.state == scm.STOPPED:
            log(f"the service stopped as it started ({reason}); starting it once more")
            time.sleep(RESTART_PAUSE)
            continue
        break
    raise StepError(f"the service did not start ({reason})")


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return None


def describe(status: scm.Status | None) -> str:
    """The service's state and, once stopped, the exit codes the service manager holds."""
    if status is None:
        return "the service is gone"
    if status.state != scm.STOPPED:
        return f"state {status.name}"
    if status.win32_exit == scm.ERROR_SERVICE_SPECIFIC_ERROR:
        return f"state stopped, the agent's exit code {status.service_exit}"
    return f"state stopped, exit code {status.win32_exit}: {scm.error_text(status.win32_exit)}"


def last_line(path: Path) -> str:
    """The last non-blank line of a log (the agent's one-line reason it stopped), or ''."""
    with contextlib.suppress(OSError):
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        return next((line.strip() for line in reversed(lines) if line.strip()), "")
    return ""


def delete_service(log: Log) -> None:
    with scm.Manager() as manager:
        if manager.delete(plan.SERVICE):
            log(f"service {plan.SERVICE} removed")


# ---------------------------------------------------------------------------- the two commands


def install(bundle: Path, layout: plan.Layout, settings: plan.Settings | None, version: str, log: Log) -> None:
    """Install, or upgrade in place; ``settings`` None keeps an existing agent.toml."""
    config = Path(layout.config)
    if settings is None and not config.exists():
        raise StepError("a first install needs the site server's URL and public key: install.cmd URL KEY")
    port = settings.port if settings is not None else plan.port_from_toml(config.read_text(encoding="utf-8"))
    log(f"p2pdist {version}: {'upgrading' if Path(layout.python).exists() else 'installing'} into {layout.install_dir}")
    stop_service(log)
    target = Path(layout.install_dir)
    if bundle.resolve() != target.resolve():
        copy_tree(bundle, target, log)
    for folder in (layout.data_dir, layout.cache_dir, layout.log_dir):
        Path(folder).mkdir(parents=True, exist_ok=True)
    for folder in layout.secured_dirs():
        for argv in plan.acl_commands(folder):
            run_command(argv, log)
    if settings is not None:
        if config.exists():
            _place(config, config.with_name("agent.toml.previous"))
        text = plan.agent_toml(settings, layout)
        temp = config.with_name("agent.toml.new")
        temp.write_text(text, encoding="utf-8")
        os.replace(temp, config)
        log(f"{config} written (repository {settings.repository}, peer port {settings.port})")
    else:
        log(f"{config} kept")
    write_registry(layout, version, log)
    _place(target / plan.WRAPPER, Path(layout.windir_wrapper))
    log(f"{layout.windir_wrapper} placed: program lines say p2pdist-wrapper.exe --pkg ID <command>")
    run_command(plan.firewall_delete(), log, check=False)  # none yet on a first install
    run_command(plan.firewall_add(layout, port), log)
    register_service(layout, log)
    start_service(layout, log)
    log("done")


def uninstall(layout: plan.Layout, log: Log, *, keep_data: bool) -> None:
    """Undo every install step; the program folder itself is removed by the caller's python
    being outside it (uninstall.cmd runs a copy from %TEMP%)."""
    log(f"removing p2pdist from {layout.install_dir}")
    stop_service(log)
    delete_service(log)
    run_command(plan.firewall_delete(), log, check=False)
    _remove(Path(layout.windir_wrapper))
    log(f"{layout.windir_wrapper} removed")
    delete_registry(log)
    here = Path(sys.executable).resolve().parent.parent
    if here == Path(layout.install_dir).resolve():
        raise StepError("uninstall cannot run from the folder it removes; use uninstall.cmd")
    remove_tree(Path(layout.install_dir), log)
    if keep_data:
        log(f"{layout.data_dir} kept (--keep-data)")
    else:
        print(f"p2pdist setup: removing {layout.data_dir} (cache, state, agent.toml, logs)", flush=True)
        for folder in reversed(layout.secured_dirs()):
            remove_tree(Path(folder), lambda text: print(f"p2pdist setup: {text}", flush=True))
    print("p2pdist setup: done", flush=True)
