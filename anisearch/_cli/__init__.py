"""The ``anisearch`` command: search, quota, providers, account features, cache and emulators.

Typer + rich. Every error is one ``anisearch: error: …`` line on stderr with a ``hint:`` line, never a
traceback; exit codes are listed in :mod:`anisearch._cli._common`.
"""

# No `from __future__ import annotations`: typer reads every command's annotations when it builds the
# command line (even for --help); evaluated once here they cost less than strings evaluated then.

import contextlib
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING, Annotated, Any

import typer
import typer._click.core
import typer._click.exceptions as click  # typer's own copy of click: the exceptions it raises
import typer.core

from anisearch._cli._common import (
    EXIT_INTERRUPTED,
    EXIT_OUTPUT_CLOSED,
    EXIT_USAGE,
    Command,
    OutputClosedError,
    VerboseOption,
    configure_logging,
    describe,
    examples,
    exit_code,
    root_verbose,
    say_error,
    unencodable,
    writes_utf8,
)
from anisearch._cli._startup import hide_unused_imports
from anisearch._cli._streams import open_std_streams
from anisearch._exceptions import AnisearchError

__all__ = ["COMMANDS", "app", "build_app", "command_named", "main"]

if TYPE_CHECKING:
    app: typer.Typer


def _usage_hint(ctx: typer._click.core.Context | None) -> str:
    path = ctx.command_path if ctx is not None else "anisearch"
    return f"'{path} -h' shows the options and examples"


