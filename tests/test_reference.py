"""The configuration reference in docs/ is generated from the schema; it must not drift from it."""

from pathlib import Path

from sweeps.reference import render_reference

DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"


def test_configuration_reference_is_current():
    assert DOC.read_text() == render_reference(), (
        "docs/configuration.md is out of date; regenerate it with "
        "`python -m sweeps.reference > docs/configuration.md`")


def test_every_field_has_help_text():
    from sweeps.spec import SweepSpec
    from trainables.schema import field_help

    missing = [key for key, _, text in field_help(SweepSpec) if not text.strip()]
    assert not missing, f"fields without help text: {missing}"
