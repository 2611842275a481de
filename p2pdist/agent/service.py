"""Running the agent as a long-lived service: logging, signals, start and graceful stop.

Shared by ``python -m p2pdist.agent`` and ``p2pdist agent``. SIGTERM/SIGINT (Ctrl+C, Ctrl+Break
on Windows, or there the named stop event of winstop, which a service launcher sets on a service
stop) close the control API, announce ``stopped`` to the tracker, save resume data and counters,
then exit 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path

from p2pdist.agent.config import AgentSettings, load_agent_settings
from p2pdist.agent.control import ControlServer
from p2pdist.agent.daemon import Agent
from p2pdist.engine.runtime import run
from p2pdist.logfile import LOG_FORMAT, rotating_file_handler

log = logging.getLogger("p2pdist.agent")

def default_config_path() -> Path:
    from p2pdist.control.schema import default_state_dir

    if sys.platform == "win32":
        return default_state_dir() / "agent.toml"
    return Path("/etc/p2pdist/agent.toml")


def setup_logging(settings: AgentSettings, *, verbose: bool = False) -> None:
    """Log to stderr and, unless ``log_file = ""``, to a rotating file."""
    level = logging.DEBUG if verbose else getattr(logging, settings.log_level.upper())
    root = logging.getLogger("p2pdist")
    root.setLevel(level)
    formatter = logging.Formatter(LOG_FORMAT)
    stderr = logging.StreamHandler(sys.stderr)
    stderr.setFormatter(formatter)
    root.addHandler(stderr)
    log_file = settings.log_file
    if log_file is not None and str(log_file) not in ("", "."):
        root.addHandler(rotating_file_handler(log_file))


def install_stop_handlers(stop: asyncio.Event) -> Callable[[], None]:
    """Stop on SIGINT/SIGTERM (and Ctrl-Break or the stop event on Windows); returns the undo."""
    loop = asyncio.get_running_loop()
    signals = [signal.SIGINT, signal.SIGTERM]
    if sys.platform == "win32":  # pragma: no cover - Windows only
        from p2pdist.agent.winstop import StopWatcher

        signals.append(signal.SIGBREAK)
        for signum in signals:
            signal.signal(signum, lambda *_: loop.call_soon_threadsafe(stop.set))
        watcher = StopWatcher(lambda: loop.call_soon_threadsafe(stop.set))
        return watcher.close
    for signum in signals:
        loop.add_signal_handler(signum, stop.set)
    return lambda: None


async def serve(settings: AgentSettings, stop: asyncio.Event | None = None) -> int:
    """Run the agent and its control API until ``stop`` is set (or a stop signal arrives)."""
    uninstall: Callable[[], None] = lambda: None
    if stop is None:
        stop = asyncio.Event()
        uninstall = install_stop_handlers(stop)
    agent = Agent(settings)
    control = ControlServer(agent, settings.control, settings.token_file)
    try:
        await agent.start()
        await control.start()
        print(f"p2pdist agent: control API on {control.address}, peers on port {agent.session.port}", file=sys.stderr, flush=True)
        await stop.wait()
        log.info("stopping")
    finally:
        await control.close()
        await agent.close()
        uninstall()
    return 0


def run_agent(config: Path | None, *, verbose: bool = False) -> int:
    settings = load_agent_settings(config if config is not None else default_config_path())
    setup_logging(settings, verbose=verbose)
    with contextlib.suppress(KeyboardInterrupt):
        return run(serve(settings))
    return 0
