"""Loading config files (contract 3): exact decimals, `${ENV}`, suffixes, clock times, and every refusal naming the
file, the key path and the reason. Also `gateway check-config` as a user runs it."""

from __future__ import annotations

import subprocess
import sys
from datetime import time
from decimal import Decimal
from pathlib import Path

import pytest

from gateway.config.load import interpolate_env, load_config, parse_yaml_text
from gateway.config.schema import PathError
from gateway.errors import ConfigError

D = Decimal
REPO = Path(__file__).resolve().parents[2]
GATEWAY_BIN = Path(sys.executable).parent / "gateway"

BASE = """\
gateway:
  reporting_currency: CNY
  admin_key: ${ADMIN_KEY:-admin}
fx_rates: {USD: 7.10}
providers:
  deepseek: {api_base: "https://api.deepseek.com/v1", api_key: "${DEEPSEEK_API_KEY:-}"}
  openai: {api_base: "https://api.openai.com/v1"}
deployments:
  - provider: deepseek
    model: deepseek-v2
    upstream_model: deepseek-chat
    context_window: 32K
    max_output_tokens: 4096
    quality: 86
    capabilities: [tools, json_mode]
    price: {currency: CNY, per: 1K, input: 0.001, output: 0.002, cached_input: 0.0001}
  - provider: openai
    model: gpt-4o
    context_window: 128K
    quality: 95
    price: {currency: USD, per: 1M, input: 5, output: 15}
routes:
  auto: {}
  premium: {min_quality: 85}
"""


