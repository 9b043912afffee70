"""End to end in a real browser: JupyterLab and Notebook 7 + headless Chromium run notebook 03.

For each front end (JupyterLab, then Notebook 7), starts its server on a free loopback port
(with a token, on a temporary copy of ``notebooks/``), runs all cells of ``03-fedavg-live.ipynb`` in headless Chromium,
clicks the dashboard's Run button, checks that the plot is redrawn round after round
while the status line counts rounds, clicks Stop, and checks that no error is shown.
A screenshot is saved to ``tests/artifacts/browser-<front end>-03-fedavg-live.png``.

Needs Debian's Chromium at /usr/bin/chromium (``apt-get install chromium``).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.browser

REPO = Path(__file__).resolve().parent.parent
NOTEBOOK = "03-fedavg-live.ipynb"
# its dashboards, in order: the first run, clients (C and K), local work (seeds), the exercises', the playground
EXERCISES = 3
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO / "tests" / "artifacts"
#: front end -> (the server's module, the notebook's URL path)
FRONT_ENDS = {"jupyterlab": ("jupyterlab", "/lab/tree/"), "notebook7": ("notebook", "/notebooks/")}
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
ROUND = re.compile(r"round (\d+)/(\d+)")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


CHROMIUM_MISSING = (f"Chromium is not installed ({CHROMIUM} is missing), so the browser test "
                    "cannot run. Install it with `sudo apt-get install chromium` (Debian/Ubuntu).")


@pytest.fixture(scope="module", params=list(FRONT_ENDS))
def lab(request, tmp_path_factory):
    """A JupyterLab or Notebook 7 server on a copy of notebooks/; yields its base URL, token,
    log file and front end."""
    front_end = request.param
    if not CHROMIUM.exists():  # the test itself fails with the message
        yield None
        return
    tmp = tmp_path_factory.mktemp("lab")
    root = tmp / "notebooks"
    shutil.copytree(REPO / "notebooks", root,
                    ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
    port, token = _free_port(), secrets.token_hex(16)
    # user settings: start the notebook's kernel without asking, no news pop-up
    settings = tmp / "settings" / "@jupyterlab"
    for ext, name, text in [
            ("notebook-extension", "tracker", '{"autoStartDefaultKernel": true}'),
            ("apputils-extension", "notification", '{"fetchNews": "false"}')]:
        (settings / ext).mkdir(parents=True, exist_ok=True)
        (settings / ext / f"{name}.jupyterlab-settings").write_text(text)
    env = dict(os.environ)
    env.update({
        "JUPYTER_CONFIG_DIR": str(tmp / "config"),      # no user settings or workspaces
        "JUPYTER_RUNTIME_DIR": str(tmp / "runtime"),
        "JUPYTER_DATA_DIR": str(tmp / "data"),
        "JUPYTERLAB_WORKSPACES_DIR": str(tmp / "workspaces"),
        "JUPYTERLAB_SETTINGS_DIR": str(tmp / "settings"),
        "FEDLAB_OFFLINE": env.get("FEDLAB_OFFLINE", "1"),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
    })
    log = open(tmp / "jupyterlab.log", "wb")
    cmd = [sys.executable, "-m", FRONT_ENDS[front_end][0], "--no-browser", "--ip=127.0.0.1",
           f"--port={port}", "--port-retries=0", f"--IdentityProvider.token={token}",
           f"--ServerApp.root_dir={root}"]
    if front_end == "jupyterlab":
        cmd += [f"--LabApp.workspaces_dir={tmp / 'workspaces'}", "--LabApp.news_url=None",
                "--LabApp.extension_manager=readonly",
                "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate"]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # containers and CI often run as root
    proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # its own process group: kernels die with it
    url = f"http://127.0.0.1:{port}"

    def shutdown():
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)
                proc.wait(15)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the kernel, if it outlived the server
        except ProcessLookupError:
            pass
        proc.wait(10)
        log.close()

    try:
        deadline = time.monotonic() + 90
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"{front_end} exited:\n" + (tmp / "jupyterlab.log").read_text()[-3000:])
            try:
                with urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{front_end} did not answer within 90 s:\n"
                                   + (tmp / "jupyterlab.log").read_text()[-3000:])
            time.sleep(0.3)
        yield url, token, tmp / "jupyterlab.log", front_end
    finally:
        shutdown()


@pytest.fixture(scope="module")
def browser():
    """Headless Debian Chromium driven by Playwright (None if Chromium is missing)."""
    if not CHROMIUM.exists():
        yield None
        return
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


def _api(url: str, token: str, path: str):
    """GET from the Jupyter Server REST API; returns the decoded JSON."""
    req = urllib.request.Request(f"{url}{path}", headers={"Authorization": f"token {token}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read().decode())


def _wait_for_kernel(page, url: str, token: str, *, timeout: float = 90) -> str:
    """Wait until the notebook's kernel is started, connected and idle; return its id.

    The toolbar's execution indicator says "idle" before any kernel exists, so it cannot
    tell alone. Running all cells while JupyterLab is still starting the kernel loses the
    run or makes JupyterLab swap kernels (seen in CI); hence wait for the server to report
    one idle kernel with a connection and the page to agree, twice, a second apart.
    """
    indicator = page.locator(".jp-Notebook-ExecutionIndicator").first
    deadline, previous = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        if _accept_kernel_dialog(page):
            print("JupyterLab asked which kernel to start; accepted Python 3")
        kernels = _api(url, token, "/api/kernels")
        ok = (len(kernels) == 1 and kernels[0]["connections"] >= 1
              and kernels[0]["execution_state"] == "idle"
              and indicator.count() and indicator.get_attribute("data-status") == "idle")
        current = kernels[0]["id"] if ok else None
        if current and current == previous:
            return current
        previous = current
        time.sleep(1.0)
    raise AssertionError(f"the notebook's kernel was not ready within {timeout:.0f} s:\n"
                         + _server_state(url, token))


def _server_state(url: str, token: str) -> str:
    """Sessions and kernels as the server sees them, for failure messages."""
    try:
        return json.dumps({"sessions": _api(url, token, "/api/sessions"),
                           "kernels": _api(url, token, "/api/kernels")}, indent=1)
    except Exception as e:  # the server itself may be the problem
        return f"(could not ask the server: {e})"


def _accept_kernel_dialog(page) -> bool:
    """If JupyterLab asks which kernel to start, accept its (Python 3) suggestion."""
    dialog = page.locator(".jp-Dialog", has_text="Select Kernel")
    if dialog.count() and dialog.first.is_visible():
        dialog.locator(".jp-Dialog-button.jp-mod-accept").click()
        dialog.first.wait_for(state="detached", timeout=10_000)
        return True
    return False


def _run_all_cells(page) -> None:
    """Run > Run All Cells from the menu; the command palette as a fallback."""
    try:
        page.locator(".lm-MenuBar-itemLabel", has_text=re.compile(r"^Run$")).click(timeout=10_000)
        page.locator(".lm-Menu-itemLabel", has_text=re.compile(r"^Run All Cells$")).click(
            timeout=10_000)
        return
    except Exception:
        page.keyboard.press("Escape")
    page.locator(".jp-Notebook").first.click()
    page.keyboard.press("Control+Shift+C")
    page.keyboard.type("Run All Cells")
    page.locator(".lm-CommandPalette-item", has_text="Run All Cells").first.click(timeout=10_000)


def _errors(page) -> list[str]:
    """Tracebacks, and messages in any dashboard but the exercises' one (notebook 03's fourth
    dashboard), whose Exercise 2 makes a run diverge on purpose."""
    texts = page.locator('.jp-RenderedText[data-mime-type="application/vnd.jupyter.stderr"]'
                         ).all_inner_texts()
    out = [t for t in texts if "Traceback" in t or "Error" in t]
    boards = page.locator(".fedlab-dashboard")
    for i in range(boards.count()):
        if i != EXERCISES:
            out += [t for t in boards.nth(i).locator(".fedlab-message").all_inner_texts() if t.strip()]
    return out


def test_notebook_03_dashboard_trains_live_in_the_browser(lab, browser):
    if browser is None or lab is None:
        pytest.fail(CHROMIUM_MISSING, pytrace=False)
    url, token, log, front_end = lab
    screenshot = ARTIFACTS / f"browser-{front_end}-03-fedavg-live.png"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    console_errors: list[str] = []
    page.on("console", lambda m: console_errors.append(m.text) if m.type == "error" else None)
    try:
        page.goto(f"{url}{FRONT_ENDS[front_end][1]}{NOTEBOOK}?token={token}", wait_until="domcontentloaded")
        page.locator(".jp-NotebookPanel .jp-Cell").first.wait_for(timeout=60_000)
        kernel_id = _wait_for_kernel(page, url, token)
        _run_all_cells(page)
        # the first code cell gets its execution number once the kernel ran it
        page.wait_for_function(
            """() => /\\[\\d+\\]/.test(
                document.querySelector('.jp-CodeCell .jp-InputArea-prompt')?.textContent || '')""",
            timeout=60_000, polling=500)
        kernels = [k["id"] for k in _api(url, token, "/api/kernels")]
        assert kernels == [kernel_id], f"the kernel changed under the page: {_server_state(url, token)}"

        dash = page.locator(".fedlab-dashboard")
        dash.first.wait_for(timeout=60_000)
        # all cells done: every code cell shows an execution number, none shows [*]
        page.wait_for_function(
            """() => {
                const p = [...document.querySelectorAll('.jp-CodeCell .jp-InputArea-prompt')];
                return p.length > 0 && p.every(e => /\\[\\d+\\]/.test(e.textContent));
            }""", timeout=120_000, polling=500)
        assert not _errors(page), _errors(page)
        assert dash.count() == 5, f"notebook 03 shows 5 dashboards, the page has {dash.count()}"
        # Exercise 2's reference lr diverges, and the exercises' dashboard says so
        assert "diverged" in dash.nth(EXERCISES).locator(".fedlab-message").inner_text()

        board = dash.last                       # the dashboard shown at the end ("your turn")
        board.scroll_into_view_if_needed()
        status, plot = board.locator(".fedlab-status"), board.locator("img.fedlab-plot")
        run, stop = board.locator("button.fedlab-run"), board.locator("button.fedlab-stop")
        assert run.is_enabled() and not stop.is_enabled()
        assert "Ready" in status.inner_text()

        run.click()
        seen: list[tuple[int, str]] = []       # (round, image src) each time either changes
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            m = ROUND.search(status.inner_text())
            src = plot.get_attribute("src") or ""
            if m and (not seen or (int(m.group(1)), src) != seen[-1]):
                seen.append((int(m.group(1)), src))
            rounds_seen = sorted({r for r, _ in seen if r > 0})
            if len(rounds_seen) >= 3 and len({s for r, s in seen if r > 0}) >= 3:
                break
            time.sleep(0.1)
        assert not stop.is_disabled() or "Finished" in status.inner_text(), status.inner_text()
        rounds_seen = [r for r, _ in seen]
        assert rounds_seen == sorted(rounds_seen), seen
        srcs = [s for r, s in seen if r > 0]
        assert len(set(r for r, _ in seen if r > 0)) >= 3, f"status never passed round 3: {seen}"
        assert len(set(srcs)) >= 3, f"the plot was not redrawn 3 times: {len(set(srcs))}"

        stop.click()
        page.wait_for_function(
            "el => /Stopped|Finished/.test(el.textContent)", arg=status.element_handle(),
            timeout=30_000)
        stopped_text = status.inner_text()
        stopped_at = int(ROUND.search(stopped_text).group(1))
        total = int(ROUND.search(stopped_text).group(2))
        time.sleep(2.0)
        assert int(ROUND.search(status.inner_text()).group(1)) == stopped_at, "still training"
        assert stopped_at < total, f"the run was not stopped: {stopped_text}"
        assert run.is_enabled() and stop.is_disabled()
        assert not _errors(page), _errors(page)

        board.scroll_into_view_if_needed()
        page.screenshot(path=str(screenshot))
        print(f"{front_end}: browser saw rounds {sorted(set(rounds_seen))}, {len(set(srcs))} plot images, "
              f"stopped: {stopped_text!r}")
    except Exception:
        try:
            page.screenshot(path=str(screenshot))
        except Exception:
            pass
        print(f"{front_end} log tail:\n" + Path(log).read_text()[-3000:])
        print("browser console errors:", console_errors[-20:])
        print("server state:", _server_state(url, token))
        raise
    finally:
        context.close()
