"""Headless Chromium for the dashboard's tests, and logging in to the dashboard.

Browser driver: Selenium with Debian's ``chromium-driver``. The driver comes from the same
Debian source package as ``chromium``, so the two always match, and nothing is downloaded at
run time (Playwright would need its own browser build, or a pinned protocol version matched
by hand to the system Chromium). Skipped, with the reason, only where no browser can run;
under CI (``CI`` set) a missing browser fails instead (tests/support/needs.py), so a lost
install step shows.
"""

from __future__ import annotations

import shutil
import struct
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tests.support.needs import require

WIDTH, HEIGHT = 1400, 1000
WAIT = 30.0


@contextmanager
def chromium(folder: Path, size: tuple[int, int] = (WIDTH, HEIGHT)) -> Iterator[Any]:
    """A headless Chromium (a Selenium WebDriver) whose profile and driver log are in
    `folder`; quit on exit."""
    try:
        from selenium import webdriver
        from selenium.common.exceptions import WebDriverException
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        webdriver = None
    require(webdriver is not None, "selenium is not installed (pip install -e '.[test]')")
    chromium_path, driver_path = shutil.which("chromium"), shutil.which("chromedriver")
    require(
        bool(chromium_path and driver_path),
        "Debian's chromium and chromium-driver are not installed",
    )
    options = webdriver.ChromeOptions()
    options.binary_location = chromium_path
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        f"--window-size={size[0]},{size[1]}",
        "--force-device-scale-factor=1",
        f"--user-data-dir={folder / 'chromium-profile'}",
    ):
        options.add_argument(arg)
    try:
        driver = webdriver.Chrome(
            service=Service(driver_path, log_output=str(folder / "driver.log")), options=options
        )
    except WebDriverException as exc:
        require(False, f"headless chromium cannot start here: {exc.msg}")
    try:
        yield driver
    finally:
        driver.quit()


def waiting(driver: Any, timeout: float = WAIT) -> Any:
    """A WebDriverWait that polls every 0.1 s and retries a lookup of a replaced element."""
    from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(
        driver,
        timeout,
        poll_frequency=0.1,
        ignored_exceptions=[StaleElementReferenceException, NoSuchElementException],
    )


def css(driver: Any, selector: str) -> Any:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.CSS_SELECTOR, selector)


def log_in(driver: Any, endpoint: str, key: str, secret: str, kind: str = "api-key") -> None:
    """Open the dashboard and log in through its form (an API key, or a user's password
    with ``kind="password"``); returns once the navigation shows."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC

    driver.get(f"{endpoint}/dashboard")
    wait = waiting(driver)
    wait.until(EC.visibility_of_element_located((By.ID, "login-form")))
    driver.find_element(By.CSS_SELECTOR, f"input[name=kind][value={kind}]").click()
    driver.find_element(By.ID, "login-name").send_keys(key)
    driver.find_element(By.ID, "login-secret").send_keys(secret)
    driver.find_element(By.ID, "login-submit").click()
    wait.until(EC.visibility_of_element_located((By.ID, "nav")))


# -- a PNG reader, enough for Chromium's screenshots (8-bit RGB/RGBA, not interlaced) --------


def read_png(data: bytes) -> tuple[int, int, int, bytes]:
    """(width, height, bytes per pixel, unfiltered pixel rows concatenated)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", None
    while pos < len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        chunk = data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", chunk)
        elif kind == b"IDAT":
            idat += chunk
        elif kind == b"IEND":
            break
    assert header is not None, "no IHDR"
    width, height, depth, color, _, _, interlace = header
    assert depth == 8 and color in (2, 6) and interlace == 0, header
    bpp = 3 if color == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    out = bytearray()
    prev = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        if kind == 1:
            for i in range(bpp, stride):
                line[i] = (line[i] + line[i - bpp]) & 0xFF
        elif kind == 2:
            line = bytearray((a + b) & 0xFF for a, b in zip(line, prev, strict=True))
        elif kind == 3:
            for i in range(stride):
                left = line[i - bpp] if i >= bpp else 0
                line[i] = (line[i] + ((left + prev[i]) >> 1)) & 0xFF
        elif kind == 4:
            for i in range(stride):
                a = line[i - bpp] if i >= bpp else 0
                b, c = prev[i], prev[i - bpp] if i >= bpp else 0
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                pred = a if pa <= pb and pa <= pc else b if pb <= pc else c
                line[i] = (line[i] + pred) & 0xFF
        out += line
        prev = line
    return width, height, bpp, bytes(out)