def write(tmp_path: Path, text: str, name: str = "gateway.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def refusal(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> tuple[str, str]:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as exc:
        load_config(path, env={} if env is None else env)
    return str(exc.value), str(path)


def test_the_base_fixture_loads(tmp_path: Path) -> None:
    # guards every refusal test below: each one breaks exactly one thing in a file that is otherwise valid
    cfg = load_config(write(tmp_path, BASE), env={})
    assert [d.model for d in cfg.deployments] == ["deepseek-v2", "gpt-4o"]


# ---- refusals: one per rule of contract 3 ---------------------------------------------------------------------------

REFUSALS = [
    # (id, edit of BASE: (old, new), key path, reason words)
    ("unknown-top-level-key", ("routes:\n", "colour: blue\nroutes:\n"), "colour", "unknown key"),
    ("unknown-gateway-key", ("  reporting_currency: CNY\n", "  reporting_currency: CNY\n  max_attempt: 3\n"),
     "gateway.max_attempt", "unknown key"),
    ("unknown-deployment-key", ("    quality: 86\n", "    quality: 86\n    qualty: 90\n"),
     "deployments.0.qualty", "unknown key"),
    ("unknown-price-key", ("input: 5, output: 15}", "input: 5, output: 15, outptu: 3}"),
     "deployments.1.price.outptu", "unknown key"),
    ("unknown-provider-key",
     ('api_base: "https://api.openai.com/v1"}', 'api_base: "https://api.openai.com/v1", apikey: x}'),
     "providers.openai.apikey", "unknown key"),
    ("unknown-provider", ("  - provider: openai\n", "  - provider: opneai\n"),
     "deployments.1.provider", "unknown provider 'opneai'"),
    ("duplicate-deployment",
     ("  - provider: openai\n    model: gpt-4o\n", "  - provider: deepseek\n    model: deepseek-v2\n"),
     "deployments.1", "duplicate deployment (deepseek, deepseek-v2)"),
    ("negative-input", ("input: 5, output: 15}", "input: -5, output: 15}"),
     "deployments.1.price.input", "must not be negative"),
    ("negative-output", ("input: 5, output: 15}", "input: 5, output: -0.5}"),
     "deployments.1.price.output", "must not be negative"),
    ("negative-cached", ("cached_input: 0.0001}", "cached_input: -0.0001}"),
     "deployments.0.price.cached_input", "must not be negative"),
    ("negative-cache-write", ("cached_input: 0.0001}", "cached_input: 0.0001, cache_write: -0.00125}"),
     "deployments.0.price.cache_write", "must not be negative"),
    ("negative-tier-cache-write", ("input: 5, output: 15}", "input: 5, output: 15, tiers: [{up_to: 32K, input: 1, "
                                   "output: 2, cache_write: -1}]}"),
     "deployments.1.price.tiers.0.cache_write", "must not be negative"),
    ("negative-fx", ("fx_rates: {USD: 7.10}", "fx_rates: {USD: -7.10}"), "fx_rates.USD", "negative"),
    ("tiers-out-of-order", ("input: 5, output: 15}", "input: 5, output: 15, tiers: [{up_to: 128K, input: 1, "
                            "output: 2}, {up_to: 32K, input: 3, output: 4}]}"),
     "deployments.1.price.tiers", "tiers out of order"),
    ("tiers-equal-up-to", ("input: 5, output: 15}", "input: 5, output: 15, tiers: [{up_to: 32K, input: 1, "
                           "output: 2}, {up_to: 32000, input: 3, output: 4}]}"),
     "deployments.1.price.tiers", "tiers out of order"),
    ("negative-tier-price", ("input: 5, output: 15}", "input: 5, output: 15, tiers: [{up_to: 32K, input: -1, "
                             "output: 2}]}"),
     "deployments.1.price.tiers.0.input", "must not be negative"),
    ("unset-env-var", ("${ADMIN_KEY:-admin}", "${ADMIN_KEY}"), "gateway.admin_key",
     "environment variable ADMIN_KEY is not set"),
    ("unset-env-var-in-list", ("model: gpt-4o\n", "model: gpt-4o\n    upstream_model: \"${GPT_MODEL}\"\n"),
     "deployments.1.upstream_model", "environment variable GPT_MODEL is not set"),
    ("bad-time-zone", ("input: 5, output: 15}", "input: 5, output: 15, off_peak: [{from: 16:30, to: 00:30, "
                       "tz: Mars/Olympus_Mons, input: 1, output: 2}]}"),
     "deployments.1.price.off_peak.0.tz", "unknown time zone 'Mars/Olympus_Mons'"),
    ("bad-clock-time", ("input: 5, output: 15}", "input: 5, output: 15, off_peak: [{from: '25:30', to: '00:30', "
                        "input: 1, output: 2}]}"),
     "deployments.1.price.off_peak.0.from", "expected a time of day"),
    ("currency-without-fx", ("fx_rates: {USD: 7.10}", "fx_rates: {EUR: 7.80}"),
     "deployments.1.price.currency", "no fx_rates entry for USD"),
    ("savings-baseline-unknown", ("routes:\n", "savings_baseline: {provider: openai, model: gpt-5}\nroutes:\n"),
     "savings_baseline", "no deployment (openai, gpt-5)"),
    ("route-named-like-a-model", ("  premium: {min_quality: 85}\n", "  gpt-4o: {min_quality: 85}\n"),
     "routes.gpt-4o", "also a deployment's model name"),
    ("route-unknown-provider", ("  premium: {min_quality: 85}\n", "  premium: {providers: [deepseek, nope]}\n"),
     "routes.premium.providers", "unknown provider 'nope'"),
    ("bad-per", ("per: 1M", "per: 1G"), "deployments.1.price.per", "'1K' or '1M'"),
    ("bad-token-suffix", ("context_window: 128K", "context_window: 128G"),
     "deployments.1.context_window", "expected a token count"),
    ("quality-over-100", ("quality: 95", "quality: 101"), "deployments.1.quality", "less than or equal to 100"),
    ("missing-price", ("    price: {currency: USD, per: 1M, input: 5, output: 15}\n", ""),
     "deployments.1.price", "Field required"),
    ("bad-capability", ("capabilities: [tools, json_mode]", "capabilities: [tools, telepathy]"),
     "deployments.0.capabilities.1", "'tools', 'json_mode' or 'vision'"),
    ("lowercase-currency", ("currency: USD", "currency: usd"), "deployments.1.price.currency", "ISO 4217"),
]


@pytest.mark.parametrize(("edit", "key_path", "reason"), [r[1:] for r in REFUSALS], ids=[r[0] for r in REFUSALS])
def test_bad_config_is_refused_naming_file_key_path_and_reason(
    tmp_path: Path, edit: tuple[str, str], key_path: str, reason: str
) -> None:
    old, new = edit
    assert BASE.count(old) == 1, f"fixture edit {old!r} must match exactly once"
    message, path = refusal(tmp_path, BASE.replace(old, new))
    assert message.startswith(f"{path}: {key_path}"), message
    assert reason in message, message


def test_duplicate_deployment_names_both_definitions(tmp_path: Path) -> None:
    message, path = refusal(tmp_path, BASE.replace("  - provider: openai\n    model: gpt-4o\n",
                                                   "  - provider: deepseek\n    model: deepseek-v2\n"))
    assert message == (f"{path}: deployments.1: duplicate deployment (deepseek, deepseek-v2); "
                       "first defined at deployments.0")


def test_unknown_provider_lists_the_known_ones(tmp_path: Path) -> None:
    message, path = refusal(tmp_path, BASE.replace("  - provider: openai\n", "  - provider: opneai\n"))
    assert message == f"{path}: deployments.1.provider: unknown provider 'opneai' (known: deepseek, openai)"


def test_negative_price_message_is_exact(tmp_path: Path) -> None:
    message, path = refusal(tmp_path, BASE.replace("input: 5, output: 15}", "input: -1, output: 15}"))
    assert message == f"{path}: deployments.1.price.input: must not be negative, got -1"


def test_unknown_key_message_is_exact(tmp_path: Path) -> None:
    message, path = refusal(tmp_path, BASE.replace("    quality: 86\n", "    quality: 86\n    qualty: 90\n"))
    assert message == f"{path}: deployments.0.qualty: unknown key"


def test_every_field_error_is_reported_on_its_own_line(tmp_path: Path) -> None:
    message, path = refusal(tmp_path, BASE.replace("input: 5, output: 15}", "input: -5, output: 15, bogus: 1}"))
    lines = message.splitlines()
    assert f"{path}: deployments.1.price.bogus: unknown key" in lines
    assert any(line.startswith(f"{path}: deployments.1.price.input: must not be negative") for line in lines)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("providers: [unclosed\n", "not valid YAML"),
        ("- just\n- a list\n", "(top level): expected a mapping"),
    ],
)
def test_unparseable_or_non_mapping_file_is_refused_with_the_file_name(tmp_path: Path, text: str,
                                                                       expected: str) -> None:
    message, path = refusal(tmp_path, text)
    assert message.startswith(f"{path}: ") and expected in message



