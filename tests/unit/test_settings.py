"""Settings are read from environment variables and fail with one readable, secret-free message."""

from __future__ import annotations

import json

import pytest

from api import Settings, SettingsError, load_settings
from api.config import S3_CONTINUE_WAIT_S, load_database_settings
from api.db import engine_connect_args

DB_PASSWORD = "db-pa55word-xyz"
S3_SECRET = "s3-secret-key-xyz"
ALICE_TOKEN = "alice-token-xyz-0123"


def valid_env(**overrides: str) -> dict[str, str]:
    env = {
        "DATABASE_URL": f"postgresql+asyncpg://app:{DB_PASSWORD}@db.internal:5432/docstore",
        "S3_ENDPOINT_URL": "http://localhost:9000",
        "S3_ACCESS_KEY": "access-key-id",
        "S3_SECRET_KEY": S3_SECRET,
        "S3_BUCKET": "docstore",
        "API_TOKENS": json.dumps({"alice": ALICE_TOKEN, "bob": "bob-token-0123456789"}),
    }
    env.update(overrides)
    return env


def error_for(env: dict[str, str]) -> str:
    with pytest.raises(SettingsError) as caught:
        load_settings(env)
    return str(caught.value)


def test_a_complete_environment_loads_with_defaults_for_optional_values() -> None:
    settings = load_settings(valid_env())

    assert settings.database_schema is None
    assert settings.s3_region == "us-east-1"
    assert settings.max_upload_bytes == 100 * 1024 * 1024
    assert settings.api_tokens["alice"].get_secret_value() == ALICE_TOKEN


def test_api_tokens_json_maps_owner_names_to_tokens() -> None:
    settings = load_settings(valid_env(API_TOKENS='{"carol": "c-token-0123456789"}'))

    assert list(settings.api_tokens) == ["carol"]


def test_missing_required_variables_are_each_named_on_their_own_line() -> None:
    env = valid_env()
    del env["DATABASE_URL"]
    del env["S3_BUCKET"]

    message = error_for(env)

    lines = message.splitlines()
    assert any(line.strip().startswith("DATABASE_URL: is not set") for line in lines)
    assert any(line.strip().startswith("S3_BUCKET: is not set") for line in lines)
    assert "fix:" in message


def test_an_empty_variable_counts_as_not_set() -> None:
    message = error_for(valid_env(S3_BUCKET="   "))

    assert "S3_BUCKET: is not set" in message


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://app:{DB_PASSWORD}@db.internal/docstore",
        f"postgresql+psycopg://app:{DB_PASSWORD}@db.internal/docstore",
        "sqlite:///docstore.db",
        "sqlite+aiosqlite:///:memory:",
    ],
)
def test_database_url_must_use_the_asyncpg_driver(url: str) -> None:
    message = error_for(valid_env(DATABASE_URL=url))

    assert "DATABASE_URL: must start with 'postgresql+asyncpg://'" in message
    assert DB_PASSWORD not in message


def test_database_url_error_shows_the_value_with_the_password_masked() -> None:
    message = error_for(valid_env(DATABASE_URL=f"postgresql://app:{DB_PASSWORD}@db.internal/x"))

    assert "postgresql://app:***@db.internal/x" in message
    assert DB_PASSWORD not in message


def test_database_url_without_a_database_name_is_rejected() -> None:
    message = error_for(valid_env(DATABASE_URL="postgresql+asyncpg://app@db.internal"))

    assert "DATABASE_URL: names no database" in message


def test_api_tokens_that_are_not_json_are_reported_without_echoing_them() -> None:
    message = error_for(valid_env(API_TOKENS=f"alice={ALICE_TOKEN}"))

    assert "API_TOKENS: is not valid JSON" in message
    assert ALICE_TOKEN not in message


def test_api_tokens_error_shows_owner_names_but_masks_tokens() -> None:
    message = error_for(valid_env(API_TOKENS=json.dumps({"alice": ALICE_TOKEN, "bad name": "t"})))

    assert "API_TOKENS" in message
    assert '"alice": "***"' in message
    assert ALICE_TOKEN not in message


