"""The web console in a real browser (Debian's chromium, driven by Playwright) against a real `gateway serve` in
front of the demo's simulated vendors, after real traffic from the OpenAI SDK. Each page's screenshot is saved
under the test's temporary directory (the path is printed).

The tests of this module run in order on one gateway: the playground is compared with `gateway route` (which
prices with the config file's table) before a price is changed in the console.
"""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import subprocess
from contextlib import closing
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator

import httpx
import openai
import pytest

from gateway.demo.vendors import VendorCluster, env_for
from tests.e2e.browser import PageProblems, launch
from tests.e2e.procs import GATEWAY_BIN, ServeProcess, demo_data, write_config

ADMIN = "console-admin-key-0123456789"
EVIL = "<script>alert(1)</script>"
PAGES = ("spend", "prices", "playground", "keys", "health")


class Stack:
    def __init__(self, tmp: Path, vendors: VendorCluster) -> None:
        self.tmp = tmp
        data = demo_data()
        data["gateway"]["admin_key"] = ADMIN
        self.config = write_config(tmp / "gateway.yaml", data)
        self.env = {**env_for(vendors), "GATEWAY_LEDGER_URL": f"sqlite:///{tmp}/ledger.db"}
        self.server = ServeProcess(self.config, self.env, tmp / "serve.log").wait_ready()
        self.url = self.server.url
        self.shots = tmp / "screenshots"
        self.shots.mkdir()
        today = datetime.now(timezone.utc).date()
        self.start, self.end = today.isoformat(), (today + timedelta(days=1)).isoformat()

    def cli(self, *args: str) -> str:
        done = subprocess.run([GATEWAY_BIN, *args, "--config", str(self.config)], env={**_env(), **self.env},
                              cwd=self.tmp, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout

    def client(self, key: str = "sk-app-own-key") -> openai.OpenAI:
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0)

    def admin(self, method: str, path: str, **kw: Any) -> httpx.Response:
        return httpx.request(method, self.url + path, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=10, **kw)


def _env() -> dict[str, str]:
    import os

    return dict(os.environ)