def test_sexagesimal_float_is_refused_as_a_config_error_not_a_crash(tmp_path: Path) -> None:
    text = BASE.replace("input: 5, output: 15}", "input: 5, output: 15, off_peak: [{from: 16:30.5, to: 00:30, "
                        "input: 1, output: 2}]}")
    message, path = refusal(tmp_path, text)
    assert message.startswith(f"{path}: line ")


def test_missing_file_is_refused_with_its_name(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=f"^{missing}: cannot read"):
        load_config(missing, env={})


# ---- ${ENV} interpolation --------------------------------------------------------------------------------------------


def test_env_var_is_substituted_and_default_used_when_unset(tmp_path: Path) -> None:
    text = BASE.replace('"https://api.openai.com/v1"', '"https://${OPENAI_HOST:-api.openai.com}/v1"')
    path = write(tmp_path, text)
    with_env = load_config(path, env={"ADMIN_KEY": "s3cret", "DEEPSEEK_API_KEY": "sk-1", "OPENAI_HOST": "proxy.lan"})
    without = load_config(path, env={})
    assert with_env.gateway.admin_key is not None and with_env.gateway.admin_key.get_secret_value() == "s3cret"
    assert with_env.providers["deepseek"].api_key.get_secret_value() == "sk-1"  # type: ignore[union-attr]
    assert with_env.providers["openai"].api_base == "https://proxy.lan/v1"
    assert without.gateway.admin_key.get_secret_value() == "admin"  # type: ignore[union-attr]
    assert without.providers["openai"].api_base == "https://api.openai.com/v1"