@pytest.mark.parametrize("tokens", ["{}", "[]", '"just-a-string"', '{"alice": ""}'])
def test_api_tokens_must_map_at_least_one_owner_to_a_non_empty_token(tokens: str) -> None:
    message = error_for(valid_env(API_TOKENS=tokens))

    assert message.count("API_TOKENS") >= 1


def test_two_owners_may_not_share_a_token() -> None:
    message = error_for(
        valid_env(
            API_TOKENS=json.dumps({"alice": "same-token-0123456", "bob": "same-token-0123456"})
        )
    )

    assert "share the same token" in message
    assert "same" not in message.split("(got", 1)[1].split(")")[0].replace("***", "")


def test_secret_key_problems_never_show_the_secret() -> None:
    env = valid_env(S3_SECRET_KEY=S3_SECRET, S3_BUCKET="Not_A_Bucket", MAX_UPLOAD_BYTES="0")
    del env["DATABASE_URL"]

    message = error_for(env)

    assert S3_SECRET not in message
    assert DB_PASSWORD not in message
    assert "S3_BUCKET: is not a valid S3 bucket name" in message
    assert "MAX_UPLOAD_BYTES" in message


@pytest.mark.parametrize(
    "bucket", ["ab", "UPPER", "has_underscore", "a..b", "192.168.1.1", "-dash"]
)
def test_bucket_names_follow_s3_rules(bucket: str) -> None:
    assert "S3_BUCKET" in error_for(valid_env(S3_BUCKET=bucket))


@pytest.mark.parametrize("value", ["0", "-5", "lots"])
def test_max_upload_bytes_must_be_a_positive_integer(value: str) -> None:
    assert "MAX_UPLOAD_BYTES" in error_for(valid_env(MAX_UPLOAD_BYTES=value))


@pytest.mark.parametrize("schema", ["public; drop table x", "1abc", "has-dash", 'quo"te'])
def test_database_schema_must_be_a_plain_identifier(schema: str) -> None:
    assert "DATABASE_SCHEMA: must be a plain identifier" in error_for(
        valid_env(DATABASE_SCHEMA=schema)
    )


def test_database_schema_becomes_the_connections_search_path() -> None:
    settings = load_settings(valid_env(DATABASE_SCHEMA="run_42"))

    assert engine_connect_args(settings)["server_settings"]["search_path"] == "run_42"


def test_without_a_schema_no_search_path_is_forced() -> None:
    assert "search_path" not in engine_connect_args(load_settings(valid_env()))["server_settings"]


def test_every_database_call_of_the_service_has_a_deadline() -> None:
    settings = load_settings(
        valid_env(
            DATABASE_CONNECT_TIMEOUT="2.5",
            DATABASE_COMMAND_TIMEOUT="6",
            DATABASE_STATEMENT_TIMEOUT="1.5",
        )
    )

    assert engine_connect_args(settings) == {
        "timeout": 2.5,
        "command_timeout": 6.0,
        "server_settings": {"statement_timeout": "1500"},
    }


def test_migrations_get_a_connect_deadline_but_no_statement_deadline() -> None:
    settings = load_database_settings(valid_env())

    assert engine_connect_args(settings) == {"timeout": 3.0}


def test_the_deadlines_default_to_at_most_ten_seconds_per_request() -> None:
    settings = load_settings(valid_env())

    assert settings.database_connect_timeout + settings.database_command_timeout <= 10
    assert settings.s3_call_deadline <= 10
    assert settings.health_timeout < 5


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("DATABASE_COMMAND_TIMEOUT", "0"),
        ("S3_READ_TIMEOUT", "-1"),
        ("HEALTH_TIMEOUT", "nan"),
        ("UPLOAD_IDLE_TIMEOUT", "inf"),
        ("DATABASE_CONNECT_TIMEOUT", "soon"),
    ],
)
def test_deadlines_must_be_positive_finite_seconds(variable: str, value: str) -> None:
    message = error_for(valid_env(**{variable: value}))

    assert f"{variable}: " in message
    assert "positive number of seconds" in message


