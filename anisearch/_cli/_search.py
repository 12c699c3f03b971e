"""``anisearch search``: one image or many (files, folders, URLs, stdin) through one client, concurrently."""

# No `from __future__ import annotations`: typer reads every command's annotations when it builds the
# command line (even for --help); evaluated once here they cost less than strings evaluated then.

import contextlib
import fnmatch
import os
import re
import signal
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, BinaryIO

import typer

from anisearch._cli._common import (
    EXIT_AUTH,
    EXIT_BAD_INPUT,
    EXIT_INTERRUPTED,
    EXIT_NO_MATCH,
    EXIT_OK,
    EXIT_STATE,
    EXIT_TERMINATED,
    EXIT_USAGE,
    JsonOption,
    VerboseOption,
    _transport,
    complete_providers,
    describe,
    err,
    examples,
    exit_code,
    fail,
    hint_for,
    json_line,
    legible,
    log_attempt,
    out,
    print_json,
    print_line,
    records,
    say_error,
    searching,
    shown,
    terminate_as_interrupt,
    whole_lines,
    with_bytes_shown,
    with_host_port,
)
from anisearch._cli._render import dump, headline, hit_rows, hits_table, no_match_text
from anisearch._cli._streams import stdin_closed
from anisearch._exceptions import AnisearchError, InvalidImageError
from anisearch._redact import printable

if TYPE_CHECKING:
    from rich.console import Console

    from anisearch._config import Settings
    from anisearch._models import SearchResult
    from anisearch._router import Strategy

DEFAULT_MIN_SIMILARITY = 0.9
"""``anisearch.DEFAULT_MIN_SIMILARITY``, repeated so that ``--help`` loads no model (a test keeps them
equal)."""

MEDIA_SUFFIXES = frozenset(
    [
        ".jpg",
        ".jpeg",
        ".jfif",
        ".png",
        ".gif",
        ".webp",
        ".bmp",
        ".tif",
        ".tiff",
        ".avif",
        ".heic",
        ".apng",
        ".jpg_large",  # a picture saved from a social site
        ".jp2",
        ".j2k",
        ".qoi",
        ".ppm",
        ".pgm",
        ".pnm",
        ".mp4",
        ".mkv",
        ".webm",
        ".mov",
        ".avi",
        ".m4v",
        ".3gp",
        ".3g2",
        ".ts",
        ".m2ts",
        ".mts",
        ".flv",
        ".ogv",
        ".mpg",
        ".mpeg",
    ]
)
"""What a folder search picks up when no ``--glob`` is given: the suffixes of every picture and video
anisearch reads (the content is sniffed before upload)."""

TRANSPORT_STREAM_SUFFIX = ".ts"
"""A suffix that TypeScript sources share with transport streams: a folder search picks up such a file only
when its first bytes are a transport stream (``--glob`` picks any)."""

EPILOG = examples(
    "anisearch search shot.jpg",
    "anisearch search shot.jpg -p tracemoe --min-similarity 0.85",
    "anisearch search screenshots/ --glob '*.png' --json > tags.jsonl",
    "curl -s https://example.com/frame.jpg | anisearch search -",
)


@dataclass(frozen=True, slots=True)
class Input:
    """One thing to search: what the user typed (or the file found in a folder), and what is sent."""

    label: str
    source: str | bytes | BinaryIO


@dataclass
class Outcome:
    """What became of one input."""

    input: Input
    result: "SearchResult | None" = None
    error: AnisearchError | None = None
    code: int = EXIT_OK