def test_default_applies_when_the_variable_is_set_but_empty(tmp_path: Path) -> None:
    text = BASE.replace("  admin_key: ${ADMIN_KEY:-admin}\n",
                        "  admin_key: ${ADMIN_KEY:-admin}\n  ledger_url: ${LEDGER_URL:-sqlite:///gateway.db}\n")
    cfg = load_config(write(tmp_path, text), env={"ADMIN_KEY": "", "LEDGER_URL": ""})
    assert cfg.gateway.ledger_url == "sqlite:///gateway.db"
    assert cfg.gateway.admin_key is not None and cfg.gateway.admin_key.get_secret_value() == "admin"


def test_reference_with_empty_default_means_not_configured(tmp_path: Path) -> None:
    cfg = load_config(write(tmp_path, BASE), env={})
    assert cfg.providers["deepseek"].api_key is None


def test_load_config_reads_the_process_environment_when_env_is_not_given(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADMIN_KEY", "from-os-environ")
    cfg = load_config(write(tmp_path, BASE))
    assert cfg.gateway.admin_key.get_secret_value() == "from-os-environ"  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("data", "env", "expected"),
    [
        ("${A}", {"A": "x"}, "x"),
        ("pre-${A}-post", {"A": "x"}, "pre-x-post"),
        ("${A}${B}", {"A": "1", "B": "2"}, "12"),
        ("${A:-fallback}", {}, "fallback"),
        ("${A:-fallback}", {"A": "set"}, "set"),
        ("${A:-}", {}, None),
        ("${A}", {"A": ""}, None),
        ("plain $A text", {}, "plain $A text"),
        ({"k": ["${A}", 3]}, {"A": "v"}, {"k": ["v", 3]}),
    ],
)
def test_interpolate_env_table(data: object, env: dict[str, str], expected: object) -> None:
    assert interpolate_env(data, env) == expected


def test_interpolate_env_names_the_key_path_of_an_unset_variable() -> None:
    with pytest.raises(PathError) as exc:
        interpolate_env({"providers": {"x": {"keys": ["ok", "${MISSING}"]}}}, {})
    assert exc.value.path == "providers.x.keys.1"
    assert exc.value.reason == "environment variable MISSING is not set"


# ---- exact decimals, suffixes, clock times --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0.0008", Decimal("0.0008")),
        ("0.1", Decimal("0.1")),
        ("7.10", Decimal("7.10")),
        ("0.0000001", Decimal("0.0000001")),
        ("1_000.5", Decimal("1000.5")),
    ],
)
def test_yaml_floats_are_read_as_exact_decimals_from_their_text(text: str, expected: Decimal) -> None:
    value = parse_yaml_text(f"x: {text}")["x"]
    assert type(value) is Decimal
    assert value == expected and str(value) == str(expected)


def test_prices_from_a_file_are_decimals_never_floats(tmp_path: Path) -> None:
    text = BASE.replace("input: 0.001, output: 0.002, cached_input: 0.0001",
                        "input: 0.0008, output: 0.002, cached_input: 0.0001")
    cfg = load_config(write(tmp_path, text), env={})
    p = cfg.deployments[0].price
    assert (p.input, p.output, p.cached_input) == (D("0.0008"), D("0.002"), D("0.0001"))
    assert all(type(v) is Decimal for v in (p.input, p.output, p.cached_input))
    assert str(p.input) == "0.0008"
    assert cfg.fx_rates == {"USD": D("7.10")} and type(cfg.fx_rates["USD"]) is Decimal
    gpt = cfg.deployments[1].price
    assert (gpt.input, gpt.output) == (D(5), D(15)) and type(gpt.input) is Decimal


def test_integers_and_clock_times_still_parse_with_the_decimal_loader() -> None:
    data = parse_yaml_text("a: 4096\nb: '16:30'\nc: 16:30\nd: 00:30\ne: true\nf: null\ng: 0x10\n")
    assert data == {"a": 4096, "b": "16:30", "c": "16:30", "d": "00:30", "e": True, "f": None, "g": 16}


