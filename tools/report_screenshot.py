"""Save a screenshot of the top of a seelike study report, in headless Chromium (for the README).

    python tools/report_screenshot.py runs/demo/report/index.html docs/report.png --width 1280 --height 1000

Needs selenium (``pip install selenium``) and Chromium with its driver (Debian: ``apt-get install
chromium chromium-driver``). The tests open the report with the same :func:`chromium` driver.
"""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path
from typing import Any

FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync", "--hide-scrollbars")


def find_chromium() -> tuple[str, str] | None:
    """The paths of the Chromium browser and of chromedriver, or None when either is missing."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (browser, driver) if browser and driver else None


def chromium(width: int = 1280, height: int = 1000) -> Any:
    """A headless Chromium selenium driver with a window of ``width`` × ``height`` CSS pixels (quit it when done)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    found = find_chromium()
    if found is None:
        raise RuntimeError("chromium and chromedriver are needed: apt-get install chromium chromium-driver")
    options = webdriver.ChromeOptions()
    options.binary_location = found[0]
    for flag in (*FLAGS, f"--window-size={width},{height}"):
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(found[1]), options=options)


def screenshot(report: Path, out: Path, width: int = 1280, height: int = 1000) -> Path:
    """Open ``report`` and save the visible top of the page as the PNG ``out``."""
    if not report.is_file():
        raise FileNotFoundError(f"no report at {report}; run `seelike study` first")
    driver = chromium(width, height)
    try:
        driver.set_window_size(width, height)
        driver.get(report.resolve().as_uri())
        out.parent.mkdir(parents=True, exist_ok=True)
        if not driver.save_screenshot(str(out)):
            raise RuntimeError(f"chromium could not write {out}")
    finally:
        driver.quit()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Screenshot the top of a seelike study report (headless Chromium).")
    parser.add_argument("report_html", type=Path, help="the report's index.html")
    parser.add_argument("out_png", type=Path, help="where to save the PNG")
    parser.add_argument("--width", type=int, default=1280, help="window width in CSS pixels (default 1280)")
    parser.add_argument("--height", type=int, default=1000, help="window height in CSS pixels (default 1000)")
    args = parser.parse_args(argv)
    try:
        path = screenshot(args.report_html, args.out_png, args.width, args.height)
    except (OSError, RuntimeError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