@dataclass
class Tally:
    """What the summary counts, as outcomes arrive, so Ctrl-C can still summarise what was done.

    Only the counts are kept: an outcome and its result are let go once its line is printed, so a batch
    holds no more memory at its 100 000th input than at its first. One input (``keep``) keeps its outcome,
    whose table is printed when the search is over.
    """

    total: int
    threshold: float
    keep: bool = False
    """Whether to keep the last outcome in ``kept`` (one input: its table is printed at the end)."""
    codes: Counter[int] = field(default_factory=Counter)
    """How many inputs ended with each exit code."""
    cached: int = 0
    """How many inputs were answered from the cache."""
    kept: Outcome | None = None
    urls: dict[str, str] = field(default_factory=dict)
    """Each provider's base URL, read when something failed (messages name host:port)."""

    def add(self, outcome: Outcome) -> None:
        """Count ``outcome`` (and keep it when ``keep``)."""
        self.codes[outcome.code] += 1
        if outcome.result is not None and outcome.result.cached:
            self.cached += 1
        if self.keep:
            self.kept = outcome

    @property
    def finished(self) -> int:
        """How many inputs have an outcome."""
        return sum(self.codes.values())

    def count(self, code: int) -> int:
        """How many inputs ended with exit code ``code``."""
        return self.codes[code]


# ---------------------------------------------------------------------------------------------- inputs


def _walk(folder: Path, pattern: str | None) -> list[Path]:
    """The media files under ``folder`` (hidden ones left out; ``pattern`` filters by name or relative
    path, see :func:`glob_matcher`). A folder that cannot be read and a link that leads nowhere are skipped
    with a warning line each, so a tagger learns which files it did not see."""
    found = []
    matches = glob_matcher(pattern) if pattern is not None else None
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if any(part.startswith(".") for part in relative.parts):
            continue
        if not _is(path, Path.is_file):
            _warn_unreadable(path)
            continue
        if matches is not None:
            if matches(path.name) or matches(relative.as_posix()):
                found.append(path)
        elif _media(path):
            found.append(path)
    return found


_ANY_FOLDERS = "\ue000"
"""What a ``**/`` of a ``--glob`` pattern stands for while :mod:`fnmatch` translates the rest (a character
of Unicode's private use area, which a file-name pattern does not normally hold and ``fnmatch`` leaves as
it is)."""


def glob_matcher(pattern: str) -> Callable[[str], bool]:
    """Whether a file's name, or its path inside the folder searched (``/`` between folders), matches the
    ``--glob`` ``pattern``: :mod:`fnmatch`'s ``*``, ``?`` and ``[...]`` (a ``*`` also spans folders), with
    upper and lower case alike (as the suffixes of a folder search are), and a ``**/`` at the start or
    after a ``/`` matching any number of folders, none included (``**/*.jpg`` takes ``top.jpg`` too)."""
    marked = re.sub(r"(?:^|(?<=/))\*\*/", _ANY_FOLDERS, pattern)
    regex = fnmatch.translate(marked).replace(_ANY_FOLDERS, "(?:.*/)?")
    compiled = re.compile(regex, re.IGNORECASE)
    return lambda name: compiled.match(name) is not None


def _media(path: Path) -> bool:
    """Whether a folder search picks ``path`` up: by its suffix, and for ``.ts`` by its first 4 KiB being a
    transport stream (a TypeScript source is left out without a word). A file that cannot be read is
    picked up: its search says what is wrong."""
    suffix = path.suffix.lower()
    if suffix != TRANSPORT_STREAM_SUFFIX:
        return suffix in MEDIA_SUFFIXES
    try:
        with path.open("rb") as file:
            head, size = file.read(4096), os.fstat(file.fileno()).st_size
    except OSError:
        return True
    from anisearch._source import video_kind  # only for a .ts file: a folder of pictures never loads it

    return video_kind(head, size) in {"mpeg-ts", "m2ts"}


def _is(path: Path, kind: Callable[[Path], bool]) -> bool:
    """``kind(path)`` (``Path.is_file``, ``Path.is_dir``), False when the path cannot even be looked at:
    Python 3.11 raises for a permission denied or a name too long, where it returns False for a missing
    one."""
    try:
        return kind(path)
    except OSError:
        return False


