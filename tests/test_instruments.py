"""The instrument registry: every form loads as specified, and every bad file fails by name."""

from __future__ import annotations

import re
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from outcomes.errors import InstrumentDefinitionError, UnknownForm
from outcomes.instruments import Registry, default_registry, load_registry, severity_band
from outcomes.settings import DATA_DIR

INSTRUMENTS = DATA_DIR / "instruments"

FORM_KEYS = (
    "pain_interference_sf4a_v1.0", "pain_interference_sf6a_v1.0", "pain_interference_sf6b_v1.0",
    "pain_interference_sf8a_v1.0", "depression_sf4a_v1.0", "depression_sf6a_v1.0", "depression_sf8a_v1.0",
    "depression_sf8b_v1.0", "physical_function_sf4a_v1.0", "physical_function_sf4a_v2.0",
    "physical_function_sf6b_v1.2", "physical_function_sf8b_v1.2", "physical_function_sf10a_v1.0",
)

LOINC = {"pain_interference": "77865-4", "depression": "77861-3"}
PF_LOINC = {"1.0": None, "1.2": "77874-6", "2.0": "91721-1"}


@pytest.fixture(scope="module")
def registry() -> Registry:
    return load_registry(INSTRUMENTS)


@pytest.fixture
def instruments(tmp_path: Path) -> Path:
    """A scratch copy of data/instruments to break."""
    return Path(shutil.copytree(INSTRUMENTS, tmp_path / "instruments"))


def test_the_first_issue_forms_are_all_supported(registry: Registry) -> None:
    # More forms come as data (docs/architecture.md, "Add a domain"); these must never go missing.
    assert set(FORM_KEYS) <= {f.key for f in registry.forms}


@pytest.mark.parametrize("key", FORM_KEYS)
def test_form_is_well_formed(registry: Registry, key: str) -> None:
    form = registry.form(key)
    domain, short_form, version = re.fullmatch(r"(.+)_sf(\w+)_v([\d.]+)", key).groups()  # type: ignore[union-attr]
    assert (form.domain, form.short_form, form.version) == (domain, short_form, version)
    assert form.title == f"PROMIS SF v{version} {registry.domain(domain).label} {short_form}"
    assert form.n_items == int(short_form[:-1]) == len(set(form.item_ids))
    assert [item.position for item in form.items] == list(range(1, form.n_items + 1))
    assert (form.raw_min, form.raw_max) == (form.n_items, 5 * form.n_items)
    assert sorted(form.table) == list(range(form.raw_min, form.raw_max + 1))
    assert form.higher_is_worse is (domain != "physical_function")
    assert form.loinc == (PF_LOINC[version] if domain == "physical_function" else LOINC[domain])
    assert form.citation and "SOURCES.md" in form.citation
    assert form.has_parameters is (key != "physical_function_sf4a_v2.0")
    for item in form.items:
        assert [v for v, _ in item.options] == list(item.values) == [1, 2, 3, 4, 5]
        assert all(label for _, label in item.options)
        assert item.description and item.description_is_paraphrase
        if form.has_parameters:
            assert item.a is not None and item.a > 0 and list(item.thresholds or ()) == sorted(item.thresholds or ())


def test_items_in_order_and_labels(registry: Registry) -> None:
    assert registry.form("physical_function_sf6b_v1.2").item_ids == ("PFA11", "PFA21", "PFA23", "PFA53", "PFC12", "PFB1")
    pi = registry.form("pain_interference_sf6b_v1.0")
    assert dict(pi.items[5].options)[1] == "Never"  # PAININ26 is a frequency item
    assert dict(pi.items[0].options)[1] == "Not at all"
    pf = registry.form("physical_function_sf10a_v1.0").items[0]  # PFA1: "Not at all" limited is the best
    assert (pf.item_id, dict(pf.options)[5]) == ("PFA1", "Not at all")


def test_descriptions_are_paraphrases_not_item_wording(registry: Registry) -> None:
    descriptions = {item.item_id: item.description for form in registry.forms for item in form.items}
    assert descriptions["PAININ9"] == "pain getting in the way of day-to-day activities"
    for text in descriptions.values():  # PROMIS items read "How much did ...?", "Are you able ...?", "I felt ..."
        assert not text.endswith("?") and not re.match(r"(I |In the past|How |Are you|Does your)", text)


def test_item_versions_without_a_table_are_not_forms(registry: Registry) -> None:
    for key in ("physical_function_sf6b_v2.0", "physical_function_sf20a_v2.0", "physical_function_sf10a_v2.0"):
        with pytest.raises(UnknownForm):
            registry.form(key)


