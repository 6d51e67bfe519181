"""The signals a foreground container gets from whoever started it (docker's sig-proxy set).

A foreground `trust run` passes these on to its container (run/monitor.py), and the `trust`
executable passes them on to the agent that runs the command for it (trust/console.py): one set, so
that a signal reaches the container the same way with an agent or without. A module of its own,
importing only `signal`, because the executable imports it before it knows what it will run.
"""

import signal

FORWARDED_SIGNALS = (
    signal.SIGINT,
    signal.SIGTERM,
    signal.SIGHUP,
    signal.SIGQUIT,
    signal.SIGUSR1,
    signal.SIGUSR2,
)
