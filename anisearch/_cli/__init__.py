"""The ``anisearch`` command: search, quota, providers, account features, cache and emulators.

Typer + rich. Every error is one ``anisearch: error: …`` line on stderr with a ``hint:`` line, never a
traceback; exit codes are listed in :mod:`anisearch._cli._common`.
"""

# No `from __future__ import annotations`: typer reads every command's annotations when it builds the
# command line (even for --help); evaluated once here they cost less than strings evaluated then.

import sys
from typing import Annotated, Any

import typer
import typer._click.core
import typer._click.exceptions as click  # typer's own copy of click: the exceptions it raises
import typer.core

from anisearch._cli import _account, _emulate, _search, _serve
from anisearch._cli._common import (
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    Command,
    VerboseOption,
    configure_logging,
    describe,
    examples,
    exit_code,
    root_verbose,
    say_error,
)
from anisearch._exceptions import AnisearchError

__all__ = ["app", "main"]


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
        except AnisearchError as exc:  # every command catches its own; a last line of defence
            say_error(describe(exc))
            code = exit_code(exc)
        if not standalone_mode:
            return code
        sys.exit(code or 0)


def _version(value: bool) -> None:
    if value:
        import anisearch

        typer.echo(f"anisearch {anisearch.__version__} (distribution anisearch-gateway)")
        raise typer.Exit


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
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: readable at 80 columns and when piped
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
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


app.command(cls=Command, epilog=_search.EPILOG)(_search.search)
app.command(
    cls=Command,
    epilog=examples(
        "anisearch quota",
        "anisearch quota tracemoe --refresh",
        "anisearch quota tracemoe --reset",
        "anisearch quota --json | jq .",
    ),
)(_account.quota)
app.command(cls=Command, epilog=examples("anisearch providers", "anisearch providers --json"))(
    _account.providers
)
app.command(cls=Command, epilog=examples("anisearch rankings --period weekly -n 10"))(_account.rankings)
app.command(cls=Command, epilog=examples("anisearch recent -n 5"))(_account.recent)
app.command(cls=Command, epilog=examples("anisearch credits"))(_account.credits)
app.command(cls=Command, epilog=examples("anisearch login --email me@example.com"))(_account.login)
app.command(cls=Command, epilog=examples("anisearch logout"))(_account.logout)
app.add_typer(_account.keys_app, name="keys")
app.add_typer(_emulate.cache_app, name="cache")
app.command(
    cls=_emulate.EmulateCommand,
    epilog=examples(
        "anisearch emulate tracemoe --port 8000",
        "anisearch emulate all --port 8000   # tracemoe :8000, whatanime-ga :8001, whatanimeisthis :8002",
        "anisearch emulate tracemoe --quota 5 -o latency=0.5",
    ),
)(_emulate.emulate)
app.command(
    cls=Command,
    epilog=examples(
        "ANISEARCH_SERVER_CLIENTS=bot=s3cret-token anisearch serve --port 8080",
        "anisearch serve --host 0.0.0.0 --workers 4   # with ANISEARCH_LEDGER=redis://...",
        "anisearch serve --open   # guests by address, a small allowance each",
    ),
)(_serve.serve)


def main() -> None:
    """Entry point of the ``anisearch`` console script."""
    app(prog_name="anisearch")
