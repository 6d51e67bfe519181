"""The signals a foreground container gets from whoever started it (docker's sig-proxy set).

A foreground `trust run` passes these on to its container (run/monitor.py), and the `trust`
executable passes them on to the agent that runs the command for it (trust/console.py): one set, so
that a signal reaches the container the same way with an agent or without. A module of its own,
importing only `_signal`, because the executable imports it before it knows what it will run
(`signal` imports `enum`, ~4 ms of every command's start; `_signal` is built into the interpreter).
"""

TYPE_CHECKING = False
if TYPE_CHECKING:  # the same functions and constants (typeshed describes only `signal`)
    import signal as _signal
else:
    import _signal

FORWARDED_SIGNALS: tuple[int, ...] = (
    _signal.SIGINT,
    _signal.SIGTERM,
    _signal.SIGHUP,
    _signal.SIGQUIT,
    _signal.SIGUSR1,
    _signal.SIGUSR2,
)
DELEGATED_SIGNALS: tuple[int, ...] = (*FORWARDED_SIGNALS, _signal.SIGWINCH)
"""What the `trust` executable passes on to the agent running its command (trust/cli/console.py,
trust/cli/agent.py): the forwarded signals, and SIGWINCH so that a `run -t` or `attach` there
learns that the caller's terminal changed size. SIGWINCH's default action is to be ignored."""


def parse_signal(text: str) -> int | None:
    """A signal from a name (`TERM`, `SIGTERM`, any case) or a number; None if it is neither."""
    import signal

    if text.isdigit():
        number = int(text)
        return number if 0 < number < signal.NSIG else None
    name = text.upper()
    name = name if name.startswith("SIG") else f"SIG{name}"
    member = getattr(signal.Signals, name, None) if name.isidentifier() else None
    return int(member) if isinstance(member, signal.Signals) else None
