import io
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from outcomes import storage
from outcomes.cli import main

ROOT = Path(__file__).resolve().parents[1]


def run(*argv: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(argv), stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_module_entry_point_shows_help():
    done = subprocess.run([sys.executable, "-m", "outcomes", "--help"], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0
    for command in ("init", "score", "import", "seed-demo", "report", "settings"):
        assert command in done.stdout


def test_init_creates_and_migrates(tmp_path):
    path = tmp_path / "sub" / "clinic.db"
    code, out, _ = run("init", "--db", str(path))
    assert code == 0 and path.exists() and "is ready" in out
    assert run("init", "--db", str(path))[0] == 0          # migrating again is harmless


def test_settings_lists_every_setting():
    code, out, _ = run("settings")
    assert code == 0 and "OUTCOMES_DB_PATH" in out and "OUTCOMES_MCID_PRESET" in out


def test_score_writes_results_and_keeps_other_columns(tmp_path):
    source = tmp_path / "in.csv"
    source.write_text(
        "visit,form,PAININ9,PAININ22,PAININ31,PAININ34\n"
        "v1,pain_interference_sf4a_v1.0,1,1,1,1\n"
        "v2,pain_interference_sf4a_v1.0,5,5,5,\n"
        "v3,pain_interference_sf4a_v1.0,9,1,1,1\n"
        "v4,no_such_form,1,1,1,1\n"
    )
    target = tmp_path / "out.csv"
    code, out, _ = run("score", str(source), "--out", str(target))
    assert code == 0 and "Scored 4 rows" in out
    result = pd.read_csv(target)
    assert list(result["visit"]) == ["v1", "v2", "v3", "v4"]
    assert result.loc[0, "t_score"] == 41.6 and result.loc[0, "method"] == "table"
    assert result.loc[1, "method"] == "pattern"
    assert "PAININ9" in result.loc[2, "note"] and pd.isna(result.loc[2, "t_score"])
    assert "no_such_form" in result.loc[3, "note"]


def test_score_to_standard_output(tmp_path):
    source = tmp_path / "in.csv"
    source.write_text("form,EDDEP04,EDDEP41,EDDEP29,EDDEP06\ndepression_sf4a_v1.0,5,5,5,5\n")
    code, out, _ = run("score", str(source))
    assert code == 0
    assert pd.read_csv(io.StringIO(out)).loc[0, "t_score"] == 79.4


def test_score_reads_and_writes_parquet(tmp_path):
    source = tmp_path / "in.parquet"
    pd.DataFrame({"visit": ["v1"], "form": ["pain_interference_sf4a_v1.0"], "PAININ9": [1], "PAININ22": [1],
                  "PAININ31": [1], "PAININ34": [1]}).to_parquet(source)
    code, out, _ = run("score", str(source), "--out", str(tmp_path / "out.parquet"))
    assert code == 0 and "Scored 1 rows" in out
    result = pd.read_parquet(tmp_path / "out.parquet")
    assert result.loc[0, "visit"] == "v1" and result.loc[0, "t_score"] == 41.6
    code, out, _ = run("score", str(source))  # to standard output: CSV
    assert code == 0 and pd.read_csv(io.StringIO(out)).loc[0, "t_score"] == 41.6


@pytest.mark.parametrize("name", ["missing.csv", "missing.parquet"])
def test_score_of_a_missing_file_says_so(tmp_path, name):
    code, _, err = run("score", str(tmp_path / name))
    assert code == 1 and "cannot be" in err and name in err and "Traceback" not in err


@pytest.mark.parametrize("name", ["out.csv", "out.parquet"])
def test_score_into_a_missing_folder_says_so(tmp_path, name):
    source = tmp_path / "in.csv"
    source.write_text("form,EDDEP04,EDDEP41,EDDEP29,EDDEP06\ndepression_sf4a_v1.0,5,5,5,5\n")
    code, _, err = run("score", str(source), "--out", str(tmp_path / "no" / "such" / name))
    assert code == 1 and "cannot be written" in err and name in err


def test_import_is_all_or_nothing_and_idempotent(tmp_path):
    db_path = tmp_path / "clinic.db"
    patients = tmp_path / "patients.csv"
    patients.write_text("patient_id,diagnosis,sex,birth_year\nP1,CRPS,F,1970\nP2,Fibromyalgia,M,1981\n")
    series = tmp_path / "series.csv"
    series.write_text("patient_id,first_infusion,last_infusion,infusions,protocol\nP1,2025-01-06,2025-01-10,5,5-day\n")
    scores = tmp_path / "scores.csv"
    scores.write_text("patient_id,assessed_on,domain,t_score\nP1,2025-01-06,depression,61.2\n"
                      "P1,2025-01-10,depression,57.0\n")
    args = ("import", "--db", str(db_path), "--patients", str(patients), "--series", str(series), "--scores", str(scores))
    code, out, _ = run(*args)
    assert code == 0, out
    assert run(*args)[0] == 0
    db = storage.connect(db_path)
    assert len(storage.load_patients(db)) == 2 and len(storage.load_assessments(db)) == 2

    bad = tmp_path / "bad.csv"
    bad.write_text("patient_id,assessed_on,domain,t_score\nP2,2025-02-01,depression,60\nP2,2025-13-01,mood,abc\n")
    code, _, err = run("import", "--db", str(db_path), "--scores", str(bad))
    assert code == 1
    assert "bad.csv line 3" in err
    assert len(storage.load_assessments(db)) == 2          # the good line 2 was not written either


def test_import_raises_the_alerts_of_the_latest_scores_and_says_so(tmp_path):
    db_path = tmp_path / "clinic.db"
    patients = tmp_path / "patients.csv"
    patients.write_text("patient_id\nP1\nP2\n")
    scores = tmp_path / "scores.csv"
    scores.write_text("patient_id,assessed_on,domain,t_score\nP1,2025-01-06,depression,74\n"
                      "P1,2025-03-03,depression,71.5\nP2,2025-03-03,depression,55\n")
    args = ("import", "--db", str(db_path), "--patients", str(patients), "--scores", str(scores))
    code, out, _ = run(*args)
    assert code == 0
    assert out.endswith(" 1 alert raised for clinician review (only each patient's latest score per domain "
                        "is checked against the alert rules).\n")
    alerts = storage.load_alerts(storage.connect(db_path))
    assert alerts[["patient_id", "t_score", "priority"]].values.tolist() == [["P1", 71.5, "high"]]
    code, out, _ = run(*args)                               # again: nothing added, no second alert
    assert code == 0 and out.startswith("0 added") and "alert" not in out
    assert len(storage.load_alerts(storage.connect(db_path))) == 1


def test_seed_demo_and_responder_report(tmp_path):
    db_path = tmp_path / "demo.db"
    code, out, _ = run("seed-demo", "--db", str(db_path), "--patients", "120", "--seed", "3", "--end", "2026-10-01")
    assert code == 0 and "120 patients" in out
    assert storage.is_synthetic(storage.connect(db_path))
    alerts = storage.load_alerts(storage.connect(db_path))
    assert len(alerts) > 10 and (alerts["priority"] == "high").any()
    assert out.endswith(f"(marked as synthetic). {len(alerts)} alerts raised for clinician review (only each "
                        "patient's latest score per domain is checked against the alert rules).\n")

    code, out, _ = run("report", "responders", "--db", str(db_path), "--as-of", "2026-10-01", "--format", "json")
    assert code == 0
    records = json.loads(out)
    assert len(records) == 12
    assert set(records[0]) == {"domain", "window", "mcid", "n_eligible", "n_observed", "n_improved",
                               "pct_observed", "ci_low", "ci_high", "pct_missing_as_not_improved"}
    assert {r["mcid"] for r in records if r["domain"] == "depression"} == {3.5}

    code, out, _ = run("report", "responders", "--db", str(db_path), "--as-of", "2026-10-01",
                       "--mcid", "depression=5", "--series", "all", "--format", "csv")
    table = pd.read_csv(io.StringIO(out))
    assert set(table.loc[table["domain"] == "depression", "mcid"]) == {5.0}
    assert set(table.loc[table["domain"] == "pain_interference", "mcid"]) == {3.0}


@pytest.mark.parametrize("argv, fragment", [
    (["report", "responders", "--as-of", "2026-02-30"], "expected a date as YYYY-MM-DD"),
    (["report", "responders", "--as-of", "2026-01-01", "--mcid", "mood=3"], "unknown domain 'mood'"),
])
def test_bad_arguments_say_what_to_fix(argv, fragment, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert fragment in capsys.readouterr().err
