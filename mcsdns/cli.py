"""``mcsdns``: argv and environment → ``Settings`` → ``app.run``; logging set up here.

A bad flag, value or config file prints one line, ``mcsdns: error: ...``, and exits 2 (argparse's
convention, without the usage dump that hides the message). Anything else that stops the server before it
is up (a port in use, a kubeconfig or AWS credentials that cannot be used) is one such line too, naming the
setting and the cause, with exit status 1; ``--log-level debug`` logs the traceback before it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

from mcsdns import __version__
from mcsdns.errors import ConfigError, McsDnsError
from mcsdns.ops import commands as ops_commands
from mcsdns.settings import SETTINGS, LogSettings, Settings, load_config_file, parse_bool, resolve


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"mcsdns: error: {message}\n")


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def setup_logging(settings: LogSettings) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if settings.format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.level.upper())


# --help's sections, one per group of settings (Settings' fields), in declaration order.
HELP_GROUPS = {
    None: "general",
    "server": "DNS server",
    "zone": "the zone",
    "sources": "zone sources and the saved zone",
    "kubernetes": "Kubernetes",
    "cloudmap": "AWS Cloud Map",
    "identity": "cluster identity",
    "lease": "leader election",
    "forward": "forwarding (sidecar resolver)",
    "log": "logging",
}


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="mcsdns", description="Multi-cluster service discovery: clusterset.local DNS.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    commands.required = True
    serve = commands.add_parser(
        "serve",
        help="serve the clusterset zone",
        description="Serve the clusterset zone. Every flag can also be set as MCSDNS_<FLAG> in the "
        "environment or as a key in --config FILE; flags win over the environment, which wins over the file.",
    )
    serve.add_argument("--config", metavar="FILE", help="YAML file of settings (keys are flag names)")
    groups: dict[str | None, argparse._ArgumentGroup] = {}
    for declared in SETTINGS:
        if declared.group not in groups:
            groups[declared.group] = serve.add_argument_group(HELP_GROUPS.get(declared.group, "general"))
        switch = declared.parse is parse_bool
        groups[declared.group].add_argument(
            declared.flag,
            metavar=declared.metavar,
            action="append" if declared.repeat else "store",
            # A boolean is a switch, as every Kubernetes component's (pflag): a bare --flag is true,
            # --flag=false turns it off, and --flag true still reads as before.
            nargs="?" if switch else None,
            const="true" if switch else None,
            help=f"{declared.help}"
            + (f" (default {declared.shown})" if declared.shown else "")
            + f" [{declared.env}]",
        )
    demo = commands.add_parser(
        "demo",
        help="run the seed tutorial on this machine: two emulated clusters, Cloud Map, two engines",
        description="The seed tutorial with mcsdns: exports nginx-hello from cls1 and answers it in cls2.",
    )
    demo.add_argument(
        "--port",
        type=int,
        default=5353,
        metavar="PORT",
        help="DNS port of cls1; cls2 gets PORT+1 (0: any free ports; default 5353)",
    )
    demo.add_argument("--once", action="store_true", help="print the tutorial's results and exit")
    commands.add_parser("version", help="print the version")
    ops_commands.add_commands(commands)
    return parser


def settings_from(args: argparse.Namespace, environ: dict[str, str]) -> Settings:
    config_path = args.config or environ.get("MCSDNS_CONFIG")
    config = load_config_file(config_path) if config_path else {}
    flags = {declared.key: getattr(args, declared.key) for declared in SETTINGS}
    return resolve(flags, environ=environ, config=config, config_path=config_path or "")


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["worker"] and len(argv) == 2:
        # Not a command for people: how `serve --workers N` starts its serving processes (workers.py).
        from mcsdns import app, workers

        settings, channel = workers.read_settings(int(argv[1]))
        setup_logging(settings.log)
        return app.run_worker(settings, channel)
    args = build_parser().parse_args(argv)
    if args.command == "version":
        print(f"mcsdns {__version__}")
        return 0
    if args.command == "demo":
        if not 0 <= args.port <= 65534:
            print("mcsdns: error: --port must be 0..65534", file=sys.stderr)
            return 2
        setup_logging(LogSettings(level="warning"))
        try:
            # The demo and its emulators are the sandbox package (sandbox/ in the repository), which the
            # product wheel does not contain: import it by name, so nothing in mcsdns depends on it.
            demo = importlib.import_module("mcsdns_sandbox.demo")
        except ModuleNotFoundError as exc:
            if exc.name not in ("mcsdns_sandbox", "mcsdns_sandbox.demo"):
                raise
            print(
                "mcsdns: error: the demo needs the sandbox package (the emulated clusters and Cloud Map): "
                "from a checkout, pip install --require-hashes -r requirements/demo.txt && "
                "pip install --no-deps --no-build-isolation -e ./sandbox",
                file=sys.stderr,
            )
            return 2
        return _one_line_errors(lambda: int(demo.run_demo(port=args.port, once=args.once)))
    if args.command in ops_commands.COMMANDS:
        return _one_line_errors(lambda: ops_commands.run(args, dict(os.environ)))
    return _one_line_errors(lambda: _serve(args))


def _serve(args: argparse.Namespace) -> int:
    settings = settings_from(args, dict(os.environ))
    setup_logging(settings.log)
    from mcsdns import app  # deferred: `mcsdns version` and errors stay fast

    app.check_sources(settings)
    environ = dict(os.environ)
    return app.run(
        settings,
        load=lambda: settings_from(args, environ),
        config_path=args.config or environ.get("MCSDNS_CONFIG"),
    )


def _one_line_errors(command: Callable[[], int]) -> int:
    """Run a command; a bad setting is one line and exit 2, a failure with a message for people (a port in
    use, an unreachable API) one line and exit 1, Ctrl-C 130."""
    try:
        return command()
    except ConfigError as exc:
        return _fail(exc, 2)
    except McsDnsError as exc:
        return _fail(exc, 1)
    except KeyboardInterrupt:
        return 130


def _fail(exc: McsDnsError, status: int) -> int:
    """Print ``exc`` as the one ``mcsdns: error:`` line; the traceback goes to the debug log only."""
    logging.getLogger("mcsdns").debug("stopped by %s", type(exc).__name__, exc_info=exc)
    message = " ".join(str(exc).split()) or type(exc).__name__  # one line, whatever a library wrote
    print(f"mcsdns: error: {message}", file=sys.stderr)
    return status