def _warn_unreadable(path: Path) -> None:
    """A warning line for a folder entry that is not a file: a folder that cannot be listed, a folder
    behind a link (not followed: a library's links could loop), an entry that cannot be looked at, or a
    link to nothing (or to itself); nothing for a folder that can be listed or anything else."""
    what = "folder" if _is(path, Path.is_dir) else "link" if _is(path, Path.is_symlink) else "entry"
    try:
        if what == "folder":
            if path.is_symlink():
                _warn(path, "linked folder", "folders behind links are not followed; name it to search it")
                return
            with os.scandir(path):
                return
        path.stat()
        if what == "entry":
            return  # a socket, a device: nothing a tagger expects to be searched
    except OSError as exc:
        _warn(path, what, _why_missing(exc))


def _warn(path: Path, what: str, why: str) -> None:
    err().print(
        f"warning: skipped the {what} {shown(str(path))}: {why}",
        markup=False,
        highlight=False,
        style="yellow",
    )


def _why_missing(exc: OSError) -> str:
    """What made a path unusable, in the words of the error messages: ``no such file``, ``permission
    denied``, ``too many levels of symbolic links``."""
    if isinstance(exc, FileNotFoundError):
        return "no such file"
    return (exc.strerror or type(exc).__name__).lower()


def _missing_reason(name: str) -> str:
    try:
        Path(name).stat()
    except OSError as exc:
        return _why_missing(exc)
    return "no such file"  # it appeared since: still not searched in this run


def collect(arguments: Sequence[str], pattern: str | None) -> tuple[list[Input], list[str]]:
    """The inputs named on the command line, folders expanded; and the names that do not exist."""
    inputs: list[Input] = []
    missing: list[str] = []
    for argument in arguments:
        if argument == "-":  # read by the engine: up to its input limit, within the search's deadline
            inputs.append(Input("-", sys.stdin.buffer))
        elif argument[:8].lower().startswith(("http://", "https://")):
            inputs.append(Input(argument, argument))
        elif _is(path := Path(argument), Path.is_dir):
            inputs.extend(Input(str(found), str(found)) for found in _walk(path, pattern))
        elif _is(path, Path.exists):
            inputs.append(Input(argument, argument))
        else:  # missing, or not to be looked at (permission denied, a name too long): said per input
            missing.append(argument)
    return inputs, missing


# ---------------------------------------------------------------------------------------------- running


async def _search_all(
    inputs: Sequence[Input],
    settings: "Settings",
    options: dict[str, Any],
    *,
    jobs: int,
    verbose: bool,
    tally: Tally,
    on_done: Callable[[Outcome], None],
    on_wait: Callable[[str], None] | None = None,
) -> AnisearchError | None:
    """Search every input through one ``AsyncClient``; return an error that stops the whole batch: a usage
    error (exit 2), an unusable ledger (6) or, among many inputs, an input whose every provider refused the
    credentials (5); the searches in flight are cancelled and no other input is sent.

    ``on_wait`` gets the engine's one-line notices ("waiting for a tracemoe slot ...").
    """
    import anyio

    from anisearch._client import AsyncClient

    fatal: list[AnisearchError] = []
    # What is the same for every input stops the batch at once: a usage error, an unusable ledger, and
    # credentials every provider asked refused (a wrong key would be sent, and refused, once per input).
    stops = {EXIT_USAGE, EXIT_STATE} | ({EXIT_AUTH} if len(inputs) > 1 else set())
    async with AsyncClient(
        settings, _transport(), on_attempt=log_attempt if verbose else None, on_wait=on_wait
    ) as client:
        limiter = anyio.CapacityLimiter(jobs)
        urls_read = False

        async def read_urls() -> None:
            """Every provider's base URL, for the messages of a failed input; read on the first failure
            only, since it loads every installed provider (no request is sent)."""
            nonlocal urls_read
            if not urls_read:
                urls_read = True
                with contextlib.suppress(AnisearchError):
                    tally.urls = {info.name: info.base_url for info in await client.providers()}

        async def one(item: Input, group: anyio.abc.TaskGroup) -> None:
            if len(inputs) > 1:  # this task's own context: its search's lines name its input
                searching.set(shown(item.label))
            async with limiter:
                try:
                    result = await client.search(item.source, **options)
                except AnisearchError as exc:
                    code = exit_code(exc)
                    if code in stops and not isinstance(exc, InvalidImageError):
                        fatal.append(exc)
                        group.cancel_scope.cancel()
                        return
                    await read_urls()
                    outcome = Outcome(item, error=exc, code=code)
                else:
                    matched = result.match_at(tally.threshold) is not None
                    outcome = Outcome(item, result=result, code=EXIT_OK if matched else EXIT_NO_MATCH)
                tally.add(outcome)
                on_done(outcome)  # then let go: only its counts stay

        async with anyio.create_task_group() as group:
            for item in inputs:
                group.start_soon(one, item, group)
    return fatal[0] if fatal else None


