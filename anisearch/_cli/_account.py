"""``quota``, ``providers`` and the account commands (``rankings``, ``recent``, ``credits``, ``login``,
``logout``, ``keys``)."""

# No `from __future__ import annotations`: typer reads every command's annotations when it builds the
# command line (even for --help); evaluated once here they cost less than strings evaluated then.

import getpass
import sys
from functools import partial
from typing import TYPE_CHECKING, Annotated

import typer

from anisearch._cli._common import (
    EXIT_USAGE,
    Command,
    JsonOption,
    VerboseOption,
    clock,
    complete_quota_providers,
    configure_logging,
    describe,
    err,
    examples,
    exit_code,
    fail,
    hint_for,
    open_client,
    out,
    print_json,
    records,
    say_error,
    waiting,
    when,
)
from anisearch._exceptions import AnisearchError, AuthenticationError, ConfigurationError, ProviderError
from anisearch._redact import display_url

if TYPE_CHECKING:
    from datetime import datetime

    from anisearch._models import ApiKey, PagedList, Quota
    from anisearch._sync import Client

PERIODS = ("daily", "weekly", "monthly", "yearly", "all")


def _number(value: int | None) -> str:
    return "-" if value is None else str(value)


def _allowance(q: "Quota") -> str:
    if q.limit is None:  # no limit known: what is left, when the upstream said
        if q.remaining is not None:
            return f"{q.remaining} left" + (f" ({q.used} used)" if q.used is not None else "")
        return f"{_number(q.used)} used" if q.used is not None else "-"
    left = q.remaining if q.remaining is not None else (q.limit - q.used if q.used is not None else None)
    return f"{_number(left)} of {q.limit} left"


