"""The demo in a real headless Chromium (selenium + Debian's chromium / chromium-driver): type a prompt, click
Generate, wait for the image, and check it equals the pipeline's own output for the same seed and settings.

A screenshot is saved to tests/artifacts/demo.png (gitignored); with LDM_HUB_UPDATE_SCREENSHOT=1 it is also
copied to docs/demo.png, the README's picture. `.ci/setup-browser.sh` installs what this test needs.
"""

from __future__ import annotations

import io
import os
import shutil
import socket
from pathlib import Path

import httpx
import numpy as np
import PIL.Image
import pytest
import torch

from ldm_hub.demo import DemoSettings, build_demo, launch, load_pipelines

REPO = Path(__file__).resolve().parents[1]
ARTIFACTS = REPO / "tests" / "artifacts"
CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser"))), None)
CHROMEDRIVER = shutil.which("chromedriver")
CHROME_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1000",
]
PROMPT = "a red circle and a blue square"
TIMEOUT_S = 120

pytestmark = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="headless browser test: Chromium or chromedriver is not installed (Debian packages `chromium` and "
    "`chromium-driver`; run `bash .ci/setup-browser.sh`)",
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served_app():
    """The app as `ldm-hub demo` serves it on a fresh install: the shipped default models."""
    pipes, names = load_pipelines(None)
    demo = build_demo(
        pipes, model_names={task: f"{name.split('/')[-1]} (shipped default)" for task, name in names.items()}
    )
    port = free_port()
    launch(demo, host="127.0.0.1", port=port, prevent_thread_lock=True, quiet=True)
    text_pipe = next(p for p in pipes.values() if "text" in p.tasks)
    yield f"http://127.0.0.1:{port}/", text_pipe
    demo.close()


@pytest.fixture
def browser(tmp_path):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in CHROME_FLAGS + [f"--user-data-dir={tmp_path / 'chromium-profile'}"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=CHROMEDRIVER))
    driver.set_page_load_timeout(TIMEOUT_S)
    yield driver
    driver.quit()


def test_type_prompt_click_generate_get_the_pipelines_image(served_app, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait

    url, pipe = served_app
    wait = WebDriverWait(browser, TIMEOUT_S)
    browser.get(url)
    prompt = wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, "#text-prompt textarea")))
    prompt.send_keys(PROMPT)
    browser.find_element(By.CSS_SELECTOR, "#text-generate").click()
    image = wait.until(EC.visibility_of_element_located((By.CSS_SELECTOR, "#text-gallery img")))
    src = image.get_attribute("src")
    assert src.startswith(url) and src.endswith(".png"), src

    png = httpx.get(src, timeout=30)
    assert png.status_code == 200
    shown = np.asarray(PIL.Image.open(io.BytesIO(png.content)).convert("RGB"))
    settings = DemoSettings()
    pipe.set_progress_bar_config(disable=True)
    guidance = settings.default_text_guidance if pipe.guidance_supported else 1.0
    expected = pipe(
        PROMPT,
        num_inference_steps=settings.default_steps,
        guidance_scale=guidance,
        generator=torch.Generator().manual_seed(0),
    ).images[0]
    diff = int(np.abs(shown.astype(int) - np.asarray(expected).astype(int)).max())
    print(f"max abs pixel difference, browser vs pipeline (uint8): {diff}")
    assert shown.shape == np.asarray(expected).shape and diff == 0
    seed = browser.find_element(By.CSS_SELECTOR, "#text-seed input")
    assert seed.get_attribute("value") == "0"

    ARTIFACTS.mkdir(exist_ok=True)
    shot = ARTIFACTS / "demo.png"
    assert browser.save_screenshot(str(shot))
    assert PIL.Image.open(shot).size[0] > 0
    if os.environ.get("LDM_HUB_UPDATE_SCREENSHOT") == "1":
        (REPO / "docs").mkdir(exist_ok=True)
        shutil.copyfile(shot, REPO / "docs" / "demo.png")
