"""What marks a database, schema, bucket or migrated template as created by this project's
harness (one stamp type for all of them), and the refusal rules.

Everything the harness creates carries a stamp; nothing without this run's stamp is ever
dropped, truncated or emptied, and the sweep removes only stamps of dead local processes.
"""

from __future__ import annotations

import json
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from typing import Any

from .process import start_time
from .project import Project


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class JanitorRefusal(RuntimeError):
    """The harness was about to destroy something it cannot prove it created."""


@dataclass(frozen=True)
class Stamp:
    """Stored as JSON in COMMENT ON DATABASE/SCHEMA, and as tags on a bucket."""

    created_by: str  # the project's stamp mark: another project's harness never matches
    run: str  # "" on a migrated template, which belongs to no run
    worker: str
    host: str
    pid: int
    created_at: str
    kept: bool = False
    template: str = ""  # a migrated template's fingerprint (templates.py); "" otherwise

    @classmethod
    def for_template(cls, project: Project, fingerprint: str) -> Stamp:
        """The stamp of a migrated template database, built by this process."""
        return cls(
            created_by=project.stamp_mark,
            run="",
            worker="",
            host=socket.gethostname(),
            pid=os.getpid(),
            created_at=_now(),
            template=fingerprint,
        )

    def _fields(self) -> dict[str, Any]:
        fields = asdict(self)
        if not self.template:
            del fields["template"]  # a run's stamp reads as it always did
        return fields

    def to_json(self) -> str:
        return json.dumps(self._fields(), sort_keys=True)

    def to_tags(self) -> list[dict[str, str]]:
        return [{"Key": key, "Value": str(value)} for key, value in self._fields().items()]

    @classmethod
    def parse(cls, project: Project, fields: Mapping[str, Any]) -> Stamp | None:
        """The stamp in these fields, or None when they are not this project's harness stamp."""
        if fields.get("created_by") != project.stamp_mark:
            return None
        try:
            template = str(fields.get("template", ""))
            return cls(
                created_by=project.stamp_mark,
                # A template belongs to no run: it has neither run nor worker.
                run=str(fields.get("run", "") if template else fields["run"]),
                worker=str(fields.get("worker", "") if template else fields["worker"]),
                host=str(fields["host"]),
                pid=int(fields["pid"]),
                created_at=str(fields["created_at"]),
                kept=str(fields.get("kept", False)).lower() in {"true", "1"},
                template=template,
            )
        except (KeyError, ValueError):
            return None

    @classmethod
    def from_json(cls, project: Project, text: str | None) -> Stamp | None:
        try:
            fields = json.loads(text or "")
        except ValueError:
            return None
        return cls.parse(project, fields) if isinstance(fields, dict) else None

    def owner_is_dead(self, *, include_kept: bool = False) -> bool:
        """True only for a stamp of this machine whose process is gone (kept ones only if
        asked: `make clean-leftovers`)."""
        if self.kept and not include_kept:
            return False
        return self.host == socket.gethostname() and start_time(self.pid) is None

    def marked_kept(self) -> Stamp:
        return replace(self, kept=True)


@dataclass(frozen=True)
class RunNames:
    """The names one run (or one xdist worker of it) uses for its schema and bucket."""

    project: Project
    run_id: str
    worker: str

    @property
    def schema(self) -> str:
        """The name of the run's database (or, where the role may not create one, schema)."""
        return f"test_{self.run_id}_{self.worker}".replace("-", "_").lower()

    database = schema

    @property
    def bucket(self) -> str:
        return f"test-{self.run_id}-{self.worker}".replace("_", "-").lower()

    def stamp(self) -> Stamp:
        return Stamp(
            created_by=self.project.stamp_mark,
            run=self.run_id,
            worker=self.worker,
            host=socket.gethostname(),
            pid=os.getpid(),
            created_at=_now(),
        )

    def refuse_unless_ours(self, what: str, found: Stamp | None, raw: object) -> None:
        if found is None or found.run != self.run_id:
            raise JanitorRefusal(
                f"Refusing to clean {what}: it does not carry this run's stamp "
                f"(found {raw or 'no stamp'!r}). Nothing was dropped or deleted."
            )