def _fits(rows: list[dict[str, str]]) -> bool:
    """Whether the hits table of ``rows`` fits the terminal with its title column at least 12 cells wide
    (:func:`~anisearch._cli._render.hits_table`: no column but the title wraps; 3 cells between columns)."""
    from rich.cells import cell_len

    widths = {name: max([cell_len(name), *(cell_len(row[name]) for row in rows)]) for name in rows[0]}
    widths["title"] = min(widths["title"], _TITLE_MIN)
    return sum(widths.values()) + 3 * (len(widths) - 1) <= out().width


_TITLE_MIN = 12
"""The narrowest the title column gets before the hits are printed one block each (``hits_table``)."""


def _print_hits(result: "SearchResult", *, limit: int, show_all: bool, threshold: float) -> None:
    """The hits shown (a table; one block per hit where the table would squeeze its titles out) and what
    was left out (stderr)."""
    rows, styles = hit_rows(result, threshold=threshold, limit=limit, show_all=show_all)
    if _fits(rows):
        table, _ = hits_table(result, threshold=threshold, limit=limit, show_all=show_all)
        out().print(table)
    else:
        match = result.match_at(threshold)
        title = headline(match) if match else ""
        records(rows, title=title, empty="", key="title", styles=styles, blocks=True)
    listed = sum(1 for hit in result.hits if show_all or hit.similarity >= threshold)
    # Each note names what left its hits out: the limit, or the similarity threshold.
    for count, what in (
        (listed - limit, "more hit(s) not shown (--limit N shows them)"),
        (len(result.hits) - listed, "weaker hit(s) hidden (--all shows them)"),
    ):
        if count > 0:
            err().print(f"{count} {what}", style="dim", highlight=False)


def _print_result(result: "SearchResult", *, limit: int, show_all: bool, threshold: float) -> None:
    """The table of one search (stdout) and its notes (stderr)."""
    matched = result.match_at(threshold) is not None
    if matched or (show_all and result.hits):
        _print_hits(result, limit=limit, show_all=show_all, threshold=threshold)
    if not matched:
        out().print(no_match_text(result, threshold), markup=False, highlight=False)
        if result.hits and not show_all:
            err().print("hint: --all shows the weaker hits", style="dim", highlight=False)
    if result.cached:
        err().print("answered from the cache (no quota spent)", style="dim", highlight=False)
    for attempt in result.attempts:
        if attempt.outcome in {"skipped", "failed"}:
            err().print(f"{attempt.provider} {attempt.outcome}: {attempt.reason}", markup=False, style="dim")


def _from_cache(
    item: Input, settings: "Settings", options: dict[str, Any], tally: Tally, *, verbose: bool
) -> Outcome | None:
    """One file's outcome answered from the cache before the engine starts (see ``_cached``), or None."""
    if not isinstance(item.source, str) or not options["cache"]:
        return None
    from anisearch._cli._cached import cached_answer

    result = cached_answer(settings, item.source, options, log_attempt if verbose else None)
    if result is None:
        return None
    matched = result.match_at(tally.threshold) is not None
    outcome = Outcome(item, result=result, code=EXIT_OK if matched else EXIT_NO_MATCH)
    tally.add(outcome)
    return outcome


