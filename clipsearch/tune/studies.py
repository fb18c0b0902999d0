"""Where the Optuna phases keep their studies: one storage per experiment, a study per phase.

The storage is `sqlite:///<absolute results>/EXP/optuna.db` unless `--optuna-storage` names
another: a database URL (`sqlite:///...`, `postgresql://user@host/db`, `mysql://...`: Optuna's
RDBStorage), or the path of a journal file (Optuna's JournalStorage over a JournalFileBackend:
appends under a file lock, the storage for an NFS folder a cluster's nodes share). Each phase's
study is named EXP-PHASE in it (classify's methods: EXP-classify-METHOD), so one
`optuna-dashboard` over the storage shows every phase, and a database server may hold several
experiments. phase.json keeps the storage and the study's name (clipsearch.results.phase_study
reads them); a phase run before the experiment had one storage kept its own
results/EXP/PHASE/optuna.db, which a resumed or extended phase and the report go on reading.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError
from ..results import OPTUNA_DB

#: the URL schemes Optuna's RDBStorage is given (SQLAlchemy's dialects, with or without a driver)
_DATABASES = ("sqlite", "postgresql", "postgres", "mysql", "mariadb", "oracle", "mssql")


def experiment_storage(given: str | None, exp_dir: Path) -> str:
    """The experiment's storage as phase.json keeps it: the default SQLite file, a database URL
    (a relative SQLite path made absolute), or a journal file's absolute path. Checked, nothing
    created: InputError naming --optuna-storage."""
    if given is None:
        return f"sqlite:///{Path(exp_dir).resolve() / OPTUNA_DB}"
    if "://" not in given:
        return _journal_path(given)
    scheme = given.split("://", 1)[0].split("+", 1)[0].lower()
    if scheme not in _DATABASES:
        raise InputError(f"unknown storage {given!r}", where="--optuna-storage",
                         fix="give a database URL (sqlite:///PATH, postgresql://HOST/DB, mysql://HOST/DB) "
                             "or a journal file's path")
    if scheme == "sqlite":
        return _sqlite_url(given)
    _check_driver(given)
    return given


def _journal_path(given: str) -> str:
    path = Path(given).expanduser().resolve()
    if not path.parent.is_dir():
        raise InputError(f"the journal file's folder {path.parent} does not exist", where="--optuna-storage",
                         fix="create the folder (on the shared file system), or give another path")
    if path.is_dir():
        raise InputError(f"{path} is a folder", where="--optuna-storage", fix="give a file's path, e.g. DIR/optuna.log")
    return str(path)


def _sqlite_url(given: str) -> str:
    """sqlite:///relative.db is relative to the directory the command runs in: made absolute, so
    that phase.json, the dashboard and a resumed run all find the same file."""
    path = given.split("://", 1)[1]
    if not path.startswith("/"):
        raise InputError(f"{given!r} names no file", where="--optuna-storage", fix="write sqlite:///PATH/optuna.db")
    file = Path(path[1:]).expanduser().resolve()
    if not file.parent.is_dir():
        raise InputError(f"the folder {file.parent} does not exist", where="--optuna-storage",
                         fix="create it, or give another path")
    return f"sqlite:///{file}"


def _check_driver(url: str) -> None:
    """The database's driver imports (nothing connects before the phase starts)."""
    import sqlalchemy

    try:
        sqlalchemy.create_engine(url).dispose()
    except Exception as exc:  # noqa: BLE001 - a bad URL, a missing driver: SQLAlchemy's many errors
        raise InputError(f"cannot use {url!r} ({exc.__class__.__name__}: {' '.join(str(exc).split())[:120]})",
                         where="--optuna-storage", fix="check the URL, and install its driver "
                                                       "(e.g. pip install psycopg2-binary for PostgreSQL)") from None


def open_storage(storage: str):
    """The Optuna storage of an experiment_storage() string."""
    import optuna

    if "://" in storage:
        return optuna.storages.RDBStorage(storage)
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(storage))
