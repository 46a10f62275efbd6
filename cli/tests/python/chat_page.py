"""The chat page of `liger serve` in a real browser (Debian's chromium, headless, through
selenium and chromedriver), run by cli/tests/serve_page.rs:

    chat_page.py BASE_URL API_KEY SCREENSHOT.png

The page asks for the key (the server needs one), a question is typed, streamed text must
arrive, Stop is pressed while it streams, and the server must have freed the sequence.
"""
import json
import sys
import time
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support import expected_conditions as EC
from selenium.webdriver.support.ui import WebDriverWait

base, key, screenshot = sys.argv[1], sys.argv[2], sys.argv[3]

options = webdriver.ChromeOptions()
options.binary_location = "/usr/bin/chromium"
for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--window-size=1000,800"):
    options.add_argument(flag)
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
wait = WebDriverWait(driver, 60)


def health():
    with urllib.request.urlopen(base + "/health", timeout=10) as r:
        return json.load(r)


try:
    driver.get(base + "/")
    # The server needs a key: the page asks for it.
    key_box = wait.until(EC.visibility_of_element_located((By.ID, "key")))
    key_box.send_keys(key)
    driver.find_element(By.ID, "key-save").click()
    wait.until(lambda d: d.find_element(By.ID, "model").text != "")
    print("model:", driver.find_element(By.ID, "model").text)

    system = driver.find_element(By.ID, "system")
    driver.find_element(By.TAG_NAME, "summary").click()
    system.clear()
    system.send_keys("You are a storyteller who writes long stories.")

    box = driver.find_element(By.ID, "input")
    box.send_keys("Write a long story about a dragon who learns to bake bread.")
    box.send_keys(Keys.ENTER)

    # Streamed text arrives piece by piece.
    answer = lambda d: d.find_elements(By.CSS_SELECTOR, "#answer span")
    wait.until(lambda d: answer(d) and len(answer(d)[0].text) > 0)
    first = answer(driver)[0].text
    wait.until(lambda d: not answer(d) or len(answer(d)[0].text) > len(first) + 20)
    stop = driver.find_element(By.ID, "stop")
    streaming = stop.is_enabled()
    print("streamed so far:", repr(driver.find_element(By.CSS_SELECTOR, ".turn.assistant span").text[:120]))
    assert streaming, "the answer ended before Stop could be pressed"
    stop.click()
    wait.until(lambda d: "tokens/s" in d.find_element(By.ID, "stats").text)
    stats = driver.find_element(By.ID, "stats").text
    print("stats:", stats)
    assert "(stopped)" in stats, stats
    assert driver.find_element(By.ID, "send").is_enabled()
    # The server frees the sequence once the browser has closed the stream.
    deadline = time.time() + 5
    while health()["active"] != 0:
        assert time.time() < deadline, f"the stopped answer still runs: {health()}"
        time.sleep(0.1)

    # A second question in the same conversation works after a stop.
    box.send_keys("Now a one-line poem about bread.")
    box.send_keys(Keys.ENTER)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".turn.assistant")) == 2)
    WebDriverWait(driver, 240).until(lambda d: d.find_element(By.ID, "send").is_enabled() and not answer(d))
    print("second answer:", repr(driver.find_elements(By.CSS_SELECTOR, ".turn.assistant span")[1].text[:120]))
    driver.save_screenshot(screenshot)
    print("ok")
finally:
    driver.quit()
