"""The studio in headless Chromium (Selenium + chromedriver, as the gallery's browser tests): the
test starts the server on a free localhost port with the bundled model, moves a slider, checks
the shown image against ``navcuda edit --recipe`` of the exported recipe, uploads a 64x64 PNG,
exports a GIF, resets and undoes, and stops the server.

``NAVCUDA_STUDIO_SCREENSHOT=docs/studio.png`` also saves the README's screenshot.
"""

from __future__ import annotations

import io
import os
import time
import urllib.request

import numpy as np
import pytest
from PIL import Image

from navcuda.cli import main

pytest.importorskip("gradio", reason="the studio needs gradio (pip install 'navcuda[studio]')")


@pytest.fixture
def browser(chromium):
    return chromium("1280,1000")


@pytest.fixture
def server(tmp_path):
    """The studio on the bundled model, on a free port; stopped after the test."""
    from navcuda.models.default import load_default
    from navcuda.recipe import DirectionSource
    from navcuda.studio import Studio
    from navcuda.studio.app import free_port, launch

    studio = Studio(
        load_default(), [DirectionSource.bundled()], tmp_path / "exports", projection_steps=10
    )
    port = free_port()
    app = launch(studio, port=port, block=False)
    try:
        yield studio, f"http://127.0.0.1:{port}/"
    finally:
        app.close()


def _wait(predicate, timeout=60.0, what="condition"):
    from selenium.webdriver.support.wait import WebDriverWait

    return WebDriverWait(None, timeout, poll_frequency=0.05).until(lambda _: predicate(), what)


def _src(driver, elem_id):
    return driver.execute_script(
        f"const i = document.querySelector('#{elem_id} img'); return i ? i.src : null"
    )


def _pixels(url) -> np.ndarray:
    with urllib.request.urlopen(url, timeout=30) as r:
        return np.asarray(Image.open(io.BytesIO(r.read())).convert("RGB"))


def _status(driver) -> str:
    return driver.find_element("id", "status").text


def test_studio_in_chromium(browser, server, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from navcuda.models.default import load_default_directions

    studio, url = server
    assert url.startswith("http://127.0.0.1:")
    browser.get(url)
    first = _wait(lambda: _src(browser, "edited"), what="the first image")
    before = _pixels(first)
    # Move the 'eye size' slider (its number box, as a user types a value).
    eye = f"#dir-{load_default_directions().names.index('eye size')} input[type=number]"
    box = browser.find_element(By.CSS_SELECTOR, eye)
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys("2.5", Keys.ENTER)
    _wait(lambda: "eye size +2.50x" in _status(browser), what="the status")
    # the image shown now: typing renders "2" and "2." first, and the server may drop their files
    shown = _pixels(_src(browser, "edited"))
    assert np.abs(shown.astype(int) - before).mean() > 0.5  # the image changed
    # Export the recipe: navcuda edit --recipe renders the shown image, bit for bit.
    browser.find_element(By.ID, "export-recipe").click()
    recipe = _wait(lambda: next(studio.export_dir.glob("*.recipe.json"), None), what="recipe")
    out = tmp_path / "cli.png"
    assert main(["edit", "--recipe", str(recipe), "-o", str(out)]) == 0
    assert np.array_equal(np.asarray(Image.open(out).convert("RGB")), shown)
    # Upload a 64x64 photo: it is projected, and the original shows the projection.
    photo = tmp_path / "photo.png"
    Image.fromarray(np.tile(np.linspace(0, 255, 64, dtype=np.uint8)[:, None, None], (1, 64, 3)))\
        .save(photo)  # fmt: skip
    original = _src(browser, "original")
    browser.find_element(By.CSS_SELECTOR, "#photo input[type=file]").send_keys(str(photo))
    _wait(lambda: "photo.png (projected)" in _status(browser), what="the projection")
    assert _wait(lambda: (s := _src(browser, "original")) != original and s)
    # Export a GIF of the edit's sweep.
    browser.find_element(By.ID, "export-gif").click()
    gif = _wait(lambda: next(studio.export_dir.glob("*.gif"), None), what="the GIF")
    assert Image.open(gif).n_frames > 1
    # Reset: the photo without the edit (the slider back at 0); undo: the edit again.
    edited_photo = _src(browser, "edited")
    browser.find_element(By.ID, "reset").click()
    _wait(lambda: _status(browser).endswith("(projected) | no edit"), what="the reset")
    _wait(lambda: float(box.get_attribute("value")) == 0, what="the slider at 0")
    plain = _wait(lambda: (s := _src(browser, "edited")) != edited_photo and s, what="the image")
    assert not np.array_equal(_pixels(plain), _pixels(edited_photo))
    browser.find_element(By.ID, "undo").click()
    _wait(lambda: "eye size +2.50x" in _status(browser), what="the undo")
    _wait(lambda: float(box.get_attribute("value")) == 2.5, what="the slider at 2.5")
    redone = _wait(lambda: (s := _src(browser, "edited")) != plain and s, what="the image")
    assert np.array_equal(_pixels(redone), _pixels(edited_photo))
    # A file that is not an image: a named error in the UI, the state unchanged.
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    shown_before = _src(browser, "edited")
    browser.find_element(By.CSS_SELECTOR, "#photo input[type=file]").send_keys(str(bad))
    _wait(lambda: "PhotoError" in browser.page_source, what="the error message")
    assert _src(browser, "edited") == shown_before
    shot = os.environ.get("NAVCUDA_STUDIO_SCREENSHOT")
    if shot:
        browser.refresh()
        _wait(lambda: _src(browser, "edited"), what="the image")
        box = browser.find_element(By.CSS_SELECTOR, eye)
        box.send_keys(Keys.CONTROL, "a")
        box.send_keys("3", Keys.ENTER)
        _wait(lambda: "eye size +3.00x" in _status(browser), what="the status")
        time.sleep(0.5)
        browser.save_screenshot(shot)