def _report_single(
    outcome: Outcome, tally: Tally, *, as_json: bool, raw: bool, limit: int, show_all: bool
) -> None:
    threshold = tally.threshold
    if outcome.error is not None:
        if as_json:  # a script reads the error as a many-input run gives it, and its exit code
            print_line(json_line(_error_payload(outcome, tally.urls)))
        message = with_host_port(describe(outcome.error), tally.urls)
        fail(message, outcome.code, hint_for(outcome.error, tally.urls))
    if outcome.result is None:  # a missing file: reported before any search
        raise typer.Exit(outcome.code)
    if as_json:
        print_json(dump(outcome.result, raw))
    else:
        _print_result(outcome.result, limit=limit, show_all=show_all, threshold=threshold)
    if outcome.code:
        raise typer.Exit(outcome.code)


def _batch_line(
    outcome: Outcome,
    *,
    as_json: bool,
    raw: bool,
    threshold: float,
    urls: dict[str, str],
    above: "Console | None" = None,
) -> None:
    """One input's line on stdout; or, when ``above`` (the progress bar's console, which shares a terminal
    with stdout), above the bar, which rich then draws again below it."""
    from rich.text import Text

    label = outcome.input.label
    if as_json:
        if outcome.result is not None:
            payload: dict[str, Any] = {"input": label, **dump(outcome.result, raw)}
        else:
            payload = _error_payload(outcome, urls)
        if above is not None:
            above.print(json_line(payload), markup=False, highlight=False, emoji=False, soft_wrap=True)
        else:
            print_line(json_line(payload))
        return
    label = shown(label)
    if outcome.result is not None:
        match = outcome.result.match_at(threshold)
        text = headline(match) if match is not None else no_match_text(outcome.result, threshold)
        line = Text(f"{label}: ") + Text(text, style="" if match else "dim")
    else:
        # the line names the input already; the message's own text is prose (legible), not a name
        said = describe(outcome.error) if outcome.error else "failed"
        label_as_said = [outcome.input.label, printable(outcome.input.label)]  # as the message names it
        if outcome.input.label == "-":
            label_as_said.append("<stdin>")
        for spelling in label_as_said:
            said = said.removeprefix(f"{spelling}: ")
        message = with_host_port(legible(with_bytes_shown(said)), urls)
        line = Text(f"{label}: error: {message}", style="red")
    with whole_lines():
        (above or out()).print(line, soft_wrap=True)


def _error_payload(outcome: Outcome, urls: dict[str, str]) -> dict[str, Any]:
    """``{"input", "error": {"type", "message", "exit_code", "providers"?}}`` of an input that failed."""
    error = outcome.error
    return {
        "input": outcome.input.label,
        "error": {
            "type": type(error).__name__,
            "message": with_host_port(describe(error), urls) if error else "",
            "exit_code": outcome.code,
            **_provider_errors(error, urls),
        },
    }


def _provider_errors(error: AnisearchError | None, urls: dict[str, str]) -> dict[str, Any]:
    """``{"providers": [...]}``: each provider's failure when every provider failed (type, message, HTTP
    status, and when to try again: ``retry_after`` seconds, ``resets_at``), so that a script can tell a
    spent quota from a server that is down; nothing for any other error."""
    from anisearch._exceptions import AllProvidersFailedError, QuotaExhaustedError

    if not isinstance(error, AllProvidersFailedError):
        return {}
    failures = []
    for failure in error.errors:
        resets_at = failure.resets_at if isinstance(failure, QuotaExhaustedError) else None
        failures.append(
            {
                "provider": failure.provider,
                "type": type(failure).__name__,
                "message": with_host_port(describe(failure), urls),
                "status_code": failure.status_code,
                "retry_after": failure.retry_after,
                "resets_at": resets_at.isoformat() if resets_at is not None else None,
            }
        )
    return {"providers": failures}