def test_unknown_form_lists_valid_keys(registry: Registry) -> None:
    with pytest.raises(UnknownForm, match="valid form keys: pain_interference_sf4a_v1.0, ") as caught:
        registry.form("depression_sf8c_v1.0")
    assert "depression_sf8c_v1.0" in str(caught.value)


def test_forms_for_domain_and_domain(registry: Registry) -> None:
    assert [f.short_form for f in registry.forms_for_domain("depression")] == ["4a", "6a", "8a", "8b"]
    assert registry.domain("physical_function").higher_is_worse is False
    with pytest.raises(KeyError, match="pain_interference"):
        registry.domain("mood")


@pytest.mark.parametrize("version", ["2.0", "2.1"])
def test_promis29_profiles(registry: Registry, version: str) -> None:
    profile = registry.profile(f"promis29_v{version}")
    assert {d: f.key for d, f in profile.items()}.items() >= {
        "physical_function": "physical_function_sf4a_v2.0", "depression": "depression_sf4a_v1.0",
        "pain_interference": "pain_interference_sf4a_v1.0"}.items()
    assert dict(profile.loinc).items() >= {"physical_function": "71959-1", "depression": "71965-8",
                                           "pain_interference": "71961-7"}.items()
    assert set(profile.loinc) == set(profile)
    assert profile.title == f"PROMIS-29 Profile v{version}"


@pytest.mark.parametrize(("domain", "t", "band"), [
    ("depression", 54.9, "within normal limits"), ("depression", 55.0, "mild"), ("depression", 59.9, "mild"),
    ("depression", 60.0, "moderate"), ("depression", 69.9, "moderate"), ("depression", 70.0, "severe"),
    ("pain_interference", 54.9, "within normal limits"), ("pain_interference", 55.0, "mild"),
    ("pain_interference", 69.9, "moderate"), ("pain_interference", 70.0, "severe"),
    ("physical_function", 45.1, "within normal limits"), ("physical_function", 45.0, "mild"),
    ("physical_function", 40.1, "mild"), ("physical_function", 40.0, "moderate"),
    ("physical_function", 30.1, "moderate"), ("physical_function", 30.0, "severe"),
])
def test_severity_band_boundaries(registry: Registry, domain: str, t: float, band: str) -> None:
    assert severity_band(domain, t, registry) == band
    assert severity_band(registry.domain(domain), t) == band


def test_severity_band_rejects_nan(registry: Registry) -> None:
    with pytest.raises(ValueError, match="NaN"):
        severity_band("depression", float("nan"), registry)


def test_default_registry_is_loaded_once() -> None:
    assert default_registry() is default_registry()
    assert set(FORM_KEYS) <= {f.key for f in default_registry().forms}


def test_forms_are_hashable_and_equal_across_loads(registry: Registry) -> None:
    again = load_registry(INSTRUMENTS)
    assert again.form("depression_sf8a_v1.0") == registry.form("depression_sf8a_v1.0")
    assert len({*again.forms, *registry.forms}) == len(registry.forms)


def _edit(name: str, old: str, new: str) -> Callable[[Path], None]:
    def edit(folder: Path) -> None:
        path = folder / name
        text = path.read_text(encoding="utf-8")
        assert old in text, f"{old!r} not in {name}"
        path.write_text(text.replace(old, new, 1), encoding="utf-8")
    return edit


def _delete(name: str) -> Callable[[Path], None]:
    return lambda folder: (folder / name).unlink()


