"""kraken-dashboard end to end: real servers, the real dashboard, headless Debian chromium.

Every page renders live data; a swarm download shows progress moving; a node powered on from
the UI reaches POWER_ON on a real BMC; a pipeline call shows in its counts; screenshots of every
page go to ``artifacts/dashboard/``; labels, contrast and keyboard navigation are checked.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from typing import Any

import pytest

from kraken.core import certs
from kraken.pubsub import wire
from tests.integration.dashboard_rig import (
    BLOB_PIECES,
    BMC_NODE,
    FLAKY_TOKEN,
    OPERATOR_TOKEN,
    SIM_NODES,
    VIEWER_TOKEN,
    Rig,
    browser,
    pubsub_command,
    rig,
    screenshot,
)
from tests.integration.state_rig import client as state_client
from tests.integration.state_rig import wait_for
from tests.support import tls_section

__all__ = ["browser", "rig"]
WAIT_MS = 20_000


@pytest.fixture
def page(browser: Any, rig: Rig) -> Iterator[Any]:
    # Drawn at 0.7 device pixels per CSS pixel: small screenshots, the layout of a 1280 px window.
    context = browser.new_context(viewport={"width": 1280, "height": 900}, device_scale_factor=0.7)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda e: errors.append(str(e)))
    tab.set_default_timeout(WAIT_MS)
    try:
        yield tab
    finally:
        context.close()
    assert not errors, f"the page threw: {errors}"


def until(page: Any, expression: str, timeout: float = WAIT_MS) -> None:
    """Wait until *expression* is true in the page (as a function: the page's CSP forbids eval)."""
    page.wait_for_function(f"() => ({expression})", timeout=timeout)


def login(page: Any, rig: Rig, token: str, where: str = "swarm") -> None:
    page.goto(rig.url + "#" + where)
    page.get_by_label("Access token").fill(token)
    page.get_by_role("button", name="Log in", exact=True).click()
    role = "operator" if token == OPERATOR_TOKEN else "viewer"
    until(page, f"document.body.dataset.role === '{role}'")


def test_login_is_required_and_a_wrong_token_is_refused(page: Any, rig: Rig) -> None:
    page.goto(rig.url + "#health")
    page.get_by_label("Access token").wait_for()  # shown once the socket refuses a browser without a token
    assert page.locator("#login-error").inner_text() == ""  # no error before a token was tried
    page.get_by_label("Access token").fill("not-a-token")
    page.get_by_role("button", name="Log in", exact=True).click()
    page.get_by_role("alert").filter(has_text="unknown token").wait_for()
    assert page.locator("#session").inner_text() == "not logged in"
    # A socket that never logs in is dropped after login_timeout (1 s here).
    lasted = page.evaluate(
        """(port) => new Promise((resolve) => {
            const opened = Date.now(), ws = new WebSocket(`ws://${location.hostname}:${port}/`);
            ws.onclose = () => resolve(Date.now() - opened);
        })""",
        rig.port("dashboard", "ws"),
    )
    assert 900 <= lasted < 5000, lasted


def test_swarm_download_shows_progress_moving(page: Any, rig: Rig) -> None:
    login(page, rig, VIEWER_TOKEN, "swarm")
    page.get_by_text("No blobs are being exchanged.").wait_for()
    rig.pull_in_background("a0")
    progress = page.locator('progress[data-host^="agent"]').first
    progress.wait_for()
    seen = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        value = int(progress.get_attribute("value") or 0)
        if not seen or seen[-1] != value:
            seen.append(value)
        if value == BLOB_PIECES:
            break
        time.sleep(0.1)
    assert seen[-1] == BLOB_PIECES, f"progress seen: {seen}"
    assert [v for v in seen if 0 < v < BLOB_PIECES], f"no progress between start and end: {seen}"
    assert seen == sorted(seen), f"progress went backwards: {seen}"
    # The second agent gets it too, from the first agent and the origin; the graph shows both.
    rig.pull_in_background("a1")
    until(page,
        f"[...document.querySelectorAll('progress')].filter(p => +p.value === {BLOB_PIECES}).length >= 3"
    )
    share = page.locator(".origin-share").inner_text()
    assert share.startswith("from origins ") and share.endswith("%"), share
    rows = page.locator("table:has(caption:text('Pieces received')) tbody tr")
    assert rows.count() >= 2
    assert "origin 127.0.0.1" in rows.first.inner_text()
    first_agent = f"agent 127.0.0.1:{rig.port('a0')}"
    strip = page.locator(f'svg[aria-label^="{first_agent}: "]').get_attribute("aria-label")
    assert strip == f"{first_agent}: {BLOB_PIECES} from origin 127.0.0.1:{rig.port('origin')}"
    screenshot(page, "swarm")


def test_node_powered_on_from_the_ui_reaches_power_on(page: Any, rig: Rig) -> None:
    # A viewer sees the node but may not act, in the UI or on the socket.
    login(page, rig, VIEWER_TOKEN, "nodes")
    tile = page.locator(f'[data-node-id="{BMC_NODE}"]')
    wait_for(lambda: tile.get_attribute("data-phys") == "POWER_OFF", 30, "the BMC node to read POWER_OFF")
    tile.click()
    assert page.get_by_role("button", name="Power on").is_disabled()
    refused = page.evaluate(
        """([port, token, node]) => new Promise((resolve) => {
            const ws = new WebSocket(`ws://${location.hostname}:${port}/`);
            ws.onopen = () => { ws.send(JSON.stringify({type: "hello", token}));
              ws.send(JSON.stringify({type: "power", id: 1, server: 0, node, phys: "POWER_ON"})); };
            ws.onmessage = (e) => { const m = JSON.parse(e.data); if (m.type === "reply") resolve(m); };
        })""",
        [rig.port("dashboard", "ws"), VIEWER_TOKEN, BMC_NODE],
    )
    assert refused == {"type": "reply", "id": 1, "ok": False, "error": "this needs an operator login"}
    assert rig.bmc.status() == "off"

    page.get_by_role("button", name="Log in with a token").click()
    page.get_by_label("Access token").fill(OPERATOR_TOKEN)
    page.get_by_role("button", name="Log in", exact=True).click()
    until(page, "document.body.dataset.role === 'operator'")
    page.locator(f'[data-node-id="{BMC_NODE}"]').click()
    page.get_by_role("button", name="Power on").click()
    dialog = page.get_by_role("dialog")
    assert "Power on bmc-node" in dialog.inner_text()
    dialog.get_by_role("button", name="Confirm").click()
    until(page,
        f"document.querySelector('[data-node-id=\"{BMC_NODE}\"]').dataset.phys === 'POWER_ON'", timeout=40_000
    )
    assert rig.bmc.status() == "on"  # ipmitool, an independent client, agrees
    until(  # the node detail follows: Cfg and Dsc no longer differ in physState
        page,
        "[...document.querySelectorAll('.detail tr')].some(tr => tr.textContent.startsWith('physState')"
        " && tr.textContent.endsWith('same'))",
    )
    detail = page.get_by_role("region", name="node detail").inner_text()
    assert "secret" not in detail  # the BMC password is not shown
    screenshot(page, "nodes")


def test_the_group_filter_shows_a_real_groups_members(page: Any, rig: Rig) -> None:
    """Groups made over the state REST API: ``sims`` holds two sim nodes and ``sims-spare``
    (inheriting from it) the third, so ``sims`` has three members and the BMC node none."""
    state = state_client(rig.pki, rig.procs["state"])
    state.request("PUT", "/group/sims", {"nodes": SIM_NODES[:2]})
    state.request("PUT", "/group/sims-spare", {"nodes": SIM_NODES[2:], "parent": "sims"})
    login(page, rig, VIEWER_TOKEN, "nodes")
    tiles = page.locator("button.tile")
    page.locator(f'[data-node-id="{BMC_NODE}"]').wait_for()
    every = tiles.count()  # the sim nodes, the BMC node and the parent node
    assert every == len(SIM_NODES) + 2
    page.get_by_label("Group").select_option("sims")
    until(page, "document.querySelectorAll('button.tile').length === 3")
    assert sorted(t.get_attribute("data-node-id") for t in tiles.all()) == SIM_NODES
    page.get_by_label("Group").select_option("sims-spare")
    until(page, "document.querySelectorAll('button.tile').length === 1")
    assert tiles.first.get_attribute("data-node-id") == SIM_NODES[2]
    page.get_by_label("Group").select_option("")
    until(page, f"document.querySelectorAll('button.tile').length === {every}")


def test_a_pipeline_call_appears_in_its_counts(page: Any, rig: Rig) -> None:
    login(page, rig, VIEWER_TOKEN, "pipelines")
    injected = page.locator('[data-pipeline="hello"] .injected')
    injected.wait_for()
    before = int(injected.inner_text().split()[-1])
    assert rig.call_pipeline({"type": "hello", "name": "Dashboard"})["message"] == "Hello, Dashboard!"
    until(page,
        "+document.querySelector('[data-pipeline=\"hello\"] .injected').textContent.split(' ').pop() === "
        f"{before + 1}"
    )
    assert page.locator('[data-pipeline="hello"] svg[role="img"]').count() == 1
    assert "No dead letters." in page.locator('[data-pipeline="hello"]').inner_text()


def define_orders(rig: Rig) -> None:
    """Pipeline ``orders``: ``price`` routes its failures to ``priced``; ``work`` calls the
    breakable stub service and dead-letters its failures; the pipeline's default is a dead
    letter too (drawn on ``priced``, which has no route of its own)."""
    token = {"Authorization": f"Bearer {FLAKY_TOKEN}"}
    for path, body in (
        ("/services/define", {
            "name": "flaky",
            "client": {"module": "http",
                       "start": {"base_url": f"http://127.0.0.1:{rig.flaky_port}", "headers": token}},
            "interface": {"work": {
                "prepare": {"method": "POST", "path": "/work", "body": {"n": "args['n']"}},
                "call": {"parse_json_body": True},
                "transform": {"done": "args['body']['done']"},
                "output": {"done": {"type": "integer"}, "required": ["done"]},
            }},
        }),
        ("/services/start/flaky", None),
        ("/pipelines/define", {
            "name": "orders",
            "on_error": "dead_letter",
            "components": [
                {"name": "price", "type": "stage", "transform": {"price": "args['qty'] * 2"},
                 "on_error": {"component": "priced"}},
                {"name": "priced", "type": "goto-point"},
                {"name": "work", "service": {"name": "flaky", "function": "work"},
                 "transform": {"done": "args['done']"}, "on_error": "dead_letter"},
            ],
        }),
        ("/pipelines/start/orders", None),
    ):
        answer = rig.pipeline_api("POST", path, body)
        assert "error" not in answer, (path, answer)


def test_a_dead_letter_is_listed_replayed_from_the_ui_and_error_routes_are_drawn(page: Any, rig: Rig) -> None:
    define_orders(rig)
    rig.flaky_stub("/_break")
    failed = rig.pipeline_api("POST", "/pipelines/call/orders", {"qty": 2, "n": 7})
    assert failed["type"] == "error_ip" and isinstance(failed["dead_letter"], int), failed
    login(page, rig, OPERATOR_TOKEN, "pipelines")
    card = page.locator('[data-pipeline="orders"]')
    row = card.locator("table:has(caption:text('Dead letters of orders')) tbody tr")
    row.wait_for()
    cells = row.locator("td").all_inner_texts()
    assert (cells[0], cells[2], cells[4]) == (str(failed["dead_letter"]), "work", "0"), cells
    assert "Expected Integer but got Null" in cells[3] and cells[1] == "1", cells  # version 1
    diagram = card.locator('svg[role="img"]')
    words = diagram.get_attribute("aria-label")
    for route in ("price errors to priced", "work errors to dead letters", "priced errors to dead letters"):
        assert route in words, words
    assert diagram.locator("path.error-route").count() == 1  # price's route to priced
    assert diagram.locator("text.error-note").all_text_contents() == ["errors → dead letters"] * 2
    assert diagram.locator(".default-route text.error-note").count() == 1  # priced: the pipeline's
    card.scroll_into_view_if_needed()
    screenshot(page, "pipelines")

    replay = card.get_by_role("button", name="Replay dead letters")
    confirm = page.get_by_role("dialog").get_by_role("button", name="Confirm")
    replay.click()  # the stub is still broken: the replay fails and the dead letter stays, counted
    confirm.click()
    card.get_by_role("status").filter(has_text="replayed 0, failed again 1").wait_for()
    row.locator("td:nth-child(5)", has_text=re.compile(r"^1$")).wait_for()  # attempts: 1
    rig.flaky_stub("/_fix")
    replay.click()
    confirm.click()
    card.get_by_role("status").filter(has_text="replayed 1, failed again 0").wait_for()
    card.get_by_text("No dead letters.").wait_for()
    assert rig.pipeline_api("GET", "/dead_letters?pipeline=orders") == []


def test_topics_registry_and_health_render_live_data(page: Any, rig: Rig) -> None:
    port = rig.port("pubsub", "memcached")
    subscriber = pubsub_command(port, wire.set_command(b"subscribe", b"news weather"))
    publisher = pubsub_command(port, wire.set_command(b"publish", wire.publish_body([([b"news"], b"hi")])))
    # A client of the proxy node: the proxy subscribes upstream, the root's publishes reach it.
    below = pubsub_command(rig.port("pubsub-proxy", "memcached"), wire.set_command(b"subscribe", b"news"))
    try:
        login(page, rig, VIEWER_TOKEN, "topics")
        root = page.get_by_role("region", name=f"pubsub 127.0.0.1:{rig.port('pubsub', 'admin')}")
        proxy = page.get_by_role("region", name=f"pubsub 127.0.0.1:{rig.port('pubsub-proxy', 'admin')}")
        root.locator("td", has_text="weather").wait_for()
        messages = root.locator(".messages-in")
        before = int(messages.inner_text().split()[-1])
        more = wire.set_command(b"publish", wire.publish_body([([b"news"], b"more")]))
        pubsub_command(port, more, publisher)
        until(page,
            "+document.querySelector('.messages-in').textContent.split(' ').pop() > "
            f"{before}"
        )
        assert root.locator(".tree").inner_text() == "role: node"
        upstream = f"upstream 127.0.0.1:{rig.port('pubsub', 'memcached-tls')}: connected"
        proxy.locator(".tree p", has_text=upstream).wait_for()
        assert proxy.locator(".tree p").first.inner_text() == "role: proxy"
        proxy.locator("td", has_text="news").wait_for()
        records_in = "/records in [1-9]/.test(p.textContent)"
        until(page, f"[...document.querySelectorAll('.tree p')].some((p) => {records_in})")
        proxy.scroll_into_view_if_needed()
        screenshot(page, "topics")
    finally:
        for conn in (subscriber, publisher, below):
            conn.close()

    page.goto(rig.url + "#registry")
    page.locator("td", has_text="v1").wait_for()
    text = page.locator("main").inner_text()
    assert "demo/hello" in text and "KiB" in text
    screenshot(page, "registry")

    page.goto(rig.url + "#health")
    for name in ("agent", "origin", "tracker", "state", "pipeline", "pubsub", "build-index", "proxy"):
        page.locator(f'[data-health^="{name} "]').first.wait_for()
    until(page, "[...document.querySelectorAll('[data-health]')].every(e => e.textContent === 'ok')")
    until(page, "document.querySelectorAll('polyline.spark').length >= 8")
    screenshot(page, "health")
    # A server that goes away is marked on its own; the others stay ok.
    rig.procs["tracker"].kill()
    tracker = f"tracker 127.0.0.1:{rig.port('tracker')}"
    cell = f"document.querySelector('[data-health=\"{tracker}\"]')"
    until(page, f"{cell}.textContent.startsWith('unreachable')")
    assert page.locator('[data-health^="origin "]').inner_text() == "ok"


CONTRAST = """() => {
  const lum = (rgb) => {
    const [r, g, b] = rgb.map((v) => {
      v /= 255;
      return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const parse = (c) => (c.match(/[\\d.]+/g) || []).map(Number);
  const background = (el) => {
    for (let e = el; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] > 0.5)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const bad = [];
  for (const el of document.querySelectorAll("body *")) {
    if (!el.offsetParent && el.tagName !== "BODY") continue;
    const own = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    if (!own || el.closest("svg")) continue;
    const fg = parse(getComputedStyle(el).color).slice(0, 3), bg = background(el);
    const [hi, lo] = [lum(fg), lum(bg)].sort((a, b) => b - a);
    const ratio = (hi + 0.05) / (lo + 0.05);
    const what = `${el.tagName}.${el.className} "${el.textContent.slice(0, 30)}"`;
    if (ratio < 4.5) bad.push(`${what}: ${ratio.toFixed(2)}`);
  }
  return bad;
}"""

UNLABELLED = """() => {
  const named = (el) => (el.getAttribute("aria-label") || "").trim() || (el.labels && el.labels.length)
    || (el.getAttribute("aria-labelledby") && document.getElementById(el.getAttribute("aria-labelledby")))
    || (el.tagName === "BUTTON" && el.textContent.trim());
  const wanted = "input, select, button, progress, textarea, svg[role=img], nav, section";
  return [...document.querySelectorAll(wanted)]
    .filter((el) => !el.closest("[hidden]") && el.id !== "page" && !named(el))
    .map((el) => el.outerHTML.slice(0, 80));
}"""


def test_accessibility_labels_contrast_and_keyboard(page: Any, rig: Rig) -> None:
    login(page, rig, OPERATOR_TOKEN, "swarm")
    for name in ("swarm", "nodes", "pipelines", "topics", "registry", "health"):
        page.goto(rig.url + "#" + name)
        until(page, "document.getElementById('page').getAttribute('aria-busy') === 'false'")
        if name == "nodes":
            page.locator(f'[data-node-id="{BMC_NODE}"]').click()
            page.get_by_role("button", name="Power off").wait_for()
        assert page.evaluate(UNLABELLED) == [], name
        assert page.evaluate(CONTRAST) == [], name
        assert page.evaluate("document.documentElement.lang") == "en"

    # Keyboard only: skip link, then the page links, Enter opens a page; a node tile opens with Enter.
    page.goto(rig.url + "#swarm")
    page.reload()  # focus starts at the top; the token is kept for this tab
    until(page, "document.body.dataset.role === 'operator'")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Tab")
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.textContent") == "Nodes"
    page.keyboard.press("Enter")
    until(page, "location.hash === '#nodes'")
    assert page.get_by_role("link", name="Nodes").get_attribute("aria-current") == "page"
    tile = page.locator("button.tile").first
    tile.wait_for()
    for _ in range(30):
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.classList.contains('tile')"):
            break
    else:
        raise AssertionError("Tab never reached a node tile")
    page.keyboard.press("Enter")
    page.get_by_role("region", name="node detail").wait_for()
    page.get_by_role("button", name="Power off").focus()
    page.keyboard.press("Enter")
    assert page.get_by_role("dialog").is_visible()
    page.keyboard.press("Escape")  # Escape cancels: nothing is sent
    assert not page.get_by_role("dialog").is_visible()


def test_a_browser_certificate_named_in_operator_certs_is_an_operator(
    browser: Any, rig: Rig, pki: Any, servers: Any
) -> None:
    """Over TLS (https and wss), a browser's client certificate logs it in without a token: as
    an operator when its name is in auth.operator_certs, else as a viewer."""
    for name in ("alice", "bob"):
        if not (pki / f"{name}.pem").exists():
            certs.issue(pki, name, "client")
    dashboard = servers.start(
        "kraken-dashboard",
        {
            "listen": ["tls:tcp:0:interface=127.0.0.1"],
            "tls": tls_section(pki, "client", require_client_cert=False),
            "dashboard": {"ws_listen": ["tls:tcp:0:interface=127.0.0.1"]},
            "auth": {"viewer_tokens": [VIEWER_TOKEN], "operator_certs": ["alice"]},
        },
    )
    url = f"https://127.0.0.1:{dashboard.port('http')}"
    ws = f"https://127.0.0.1:{dashboard.port('ws')}"
    for name, expected in (("alice", "operator"), ("bob", "viewer")):
        certificates = [
            {"origin": origin, "certPath": str(pki / f"{name}.pem"), "keyPath": str(pki / f"{name}.key")}
            for origin in (url, ws)
        ]
        context = browser.new_context(ignore_https_errors=True, client_certificates=certificates)
        try:
            tab = context.new_page()
            tab.goto(url + "/#health")
            until(tab, f"document.body.dataset.role === '{expected}'")
            assert tab.locator("#login").is_hidden()
        finally:
            context.close()
