"""The gallery in headless Chromium (Selenium + chromedriver): real DOM, real keyboard events.

Needs ``chromium``, ``chromium-driver`` and the ``selenium`` package (``.ci/install-browser``
installs them); skipped, saying which is missing, only when they cannot be found or started.
"""

from __future__ import annotations

import json

import pytest

from navcuda.cli import main
from navcuda.gallery import build_gallery, set_digest
from navcuda.io.directions import DirectionSet


@pytest.fixture
def browser(chromium, tmp_path):
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    driver = chromium(
        "1280,900",
        prefs={"download.default_directory": str(downloads), "download.prompt_for_download": False},
    )
    driver.execute_cdp_cmd(
        "Browser.setDownloadBehavior", {"behavior": "allow", "downloadPath": str(downloads)}
    )
    driver.downloads = downloads
    return driver


def _wait(predicate, timeout=15.0, what="condition"):
    from selenium.webdriver.support.wait import WebDriverWait

    return WebDriverWait(None, timeout, poll_frequency=0.05).until(lambda _: predicate(), what)


def _order(driver):
    return driver.execute_script(
        "return [...document.querySelectorAll('#cards .card')].map(c => +c.dataset.index)"
    )


def _visible(driver):
    return driver.execute_script(
        "return [...document.querySelectorAll('#cards .card')]"
        ".filter(c => !c.hidden && c.offsetParent !== null).map(c => +c.dataset.index)"
    )


def _active(driver):
    return driver.execute_script(
        "const a = document.activeElement; return a.id || (a.dataset && a.dataset.index) || "
        "a.tagName"
    )


