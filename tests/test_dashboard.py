"""The Ray dashboard of a running search, opened in headless Chromium: token sign-in, trial actors shown."""
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest

import browser

pytestmark = pytest.mark.slow
from helpers import ENV


def test_the_dashboard_signs_in_with_the_token_and_shows_trial_actors(tmp_path):
    browser.require_browser()
    proc = subprocess.Popen([sys.executable, "-m", "search.run", "--space", "smoke", "--storage-path", str(tmp_path),
                             "--name", "dash", "--num-samples", "40", "--concurrency", "1"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV,
                            start_new_session=True)
    lines: queue.Queue = queue.Queue()
    threading.Thread(target=lambda: [lines.put(ln) for ln in proc.stdout], daemon=True).start()
    out: list[str] = []
    try:
        url, deadline = None, time.time() + 120
        # until the URL and a first live line ("[   3s]   1/40 trial ...": trials are running)
        while time.time() < deadline and not (url and any(re.match(r"\[\s*\d+s\]", ln) for ln in out)):
            try:
                out.append(lines.get(timeout=1))
            except queue.Empty:
                continue
            m = re.search(r"Ray dashboard at (http://\S+)", out[-1])
            url = url or (m and m.group(1))
        assert url, "".join(out)[-3000:]
        assert any("ray get-auth-token" in ln for ln in out)  # how to sign in is printed next to the URL
        # authentication stays on: the API refuses a request without the token
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"{url}/api/actors", timeout=10)
        assert refused.value.code == 401
        ray_cli = os.path.join(os.path.dirname(sys.executable), "ray")
        token = subprocess.run([ray_cli, "get-auth-token"], capture_output=True, text=True, env=ENV,
                               timeout=60).stdout.strip().splitlines()[-1]
        with browser.page() as page:
            page.goto(f"{url}/#/actors")
            box = page.get_by_placeholder("Enter your authentication token")
            box.wait_for(timeout=30_000)  # the sign-in dialog, as a user sees it first
            box.fill(token)
            # once the server has checked the token (a request of its own) the page reloads itself with the
            # token's cookie set: waited for, else a navigation of ours may race that reload
            with page.expect_navigation(timeout=60_000):
                page.keyboard.press("Enter")
            page.wait_for_load_state("networkidle")
            total, deadline = 0, time.time() + 90
            # a few trials in (their lines printed), for a screenshot worth looking at; with the worker
            # process reused from trial to trial the one slot stays one actor
            while time.time() < deadline and sum("trial " in ln for ln in out) < 3:
                try:
                    out.append(lines.get(timeout=1))
                except queue.Empty:
                    pass
            while total < 1 and time.time() < deadline:
                page.goto(f"{url}/#/actors")
                page.get_by_text("ImplicitFunc").first.wait_for(timeout=30_000)  # Tune's function-trainable actor
                time.sleep(1)
                body = page.inner_text("body")
                m = re.search(r"TOTAL\s*x\s*(\d+)", body, re.I)
                total = int(m.group(1)) if m else 0
            shot = browser.screenshot(page, "dashboard.png")
        assert "Authentication Token Required" not in body
        assert "train_trial" in body  # the actor's repr names our trainable
        assert total >= 1 and re.search(r"ALIVE|DEAD", body), body[:2000]
        from PIL import Image

        with Image.open(shot) as png:  # the page as drawn: the viewport, not a blank or one-colour frame
            assert png.size == (1400, 900)
            assert len(png.convert("RGB").getcolors(maxcolors=1 << 20)) > 50
    finally:
        proc.send_signal(signal.SIGINT)  # ends the search as Ctrl-C does
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
