"""Guarded tests that ask for fixtures a project's old conftest and its adapter define again,
collected by integration/test_replaced_fixtures.py in a nested run (never run)."""

from __future__ import annotations

from typing import Any


def test_asks_for_the_engine(engine: Any) -> None: ...


def test_asks_for_the_engine_too(engine: Any) -> None: ...


def test_asks_for_a_client(client: Any) -> None: ...


def test_asks_for_the_app(app: Any) -> None: ...


def test_asks_for_a_client_of_its_own(alice: Any) -> None: ...