def _summary(tally: Tally, seconds: float, *, interrupted: bool) -> None:
    matched = tally.count(EXIT_OK)
    weak = tally.count(EXIT_NO_MATCH)
    failed = tally.finished - matched - weak
    cached = tally.cached
    head = (
        f"interrupted after {tally.finished} of {tally.total}" if interrupted else f"{tally.total} input(s)"
    )
    err().print(
        f"{head} in {seconds:.1f} s: {matched} matched, {weak} no confident match, {failed} failed"
        f" ({cached} from the cache)",
        highlight=False,
    )


def _check_arguments(inputs: Sequence[str], *, raw: bool, as_json: bool) -> None:
    """Refuse what cannot work, before anything is read: --raw alone, stdin twice, closed or from a
    terminal."""
    if raw and not as_json:
        fail("--raw adds the upstream items to --json output", EXIT_USAGE, "add --json, or drop --raw")
    if inputs.count("-") > 1:
        fail(
            "- (standard input) can be searched once",
            EXIT_USAGE,
            "save the input to a file to search it again",
        )
    if "-" in inputs and stdin_closed():
        fail(
            "- reads the image from standard input, and there is none to read (closed, or not open for "
            "reading)",
            EXIT_USAGE,
            "pipe an image in: anisearch search - < shot.jpg",
        )
    if "-" in inputs and sys.stdin.isatty():
        fail(
            "- reads the image from standard input, which is this terminal",
            EXIT_USAGE,
            "pipe an image in: anisearch search - < shot.jpg",
        )


def _report_missing(missing: Sequence[str], *, as_json: bool) -> None:
    """Each name that does not exist, on stderr; and one line on stdout, as for any input that failed (a
    script reading the results sees every input)."""
    from rich.text import Text

    from anisearch._source import missing_hint

    for name in missing:
        reason = _missing_reason(name)
        say_error(f"{reason}: {shown(name)}", missing_hint(name) or None)
        if as_json:
            print_line(json_line(_missing_line(name)))
        else:
            with whole_lines():
                out().print(Text(f"{shown(name)}: error: {reason}", style="red"), soft_wrap=True)


def _stop_early(
    inputs: Sequence[str],
    glob: str | None,
    items: Sequence[Input],
    missing: Sequence[str],
    *,
    batch: bool,
    as_json: bool,
) -> None:
    """Stop before any search: one input that does not exist, or folders with nothing to search; name
    every input that does not exist among many."""
    if missing and not batch:
        if as_json:  # a script reads why, as for any input
            print_line(json_line(_missing_line(missing[0])))
        from anisearch._source import missing_hint

        fail(
            f"{_missing_reason(missing[0])}: {shown(missing[0])}",
            EXIT_BAD_INPUT,
            missing_hint(missing[0]) or "give an image, a folder, an http(s) URL or -",
        )
    _report_missing(missing, as_json=as_json)
    if batch and not items:
        folders = ", ".join(shown(i) for i in inputs if i != "-" and _is(Path(i), Path.is_dir))
        if glob is not None:
            fail(f"no file in {folders} matches --glob {glob!r}", EXIT_BAD_INPUT, "check the pattern")
        fail(
            f"no images to search in {folders}" if folders else "no images to search",
            EXIT_BAD_INPUT,
            "a folder search takes common image and video suffixes; --glob takes others",
        )


def _missing_line(name: str) -> dict[str, Any]:
    """The ``--json`` line of an input that does not exist."""
    error = {
        "type": "InvalidImageError",
        "message": f"{name}: {_missing_reason(name)}",
        "exit_code": EXIT_BAD_INPUT,
    }
    return {"input": name, "error": error}


