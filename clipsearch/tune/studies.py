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


#: how long a SQLite storage another process has locked is waited for before the phase is
#: refused: a busy writer (a dashboard, another experiment's phase on a shared file) holds its
#: lock for milliseconds; a lock held longer than this is not going away
LOCK_WAIT_S = 10.0


def check_storage(storage: str, wait_s: float | None = None) -> None:
    """An existing storage file opens, read only: a SQLite file is a database, passes SQLite's
    quick_check and is not held locked by another process for more than `wait_s` (default
    LOCK_WAIT_S); a journal
    file is whole JSON lines. Else InputError, before anything of the phase is written: Optuna
    would fail on it only once the phase's folder and MLflow run were made, or, on a corrupt
    file, might build its tables over it. A file not there yet is the phase's to create; a
    database server is not reached here."""
    if storage.startswith("sqlite:///"):
        _check_sqlite(Path(storage.removeprefix("sqlite:///")), LOCK_WAIT_S if wait_s is None else wait_s)
    elif "://" not in storage:
        _check_journal(Path(storage))


def _check_sqlite(file: Path, wait_s: float) -> None:
    import sqlite3

    if not file.exists():
        return
    fix = (f"restore {file.name} from a copy, or move it aside (keep it: it may hold the studies of the phases "
           "run so far) and run the command again, or give another --optuna-storage")
    try:
        # mode=rw: an existing file only, never created; autocommit, so no transaction is left open
        connection = sqlite3.connect(f"{file.as_uri()}?mode=rw", uri=True, timeout=wait_s, isolation_level=None)
    except sqlite3.Error as exc:
        raise InputError(f"the Optuna storage cannot be opened ({exc})", where=str(file), fix=fix) from None
    try:
        problems = [row[0] for row in connection.execute("PRAGMA quick_check").fetchall() if row[0] != "ok"]
        # a write lock, taken and given back at once (nothing written): what Optuna will need
        connection.execute("BEGIN IMMEDIATE")
        connection.execute("ROLLBACK")
    except sqlite3.OperationalError as exc:
        if "locked" not in str(exc) and "busy" not in str(exc):
            raise InputError(f"the Optuna storage is not a readable SQLite database ({exc})", where=str(file),
                             fix=fix) from None
        raise InputError(f"the Optuna storage is locked by another process (waited {wait_s:g} s)", where=str(file),
                         fix="stop what holds it (an sqlite3 shell, a stuck process: `fuser` names it), then run "
                             "the command again") from None
    except sqlite3.DatabaseError as exc:  # "file is not a database", "database disk image is malformed"
        raise InputError(f"the Optuna storage is not a SQLite database or is corrupt ({exc})", where=str(file),
                         fix=fix) from None
    finally:
        connection.close()
    if problems:
        raise InputError(f"the Optuna storage is corrupt (SQLite's quick_check: {problems[0]})", where=str(file),
                         fix=fix)


def _check_journal(file: Path) -> None:
    """Every line of Optuna's journal a JSON record ending in a newline: a cut or garbled line
    makes Optuna's reader fail once records follow it, and its next append would follow it."""
    import json

    if not file.is_file():
        return
    fix = f"move {file.name} aside (keep it: it holds the studies run so far) and give another --optuna-storage"
    try:
        with open(file, "rb") as journal:
            for number, line in enumerate(journal, start=1):
                if not line.endswith(b"\n"):
                    raise InputError(f"the Optuna journal's last line ({number}) is cut off", where=str(file), fix=fix)
                try:
                    json.loads(line)
                except ValueError:
                    raise InputError(f"line {number} of the Optuna journal is not a JSON record", where=str(file),
                                     fix=fix) from None
    except OSError as exc:
        raise InputError(f"the Optuna journal cannot be read ({exc.strerror})", where=str(file),
                         fix="check the file's permissions and the shared file system") from None


def open_storage(storage: str):
    """The Optuna storage of an experiment_storage() string."""
    import optuna

    if "://" in storage:
        return optuna.storages.RDBStorage(storage)
    from optuna.storages.journal import JournalFileBackend

    return optuna.storages.JournalStorage(JournalFileBackend(storage))
