"""ServiceSettings: sources and their order, the TOML file's errors (file, line, key), no password shown."""

import os
from pathlib import Path

import pytest

import polybus
from polybus._service_settings import key_line

CANARY = "Canary-Pw-5be1"


@pytest.fixture(autouse=True)
def clean(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test in an empty working directory, without POLYBUS_* from the outside."""
    monkeypatch.chdir(tmp_path)
    for name in [name for name in os.environ if name.startswith("POLYBUS_")]:
        monkeypatch.delenv(name)
    return tmp_path


def write(name: str, text: str) -> Path:
    path = Path(name)
    path.write_text(text.lstrip("\n"), encoding="utf-8")
    return path


def error_of(**kwargs: object) -> str:
    with pytest.raises(polybus.ConfigurationError) as info:
        polybus.ServiceSettings(**kwargs)  # type: ignore[arg-type]
    return str(info.value)


def test_defaults_without_any_source() -> None:
    settings = polybus.ServiceSettings()
    assert settings.url is None
    assert settings.grace_period == 30.0
    assert settings.topics == {}
    assert settings.subscriptions == {}
    assert settings.processes == 1
    assert settings.config_file is None
    assert settings.run_options() == {"grace_period": 30.0, "topics": {}, "overrides": {}}


def test_the_toml_file_shape() -> None:
    write(
        "polybus.toml",
        """
url = "redis://localhost:6379"
grace_period = 12.5
processes = 3

[topics]
orders = "prod-orders-v2"

[subscriptions.bill]
concurrency = 16
prefetch = 64

[subscriptions.mail]
prefetch = 10
""",
    )
    settings = polybus.ServiceSettings()
    assert settings.config_file == Path("polybus.toml")
    assert settings.url_value() == "redis://localhost:6379"
    assert settings.processes == 3
    assert settings.run_options() == {
        "grace_period": 12.5,
        "topics": {"orders": "prod-orders-v2"},
        "overrides": {"bill": {"concurrency": 16, "prefetch": 64}, "mail": {"prefetch": 10}},
    }


def test_precedence_options_then_environment_then_file(monkeypatch: pytest.MonkeyPatch) -> None:
    write("polybus.toml", 'url = "memory://file"\ngrace_period = 5\nprocesses = 2\n[topics]\norders = "o"\n')
    monkeypatch.setenv("POLYBUS_URL", "memory://env")
    monkeypatch.setenv("POLYBUS_GRACE_PERIOD", "7")
    monkeypatch.setenv("POLYBUS_TOPICS__INVOICES", "i-env")  # merged into the file's table
    settings = polybus.ServiceSettings(grace_period=9)
    assert settings.url_value() == "memory://env"
    assert settings.grace_period == 9
    assert settings.processes == 2
    assert settings.topics == {"orders": "o", "invoices": "i-env"}


def test_environment_tables_as_json_or_nested(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLYBUS_TOPICS", '{"orders": "prod-orders"}')
    monkeypatch.setenv("POLYBUS_SUBSCRIPTIONS__BILL__CONCURRENCY", "4")
    monkeypatch.setenv("POLYBUS_PATTERNS_BROKERS", "memory")  # other POLYBUS_* variables are not ours
    settings = polybus.ServiceSettings()
    assert settings.topics == {"orders": "prod-orders"}
    assert settings.overrides() == {"bill": {"concurrency": 4}}


def test_polybus_toml_wins_over_pyproject_and_pyproject_is_read_otherwise() -> None:
    write("pyproject.toml", '[project]\nname = "svc"\n\n[tool.polybus]\ngrace_period = 3\n')
    assert polybus.ServiceSettings().grace_period == 3
    assert polybus.ServiceSettings().config_file == Path("pyproject.toml")
    write("polybus.toml", "grace_period = 4\n")
    assert polybus.ServiceSettings().grace_period == 4


def test_a_pyproject_without_the_table_is_not_a_config_file() -> None:
    write("pyproject.toml", '[project]\nname = "svc"\n[tool.other]\nx = 1\n')
    settings = polybus.ServiceSettings()
    assert settings.config_file is None
    assert settings.grace_period == 30.0


def test_an_explicit_file_replaces_the_search(tmp_path: Path) -> None:
    write("polybus.toml", "grace_period = 4\n")
    prod = write("prod.toml", '[topics]\norders = "prod-orders-v2"\n')
    settings = polybus.ServiceSettings(_config_file=prod)
    assert settings.grace_period == 30.0
    assert settings.topics == {"orders": "prod-orders-v2"}
    assert "config file 'missing.toml' not found" in error_of(_config_file="missing.toml")


def test_a_typo_names_file_line_and_key() -> None:
    write(
        "polybus.toml",
        """
# billing service
url = "redis://localhost:6379"
grace_period = 20

[topics]
orders = "prod-orders"

[subscriptions.bill]
concurency = 4
""",
    )
    assert error_of() == "polybus.toml:9: unknown key 'subscriptions.bill.concurency'"


def test_a_typo_in_pyproject_counts_lines_of_pyproject() -> None:
    write("pyproject.toml", '[project]\nname = "svc"\n\n[tool.polybus]\ngrace_priod = 3\n')
    assert error_of() == "pyproject.toml:5: unknown key 'grace_priod'"


def test_every_bad_key_and_value_is_reported_without_the_values() -> None:
    write(
        "svc.toml",
        f"""
url = "redis://user:{CANARY}@localhost:6379"
grace_period = "{CANARY}"
processes = 0
[subscriptions]
bill = {{ prefetch = "lots" }}
""",
    )
    text = error_of(_config_file="svc.toml")
    assert "svc.toml:2: grace_period: Input should be a valid number" in text
    assert "svc.toml:3: processes: Input should be greater than or equal to 1" in text
    assert "svc.toml:5: subscriptions.bill.prefetch: Input should be a valid integer" in text
    assert CANARY not in text


def test_toml_syntax_errors_name_file_line_and_column() -> None:
    write("polybus.toml", 'grace_period = 5\n[topics]\norders = "unterminated\n')
    assert error_of().startswith("polybus.toml:3:")
    assert "invalid TOML" in error_of()


def test_bad_environment_values_are_configuration_errors_without_the_value(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("POLYBUS_PROCESSES", CANARY)
    text = error_of()
    assert "processes" in text
    assert CANARY not in text
    monkeypatch.delenv("POLYBUS_PROCESSES")
    assert "grace_period" in error_of(grace_period=-1)
    assert "grace_priod: Extra inputs are not permitted" in error_of(grace_priod=1)  # an unknown option


def test_passwords_never_show(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POLYBUS_URL", f"amqp://guest:{CANARY}@localhost:5672/")
    settings = polybus.ServiceSettings()
    assert CANARY not in repr(settings)
    assert CANARY not in str(settings.model_dump())
    assert settings.display_url() == "amqp://guest:***@localhost:5672/"
    assert settings.url_value() == f"amqp://guest:{CANARY}@localhost:5672/"


KEY_LAYOUTS = {
    "table header": ("[subscriptions.bill]\nprefetch = 1\nconcurency = 4\n", 3),
    "dotted key": ("[subscriptions]\nbill.prefetch = 1\nbill.concurency = 4\n", 3),
    "top-level dotted": ("grace_period = 1\nsubscriptions.bill.concurency = 4\n", 2),
    "quoted keys": ('[subscriptions."bill"]\n"concurency" = 4\n', 2),
    "inline table": ("[subscriptions]\nmail = { prefetch = 1 }\nbill = { concurency = 4 }\n", 3),
    "comment and spaces": ("[ subscriptions . bill ]   # the billing one\n\n  concurency=4\n", 3),
}


@pytest.mark.parametrize("layout", KEY_LAYOUTS)
def test_key_line_follows_the_toml_layouts(layout: str) -> None:
    text, line = KEY_LAYOUTS[layout]
    assert key_line(text, ["subscriptions", "bill", "concurency"]) == line


def test_key_line_falls_back_to_the_closest_parent() -> None:
    assert key_line("[topics]\norders = 'o'\n", ["topics", "orders", "deeper"]) == 2
    assert key_line("a = 1\n", ["b"]) is None