def search(
    inputs: Annotated[
        list[str],
        typer.Argument(
            metavar="IMAGE|URL|DIR|-",
            help="Images or videos, folders (searched recursively), http(s) URLs, or - for stdin.",
            show_default=False,
        ),
    ],
    provider: Annotated[
        list[str] | None,
        typer.Option(
            "--provider",
            "-p",
            metavar="NAME",
            help="Provider to ask: tracemoe, whatanimeisthis, whatanime-ga (repeat for an order).",
            show_default=False,
            autocompletion=complete_providers,
        ),
    ] = None,
    min_similarity: Annotated[
        float | None,
        typer.Option(
            metavar="0..1",
            min=0,
            max=1,
            help=f"The similarity a hit needs to count as a match [default: {DEFAULT_MIN_SIMILARITY}]; a "
            "weaker best hit also asks the next provider.",
            show_default=False,
        ),
    ] = None,
    show_all: Annotated[
        bool, typer.Option("--all", "-a", help="Also show hits below the threshold, dimmed.")
    ] = False,
    limit: Annotated[
        int,
        typer.Option(
            "--limit", "-n", metavar="N", min=1, help="Hits to show in the table (--json gives every hit)."
        ),
    ] = 5,
    anilist_id: Annotated[
        int | None,
        typer.Option(metavar="ID", min=1, help="Only hits of this AniList ID.", show_default=False),
    ] = None,
    anilist_info: Annotated[
        bool,
        typer.Option(
            "--anilist-info/--no-anilist-info",
            help="Fill titles, MAL ID and adult flag from AniList (ANISEARCH_ANILIST_URL).",
        ),
    ] = True,
    include_adult: Annotated[
        bool | None,
        typer.Option(
            "--adult/--no-adult",
            help="Keep or drop hits of adult-only anime [default: ANISEARCH_INCLUDE_ADULT, else keep].",
            show_default=False,
        ),
    ] = None,
    cut_borders: Annotated[bool, typer.Option("--cut-borders", help="Trim black borders first.")] = False,
    strategy: Annotated[
        str,
        typer.Option(
            metavar="fallback|fanout", help="fallback asks one provider at a time; fanout all at once."
        ),
    ] = "fallback",
    glob: Annotated[
        str | None,
        typer.Option(
            metavar="PATTERN",
            help="In folders, only files whose name or path in the folder matches this, in either case "
            "('*.png', 'season1/*'); **/ matches any folders, none included.",
            show_default=False,
        ),
    ] = None,
    jobs: Annotated[
        int, typer.Option("--jobs", "-j", metavar="N", min=1, help="Searches in flight at once.")
    ] = 4,
    deadline: Annotated[
        float | None,
        typer.Option(
            metavar="SECONDS",
            min=0.001,
            help="Give up on an input after this long (reading, downloading, every attempt and wait).",
            show_default=False,
        ),
    ] = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Neither read nor write the result cache.")
    ] = False,
    as_json: JsonOption = False,
    raw: Annotated[bool, typer.Option("--raw", help="With --json, include each upstream item.")] = False,
    verbose: VerboseOption = False,
) -> None:
    """Find which anime, episode and second an image comes from.

    One input prints its best hits; many inputs (or a folder) print one line each, or JSON Lines with
    --json, with a progress bar on stderr and a summary at the end. Exit 1 when no hit reaches the
    threshold (trace.moe's documentation: under 90 % is usually wrong).
    """
    from anisearch._cli._common import configure_logging

    verbose = configure_logging(verbose)
    if strategy not in ("fallback", "fanout"):
        fail(f"--strategy must be fallback or fanout, not {strategy!r}", EXIT_USAGE)
    chosen: Strategy = "fanout" if strategy == "fanout" else "fallback"
    threshold = DEFAULT_MIN_SIMILARITY if min_similarity is None else min_similarity
    _check_arguments(inputs, raw=raw, as_json=as_json)
    items, missing = collect(inputs, glob)
    batch = len(inputs) > 1 or any(_is(Path(i), Path.is_dir) for i in inputs if i != "-")
    _stop_early(inputs, glob, items, missing, batch=batch, as_json=as_json)
    from anisearch._config import Settings

    try:
        settings = Settings.load()
    except AnisearchError as exc:
        fail(describe(exc), exit_code(exc), hint_for(exc))
    options: dict[str, Any] = {
        "providers": provider or None,
        "strategy": chosen,
        "anilist_id": anilist_id,
        "cut_borders": cut_borders,
        "anilist_info": anilist_info,
        "include_adult": include_adult,
        "min_similarity": threshold,  # the help's promise: a weaker best hit also asks the next provider
        "cache": not no_cache,
        "deadline": deadline,
    }
    tally = Tally(total=len(items) + len(missing), threshold=threshold, keep=not batch)
    for name in missing:
        tally.add(Outcome(Input(name, name), code=EXIT_BAD_INPUT))
    if not batch and (cached := _from_cache(items[0], settings, options, tally, verbose=verbose)):
        _report_single(cached, tally, as_json=as_json, raw=raw, limit=limit, show_all=show_all)
        return
    started = time.monotonic()
    run = _runner(
        items,
        settings,
        options,
        jobs=jobs,
        verbose=verbose,
        tally=tally,
        batch=batch,
        as_json=as_json,
        raw=raw,
    )
    interrupted = False
    fatal: AnisearchError | None = None
    try:
        with terminate_as_interrupt() as terminated:
            fatal = run()
    except KeyboardInterrupt:
        interrupted = True
    except AnisearchError as exc:  # opening the client: an unusable ledger or cache
        fatal = exc
    if fatal is not None:
        fail(describe(fatal), exit_code(fatal), hint_for(fatal))
    if not batch and not interrupted and tally.kept is not None:
        _report_single(tally.kept, tally, as_json=as_json, raw=raw, limit=limit, show_all=show_all)
        return
    _summary(tally, time.monotonic() - started, interrupted=interrupted)
    if interrupted:
        raise typer.Exit(EXIT_TERMINATED if signal.SIGTERM in terminated else EXIT_INTERRUPTED)
    raise typer.Exit(max(tally.codes, default=EXIT_OK))