BROKEN = {
    "missing file": (_delete("items.csv"), "items.csv: file not found"),
    "missing table": (_delete("depression_sf6a_v1.0.csv"), "depression_sf6a_v1.0.csv: file not found"),
    "missing forms.toml": (_delete("forms.toml"), "forms.toml: file not found"),
    "missing column": (_edit("items.csv", "max_value,", "maximum,"), "items.csv: missing column(s) max_value"),
    "non-numeric value": (_edit("items.csv", "PAININ34,4,1,5", "PAININ34,4,1,x"),
                          "items.csv line 5: max_value 'x' is not a whole number"),
    "min not below max": (_edit("items.csv", "PAININ34,4,1,5", "PAININ34,4,5,5"),
                          "items.csv line 5: min_value 5 is not below max_value 5"),
    "duplicate item": (_edit("items.csv", "PAININ34,4,1,5", "PAININ31,4,1,5"), "items.csv line 5: item PAININ31"),
    "bad position": (_edit("items.csv", "PAININ34,4,1,5", "PAININ34,7,1,5"), "positions are [1, 2, 3, 7]"),
    "reverse scored": (_edit("items.csv", "PAININ34,4,1,5,false", "PAININ34,4,1,5,true"),
                       "items.csv line 5: reverse-scored items are not supported"),
    "non-numeric T": (_edit("depression_sf4a_v1.0.csv", "12,62.2,", "12,abc,"),
                      "depression_sf4a_v1.0.csv line 10: t_score 'abc' is not a number"),
    "table too short": (_edit("depression_sf4a_v1.0.csv", "20,79.4,3.6\n", ""),
                        "depression_sf4a_v1.0.csv: raw scores run 4..19 (16 rows), but 4 items valued 1..5 "
                        "need every raw score 4..20"),
    "table raw off by one": (_edit("physical_function_sf4a_v2.0.csv", "raw_score,t_score,se\n4,", "raw_score,t_score,se\n3,"),
                             "physical_function_sf4a_v2.0.csv: raw scores run 3..20"),
    "table duplicate raw": (_edit("depression_sf4a_v1.0.csv", "20,79.4", "19,79.4"), "raw_score 19 is listed twice"),
    "T not rising": (_edit("depression_sf4a_v1.0.csv", "20,79.4", "20,10.0"), "t_score must rise with raw_score"),
    "SE not positive": (_edit("depression_sf4a_v1.0.csv", "20,79.4,3.6", "20,79.4,0"), "se 0.0 must be positive"),
    "thresholds not ascending": (_edit("item_parameters.csv", "6.53406,0.1579,0.8959", "6.53406,0.9579,0.8959"),
                                 "item_parameters.csv line 2: thresholds b1..b4 [0.9579, 0.8959, 1.4377, 2.0103] "
                                 "are not ascending"),
    "slope not positive": (_edit("item_parameters.csv", "PAININ9,6.53406", "PAININ9,-6.53406"), "a -6.53406 must be positive"),
    "parameter for an item not on the form": (_edit("item_parameters.csv", "1.0,4a,PAININ9,", "1.0,4a,PAININ12,"),
                                              "item_parameters.csv line 2: item PAININ12 is not on pain_interference 1.0 4a"),
    "parameters for part of a form": (_edit("item_parameters.csv", "pain_interference,1.0,4a,PAININ34,4.92619,0.1771,"
                                            "0.8447,1.363,1.9795,GRM,logistic_D1\n", ""),
                                      "item_parameters.csv: pain_interference 1.0 4a has no parameters for PAININ34"),
    "parameters for an unknown form": (_edit("item_parameters.csv", "pain_interference,1.0,4a,PAININ9,",
                                             "pain_interference,1.0,4c,PAININ9,"), "form pain_interference 1.0 4c is not in items.csv"),
    "unsupported model": (_edit("item_parameters.csv", "GRM,logistic_D1", "GRM,normal_D1.7"), "model/metric GRM/normal_D1.7"),
    "missing answer value": (_edit("item_response_options.csv", "EDDEP04,frequency,3,Sometimes\n", ""),
                             "item_response_options.csv: EDDEP04 (on depression_sf4a_v1.0) has values [1, 2, 4, 5]"),
    "empty label": (_edit("item_response_options.csv", "EDDEP04,frequency,3,Sometimes", "EDDEP04,frequency,3,"),
                    "label is empty"),
    "missing description": (_edit("item_descriptions.csv", "EDDEP17,feeling sad\n", ""),
                            "item_descriptions.csv: no description for EDDEP17"),
    "duplicate description": (_edit("item_descriptions.csv", "EDDEP17,feeling sad", "EDDEP17,feeling sad\nEDDEP17,sad"),
                              "item_descriptions.csv line 19: item_id EDDEP17 appears more than once"),
    "unknown domain": (_edit("forms.toml", '[forms."depression_sf6a_v1.0"]', '[forms."mood_sf6a_v1.0"]'),
                       "forms.toml [forms.'mood_sf6a_v1.0']: domain 'mood' is not defined"),
    "form with no items": (_edit("forms.toml", '[forms."depression_sf6a_v1.0"]', '[forms."depression_sf6c_v1.0"]'),
                           "items.csv has no items for depression 1.0 6c"),
    "bad key": (_edit("forms.toml", '[forms."depression_sf6a_v1.0"]', '[forms."depression-6a"]'),
                "the key is not <domain>_sf<form>_v<version>"),
    "bad LOINC check digit": (_edit("forms.toml", '"77861-3"', '"77861-4"'), "'77861-4' is not a valid LOINC code"),
    "misspelt field": (_edit("forms.toml", 'loinc = "77861-3"', 'lonic = "77861-3"'), "unknown field(s) lonic"),
    "missing citation": (_edit("forms.toml", '\ncitation = "PROMIS Short Form v1.0 - Depression 6a',
                               '\n# citation = "PROMIS Short Form v1.0 - Depression 6a'),
                         "forms.toml [forms.'depression_sf6a_v1.0']: missing field 'citation'"),
    "bands out of order": (_edit("forms.toml", "[55.0, 60.0, 70.0]", "[60.0, 55.0, 70.0]"),
                           "[domains.pain_interference]: severity_cut_points must run in worsening order"),
    "bands and labels disagree": (_edit("forms.toml", "[45.0, 40.0, 30.0]", "[45.0, 40.0]"), "2 severity_cut_points need 3"),
    "invalid TOML": (_edit("forms.toml", "[domains.depression]", "[domains.depression"), "forms.toml is not valid TOML"),
    "profile names an unsupported form": (_edit("promis29_domain_tables.csv", "2.1,physical_function,PF 4a v2.0,physical_function_sf4a_v2.0.csv",
                                                "2.1,physical_function,PF 6b v2.0,physical_function_sf6b_v2.0.csv"),
                                          "promis29_domain_tables.csv line 5: table_file 'physical_function_sf6b_v2.0.csv'"),
    "profile domain mismatch": (_edit("promis29_domain_tables.csv", "2.1,depression,", "2.1,pain_interference,"),
                                "domain 'pain_interference' does not match form depression_sf4a_v1.0"),
    "profile LOINC missing": (_edit("forms.toml", 'depression = "71965-8", ', ""), "loinc lacks depression"),
}