def quota(
    provider: Annotated[
        str | None,
        typer.Argument(
            metavar="PROVIDER",
            help="tracemoe, whatanimeisthis, whatanime-ga, or anilist (the metadata provider); every "
            "configured search provider by default.",
            autocompletion=complete_quota_providers,
        ),
    ] = None,
    refresh: Annotated[bool, typer.Option("--refresh", help="Ask the free quota endpoints first.")] = False,
    reset: Annotated[
        bool,
        typer.Option(
            "--reset",
            help="Forget what the ledger believes (counts, cooldowns, slots) for PROVIDER or all; "
            "the next search asks the upstream again.",
        ),
    ] = False,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask before --reset.")] = False,
    as_json: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """What each provider allows, what is used and when it frees."""
    verbose = configure_logging(verbose)
    with open_client(verbose) as client:
        ledger = display_url(client.settings.ledger_url)  # a Redis password masked, in the URL or its query
        if reset:
            if provider is not None:
                from anisearch._provider import check_registered

                try:
                    check_registered(provider)  # before asking whether to forget it
                except AnisearchError as exc:
                    fail(describe(exc), exit_code(exc), hint_for(exc))
            what = provider or "every provider"
            if not yes and not sys.stdin.isatty():  # nobody to ask (a pipe, cron): never a silent reset
                fail(
                    f"--reset asks before the ledger forgets {what}, and there is no terminal to ask at",
                    EXIT_USAGE,
                    "add --yes to reset without asking",
                )
            # asked on stderr: stdout carries only the answer (`quota --reset --json | jq .` at a terminal)
            if not yes and not typer.confirm(f"Forget what {ledger} holds about {what}?", err=True):
                err().print(f"anisearch: nothing forgotten ({ledger})", markup=False, highlight=False)
                return  # declined: not an error
            client.reset_quota(provider)
            err().print(f"anisearch: the ledger forgot {what} ({ledger})", markup=False, highlight=False)
        # "in 2 h" counted on the clock the instants are on: a Redis ledger's is its server's, and this
        # machine's may be off from it
        asked_at = client._ledger_now()  # noqa: SLF001 - the command line reads the engine's clock
        failed, asked = _refresh(client, provider) if refresh else (0, [])
        quotas = client.quota(provider)
        now = client._ledger_now()  # noqa: SLF001
    err().print(f"ledger: {ledger}", markup=False, highlight=False)
    for name in _not_confirmed(asked, quotas, asked_at):
        err().print(
            f"anisearch: {name} has no quota endpoint to ask (for this caller): its figures are the ledger's",
            markup=False,
            highlight=False,
        )
    _show_quotas(quotas, as_json=as_json, now=now)
    if failed:
        raise typer.Exit(failed)


def _refresh(client: "Client", provider: str | None) -> tuple[int, list[str]]:
    """Ask each provider's free quota endpoint (or ``provider``'s); one error line per provider that could
    not be asked. Returns the exit code of the first failure (0 when none failed) and the providers that
    did not fail. What the ledger knows still shows."""
    if provider is None:
        names = [i.name for i in client.providers() if i.enabled and "metadata" not in i.capabilities]
    else:
        names = [provider]
    failed, asked = 0, []
    for name in names:
        try:
            waiting(f"asking {name}…", partial(client.quota, name, refresh=True))
        except (ProviderError, ConfigurationError) as exc:
            say_error(f"could not refresh: {describe(exc)}", hint_for(exc))
            failed = failed or exit_code(exc)
        else:
            asked.append(name)
    return failed, asked


def _not_confirmed(asked: "list[str]", quotas: "list[Quota]", since: "datetime") -> list[str]:
    """The providers of ``asked`` that no upstream figure confirmed ``since``: they had nothing to ask
    (whatanimeisthis for a guest, AniList), so ``--refresh`` changed nothing of theirs."""
    confirmed = {q.provider for q in quotas if q.source in {"upstream", "headers"} and q.observed_at >= since}
    return [name for name in asked if name not in confirmed]


def _show_quotas(quotas: "list[Quota]", *, as_json: bool, now: "datetime") -> None:
    """The quotas as JSON, or a table whose times say how far away they are from ``now``, the ledger's."""
    if as_json:
        print_json([q.model_dump(mode="json", exclude={"raw"}) for q in quotas])
        return
    rows = [
        {
            "provider": q.provider,
            "window": q.window,
            "allowance": _allowance(q),
            "frees": when(q.resets_at, now),
            "cooldown until": when(q.cooldown_until, now) if q.cooldown_until else "-",
            "scope": q.scope,
            "source": q.source,
            "confirmed": when(q.observed_at, now) if q.source in ("upstream", "headers") else "-",
            "priority": "-" if q.priority is None else str(q.priority),
            "concurrency": "-" if q.concurrency is None else str(q.concurrency),
        }
        for q in quotas
    ]
    records(rows, title="quota", empty="no quota known yet: search once, or run 'anisearch quota --refresh'")


def providers(as_json: JsonOption = False, verbose: VerboseOption = False) -> None:
    """Where each provider points and whether it is used.

    Also whether credentials are set for it (an API key, a token, a password or a session: set, not
    checked) and what it can do.
    """
    verbose = configure_logging(verbose)
    with open_client(verbose) as client:
        infos = client.providers()
    if as_json:
        print_json([info.model_dump(mode="json") for info in infos])
        return
    rows = [
        {
            "name": info.name,
            "enabled": "yes" if info.enabled else "no",
            "credentials": "set" if info.authenticated else "none",
            "url": info.base_url or "(not configured)",
            "capabilities": ", ".join(info.capabilities),
        }
        for info in infos
    ]
    records(rows, title="providers", empty="no provider is installed")


def rankings(
    period: Annotated[str, typer.Option(metavar="|".join(PERIODS), help="Which period.")] = "all",
    limit: Annotated[int, typer.Option("--limit", "-n", metavar="N", min=1, help="How many entries.")] = 50,
    include_adult: Annotated[bool, typer.Option("--include-adult", help="Include adult titles.")] = False,
    as_json: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """The most-searched anime on whatanimeisthis.com."""
    verbose = configure_logging(verbose)
    if period not in PERIODS:
        fail(f"--period must be one of {', '.join(PERIODS)}, not {period!r}", EXIT_USAGE)
    with open_client(verbose, asks_the_site=True) as client:
        entries = waiting("asking…", lambda: client.rankings(period, limit, include_adult))
    if as_json:
        print_json([e.model_dump(mode="json", exclude={"raw"}) for e in entries])
        return
    rows = [
        {
            "rank": str(e.rank),
            "title": (e.title.preferred(("romaji", "english", "native")) if e.title else None) or "-",
            "anilist": _number(e.anilist_id),
            "searches": _number(e.searches),
        }
        for e in entries
    ]
    records(
        rows,
        title=f"most searched ({period})",
        empty=f"no rankings for the period {period!r} yet",
        key="title",
    )


def recent(
    limit: Annotated[int, typer.Option("--limit", "-n", metavar="N", min=1, help="How many searches.")] = 20,
    offset: Annotated[int, typer.Option(metavar="N", min=0, help="Skip this many.")] = 0,
    as_json: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Recently confirmed public searches on whatanimeisthis.com."""
    verbose = configure_logging(verbose)
    with open_client(verbose, asks_the_site=True) as client:
        items = waiting("asking…", lambda: client.recent_searches(limit, offset))
    if as_json:
        print_json([i.model_dump(mode="json", exclude={"raw"}) for i in items])
        return
    rows = [
        {
            "title": (i.title.preferred(("romaji", "english", "native")) if i.title else None) or "-",
            "episode": "-" if i.episode is None else str(i.episode),
            "at": clock(i.at_seconds),
            "similar": "-" if i.similarity is None else f"{i.similarity * 100:.1f} %",
            "when": when(i.searched_at),
        }
        for i in items
    ]
    records(rows, title="recent searches", empty="no recent public searches", key="title")


def credits(as_json: JsonOption = False, verbose: VerboseOption = False) -> None:  # noqa: A001 - the command's name
    """The signed-in account's search credits (whatanimeisthis.com)."""
    verbose = configure_logging(verbose)
    with open_client(verbose) as client:
        result = waiting("asking…", client.credits)
    if as_json:
        print_json(result.model_dump(mode="json", exclude={"raw"}))
        return
    free = f" ({result.free_remaining} free today)" if result.free_remaining is not None else ""
    resets = f", renewed {when(result.resets_at)}" if result.resets_at else ""
    out().print(f"{result.remaining} credits left{free}{resets}", markup=False, highlight=False)


def login(
    email: Annotated[
        str | None,
        typer.Option(
            metavar="EMAIL", help="Account email (or ANISEARCH_WHATANIMEISTHIS_EMAIL).", show_default=False
        ),
    ] = None,
    verbose: VerboseOption = False,
) -> None:
    """Sign in to whatanimeisthis.com and keep the session.

    The session cookie is kept in the state dir, readable by you only (mode 0600).
    """
    verbose = configure_logging(verbose)
    with open_client(verbose) as client:
        name = client.account_provider()
        config = client.settings.provider_config(name)
        variable = f"ANISEARCH_{name.upper().replace('-', '_')}"
        email = email or config.get("email")
        password = config.get("password")
        if not email:
            if not sys.stdin.isatty():
                fail("no email given", EXIT_USAGE, f"pass --email or set {variable}_EMAIL")
            email = typer.prompt("email")
        if not password:
            if not sys.stdin.isatty():
                fail("no password given", EXIT_USAGE, f"set {variable}_PASSWORD or run on a terminal")
            password = getpass.getpass("password: ")
        try:
            waiting("signing in…", lambda: client.sign_in(str(email), str(password)))
        except AuthenticationError as exc:
            named = "ANISEARCH_" in exc.message  # it names the setting to fix (an Origin the site refused)
            hint = None if named else f"check the email and password ({variable}_EMAIL, {variable}_PASSWORD)"
            fail(describe(exc), exit_code(exc), hint)
    out().print(f"signed in as {email}", markup=False, highlight=False)


def logout(verbose: VerboseOption = False) -> None:
    """Sign out of whatanimeisthis.com and delete the session."""
    verbose = configure_logging(verbose)
    with open_client(verbose) as client:
        ended = waiting("signing out…", client.sign_out)
    out().print("signed out" if ended else "not signed in: there was no session to end")


keys_app = typer.Typer(
    help="API keys of the signed-in whatanimeisthis.com account.",
    no_args_is_help=True,
    epilog=examples("anisearch keys list", "anisearch keys create 'my bot'"),
)


@keys_app.command("list", cls=Command, epilog=examples("anisearch keys list", "anisearch keys list --json"))
def keys_list(
    page: Annotated[int, typer.Option(metavar="N", min=1, help="Page number.")] = 1,
    page_size: Annotated[int, typer.Option(metavar="N", min=1, help="Keys per page.")] = 20,
    as_json: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """List the account's API keys (masked)."""
    verbose = configure_logging(verbose)
    with open_client(verbose, asks_the_site=True) as client:
        items = waiting("asking…", lambda: client.api_keys.list(page, page_size))
    if as_json:
        print_json([k.model_dump(mode="json", exclude={"raw"}) for k in items])
        return
    rows = [
        {
            "title": k.title or "-",
            "id": k.id,
            "key": k.masked_key or "-",
            "status": k.status or "-",
            "created": when(k.created_at),
        }
        for k in items
    ]
    records(rows, title=f"API keys{_keys_summary(items)}", empty=_no_keys(items))


def _count(n: int, what: str) -> str:
    return f"{n} {what}" if n == 1 else f"{n} {what}s"


def _keys_summary(keys: "PagedList[ApiKey]") -> str:
    """``" (3 keys, page 1 of 2)"`` when the upstream reported how many keys there are, else ''."""
    if keys.total is None or keys.pages is None:
        return ""
    return f" ({_count(keys.total, 'key')}, page {keys.page} of {keys.pages})"


def _no_keys(keys: "PagedList[ApiKey]") -> str:
    """What an empty page says: how to make a first key, or that the page is past the end."""
    if keys.total == 0 or (keys.page == 1 and keys.total is None):
        return "no API keys yet: 'anisearch keys create TITLE' makes one"
    if keys.total is None or keys.pages is None:
        return f"no API keys on page {keys.page}"
    where = f"{_count(keys.total, 'key')} on {_count(keys.pages, 'page')}"
    return f"no API keys on page {keys.page}: the account has {where}"


@keys_app.command("create", cls=Command, epilog=examples("anisearch keys create 'my bot'"))
def keys_create(
    title: Annotated[str, typer.Argument(metavar="TITLE", help="A name for the key.")],
    as_json: JsonOption = False,
    verbose: VerboseOption = False,
) -> None:
    """Create an API key; the key is printed this one time only."""
    verbose = configure_logging(verbose)
    with open_client(verbose, asks_the_site=True) as client:
        created = waiting("creating…", lambda: client.api_keys.create(title))
        variable = f"ANISEARCH_{client.account_provider().upper().replace('-', '_')}_KEY"
    secret = created.key.get_secret_value()
    if as_json:
        print_json({**created.model_dump(mode="json", exclude={"raw", "key"}), "key": secret})
        return
    out().print(f"created API key {created.title or title!r} ({created.id})", markup=False, highlight=False)
    out().print(secret, markup=False, highlight=False)
    err().print(
        f"this is the only time the key is shown: store it now (for example as {variable})", highlight=False
    )