@pytest.mark.parametrize(
    ("variable", "value"),
    [("S3_MAX_ATTEMPTS", "0"), ("S3_MAX_THREADS", "0"), ("MAX_ACTIVE_UPLOADS", "-3")],
)
def test_pool_sizes_and_attempts_must_be_positive_whole_numbers(variable: str, value: str) -> None:
    assert f"{variable}: " in error_for(valid_env(**{variable: value}))


def test_the_s3_call_deadline_outlasts_botocores_own_worst_case() -> None:
    settings = load_settings(
        valid_env(S3_CONNECT_TIMEOUT="2", S3_READ_TIMEOUT="5", S3_MAX_ATTEMPTS="3")
    )

    assert settings.s3_call_deadline > 3 * (2 + S3_CONTINUE_WAIT_S + 5)


def test_repr_of_settings_hides_every_secret() -> None:
    settings = load_settings(valid_env())

    text = repr(settings) + str(settings)

    assert DB_PASSWORD not in text
    assert S3_SECRET not in text
    assert ALICE_TOKEN not in text
    assert "app:***@db.internal" in text


def test_direct_construction_errors_do_not_echo_input_values() -> None:
    with pytest.raises(ValueError) as caught:
        Settings(
            database_url=f"postgresql://app:{DB_PASSWORD}@db/x",
            s3_access_key="a",
            s3_secret_key="b",
            s3_bucket="docstore",
            api_tokens={"alice": "a-token-of-16-chars"},
        )

    assert DB_PASSWORD not in str(caught.value)


def test_load_settings_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in valid_env(S3_BUCKET="from-environ").items():
        monkeypatch.setenv(name, value)

    assert load_settings().s3_bucket == "from-environ"


def test_storage_gc_exits_2_with_one_message_on_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from api import storage_gc

    for name in valid_env():
        monkeypatch.delenv(name, raising=False)

    assert storage_gc.main([]) == storage_gc.EXIT_CONFIGURATION
    assert "DATABASE_URL: is not set" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("variable", "value", "problem"),
    [
        # No scheme: make_url cannot parse it, and the old masking needed "://".
        ("DATABASE_URL", f"app:{DB_PASSWORD}@db.internal/docstore", "must start with"),
        # A bare secret pasted into the wrong variable.
        ("DATABASE_URL", DB_PASSWORD, "must start with"),
        ("S3_ENDPOINT_URL", f"http://key:{S3_SECRET}@localhost:9000", "must not carry credentials"),
        ("S3_ENDPOINT_URL", f"http://{S3_SECRET}@localhost:9000", "must not carry credentials"),
        ("S3_ENDPOINT_URL", S3_SECRET, "must be an http:// or https:// URL"),
    ],
)
def test_a_start_up_error_never_echoes_a_secret_in_a_url_variable(
    variable: str, value: str, problem: str
) -> None:
    message = error_for(valid_env(**{variable: value}))

    assert f"{variable}: {problem}" in message
    assert DB_PASSWORD not in message and S3_SECRET not in message


@pytest.mark.parametrize("endpoint", ["http://localhost:notport", "http://localhost:99999"])
def test_an_s3_endpoint_whose_port_is_not_a_port_is_refused(endpoint: str) -> None:
    message = error_for(valid_env(S3_ENDPOINT_URL=endpoint))

    assert "S3_ENDPOINT_URL: has a port that is not a number from 0 to 65535" in message
    assert repr(endpoint) in message  # no secret in it: shown as given


def test_a_token_shorter_than_the_minimum_is_refused_without_showing_it() -> None:
    short = "short-tok-15chr"  # 15 characters

    message = error_for(valid_env(API_TOKENS=json.dumps({"alice": ALICE_TOKEN, "bob": short})))

    assert "API_TOKENS: the token of owner 'bob' has 15 characters" in message
    assert "at least 16" in message and "secrets.token_urlsafe" in message
    assert short not in message and ALICE_TOKEN not in message
