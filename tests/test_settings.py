from pathlib import Path

import pytest

from outcomes.errors import ConfigError
from outcomes.settings import PROJECT_ROOT, REGISTRY, load_settings, settings_help

THREE = ("pain_interference", "depression", "physical_function")


def test_defaults_need_no_environment():
    s = load_settings({})
    assert s.db_path == PROJECT_ROOT / "data" / "outcomes.db"
    assert {d: s.mcid[d] for d in THREE} == {"pain_interference": 3.0, "depression": 3.5, "physical_function": 3.0}
    assert set(s.mcid) == {d for d in s.domains if "anchor" in s.domains[d].meaningful_change}
    assert s.checkin_forms == ("pain_interference_sf6a_v1.0", "depression_sf6a_v1.0", "physical_function_sf6b_v1.2")
    assert [w.name for w in s.windows] == ["end_of_series", "month_1", "month_3", "month_6"]
    assert s.mcid_label.startswith("Anchor-based")


def test_environment_overrides_defaults(tmp_path):
    s = load_settings({"OUTCOMES_DB_PATH": str(tmp_path / "x.db"), "OUTCOMES_CHECKIN_CADENCE_DAYS": "14"})
    assert s.db_path == tmp_path / "x.db"
    assert s.checkin_cadence_days == 14


def test_relative_paths_are_relative_to_the_project():
    assert load_settings({"OUTCOMES_DB_PATH": "data/clinic.db"}).db_path == PROJECT_ROOT / "data" / "clinic.db"


@pytest.mark.parametrize("preset, expected", [("anchor", (3.0, 3.5, 3.0)), ("lenient", (2.0, 3.0, 2.0)),
                                              ("half_sd", (5.0, 5.0, 5.0))])
def test_presets(preset, expected):
    s = load_settings({"OUTCOMES_MCID_PRESET": preset})
    assert tuple(s.mcid[d] for d in THREE) == expected
    assert dict(s.mcid) == s.domains.preset(preset)


def test_per_domain_override_applies_on_top_of_the_preset():
    s = load_settings({"OUTCOMES_MCID_PRESET": "lenient", "OUTCOMES_MCID": "depression=4.5"})
    assert {d: s.mcid[d] for d in THREE} == {"pain_interference": 2.0, "depression": 4.5, "physical_function": 2.0}
    assert s.mcid_label.startswith("Custom")


def test_replace_with_a_new_preset_drops_overrides():
    s = load_settings({"OUTCOMES_MCID": "depression=4.5"}).replace(mcid_preset="half_sd")
    assert dict(s.mcid) == s.domains.preset("half_sd")


@pytest.mark.parametrize(
    "env, fragment",
    [
        ({"OUTCOMES_CHECKIN_CADENCE_DAYS": "abc"}, "OUTCOMES_CHECKIN_CADENCE_DAYS: expected a whole number, got 'abc'"),
        ({"OUTCOMES_CHECKIN_CADENCE_DAYS": "0"}, "from 1 to 90, got 0"),
        ({"OUTCOMES_MCID_PRESET": "strict"}, "expected one of anchor, lenient, half_sd"),
        ({"OUTCOMES_MCID": "mood=3"}, "unknown domain 'mood'"),
        ({"OUTCOMES_MCID": "depression=-1"}, "must be above 0"),
        ({"OUTCOMES_MCID": "depression"}, "expected DOMAIN=VALUE"),
        ({"OUTCOMES_CHECKIN_FORMS": " , "}, "at least one value"),
    ],
)
def test_bad_values_name_the_setting_and_the_fix(env, fragment):
    with pytest.raises(ConfigError, match=None) as info:
        load_settings(env)
    assert fragment in str(info.value)


def test_toml_file_with_environment_on_top(tmp_path):
    config = tmp_path / "outcomes.toml"
    config.write_text('small_cell_max = 5\ncheckin_cadence_days = 10\nmcid = { depression = 4.0 }\n')
    s = load_settings({"OUTCOMES_CONFIG": str(config), "OUTCOMES_CHECKIN_CADENCE_DAYS": "7"})
    assert (s.small_cell_max, s.checkin_cadence_days, s.mcid["depression"]) == (5, 7, 4.0)


def test_toml_file_errors_name_the_file(tmp_path):
    config = tmp_path / "outcomes.toml"
    config.write_text("colour = 'red'\n")
    with pytest.raises(ConfigError, match="unknown setting 'colour'"):
        load_settings({"OUTCOMES_CONFIG": str(config)})
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings({"OUTCOMES_CONFIG": str(tmp_path / "missing.toml")})


def test_every_setting_has_help_and_is_documented_in_the_readme():
    readme = (PROJECT_ROOT / "README.md").read_text()
    for row in settings_help():
        assert row["help"]
        assert row["env_var"] in readme, f"{row['env_var']} is not documented in README.md"
    assert len(settings_help()) == len(REGISTRY)


# Secrets and the follow-up settings (issue 15) -----------------------------------------------------------


def test_secrets_come_from_the_environment_or_the_secrets_file_never_the_config_file(tmp_path):
    secrets = tmp_path / "secrets.toml"
    secrets.write_text('[auth]\ncookie_secret = "x"\n\n[outcomes]\nsmtp_password = "from-file"\n'
                       'sms_auth_token = "tok"\n', encoding="utf-8")
    env = {"OUTCOMES_SECRETS_FILE": str(secrets)}
    s = load_settings(env)
    assert (s.smtp_password, s.sms_auth_token) == ("from-file", "tok")
    assert "from-file" not in repr(s) and "tok" not in repr(s)  # never printed with the settings
    assert load_settings({**env, "OUTCOMES_SMTP_PASSWORD": "from-env"}).smtp_password == "from-env"
    config = tmp_path / "outcomes.toml"
    config.write_text('smtp_password = "committed"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match="smtp_password is a secret; set it in the environment"):
        load_settings({**env, "OUTCOMES_CONFIG": str(config)})
    secrets.write_text('[outcomes]\nsmtp_host = "mail.example.org"\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"\[outcomes\] holds only secrets"):
        load_settings(env)
    assert load_settings({"OUTCOMES_SECRETS_FILE": str(tmp_path / "absent.toml")}).smtp_password == ""


@pytest.mark.parametrize("env, fragment", [
    ({"OUTCOMES_QUIET_HOURS": "21:00-08:00"}, "START-END hours from 0 to 23"),
    ({"OUTCOMES_QUIET_HOURS": "8-8"}, "START-END hours"),
    ({"OUTCOMES_SMTP_SECURITY": "tls"}, "starttls, ssl, none"),
    ({"OUTCOMES_PUBLIC_URL": "outcomes.clinic.example"}, "https://outcomes.clinic.example"),
    ({"OUTCOMES_PHONE_REGION": "USA"}, "two-letter country code"),
    ({"OUTCOMES_CLINIC_NAME": "Lakeside\nPain"}, "one line"),
    ({"OUTCOMES_REMINDER_AFTER_DAYS": "0"}, "from 1 to 30"),
])
def test_bad_follow_up_settings_say_what_is_expected(env, fragment):
    with pytest.raises(ConfigError, match=list(env)[0]) as info:
        load_settings(env)
    assert fragment in str(info.value)


def test_quiet_hours_and_public_url_parse():
    s = load_settings({"OUTCOMES_QUIET_HOURS": "22-7", "OUTCOMES_PUBLIC_URL": "https://outcomes.clinic.example/"})
    assert (s.quiet_hours, s.public_url) == ((22, 7), "https://outcomes.clinic.example")
    assert load_settings({"OUTCOMES_QUIET_HOURS": ""}).quiet_hours is None