@pytest.fixture(scope="module")
def stack(vendors: VendorCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    vendors.reset()
    s = Stack(tmp_path_factory.mktemp("console"), vendors)
    try:
        key = s.admin("POST", "/admin/keys", json={"team": "finance", "budget": "5", "budget_period": "month"})
        finance = key.json()["key"]
        for i, (model, api_key) in enumerate([("auto", "sk-app"), ("premium", finance), ("cheap", "sk-app"),
                                              ("auto", finance), ("long-context", "sk-app"), ("auto", "sk-app")]):
            s.client(api_key).chat.completions.create(
                model=model, max_tokens=30, messages=[{"role": "user", "content": f"Request {i}: " + "words " * i}])
        _add_hostile_ledger_row(s.tmp / "ledger.db")
        print(f"\nconsole screenshots: {s.shots}")
        yield s
    finally:
        s.server.stop()


def _add_hostile_ledger_row(path: Path) -> None:
    """A ledger row whose team is markup (team names are validated on the way in, so this stands for a row that
    came in some other way): every page that shows it must show it as text."""
    with closing(sqlite3.connect(path)) as conn:
        cols = [r[1] for r in conn.execute("PRAGMA table_info(ledger)") if r[1] != "id"]
        values = [("?" if c in ("team", "request_id") else c) for c in cols]
        params = [EVIL if c == "team" else "req-hostile-team" for c in cols if c in ("team", "request_id")]
        conn.execute(f"INSERT INTO ledger ({', '.join(cols)}) SELECT {', '.join(values)} FROM ledger "
                     "WHERE status = 'success' ORDER BY id LIMIT 1", params)
        conn.commit()


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    yield from launch()


@pytest.fixture(scope="module")
def session(browser: Any, stack: Stack) -> Iterator[tuple[Any, PageProblems]]:
    """One signed-in page for the module's tests, signed in through the form."""
    context = browser.new_context(accept_downloads=True)
    page = context.new_page()
    problems = PageProblems(page)
    page.goto(stack.url + f"/console/spend?from={stack.start}&to={stack.end}")
    assert "/console/login" in page.url  # signed out: sent to sign in, then back
    page.screenshot(path=str(stack.shots / "login.png"), full_page=True)
    page.fill("#admin_key", ADMIN)
    page.click("#signin")
    page.wait_for_url("**/console/spend?**")
    assert ADMIN not in page.content() and ADMIN not in page.url
    cookie = next(c for c in context.cookies() if c["name"] == "gw_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and ADMIN not in cookie["value"]
    yield page, problems
    context.close()


def test_every_page_renders_without_browser_errors(session: tuple[Any, PageProblems], stack: Stack) -> None:
    page, problems = session
    for name in PAGES:
        response = page.goto(stack.url + f"/console/{name}")
        assert response.status == 200, name
        assert page.locator("h1").first.inner_text()
        page.screenshot(path=str(stack.shots / f"{name}.png"), full_page=True)
    assert problems.errors == []
    assert problems.dialogs == []


def test_spend_total_and_csv_equal_gateway_report(session: tuple[Any, PageProblems], stack: Stack) -> None:
    page, problems = session
    page.goto(stack.url + f"/console/spend?from={stack.start}&to={stack.end}&group_by=provider&stack=team")
    page.screenshot(path=str(stack.shots / "spend-by-team.png"), full_page=True)
    report = json.loads(stack.cli("report", "--from", stack.start, "--to", stack.end, "--group-by", "provider",
                                  "--format", "json"))
    assert page.inner_text("#total-cost") == report["total"]["total_cost"]
    assert page.inner_text("#savings") == report["total"]["savings"]
    assert page.inner_text("#requests") == str(report["total"]["requests"])
    with page.expect_download() as info:
        page.click("#download-csv")
    downloaded = Path(info.value.path()).read_text()
    expected = stack.cli("report", "--from", stack.start, "--to", stack.end, "--group-by", "provider",
                         "--format", "csv")
    assert downloaded == expected
    assert len(list(csv.reader(io.StringIO(downloaded)))) > 2  # a header and several providers
    assert problems.errors == []


def test_hostile_team_name_renders_as_text(session: tuple[Any, PageProblems], stack: Stack) -> None:
    page, problems = session
    page.goto(stack.url + f"/console/spend?from={stack.start}&to={stack.end}&group_by=team&stack=team")
    cells = page.locator("#report tbody td").all_inner_texts()
    assert EVIL in cells  # shown as the text it is
    assert page.locator("script:not([src])").count() == 0  # and never became an element
    # The form refuses the name; the refusal echoes it as text too.
    page.goto(stack.url + "/console/keys")
    page.fill("#create-key-form input[name=team]", EVIL)
    page.click("#create-key")
    assert "team must be" in page.inner_text(".error")
    assert page.input_value("#create-key-form input[name=team]") == EVIL
    assert page.locator("script:not([src])").count() == 0
    assert problems.dialogs == []
    problems.errors = [e for e in problems.errors if "status of 400" not in e]  # the refused form's own 400
    assert problems.errors == []


def _ranking(page: Any) -> list[tuple[str, str]]:
    rows = page.locator("#candidates tbody tr").all()
    return [(r.locator("td.dep").inner_text(), r.locator("td.cost").inner_text()) for r in rows]


def test_playground_ranks_as_gateway_route(session: tuple[Any, PageProblems], stack: Stack) -> None:
    page, problems = session
    page.goto(stack.url + "/console/playground")
    page.select_option("#playground-form select[name=model]", "auto")
    page.fill("#playground-form input[name=max_tokens]", "50")
    page.fill("#prompt", "Summarise the quarterly spend of every team in three sentences.")
    page.click("#explain")
    page.wait_for_selector("#candidates")
    page.screenshot(path=str(stack.shots / "playground-result.png"), full_page=True)
    shown = _ranking(page)
    prompt_tokens = page.inner_text("#prompt-estimate")
    table = stack.cli("route", "--model", "auto", "--prompt-tokens", prompt_tokens, "--max-tokens", "50")
    expected = [(line.split()[1], line.split()[2]) for line in table.splitlines() if line[:1].isdigit()]
    assert shown == expected and len(shown) >= 3
    headers = page.locator("#candidates thead").inner_text()
    assert "expected cached tokens" in headers and "cold cost" in headers  # the cache assumptions, as explained
    excluded = page.locator("#excluded tbody").inner_text()
    assert "qianfan/ernie-lite-8k" in excluded and "quality" in excluded
    assert problems.errors == []


def test_key_created_in_console_serves_and_revoked_is_refused(session: tuple[Any, PageProblems],
                                                              stack: Stack) -> None:
    page, problems = session
    page.goto(stack.url + "/console/keys")
    page.fill("#create-key-form input[name=team]", "console-team")
    page.fill("#create-key-form input[name=budget]", "2.5")
    page.fill("#create-key-form input[name=rpm]", "100")
    page.click("#create-key")
    key = page.inner_text("#new-key")
    key_id = page.locator("#created-key b").first.inner_text()
    page.click("#copy-key")
    page.screenshot(path=str(stack.shots / "keys-created.png"), full_page=True)
    answer = stack.client(key).chat.completions.with_raw_response.create(
        model="auto", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert answer.http_response.status_code == 200
    page.goto(stack.url + "/console/keys")  # spent against limit now counts that request
    row = page.locator(f"tr[data-key='{key_id}']")
    assert row.locator("td").nth(4).inner_text() == "2.5"
    assert key not in page.content()  # shown once, never again
    row.locator("button.revoke").click()  # confirm() accepted by PageProblems
    page.wait_for_selector(f"tr[data-key='{key_id}'] >> text=revoked")
    with pytest.raises(openai.AuthenticationError):
        stack.client(key).chat.completions.create(model="auto", max_tokens=10,
                                                  messages=[{"role": "user", "content": "hi"}])
    assert any("Revoke key" in d for d in problems.dialogs)
    assert problems.errors == []


def test_price_changed_in_console_is_in_force_and_in_history(session: tuple[Any, PageProblems],
                                                              stack: Stack) -> None:
    page, problems = session
    before = stack.admin("GET", "/admin/prices").json()["version"]
    page.goto(stack.url + "/console/prices")
    page.select_option("#change-form select[name=deployment]", "deepseek/deepseek-v2")
    page.fill("#change-form input[name=input]", "0.0001")
    page.fill("#change-form input[name=output]", "0.0002")
    page.click("#preview-change")
    preview = page.inner_text("#change-preview")
    assert "deepseek/deepseek-v2 input: 0.001 → 0.0001" in preview
    assert "would go elsewhere" in preview and "deepseek/deepseek-v2" in page.inner_text("#change-preview table")
    assert stack.admin("GET", "/admin/prices").json()["version"] == before  # a preview stores nothing
    page.screenshot(path=str(stack.shots / "prices-preview.png"), full_page=True)
    page.click("#apply-change")
    page.wait_for_selector(".notice")
    assert page.inner_text("#live-version") == str(before + 1)
    answer = stack.client().chat.completions.with_raw_response.create(
        model="auto", max_tokens=10, messages=[{"role": "user", "content": "hi"}])
    assert answer.http_response.headers["x-gateway-provider"] == "deepseek"
    history = page.locator("section.history[data-deployment='deepseek/deepseek-v2']")
    history.locator("summary").click()
    rows = history.locator("tbody tr").all_inner_texts()
    assert any(r.startswith(str(before + 1)) and "0.0001" in r for r in rows)
    assert history.locator("svg path.line").count() == 2
    page.screenshot(path=str(stack.shots / "prices-changed.png"), full_page=True)
    assert problems.errors == []


def test_price_import_shows_the_dry_run_diff_first(session: tuple[Any, PageProblems], stack: Stack) -> None:
    page, problems = session
    before = stack.admin("GET", "/admin/prices").json()["version"]
    page.goto(stack.url + "/console/prices")
    page.select_option("#import-form select[name=format]", "gateway")
    price_file = "prices:\n  - {provider: zhipu, model: glm-3-turbo, input: '0.0009'}\n  - {provider: nobody, model: x}\n"
    page.fill("#import-text", price_file)
    page.click("#import-dry-run")
    diff = page.inner_text("#import-diff")
    assert "zhipu/glm-3-turbo input: 0.001 → 0.0009" in diff
    assert stack.admin("GET", "/admin/prices").json()["version"] == before
    page.click("#import-apply")
    page.wait_for_selector(".notice")
    assert stack.admin("GET", "/admin/prices").json()["version"] == before + 1
    assert problems.errors == []


def test_health_page_shows_providers_and_ledger_backlog(session: tuple[Any, PageProblems], stack: Stack) -> None:
    page, problems = session
    page.goto(stack.url + "/console/health")
    providers = page.locator("#providers tbody tr").all_inner_texts()
    assert len(providers) == len(demo_data()["providers"]) and all("healthy" in p for p in providers)
    assert "gateway_ledger_pending_rows" in page.inner_text("#ledger")
    page.screenshot(path=str(stack.shots / "health.png"), full_page=True)
    assert problems.errors == []


def test_signed_out_every_console_route_redirects_or_401s(browser: Any, stack: Stack) -> None:
    context = browser.new_context()
    page = context.new_page()
    for name in PAGES:
        page.goto(stack.url + f"/console/{name}")
        assert page.url.startswith(stack.url + "/console/login?next=")
    context.close()
    gets = [f"/console/{n}" for n in (*PAGES, "spend.csv", "spend.json", "")]
    posts = ["/console/logout", "/console/prices/preview", "/console/prices/apply", "/console/prices/import",
             "/console/keys/create", "/console/keys/x/revoke", "/console/teams/set", "/console/playground"]
    for path in gets:
        r = httpx.get(stack.url + path, headers={"accept": "text/html"})
        assert r.status_code == 303 and r.headers["location"].startswith("/console/login"), path
        assert httpx.get(stack.url + path).status_code == 401, path  # not a page request: 401
    for path in posts:
        assert httpx.post(stack.url + path, data={"team": "x"}).status_code == 401, path
    forged = {"gw_console": "eyJzaWQiOiJ4IiwiZXhwIjo5OTk5OTk5OTk5fQ.forged"}
    assert httpx.get(stack.url + "/console/spend.csv", cookies=forged).status_code == 401
    assert ADMIN not in stack.server.log()
