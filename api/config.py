"""Service configuration read from environment variables, with readable, secret-free errors."""

from __future__ import annotations

import ipaddress
import json
import os
import re
from collections.abc import Iterable, Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

ASYNCPG_SCHEME = "postgresql+asyncpg://"
MIB = 1024 * 1024
# botocore waits this long for `100 Continue` before it sends a PUT's body anyway.
S3_CONTINUE_WAIT_S = 1.0

_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_OWNER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$")
_URL_PASSWORD = re.compile(r"(://[^:/@]*:)[^@]*@")


# A Bearer token shorter than this is refused at start-up: short ones can be guessed.
MIN_TOKEN_CHARS = 16


class SettingsError(Exception):
    """The environment does not describe a usable configuration; str() is the user-facing text."""


def mask_url_password(url: str) -> str:
    """Return the URL with any password replaced by ***, even when the URL does not parse."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except (ArgumentError, ValueError):
        return _URL_PASSWORD.sub(r"\1***@", url)


def _validate_database_url(value: str) -> str:
    if not value.startswith(ASYNCPG_SCHEME):
        raise ValueError(f"must start with {ASYNCPG_SCHEME!r} (the asyncpg driver)")
    try:
        url = make_url(value)
    except (ArgumentError, ValueError) as exc:
        raise ValueError("is not a valid database URL") from exc
    if not url.database:
        raise ValueError("names no database")
    return value


def _validate_schema(value: str | None) -> str | None:
    if value is not None and not _IDENTIFIER.fullmatch(value):
        raise ValueError(
            "must be a plain identifier: a letter or _ then letters, digits or _, at most 63 chars"
        )
    return value


def _seconds(default: float) -> Any:
    """A deadline in seconds: positive, finite, at most a day."""
    return Field(default=default, gt=0, le=86400, allow_inf_nan=False)


class DatabaseSettings(BaseSettings):
    """The part of the configuration that migrations need: where the database is."""

    model_config = SettingsConfigDict(extra="ignore", hide_input_in_errors=True)

    database_url: str
    database_schema: str | None = None
    # Opening a connection (TCP, TLS, authentication) gives up after this long.
    database_connect_timeout: float = _seconds(3.0)

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        return _validate_database_url(value)

    @field_validator("database_schema")
    @classmethod
    def _check_schema(cls, value: str | None) -> str | None:
        return _validate_schema(value)

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        # The URL may carry a password; repr() and logs must only ever see it masked.
        for name, value in super().__repr_args__():
            if name == "database_url" and isinstance(value, str):
                yield name, mask_url_password(value)
            else:
                yield name, value


class Settings(DatabaseSettings):
    """Everything the HTTP service needs; env var = upper-case field name."""

    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key: SecretStr
    s3_secret_key: SecretStr
    s3_bucket: str
    api_tokens: dict[str, SecretStr]
    max_upload_bytes: int = Field(default=100 * MIB, gt=0)

    # Deadlines of every outside call (seconds) and the bounds that keep slow clients from
    # starving the service; the README's table of service variables explains each.
    database_command_timeout: float = _seconds(5.0)
    database_statement_timeout: float = _seconds(4.0)
    database_pool_timeout: float = _seconds(3.0)
    s3_connect_timeout: float = _seconds(1.0)
    s3_read_timeout: float = _seconds(2.0)
    s3_max_attempts: int = Field(default=2, ge=1, le=10)
    s3_max_threads: int = Field(default=16, ge=1, le=1000)
    health_timeout: float = _seconds(3.0)
    upload_idle_timeout: float = _seconds(30.0)
    max_active_uploads: int = Field(default=100, ge=1, le=100_000)
    # The HTTP server's own bounds (python -m api.serve): a request's headers must arrive
    # within http_header_timeout, an idle keep-alive connection closes after
    # http_keep_alive_timeout, and at most http_max_connections are served at once.
    http_header_timeout: float = _seconds(10.0)
    http_keep_alive_timeout: int = Field(default=5, ge=1, le=3600)
    http_max_connections: int = Field(default=1000, ge=1, le=100_000)
    log_level: str = "INFO"

    @field_validator("log_level")
    @classmethod
    def _check_log_level(cls, value: str) -> str:
        level = value.upper()
        if level not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
        return level

    @property
    def s3_call_deadline(self) -> float:
        """How long one S3 call may take, retries included: longer than botocore's own worst
        case (per attempt: connect, up to 1 s waiting for `100 Continue` before a body, then
        the read timeout; plus short back-offs), so that a call given up on is one botocore has
        given up on too, and no write of it can reach S3 after the answer."""
        per_attempt = self.s3_connect_timeout + S3_CONTINUE_WAIT_S + self.s3_read_timeout
        return self.s3_max_attempts * per_attempt + 0.5

    @field_validator("s3_endpoint_url")
    @classmethod
    def _check_endpoint(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL")
        parts = urlsplit(value)
        if "@" in parts.netloc:
            raise ValueError("must not carry credentials (S3_ACCESS_KEY and S3_SECRET_KEY do)")
        try:
            parts.port  # noqa: B018 (raises on a port that is not a number from 0 to 65535)
        except ValueError:
            raise ValueError("has a port that is not a number from 0 to 65535") from None
        return value

    @field_validator("s3_region")
    @classmethod
    def _check_region(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z0-9-]{1,32}", value):
            raise ValueError("must be a region name such as us-east-1")
        return value

    @field_validator("s3_bucket")
    @classmethod
    def _check_bucket(cls, value: str) -> str:
        if not _BUCKET.fullmatch(value) or ".." in value:
            raise ValueError(
                "is not a valid S3 bucket name (3-63 chars of a-z, 0-9, '.', '-', "
                "starting and ending with a letter or digit)"
            )
        if value.startswith("xn--") or value.endswith("-s3alias"):
            raise ValueError("uses a prefix or suffix S3 reserves")
        try:
            ipaddress.ip_address(value)
        except ValueError:
            return value
        raise ValueError("must not look like an IP address")

    @field_validator("api_tokens", mode="before")
    @classmethod
    def _parse_tokens_json(cls, value: object) -> object:
        # load_settings() hands raw strings over; pydantic-settings already decodes JSON itself.
        if isinstance(value, str):
            try:
                return json.loads(value)
            except json.JSONDecodeError as exc:
                raise ValueError(f"is not valid JSON ({exc.msg} at char {exc.pos})") from None
        return value

    @field_validator("api_tokens")
    @classmethod
    def _check_tokens(cls, value: dict[str, SecretStr]) -> dict[str, SecretStr]:
        if not value:
            raise ValueError("must map at least one owner name to a token")
        for owner, token in value.items():
            if not _OWNER.fullmatch(owner):
                raise ValueError(
                    f"owner name {owner[:64]!r} must be 1-64 chars of letters, digits, '_.@-'"
                )
            length = len(token.get_secret_value().strip())
            if length == 0:
                raise ValueError(f"the token of owner {owner!r} is empty")
            if length < MIN_TOKEN_CHARS:
                raise ValueError(
                    f"the token of owner {owner!r} has {length} characters; a token needs at "
                    f"least {MIN_TOKEN_CHARS}, e.g. python -c 'import secrets; "
                    "print(secrets.token_urlsafe(24))'"
                )
        secrets = [token.get_secret_value() for token in value.values()]
        if len(set(secrets)) != len(secrets):
            raise ValueError("two owners share the same token; every owner needs its own")
        return value


_FIXES: dict[str, str] = {
    "DATABASE_URL": "set it to postgresql+asyncpg://USER:PASSWORD@HOST:5432/DBNAME",
    "DATABASE_SCHEMA": "set it to an existing schema name such as docstore, or unset it",
    "S3_ENDPOINT_URL": "set it to the S3 server URL such as http://localhost:9000, or unset it",
    "S3_REGION": "set it to the bucket's region, or unset it for us-east-1",
    "S3_ACCESS_KEY": "set it to the S3 access key id",
    "S3_SECRET_KEY": "set it to the S3 secret access key",
    "S3_BUCKET": "set it to an existing bucket name such as docstore",
    "API_TOKENS": 'set it to a JSON object of owner name to token, e.g. {"alice": "<token>"}',
    "MAX_UPLOAD_BYTES": "set it to a positive whole number of bytes, or unset it for 100 MiB",
    "S3_MAX_ATTEMPTS": "set it to a whole number from 1 to 10, or unset it for 2",
    "S3_MAX_THREADS": "set it to a whole number from 1 to 1000, or unset it for 16",
    "MAX_ACTIVE_UPLOADS": "set it to a positive whole number, or unset it for 100",
    "LOG_LEVEL": "set it to DEBUG, INFO, WARNING or ERROR, or unset it for INFO",
    "HTTP_KEEP_ALIVE_TIMEOUT": "set it to whole seconds from 1 to 3600, or unset it for 5",
    "HTTP_MAX_CONNECTIONS": "set it to a whole number from 1 to 100000, or unset it for 1000",
}
_SECONDS_FIXES = {
    "DATABASE_CONNECT_TIMEOUT": 3.0,
    "DATABASE_COMMAND_TIMEOUT": 5.0,
    "DATABASE_STATEMENT_TIMEOUT": 4.0,
    "DATABASE_POOL_TIMEOUT": 3.0,
    "S3_CONNECT_TIMEOUT": 1.0,
    "S3_READ_TIMEOUT": 2.0,
    "HEALTH_TIMEOUT": 3.0,
    "UPLOAD_IDLE_TIMEOUT": 30.0,
    "HTTP_HEADER_TIMEOUT": 10.0,
}
_FIXES |= {
    variable: f"set it to a positive number of seconds, or unset it for {default:g}"
    for variable, default in _SECONDS_FIXES.items()
}

_SECRET_VARIABLES = frozenset({"S3_ACCESS_KEY", "S3_SECRET_KEY"})
_URL_VARIABLES = frozenset({"DATABASE_URL", "S3_ENDPOINT_URL"})
_URL_USERINFO = re.compile(r"^([a-zA-Z][a-zA-Z0-9+.-]*://)[^/?#]*@")


def _shown_url(variable: str, raw: str) -> str:
    """A URL variable's value for a message: its password masked (for S3_ENDPOINT_URL, all of
    its user part); a value that is no URL at all may be a secret pasted into the wrong
    variable, and is not shown."""
    if "://" not in raw:
        return f"<hidden: not a URL, {len(raw)} chars>"
    if variable == "DATABASE_URL":
        return repr(mask_url_password(raw))
    return repr(_URL_USERINFO.sub(r"\1***@", raw)[:200])


def _shown_value(variable: str, raw: str | None) -> str:
    """The value as it may appear in an error message: never a secret."""
    if raw is None:
        return "not set"
    if variable in _URL_VARIABLES:
        return _shown_url(variable, raw)
    if variable in _SECRET_VARIABLES:
        return f"<hidden, {len(raw)} chars>"
    if variable == "API_TOKENS":
        try:
            parsed = json.loads(raw)
        except json.JSONDecodeError:
            return f"<hidden, {len(raw)} chars>"
        if isinstance(parsed, dict):
            return json.dumps(dict.fromkeys(parsed, "***"))
        return f"<hidden JSON {type(parsed).__name__}>"
    return repr(raw[:200])


def _problem(error: Mapping[str, Any]) -> str:
    if error["type"] == "missing":
        return "is not set"
    if error["type"] == "value_error":
        return str(error["ctx"]["error"])
    # Pydantic's own messages ("Input should be ...") never contain the input value.
    return str(error["msg"]).lower()


def _format_errors(exc: ValidationError, env: Mapping[str, str]) -> str:
    lines = []
    for error in exc.errors(include_input=False, include_url=False):
        field = str(error["loc"][0]) if error["loc"] else "?"
        variable = field.upper()
        fix = _FIXES.get(variable, "check its value")
        seen = (
            ""
            if error["type"] == "missing"
            else f" (got {_shown_value(variable, env.get(variable))})"
        )
        lines.append(f"  {variable}: {_problem(error)}{seen}; fix: {fix}")
    plural = "s" if len(lines) != 1 else ""
    return f"invalid configuration, {len(lines)} problem{plural}:\n" + "\n".join(lines)


_S = TypeVar("_S", bound=DatabaseSettings)


def _load(cls: type[_S], env: Mapping[str, str] | None) -> _S:
    source = os.environ if env is None else env
    values: dict[str, str] = {}
    for field in cls.model_fields:
        raw = source.get(field.upper())
        # An empty variable means "not set": optional fields fall back to their default.
        if raw is not None and raw.strip():
            values[field] = raw.strip()
    try:
        return cls.model_validate(values)
    except ValidationError as exc:
        raise SettingsError(_format_errors(exc, source)) from None


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Read Settings from `env` (default os.environ); SettingsError has one line per problem."""
    return _load(Settings, env)


def load_database_settings(env: Mapping[str, str] | None = None) -> DatabaseSettings:
    """Read only DATABASE_URL and DATABASE_SCHEMA, for migrations and maintenance commands."""
    return _load(DatabaseSettings, env)
