"""The review page in a real headless Chromium (Selenium + Debian's chromium-driver): load the page,
review three images, and find the three labels in the store. Skipped, with the reason, where the
browser or its driver is not installed (`apt-get install -y chromium chromium-driver`)."""

from __future__ import annotations

import csv
import shutil
import socket
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install 'defectmine[serve]')")
pytest.importorskip("selenium", reason="selenium is not installed (pip install 'defectmine[dev]')")

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
CHROMEDRIVER = shutil.which("chromedriver") or "/usr/bin/chromedriver"
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()),
                       reason="no headless browser: needs /usr/bin/chromium and /usr/bin/chromedriver "
                              "(apt-get install -y chromium chromium-driver)"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def service(tmp_path):
    """A fitted tiny run served by uvicorn on 127.0.0.1 in a thread, its queue holding three images of
    --review-folder (two defects, one normal)."""
    import uvicorn
    from typer.testing import CliRunner

    from defectmine.cli import app as cli_app
    from defectmine.data import write_synthetic_folder
    from defectmine.serve import ServeSettings, create_app

    data = write_synthetic_folder(tmp_path / "data", n_normal=20, n_anomalous=8, size=32)
    fit = CliRunner().invoke(cli_app, ["fit", "--data", str(data), "--out", str(tmp_path / "run"), "--image-size",
                                       "32", "--epochs", "1", "-p", "width=8", "--device", "cpu", "--quiet"])
    assert fit.exit_code == 0, fit.output
    queue = tmp_path / "to_review"
    queue.mkdir()
    for name in ("anomalous/spot/spot_001.png", "anomalous/scratch/scratch_000.png", "normal/normal_000.png"):
        shutil.copy(data / name, queue / Path(name).name)
    settings = ServeSettings(review_dir=tmp_path / "review", review_folder=queue)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(tmp_path / "run", settings), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started, "uvicorn did not start within 30 s"
    yield f"http://127.0.0.1:{port}", tmp_path / "review" / "labels.csv"
    server.should_exit = True
    thread.join(timeout=10)


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def test_review_three_images_in_a_browser_and_find_the_labels_in_the_store(service, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    url, labels_csv = service
    browser.get(f"{url}/review")
    cards = browser.find_elements(By.CSS_SELECTOR, ".card")
    assert len(cards) == 3
    scores = [float(card.get_attribute("data-score")) for card in cards]
    assert scores == sorted(scores, reverse=True)  # highest score first
    for card in cards:  # every overlay image really loaded
        image = card.find_element(By.TAG_NAME, "img")
        assert browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image) == 32
    reviewer = browser.find_element(By.ID, "reviewer")
    reviewer.clear()
    reviewer.send_keys("ana")
    wanted, names = {}, {}
    for card, label in zip(cards, ("spot", "normal", "scratch")):
        card.find_element(By.CSS_SELECTOR, f'button.correct[data-label="{label}"]').click()
        wanted[card.get_attribute("data-id")] = label
        names[card.find_element(By.TAG_NAME, "b").text] = label
    WebDriverWait(browser, 10).until(
        lambda b: all(c.get_attribute("data-label") for c in b.find_elements(By.CSS_SELECTOR, ".card")))
    for card in browser.find_elements(By.CSS_SELECTOR, ".card"):
        assert "reviewed" in card.get_attribute("class")
        assert card.find_element(By.CSS_SELECTOR, ".status").text == f"labelled {wanted[card.get_attribute('data-id')]} by ana"
    with open(labels_csv, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 3 and all(Path(r["image_id"]).parent.name == "to_review" for r in rows)
    assert {Path(r["image_id"]).name: (r["label"], r["reviewer"]) for r in rows} == {
        name: (label, "ana") for name, label in names.items()}
    browser.get(f"{url}/review")  # reloaded: the labels are kept with the queue
    assert {c.get_attribute("data-label") for c in browser.find_elements(By.CSS_SELECTOR, ".card")} == set(wanted.values())
