"""Work handed to a worker thread is not kept by it once the caller has the result."""

from __future__ import annotations

import gc
import weakref

import anyio
import pytest

from anisearch import _worker


class Picture:
    """Stands for a large source: weakly referenceable, so its release can be seen."""


def test_the_worker_keeps_neither_the_arguments_nor_the_result() -> None:
    given, made = Picture(), Picture()
    seen = weakref.ref(given), weakref.ref(made)

    def prepare(source: Picture) -> Picture:
        assert source is given
        return made

    async def run() -> None:
        nonlocal given, made
        result = await _worker.run_sync(prepare, given)
        assert result is made
        given = made = result = None  # type: ignore[assignment]
        gc.collect()
        assert seen[0]() is None  # anyio's worker holds both until it runs again
        assert seen[1]() is None

    anyio.run(run)


def test_an_error_comes_back_to_the_caller() -> None:
    def refuse(value: int) -> int:
        raise ValueError(f"not {value}")

    async def run() -> None:
        with pytest.raises(ValueError, match="not 3"):
            await _worker.run_sync(refuse, 3)

    anyio.run(run)
