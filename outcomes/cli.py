"""``python -m outcomes …``: a thin shell over the library.

Each command parses its arguments, calls one or two library functions and prints the result. Errors
the library raises on purpose (:class:`~outcomes.errors.OutcomesError`) are printed without a
traceback and exit with status 1; usage errors exit with status 2 (argparse's convention).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import date
from pathlib import Path
from typing import TextIO

from .errors import OutcomesError
from .domains import load_domains
from .settings import load_settings, parse_mcid_overrides, settings_help


def _iso_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a date as YYYY-MM-DD, got {text!r}") from None


def _mcid_pair(text: str) -> dict[str, float]:
    try:
        return parse_mcid_overrides(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m outcomes", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def db_option(p: argparse.ArgumentParser) -> None:
        p.add_argument("--db", type=Path, help="SQLite database (default: the db_path setting)")

    p = commands.add_parser("init", help="create or migrate a database")
    db_option(p)

    p = commands.add_parser("score", help="score a CSV or Parquet file of item responses (like the HealthMeasures "
                                          "Scoring Service)")
    p.add_argument("input", type=Path, help="CSV, or Parquet if it ends in .parquet, with a 'form' column and one "
                                            "column per item ID")
    p.add_argument("--out", type=Path, help="output file, Parquet if it ends in .parquet, CSV otherwise (default: "
                                            "CSV on standard output)")

    p = commands.add_parser("import", help="import historical patients, series and scores from CSV")
    db_option(p)
    p.add_argument("--patients", type=Path, help="patients.csv: patient_id, diagnosis, sex, birth_year")
    p.add_argument("--series", type=Path, help="series.csv: patient_id, first_infusion, last_infusion, infusions, protocol")
    p.add_argument("--scores", type=Path, help="scores.csv: patient_id, assessed_on, domain, t_score [, se, form]")

    p = commands.add_parser("seed-demo", help="fill a database with a synthetic demo cohort")
    db_option(p)
    p.add_argument("--patients", type=int, default=1034, help="number of synthetic patients (default 1034)")
    p.add_argument("--seed", type=int, default=2025, help="random seed (default 2025)")
    p.add_argument("--end", type=_iso_date, default=None,
                   help="last day of the synthetic record, YYYY-MM-DD (default: today)")

    p = commands.add_parser("report", help="cohort reports")
    reports = p.add_subparsers(dest="report", required=True, metavar="REPORT")
    r = reports.add_parser("responders", help="responder rates per domain and follow-up window")
    db_option(r)
    r.add_argument("--as-of", type=_iso_date, required=True, help="report date, YYYY-MM-DD")
    r.add_argument("--series", choices=("first", "all"), default="first", help="analysis set (default first)")
    r.add_argument("--mcid", type=_mcid_pair, action="append", default=[], metavar="DOMAIN=VALUE",
                   help="threshold override in T points; DOMAIN is a domain of data/instruments/forms.toml "
                        f"(shipped: {', '.join(load_domains())})")
    r.add_argument("--format", choices=("json", "csv"), default="json")

    p = commands.add_parser(
        "export", help="export data for quality improvement (audited)",
        description="De-identified analysis dataset, identified dataset (needs --reason), suppressed summary "
                    "tables or a FHIR R4 Bundle. Every export is written to the audit log as "
                    "cli:<your login>.")
    p.add_argument("kind", choices=("deidentified", "identified", "summary", "fhir"))
    db_option(p)
    p.add_argument("--out", type=Path, required=True,
                   help="file to write (a .zip for CSV and Parquet datasets)")
    p.add_argument("--format", choices=("csv", "xlsx", "parquet", "json"),
                   help="csv (default; a ZIP of one CSV per table), xlsx, parquet (datasets), "
                        "json (fhir, default)")
    p.add_argument("--as-of", type=_iso_date, default=None, help="data cut, YYYY-MM-DD (default: today)")
    p.add_argument("--series", choices=("first", "all"), default="first", help="analysis set of the summary")
    p.add_argument("--identified", action="store_true", help="fhir: patient IDs and dates (needs --reason)")
    p.add_argument("--reason", help="why an identified export is needed; kept in the audit log")

    p = commands.add_parser(
        "backup", help="consistent online backup of the database into one file (audited)",
        description="Copies the whole database with SQLite's backup API from one snapshot, while the app keeps "
                    "running and writing; checks the copy (integrity_check) and renames it into place, so FILE "
                    "is complete or untouched. The copy holds identified data: store it like the database. "
                    "Written to the audit log as cli:<your login>.")
    db_option(p)
    p.add_argument("--out", type=Path, required=True, help="backup file to write (replaced only when complete)")

    p = commands.add_parser(
        "restore", help="replace the database by a backup (the current one is kept beside it)",
        description="Checks the backup, saves the current database as DB.before-restore-<time>.db, then "
                    "replaces it in one transaction (a running app sees the restored data at its next "
                    "action); an older backup is migrated to the current schema. Audited as cli:<your login>.")
    p.add_argument("backup_file", type=Path, metavar="FILE", help="a file made by the backup command")
    db_option(p)
    p.add_argument("--no-keep", action="store_true", help="do not keep a copy of the database being replaced")

    p = commands.add_parser(
        "secrets", help="write a random cookie secret for hospital sign-in into .streamlit/secrets.toml",
        description="Makes sure [auth] cookie_secret in the Streamlit secrets file is a random secret of this "
                    "installation (kept if present, unless --rotate). The file is git-ignored and written "
                    "with mode 0600; hospital sign-in starts once the identity provider's details are added.")
    p.add_argument("--file", type=Path, default=None, help="secrets file (default .streamlit/secrets.toml)")
    p.add_argument("--rotate", action="store_true", help="replace an existing secret (signs everybody out)")

    p = commands.add_parser(
        "unlock", help="lift every sign-in wait of a user (audited)",
        description="After too many failed sign-ins a user must wait before the next try from browsers the account "
                    "has not signed in on (or from one browser that failed too often). This lifts every such wait "
                    "at once, as the Users page does; use it when no administrator can sign in. Audited as "
                    "cli:<your login>.")
    p.add_argument("username", metavar="USER", help="the user's username")
    db_option(p)

    p = commands.add_parser(
        "setup-token", help="make a new one-time token to create the first administrator (new installation only)",
        description="On a database without any user, the set-up page asks for a one-time token, which the server "
                    "prints in its log. This makes a new one (the earlier one stops working) and prints it.")
    db_option(p)

    p = commands.add_parser(
        "remind", help="send the invitations and reminders that are due (run by cron or a systemd timer)",
        description="Plans the follow-up messages owed today into the outbox and sends them by email and SMS: "
                    "the invitation on the due day, one reminder two days later. Safe to run again or twice at "
                    "once: each step is sent once. Failed messages are retried by later runs, then given up and "
                    "shown on the Reminders page. Nothing is sent during quiet hours. Exits non-zero only when it "
                    "cannot run at all (docs/operations.md, Reminders).")
    db_option(p)
    p.add_argument("--as-of", type=_iso_date, default=None, help="the day to plan for, YYYY-MM-DD (default: today "
                                                                 "in the clinic's time zone)")
    p.add_argument("--dry-run", action="store_true", help="list what would be sent; change nothing")
    p.add_argument("--format", choices=("text", "json"), default="text",
                   help="text: a short summary (default); json: the messages (a list, with --dry-run)")

    commands.add_parser("settings", help="list every setting with its default and help")
    return parser


def _operator() -> str:
    """The login name of whoever runs the command, for the audit log (``cli:<login>``)."""
    import getpass

    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name in some containers
        return "unknown"


def main(argv: Sequence[str] | None = None, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    stdout = stdout or sys.stdout
    stderr = stderr or sys.stderr
    parser = build_parser()
    args = parser.parse_args(argv)
    if overrides := getattr(args, "mcid", None):
        known = load_settings().domains
        if unknown := [d for override in overrides for d in override if d not in known]:
            parser.error(f"argument --mcid: unknown domain {unknown[0]!r}; expected one of {', '.join(known)}")
    try:
        return _run(args, stdout)
    except OutcomesError as exc:
        print(f"error: {exc}", file=stderr)
        return 1


def _run(args: argparse.Namespace, out: TextIO) -> int:
    settings = load_settings()
    db_path = getattr(args, "db", None) or settings.db_path

    if args.command == "settings":
        for row in settings_help():
            print(f"{row['env_var']} (default {row['default']})\n    {row['help']}", file=out)
        return 0

    if args.command == "secrets":
        from . import deployment

        result = deployment.ensure_cookie_secret(args.file or deployment.SECRETS_FILE, rotate=args.rotate)
        print(result.describe(), file=out)
        return 0

    if args.command == "score":
        from . import instruments, scoring

        registry = instruments.load_registry(settings.instruments_dir, settings.item_wording_file)
        scored = scoring.score_file(args.input, args.out, registry=registry)
        if args.out:
            n_bad = int(scored["t_score"].isna().sum())
            print(f"Scored {len(scored)} rows into {args.out} ({n_bad} without a score; see 'note').", file=out)
        else:
            scored.to_csv(out, index=False)
        return 0

    from . import storage

    if args.command == "init":
        db = storage.connect(db_path)
        summary = storage.database_summary(db)
        print(f"Database {db_path} is ready (schema version {summary['schema_version']}).", file=out)
        return 0

    if args.command == "import":
        from datetime import datetime, timezone

        from . import importing

        if not (args.patients or args.series or args.scores):
            print("Nothing to import: give at least one of --patients, --series, --scores.", file=out)
            return 2
        db = storage.connect(db_path)
        operator = f"cli:{_operator()}"
        with storage.transaction(db, bump=False):  # the rows, their alerts and the audit entry: all or none
            result = importing.import_files(db, patients=args.patients, series=args.series, scores=args.scores,
                                            entered_by=operator, now=datetime.now(timezone.utc), settings=settings)
            storage.append_audit(db, actor=operator, action="import", details={  # who loaded what
                "files": {k: str(v) for k, v in (("patients", args.patients), ("series", args.series),
                                                 ("scores", args.scores)) if v},
                **{f"{k}_{n}": getattr(result, f"{k}_{n}") for k in ("patients", "series", "scores")
                   for n in ("added", "present")}, "alerts": result.alerts_raised})
        print(result.describe(), file=out)
        return 0

    if args.command == "seed-demo":
        from datetime import datetime, timezone

        from . import importing, synthetic

        end = args.end or date.today()
        db = storage.connect(db_path)
        cohort = synthetic.generate_cohort(n_patients=args.patients, seed=args.seed, end=end)
        alerts = synthetic.write_cohort(db, cohort, now=datetime.now(timezone.utc), settings=settings)
        print(cohort.describe() + f"\nWritten to {db_path} (marked as synthetic). {alerts:,} "
              f"alert{'' if alerts == 1 else 's'} raised for clinician review ({importing.ALERT_SCOPE}).",
              file=out)
        return 0

    if args.command == "report" and args.report == "responders":
        from . import reports

        mcid = dict(settings.mcid)
        for override in args.mcid:
            mcid.update(override)
        db = storage.connect(db_path)
        table = reports.responders(db, as_of=args.as_of, series=args.series, mcid=mcid, settings=settings)
        if args.format == "csv":
            table.to_csv(out, index=False)
        else:
            json.dump(reports.to_records(table), out, indent=2)
            out.write("\n")
        return 0

    if args.command == "export":
        from datetime import datetime, timezone

        from . import exports

        kind = {"deidentified": "dataset", "identified": "dataset"}.get(args.kind, args.kind)
        identified = args.kind == "identified" or (args.kind == "fhir" and args.identified)
        fmt = args.format or ("json" if kind == "fhir" else "csv")
        operator = _operator()
        db = storage.connect(db_path)
        file = exports.export(db, operator, kind, fmt, deidentified=not identified,
                              as_of=args.as_of or date.today(), series=args.series, reason=args.reason,
                              settings=settings, now=datetime.now(timezone.utc))
        args.out.write_bytes(file.data)
        level = "IDENTIFIED" if identified else "de-identified"
        print(f"Wrote {file.rows:,} rows ({level}, {fmt}) to {args.out}; audited as cli:{operator}.",
              file=out)
        for note in file.notes:
            print(note, file=out)
        return 0

    if args.command == "backup":
        from .errors import NotFound

        if not Path(db_path).is_file():
            raise NotFound(f"There is no database at {db_path}; check --db or the db_path setting")
        db = storage.connect(db_path)
        check = storage.backup(db, args.out)
        storage.append_audit(db, actor=f"cli:{_operator()}", action="backup",
                             details={"file": str(args.out), "bytes": check.bytes, "counts": dict(check.counts)})
        print(f"Backed up {check.describe()}", file=out)
        return 0

    if args.command == "restore":
        from datetime import datetime, timezone

        target = Path(db_path)
        keep = None if args.no_keep else target.with_name(
            f"{target.stem}.before-restore-{datetime.now(timezone.utc):%Y%m%d-%H%M%S}.db")
        restored = storage.restore(target, args.backup_file, keep=keep)
        with storage.open_db(target) as db:
            storage.append_audit(db, actor=f"cli:{_operator()}", action="restore",
                                 details={"file": str(args.backup_file), "kept": str(keep) if keep else None,
                                          "audit_entries_kept": restored.kept_audit_entries})
        print(f"Restored {restored.describe()} from {args.backup_file}."
              + (f" The database it replaced is kept as {keep}." if keep and keep.exists() else "")
              + (f" {restored.kept_audit_entries:,} audit-log entries made after the backup were kept."
                 if restored.kept_audit_entries else ""), file=out)
        return 0

    if args.command == "unlock":
        from .errors import NotFound

        if not Path(db_path).is_file():
            raise NotFound(f"There is no database at {db_path}; check --db or the db_path setting")
        db = storage.connect(db_path)
        stored = storage.get_user(db, username=args.username.strip())
        if stored is None:
            raise NotFound(f"No user named {args.username!r} in {db_path}; check the spelling (python -m outcomes "
                           "unlock USER)")
        with storage.transaction(db, bump=False):
            lifted = storage.clear_throttle(db, scope="account", subject=stored["username"])
            storage.update_user(db, stored["id"], bump=False, failed_logins=0, locked_until=None)
            storage.append_audit(db, actor=f"cli:{_operator()}", action="unlock_user", patient_id=stored["patient_id"],
                                 details={"username": stored["username"], "waits_lifted": lifted})
        print(f"{stored['username']} can sign in again from every browser ({lifted} wait"
              f"{'' if lifted == 1 else 's'} lifted); audited as cli:{_operator()}.", file=out)
        return 0

    if args.command == "setup-token":
        from datetime import datetime, timezone

        from . import deployment

        db = storage.connect(db_path)
        token = deployment.issue_setup_token(db, now=datetime.now(timezone.utc), by=f"cli:{_operator()}")
        print(token.describe(), file=out)
        return 0

    if args.command == "remind":
        from datetime import datetime, timezone

        from . import messaging
        from .errors import NotFound

        if not Path(db_path).is_file():
            raise NotFound(f"There is no database at {db_path}; check --db or the db_path setting")
        now = datetime.now(timezone.utc)
        db = storage.connect(db_path)
        report = messaging.run(db, as_of=args.as_of or messaging.clinic_day(now, settings), settings=settings,
                               now=now, dry_run=args.dry_run)
        if args.format == "json":
            json.dump(report.to_json(), out, indent=2)
            out.write("\n")
        else:
            print(report.describe(), file=out)
        return 0

    raise AssertionError(f"unhandled command {args.command}")  # argparse keeps this unreachable