@pytest.mark.parametrize("case", BROKEN, ids=list(BROKEN))
def test_broken_files_fail_with_file_and_field(instruments: Path, case: str) -> None:
    breaker, message = BROKEN[case]
    breaker(instruments)
    with pytest.raises(InstrumentDefinitionError) as caught:
        load_registry(instruments)
    assert message in str(caught.value)


def test_excel_bom_and_blank_lines_are_tolerated(instruments: Path) -> None:
    path = instruments / "item_descriptions.csv"
    path.write_text("\ufeff" + path.read_text(encoding="utf-8") + "\n\n", encoding="utf-8")
    assert load_registry(instruments).form("depression_sf4a_v1.0").items[0].description == "feeling of having no worth"


def _wording(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "licensed wording.csv"
    path.write_text(text, encoding="utf-8")
    return path


def test_licensed_wording_replaces_descriptions_in_every_form(tmp_path: Path) -> None:
    path = _wording(tmp_path, 'item_id,text\nPAININ9,"Licensed text, nine"\nEDDEP04,Licensed text four\n')
    registry = load_registry(INSTRUMENTS, path)
    forms_with_painin9 = [f for f in registry.forms if "PAININ9" in f.item_ids]
    assert len(forms_with_painin9) == 4
    for form in forms_with_painin9:
        item = form.items[form.item_ids.index("PAININ9")]
        assert (item.description, item.description_is_paraphrase) == ("Licensed text, nine", False)
    other = registry.form("pain_interference_sf4a_v1.0").items[1]
    assert (other.item_id, other.description_is_paraphrase) == ("PAININ22", True)
    assert registry.form("depression_sf8b_v1.0").items[0].description == "Licensed text four"


@pytest.mark.parametrize(("content", "message"), [
    ("item_id,text\nPAININ9,ok\nNOTANITEM,text\n", "line 3: unknown item_id 'NOTANITEM'"),
    ("item_id,text\nPAININ9,ok\nPAININ22,  \n", "line 3: text of PAININ22 is empty"),
    ("item_id,text\nPAININ9,ok\nPAININ22,a\nPAININ9,again\n", "line 4: item_id PAININ9 appears more than once"),
    ("item,text\nPAININ9,ok\n", "missing column(s) item_id"),
])
def test_bad_wording_file_fails_with_file_and_line(tmp_path: Path, content: str, message: str) -> None:
    path = _wording(tmp_path, content)
    with pytest.raises(InstrumentDefinitionError) as caught:
        load_registry(INSTRUMENTS, path)
    assert str(path) in str(caught.value) and message in str(caught.value)


def test_missing_wording_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(InstrumentDefinitionError, match="file not found"):
        load_registry(INSTRUMENTS, tmp_path / "nowhere.csv")


def test_settings_wording_file_reaches_default_registry(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _wording(tmp_path, "item_id,text\nPFA11,Licensed PF text\n")
    monkeypatch.setenv("OUTCOMES_ITEM_WORDING_FILE", str(path))
    default_registry.cache_clear()
    try:
        item = default_registry().form("physical_function_sf4a_v2.0").items[0]
        assert (item.description, item.description_is_paraphrase) == ("Licensed PF text", False)
    finally:
        monkeypatch.delenv("OUTCOMES_ITEM_WORDING_FILE")
        default_registry.cache_clear()