class _Group(typer.core.TyperGroup):
    """Usage errors (a bad flag, a missing argument) in the same one-line style as every other error."""

    def main(  # type: ignore[override]  # click's signature; standalone_mode is handled here
        self,
        args: Any = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        except click.NoArgsIsHelpError as exc:
            typer.echo(exc.ctx.get_help() if exc.ctx else "")
            code = EXIT_USAGE
        except click.UsageError as exc:
            say_error(exc.format_message(), _usage_hint(exc.ctx))
            code = EXIT_USAGE
        except click.ClickException as exc:
            say_error(exc.format_message())
            code = exc.exit_code
        except typer.Abort:
            code = EXIT_INTERRUPTED
        except OutputClosedError:
            code = EXIT_OUTPUT_CLOSED
        except AnisearchError as exc:  # every command catches its own; a last line of defence
            say_error(describe(exc))
            code = exit_code(exc)
        except BaseExceptionGroup as group:  # a closed pipe met while the searches of a batch ran
            rest = group.split(OutputClosedError)[1]
            if rest is not None:
                raise
            code = EXIT_OUTPUT_CLOSED
        if not standalone_mode:
            return code
        sys.exit(code or 0)


def _version(value: bool) -> None:
    if value:
        import anisearch

        typer.echo(f"anisearch {anisearch.__version__} (distribution anisearch-gateway)")
        raise typer.Exit


def _root(
    version: Annotated[
        bool,
        typer.Option("--version", "-V", callback=_version, is_eager=True, help="Print the version and exit."),
    ] = False,
    verbose: VerboseOption = False,
) -> None:
    """Which anime, which episode, which second is this screenshot from?

    Exit codes: 0 ok, 1 no confident match, 2 usage, 3 bad input, 4 every provider failed,
    5 authentication, 6 the quota ledger is unusable, 130 interrupted.
    """
    del version
    root_verbose(verbose)
    configure_logging(verbose)


COMMANDS = (
    "search",
    "quota",
    "providers",
    "rankings",
    "recent",
    "credits",
    "login",
    "logout",
    "keys",
    "cache",
    "emulate",
    "serve",
)
"""Every command and command group, in the order ``--help`` lists them."""

_ACCOUNT_EXAMPLES = {
    "quota": (
        "anisearch quota",
        "anisearch quota tracemoe --refresh",
        "anisearch quota tracemoe --reset",
        "anisearch quota --json | jq .",
    ),
    "providers": ("anisearch providers", "anisearch providers --json"),
    "rankings": ("anisearch rankings --period weekly -n 10",),
    "recent": ("anisearch recent -n 5",),
    "credits": ("anisearch credits",),
    "login": ("anisearch login --email me@example.com",),
    "logout": ("anisearch logout",),
}

_ROOT_FLAGS = frozenset(["-v", "--verbose", "-V", "--version"])
"""The root options that may stand before a command name (all flags: none takes a value)."""


def _add(app: typer.Typer, name: str) -> None:
    """Register command (or group) ``name`` on ``app``, importing its module only now."""
    if name == "search":
        from anisearch._cli import _search

        app.command(cls=Command, epilog=_search.EPILOG)(_search.search)
    elif name in _ACCOUNT_EXAMPLES:
        from anisearch._cli import _account

        app.command(cls=Command, epilog=examples(*_ACCOUNT_EXAMPLES[name]))(getattr(_account, name))
    elif name == "keys":
        from anisearch._cli import _account

        app.add_typer(_account.keys_app, name="keys")
    elif name == "cache":
        from anisearch._cli import _emulate

        app.add_typer(_emulate.cache_app, name="cache")
    elif name == "emulate":
        from anisearch._cli import _emulate

        app.command(
            cls=_emulate.EmulateCommand,
            epilog=examples(
                "anisearch emulate tracemoe --port 8000",
                "anisearch emulate all --port 8000"
                "   # tracemoe :8000, whatanime-ga :8001, whatanimeisthis :8002, anilist :8003",
                "anisearch emulate tracemoe --quota 5 -o latency=0.5",
            ),
        )(_emulate.emulate)
    elif name == "serve":
        from anisearch._cli import _serve

        app.command(
            cls=Command,
            epilog=examples(
                "ANISEARCH_SERVER_CLIENTS=bot=s3cret-token anisearch serve --port 8080",
                "anisearch serve --host 0.0.0.0 --workers 4   # with ANISEARCH_LEDGER=redis://...",
                "anisearch serve --open   # guests by address, a small allowance each",
            ),
        )(_serve.serve)


def build_app(command: str | None = None) -> typer.Typer:
    """The ``anisearch`` command line: every command, or only ``command`` (one of :data:`COMMANDS`).

    With one command, the modules of the others are not imported and their options are not built, so a
    search starts sooner; it parses, prints and exits exactly as it does in the whole command line.
    """
    app = typer.Typer(
        name="anisearch",
        cls=_Group,
        help="Which anime, which episode, which second is this screenshot from?",
        epilog=examples(
            "anisearch search shot.jpg",
            "anisearch search screenshots/ --json > tags.jsonl",
            "anisearch quota",
            "anisearch emulate tracemoe --port 8000",
        ),
        no_args_is_help=True,
        add_completion=True,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,  # plain help: readable at 80 columns and when piped
        context_settings={"help_option_names": ["-h", "--help"]},
    )
    app.callback()(_root)
    for name in COMMANDS if command is None else (command,):
        _add(app, name)
    return app


def command_named(args: Sequence[str]) -> str | None:
    """The command that ``anisearch ARGS`` runs, when nothing else on the line needs the whole command
    line (root help, an unknown option or command: those get it, with its listings and suggestions)."""
    for arg in args:
        if arg in _ROOT_FLAGS:
            continue
        return arg if arg in COMMANDS else None
    return None


def __getattr__(name: str) -> Any:
    """``app``: the whole command line, built on first use (``main`` builds only the command it runs)."""
    if name == "app":
        app = globals()["app"] = build_app()
        return app
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def main() -> None:
    """Entry point of the ``anisearch`` console script."""
    open_std_streams()
    hide_unused_imports()
    _never_unencodable()
    build_app(command_named(sys.argv[1:]))(prog_name="anisearch")


def _never_unencodable() -> None:
    """Text the output's encoding cannot show (a Japanese title or an en dash, to an ASCII or Latin-1
    stream) is written plain or escaped (``-``, ``\\u30b3``: see :func:`unencodable`), never a traceback in
    the middle of the output. Tables escape their cells before their layout (:func:`legible`)."""
    for stream in (sys.stdout, sys.stderr):
        reconfigure = getattr(stream, "reconfigure", None)
        if reconfigure is not None and not writes_utf8(stream):
            with contextlib.suppress(AttributeError, OSError, ValueError):
                reconfigure(errors=unencodable())
