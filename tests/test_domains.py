"""The domain registry (outcomes/domains.py): a bad [domains.*] entry in forms.toml fails at load with
the table and field to fix, never later as a wrong direction, threshold or alert."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from outcomes.domains import SHIPPED_DIR, load_domains
from outcomes.errors import InstrumentDefinitionError


def _edited(tmp_path: Path, old: str, new: str) -> Path:
    folder = tmp_path / "instruments"
    shutil.copytree(SHIPPED_DIR, folder)
    text = (folder / "forms.toml").read_text()
    assert old in text, old
    (folder / "forms.toml").write_text(text.replace(old, new, 1))
    return folder


@pytest.mark.parametrize("old, new, message", [
    ('short_label = "Dep"\n', 'short_label = "Dep"\ncolour = "blue"\n',
     "[domains.depression]: unknown field(s) colour"),
    ('{ t = 3.5, source', '{ t = 0.0, source',
     "meaningful_change.anchor: t must be above 0 and at most 30 T points, got 0.0"),
    ('meaningful_change.lenient = { t = 3.0', 'meaningful_change.strict = { t = 3.0',
     "meaningful_change.strict: unknown preset"),
    ('{ t = 70.0, priority = "high"', '{ t = 60.0, priority = "high"', "alerts must be listed worst first"),
    ('priority = "routine", name = "moderately severe"', 'priority = "soon", name = "moderately severe"',
     "priority 'soon' is not one of high, routine"),
    ('redcap_fields = ["depress"', 'redcap_fields = ["(depress"', "redcap_fields: not a regular expression"),
    ('checkin_form = "depression_sf6a_v1.0"', 'checkin_form = "anxiety_sf4a_v1.0"',
     "checkin_form must be a form key of this domain"),
    ('baseline_mean = 61.0, ', '', "synthetic: needs exactly"),
    ('severity_cut_points = [45.0, 40.0, 30.0]', 'severity_cut_points = [30.0, 40.0, 45.0]',
     "severity_cut_points must run in worsening order (descending)"),
    ('higher_is_worse = false', 'higher_is_worse = "no"', "field 'higher_is_worse' has the wrong type"),
])
def test_a_bad_domain_entry_names_the_table_and_field(tmp_path, old, new, message):
    with pytest.raises(InstrumentDefinitionError) as info:
        load_domains(_edited(tmp_path, old, new))
    assert message in str(info.value)


def test_the_shipped_domains_are_in_display_order_with_a_threshold_per_preset():
    domains = load_domains()
    assert [d.order for d in domains.values()] == sorted(d.order for d in domains.values())
    for d in domains.values():
        assert set(d.meaningful_change) == set(domains.presets), d.name
        assert all(t.source for t in d.meaningful_change.values())


def test_alert_levels_follow_the_direction():
    depression = load_domains()["depression"]
    assert depression.alert_level(64.9) is None
    level, worse = depression.alert_level(65.0)
    assert (level.priority, worse.priority) == ("routine", "high")
    assert depression.alert_level(70.0)[0].priority == "high"
