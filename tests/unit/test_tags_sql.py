"""The tag report is one GROUP BY ... HAVING query, compiled for PostgreSQL."""

from __future__ import annotations

from sqlalchemy.engine import Dialect, make_url

from api.queries import tags_with_counts

POSTGRESQL: Dialect = make_url("postgresql+asyncpg://").get_dialect()()


def compiled(min_count: int) -> str:
    return str(
        tags_with_counts(min_count).compile(
            dialect=POSTGRESQL, compile_kwargs={"literal_binds": True}
        )
    )


def test_tags_query_groups_by_tag_and_filters_groups_with_having() -> None:
    sql = " ".join(compiled(3).split())

    assert "JOIN document_tags ON document_tags.tag_id = tags.id" in sql
    assert "GROUP BY tags.id, tags.name" in sql
    assert "HAVING count(document_tags.document_id) >= 3" in sql


def test_having_comes_after_group_by_and_before_order_by() -> None:
    sql = compiled(1)

    assert sql.index("GROUP BY") < sql.index("HAVING") < sql.index("ORDER BY")


def test_min_count_is_a_bound_parameter_not_inlined_text() -> None:
    statement = tags_with_counts(7).compile(dialect=POSTGRESQL)

    assert "7" not in str(statement)
    assert 7 in statement.params.values()


def test_tags_are_ordered_by_count_descending_then_name() -> None:
    sql = " ".join(compiled(1).split())

    assert sql.endswith("ORDER BY count DESC, tags.name")