def test_gallery_in_chromium(browser, tmp_path, tiny_generator, svd_set, scores):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    dirs = svd_set.save(tmp_path / "dirs.nav")
    index = build_gallery(
        tiny_generator,
        svd_set,
        tmp_path / "site",
        seeds=[0, 1],
        ts=[-1, 0, 1],
        scores=scores,
        source=dirs,
    )
    d = browser
    d.get(index.as_uri())
    # Every card renders with its images loaded.
    _wait(
        lambda: d.execute_script(
            "return [...document.images].every(i => i.complete && i.naturalWidth > 0)"
        ),
        what="images",
    )
    assert d.execute_script("return document.images.length") == 8
    assert _order(d) == [0, 1, 2, 3] and _visible(d) == [0, 1, 2, 3]
    assert d.find_element(By.ID, "count").text == "showing 4 of 4"
    # The name that looks like markup is shown as text.
    assert d.find_element(By.ID, "name-3").get_attribute("value") == svd_set.names[3]
    assert d.execute_script("return document.querySelectorAll('#cards script').length") == 0

    # Sorting: by a score (missing last), descending, and by the singular value.
    Select(d.find_element(By.ID, "sort-key")).select_by_value("score:disentanglement")
    assert _order(d) == [0, 2, 1, 3]
    d.find_element(By.ID, "sort-dir").click()
    assert _order(d) == [1, 2, 0, 3]
    Select(d.find_element(By.ID, "sort-key")).select_by_value("value")
    assert _order(d) == [0, 1, 2, 3]  # singular values come sorted descending
    d.find_element(By.ID, "sort-dir").click()
    assert _order(d) == [3, 2, 1, 0]
    Select(d.find_element(By.ID, "sort-key")).select_by_value("index")
    assert _order(d) == [0, 1, 2, 3]

    # Keyboard: "/" focuses the filter; typing filters; Enter goes to the first match.
    body = d.find_element(By.TAG_NAME, "body")
    body.send_keys("/")
    assert _active(d) == "filter"
    d.switch_to.active_element.send_keys("sv1")
    assert _visible(d) == [1]
    assert d.find_element(By.ID, "count").text == "showing 1 of 4"
    d.switch_to.active_element.send_keys(Keys.ENTER)
    assert _active(d) == "card-1"
    # Enter edits the name, Enter again saves and returns to the card; g marks it good.
    d.switch_to.active_element.send_keys(Keys.ENTER)
    assert _active(d) == "name-1"
    name = d.switch_to.active_element
    name.send_keys(Keys.CONTROL, "a")
    name.send_keys("Smile", Keys.ENTER)
    assert _active(d) == "card-1"
    d.switch_to.active_element.send_keys("g")
    card = d.find_element(By.ID, "card-1")
    assert card.get_attribute("data-mark") == "good"
    assert (
        card.find_element(By.CSS_SELECTOR, "[data-mark=good]").get_attribute("aria-pressed")
        == "true"
    )
    # Tab goes from the card into its name field, then to its mark buttons.
    d.switch_to.active_element.send_keys(Keys.TAB)
    assert _active(d) == "name-1"
    d.switch_to.active_element.send_keys(Keys.TAB)
    assert d.switch_to.active_element.get_attribute("data-mark") == "good"
    # The filter matches names: the renamed card no longer matches "sv1".
    body.send_keys("/")
    d.switch_to.active_element.send_keys(Keys.ESCAPE)  # clears the filter, focuses a card
    assert _visible(d) == [0, 1, 2, 3] and _active(d) == "card-0"
    d.switch_to.active_element.send_keys("j", "j", "b")  # card 2 marked bad
    assert d.find_element(By.ID, "card-2").get_attribute("data-mark") == "bad"
    d.switch_to.active_element.send_keys("n")
    assert d.find_element(By.ID, "card-2").get_attribute("data-mark") == ""
    d.switch_to.active_element.send_keys("b")
    marks = Select(d.find_element(By.ID, "mark-filter"))
    marks.select_by_value("good")
    assert _visible(d) == [1]
    marks.select_by_value("unmarked")
    assert _visible(d) == [0, 3]
    # Triage: marking a card that the "unmarked" view then hides moves on to the next one.
    d.execute_script("document.getElementById('card-0').focus()")
    d.switch_to.active_element.send_keys("g")
    assert _visible(d) == [3] and _active(d) == "card-3"
    assert d.find_element(By.ID, "count").text == "showing 1 of 4"
    marks.select_by_value("all")
    d.find_element(By.CSS_SELECTOR, "#card-0 .mark[data-mark='']").click()  # mouse: unmark
    assert d.find_element(By.ID, "card-0").get_attribute("data-mark") == ""
    filt = d.find_element(By.ID, "filter")
    filt.send_keys("smi")
    assert _visible(d) == [1]
    filt.send_keys(Keys.ESCAPE)

    # Names and marks survive a reload (localStorage).
    d.refresh()
    _wait(lambda: d.find_element(By.ID, "name-1").get_attribute("value") == "Smile", what="reload")
    assert d.find_element(By.ID, "card-2").get_attribute("data-mark") == "bad"

    shot = tmp_path / "gallery.png"
    assert d.save_screenshot(str(shot)) and shot.stat().st_size > 1000

    # Export: the button downloads names.json.
    d.find_element(By.ID, "export").click()
    exported = _wait(
        lambda: (d.downloads / "names.json").is_file() and (d.downloads / "names.json"),
        what="the names.json download",
    )
    data = _wait(lambda: _try_json(exported), what="a complete names.json")
    assert data["set"]["directions"] == set_digest(svd_set)
    assert data["set"]["file"] == "dirs.nav" and data["set"]["count"] == 4
    assert data["names"]["1"] == {"name": "Smile", "mark": "good"}
    assert data["names"]["2"] == {"name": "sv2", "mark": "bad"}
    assert data["names"]["3"] == {"name": svd_set.names[3], "mark": None}
    assert data == d.execute_script("return window.navcudaGallery.namesObject()")

    # ... which `navcuda name` merges into the set, where the name finds the direction.
    assert main(["name", str(dirs), str(exported)]) == 0
    named = DirectionSet.load(dirs)
    assert named.by_name("SMILE").meta["set_index"] == 1
    assert named.extra["marks"] == {"1": "good", "2": "bad"}


def _try_json(path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
