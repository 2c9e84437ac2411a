"""Pure field rules (outcomes/validation.py): what a write or an import accepts, and what it says otherwise."""

from datetime import date

import pytest

from outcomes.validation import MAX_WHOLE, clean_contact, clean_score, clean_series


@pytest.mark.parametrize("value", ["1E20", 1e20, 2 ** 63, "1E17"])
def test_a_huge_whole_number_is_refused_not_overflowed(value):
    values, problems = clean_score(domain="depression", assessed_on="2025-01-06", t_score=50, method="imported",
                                   source="import", n_answered=value)
    assert problems == [f"n_answered must be a whole number of at least 0, got {value!r}"]


def test_the_largest_whole_number_is_still_accepted():
    values, problems = clean_score(domain="depression", assessed_on="2025-01-06", t_score=50, method="imported",
                                   source="import", n_answered=MAX_WHOLE)
    assert problems == [] and values["n_answered"] == MAX_WHOLE


def test_a_series_with_an_absurd_infusion_count_says_what_to_fix():
    _, problems = clean_series(first_infusion="2025-01-06", last_infusion="2025-01-10", infusions="1E20")
    assert problems and all("infusions" in p for p in problems)


# Contacts for reminders (issue 15) ------------------------------------------------------------------------


@pytest.mark.parametrize("fields, problem", [
    ({"email": "ann@", "channel": "email", "consent_on": "2025-01-02"}, "email 'ann@' is not a valid email address"),
    ({"email": 42}, "email must be an email address"),
    ({"phone": "12", "channel": "sms", "consent_on": "2025-01-02"}, "phone '12' is not a valid phone number"),
    ({"phone": "call me"}, "is not a phone number"),
    ({"phone": "+44 20 7946 0000"}, "is not a mobile number; text messages need a mobile phone"),
    ({"channel": "fax"}, "channel must be one of email, sms, none"),
    ({"channel": "email", "consent_on": "2025-01-02"}, "channel is email but no email address is given"),
    ({"channel": "sms", "consent_on": "2025-01-02"}, "channel is sms but no mobile number is given"),
    ({"email": "ann@example.org", "channel": "email"}, "consent_on is required to send messages"),
    ({"email": "ann@example.org", "channel": "email", "consent_on": "2999-01-01"}, "consent_on 2999-01-01 is in the "
                                                                                  "future"),
])
def test_clean_contact_names_the_field_at_fault(fields, problem):
    values, problems = clean_contact(**fields, today=date(2025, 6, 1))
    assert any(problem in p for p in problems), problems


def test_clean_contact_normalises_what_it_accepts():
    values, problems = clean_contact(email=" Ann.Lee@Example.ORG ", phone="(201) 555-0123", channel=" sms ",
                                     consent_on="2025-01-02", today=date(2025, 6, 1))
    assert problems == []
    assert values == {"email": "Ann.Lee@example.org", "phone": "+12015550123", "channel": "sms",
                      "consent_on": date(2025, 1, 2)}
    assert clean_contact(phone="07700 900123", region="GB")[1] == [
        "phone '07700 900123' is not a valid phone number for its country; check the digits and the country code"]
    assert clean_contact()[0] == {"email": None, "phone": None, "channel": "none", "consent_on": None}