def _same_terminal() -> bool:
    """Whether stdout and stderr are one terminal, really (rich's ``is_terminal`` also says so under
    ``FORCE_COLOR``, when the results go to a file)."""
    try:
        return os.isatty(1) and os.isatty(2) and os.path.samestat(os.fstat(1), os.fstat(2))
    except OSError:
        return False


def _runner(
    items: list[Input],
    settings: "Settings",
    options: dict[str, Any],
    *,
    jobs: int,
    verbose: bool,
    tally: Tally,
    batch: bool,
    as_json: bool,
    raw: bool,
) -> Callable[[], AnisearchError | None]:
    """The search run, with a progress bar (many inputs) or a spinner (one) on a terminal's stderr."""
    import anyio

    def go(
        on_done: Callable[[Outcome], None], on_wait: Callable[[str], None] | None = None
    ) -> AnisearchError | None:
        return anyio.run(
            lambda: _search_all(
                items,
                settings,
                options,
                jobs=jobs,
                verbose=verbose,
                tally=tally,
                on_done=on_done,
                on_wait=on_wait,
            )
        )

    def run() -> AnisearchError | None:
        if not batch:
            if err().is_terminal and not verbose:  # -v logs the waits instead
                with err().status("searching…", spinner="dots") as status:
                    return go(lambda _: None, lambda line: status.update(f"{line}…"))
            return go(lambda _: None)

        def printed(outcome: Outcome, above: "Console | None" = None) -> None:
            _batch_line(
                outcome, as_json=as_json, raw=raw, threshold=tally.threshold, urls=tally.urls, above=above
            )

        if not err().is_terminal:
            return go(printed)
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=err(), transient=True) as progress:
            task = progress.add_task("searching", total=len(items))
            # results on the same terminal as the bar go above it (rich writes past its own live display)
            above = progress.console if _same_terminal() else None

            def advance(outcome: Outcome) -> None:
                printed(outcome, above)
                progress.update(task, advance=1, description="searching")

            def waiting(line: str) -> None:
                progress.update(task, description=line)

            return go(advance, None if verbose else waiting)

    return run