def test_json_text_parses_with_decimals() -> None:
    assert parse_yaml_text('{"prices": [{"input": 0.0005, "n": 3}]}') == {"prices": [{"input": D("0.0005"), "n": 3}]}


def test_token_suffixes_in_a_file_are_thousands_and_millions(tmp_path: Path) -> None:
    text = BASE.replace("input: 5, output: 15}", "input: 5, output: 15, tiers: [{up_to: 32K, input: 1, output: 2}, "
                        "{up_to: 1M, input: 3, output: 4}]}").replace("context_window: 128K", "context_window: 10M")
    cfg = load_config(write(tmp_path, text), env={})
    assert cfg.deployments[0].context_window == 32_000
    assert cfg.deployments[0].max_output_tokens == 4_096
    assert cfg.deployments[1].context_window == 10_000_000
    assert [t.up_to for t in cfg.deployments[1].price.tiers] == [32_000, 1_000_000]


@pytest.mark.parametrize(("start", "end"), [("16:30", "00:30"), ("'16:30'", "'00:30'"), ('"16:30"', '"0:30"')])
def test_off_peak_times_parse_quoted_or_not(tmp_path: Path, start: str, end: str) -> None:
    text = BASE.replace("input: 5, output: 15}", f"input: 5, output: 15, off_peak: [{{from: {start}, to: {end}, "
                        "tz: Asia/Shanghai, input: 1, output: 2, cached_input: 0.25}]}")
    cfg = load_config(write(tmp_path, text), env={})
    (w,) = cfg.deployments[1].price.to_price().off_peak
    assert (w.start, w.end, w.tz) == (time(16, 30), time(0, 30), "Asia/Shanghai")
    assert (w.input, w.output, w.cached_input) == (D(1), D(2), D("0.25"))


# ---- gateway check-config -----------------------------------------------------------------------------------------


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(GATEWAY_BIN), *args], capture_output=True, text=True, cwd=REPO, timeout=60,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(REPO)})


def test_check_config_prints_the_deployments_table_and_exits_0_on_the_demo_config() -> None:
    result = run_cli("check-config", "config/demo.yaml")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["provider", "model", "upstream"]
    assert any(line.split()[:2] == ["deepseek", "deepseek-v2"] and "0.001/0.002 CNY" in line for line in lines)
    assert any(line.split()[:2] == ["qianfan", "ernie-speed-128k"] and "0/0 CNY" in line for line in lines)
    assert lines[-1].startswith("ok: 11 deployments, 7 providers")


def test_check_config_exits_1_with_the_precise_message_on_a_bad_file(tmp_path: Path) -> None:
    path = write(tmp_path, BASE.replace("input: 5, output: 15}", "input: -5, output: 15}"), name="bad.yaml")
    result = run_cli("check-config", str(path))
    assert result.returncode == 1
    assert f"{path}: deployments.1.price.input: must not be negative, got -5" in result.stderr
    assert "Traceback" not in result.stderr and "provider" not in result.stdout


def test_cache_write_prices_from_a_file_are_exact_decimals_at_every_level(tmp_path: Path) -> None:
    text = BASE.replace("input: 0.001, output: 0.002, cached_input: 0.0001",
                        "input: 0.001, output: 0.002, cached_input: 0.0001, cache_write: 0.00125").replace(
        "input: 5, output: 15}", "input: 5, output: 15, tiers: [{up_to: 32K, input: 1, output: 2, cache_write: "
        "1.25}, {up_to: 1M, input: 3, output: 4}], off_peak: [{from: 16:30, to: 00:30, input: 1, output: 2, "
        "cache_write: 0.000000000000000000000000000001}]}")
    cfg = load_config(write(tmp_path, text), env={})
    first = cfg.deployments[0].price.to_price()
    assert first.cache_write == D("0.00125") and type(first.cache_write) is Decimal
    second = cfg.deployments[1].price.to_price()
    assert second.cache_write is None  # not set: priced at input
    assert [t.cache_write for t in second.tiers] == [D("1.25"), None]
    assert str(second.off_peak[0].cache_write) == "1E-30"  # 30 digits, read from the text, not rounded
