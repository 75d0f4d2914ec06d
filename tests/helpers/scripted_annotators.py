"""Scripted annotators: each opens the A/B annotation page in headless Chromium and answers every pair with key
presses (1 / 2 / 3, Enter), by a fixed rule with noise: per aspect the verdict of the stand-in judge's text features
(`tests.helpers.openai_server.heuristic_verdict`), replaced by a random answer with probability `--noise`. What they
answer shows that the page and the report work, not which system is better.

    python -m tests.helpers.scripted_annotators --url http://127.0.0.1:7860/ --annotators alice bob --noise 0.25
"""

import argparse
import random
import tempfile
import threading
import time
from typing import Dict, List

from tests.helpers.browser import AnnotationPage, chromium_driver
from tests.helpers.openai_server import heuristic_verdict

KEYS = {"1": "1", "2": "2", "equal": "3"}


def annotate(url: str, name: str, aspects: List[str], noise: float, seed: int, report: Dict[str, dict]) -> None:
    """Answer every open pair as `name`, in the browser; `report[name]` gets the counts and seconds per pair."""
    from selenium.webdriver.common.keys import Keys

    rng = random.Random(f"{seed}:{name}")
    driver = chromium_driver(tempfile.mkdtemp(prefix="annotator-"))
    started, answered = time.monotonic(), 0
    try:
        page = AnnotationPage(driver, f"{url}?annotator={name}")
        while "all " not in page.text("#progress"):
            progress = page.text("#progress")
            position = int(progress.split("pair ")[1].split(" of ")[0])
            dialogue, first, second = page.text("#dialogue"), page.response(1), page.response(2)
            answers = [heuristic_verdict(a, first, second, dialogue) if rng.random() >= noise
                       else rng.choice(["1", "2", "equal"]) for a in aspects]
            page.keys(*(KEYS[a] for a in answers))
            page.wait(lambda d: [page.checked(a) for a in aspects] == answers)
            page.keys(Keys.ENTER)
            page.wait(lambda d: f"Saved pair {position}." in page.text("#status"))
            answered += 1
    finally:
        driver.quit()
    report[name] = {"pairs": answered, "seconds": round(time.monotonic() - started, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--annotators", nargs="+", required=True)
    parser.add_argument("--aspects", nargs="+", default=["empathy", "relevance", "fluency"])
    parser.add_argument("--noise", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    report: Dict[str, dict] = {}
    threads = [threading.Thread(target=annotate, args=(args.url, n, args.aspects, args.noise, args.seed, report))
               for n in args.annotators]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for name in args.annotators:
        print(name, report.get(name, "failed"))


if __name__ == "__main__":
    main()
