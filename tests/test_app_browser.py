"""The studio in a real browser (Debian's chromium through Playwright, headless, localhost only): pick the
embedded base and motion module, type a prompt, Generate, and a playable video appears; switch the motion module
and generate again: the pipeline is not rebuilt. Saves a screenshot (also to $APP_SCREENSHOT when set).
Then video to video: upload a clip, set the strength, pick a ControlNet following the clip's edges, Generate: the
clip and the control maps play, the recipe has the video and the strength. Then image to video: upload a first
frame, pick a SparseCtrl encoder and an IP-Adapter with its image, Generate: a clip plays and its recipe names both
pictures. Then the training flow on the same open page: upload two clips, train a 2-step MotionLoRA, and the new
LoRA is in the Generate tab's LoRA list without a reload and makes a clip."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from app_support import (
    CONTROLNETS,
    IP_ADAPTER,
    SPARSECTRL,
    launch_studio,
    status_builds,
    write_clips,
    write_controlnet,
    write_ip_adapter,
    write_picture,
    write_sparsectrl,
)

CHROMIUM = Path("/usr/bin/chromium")
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--disable-default-apps", "--mute-audio"]
PLAYABLE = """(previous) => {
    const v = document.querySelector('#gen-video video');
    return !!v && v.readyState >= 2 && v.duration > 0 && v.currentSrc !== previous && !!v.currentSrc;
}"""
PROMPT = "a red circle moving right"
LORA = "trained/browser-lora/motion_lora.safetensors"

pytestmark = pytest.mark.skipif(not CHROMIUM.exists(), reason="Debian chromium is not installed (/usr/bin/chromium)")


@pytest.fixture(scope="module")
def server(shapes_env, tmp_path_factory):
    models = tmp_path_factory.mktemp("models")
    write_controlnet(models / CONTROLNETS[0])
    write_sparsectrl(models / SPARSECTRL)  # untrained: the test needs an encoder, not a good one
    write_ip_adapter(models / IP_ADAPTER)
    demo, url, studio = launch_studio(models, tmp_path_factory.mktemp("out"))
    yield url, studio
    demo.close()


@pytest.fixture(scope="module")
def page(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        page = browser.new_page(viewport={"width": 1400, "height": 1050})
        page.set_default_timeout(int(os.environ.get("APP_BROWSER_TIMEOUT_MS", 300_000)))
        yield page
        browser.close()


def pick(page, elem_id: str, value: str) -> None:
    """Choose ``value`` in a gradio dropdown the way a person does: open it, click the option."""
    page.click(f"#{elem_id} input")
    page.locator(f'[role="option"][aria-label="{value}"]').first.click()
    page.wait_for_function(f"() => document.querySelector('#{elem_id} input').value === '{value}'")


def generate_and_wait(page, previous: str) -> str:
    page.click("#gen-button")
    page.wait_for_function(PLAYABLE, arg=previous)
    return page.eval_on_selector("#gen-video video", "v => v.currentSrc")


def status_text(page) -> str:
    return page.inner_text("#studio-status")


def test_generate_in_the_browser_then_swap_without_rebuild(server, page, tmp_path):
    url, studio = server
    page.goto(url)
    page.wait_for_selector("#gen-button")
    pick(page, "gen-base", "shapes-base")
    pick(page, "gen-motion", "shapes-motion")
    page.fill("#gen-prompt textarea", PROMPT)
    page.fill("#gen-steps input", "6")
    first = generate_and_wait(page, "")
    assert status_builds(status_text(page)) == 1
    duration = page.eval_on_selector("#gen-video video", "v => v.duration")
    assert duration > 0.5  # 8 frames at 8 fps

    pick(page, "gen-motion", "none")  # hot-swap on change
    page.wait_for_function("() => document.querySelector('#studio-status').innerText.includes('motion: none')")
    second = generate_and_wait(page, first)
    assert second != first
    pick(page, "gen-motion", "shapes-motion")
    third = generate_and_wait(page, second)
    text = status_text(page)
    assert status_builds(text) == 1, text  # three clips, two swaps, one pipeline build
    assert "generations: 3" in text and "motion: shapes-motion" in text
    assert studio.builds == 1
    assert third.endswith(".mp4")
    assert '"seed"' in page.inner_text("#gen-recipe")

    shot = tmp_path / "studio.png"
    page.evaluate("window.scrollTo(0, 0)")
    page.wait_for_timeout(500)
    page.screenshot(path=str(shot))
    assert shot.stat().st_size > 10_000
    if os.environ.get("APP_SCREENSHOT"):
        Path(os.environ["APP_SCREENSHOT"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, os.environ["APP_SCREENSHOT"])


def open_page(page, url: str) -> str:
    """The page (opened when this test runs on its own) and the clip playing now ("" for none)."""
    if not page.url.startswith(url):
        page.goto(url)
        page.wait_for_selector("#gen-button")
        page.fill("#gen-prompt textarea", PROMPT)
        page.fill("#gen-steps input", "2")
    return page.eval_on_selector("#gen-video video", "v => v.currentSrc") if page.query_selector(
        "#gen-video video") else ""


def test_video_to_video_in_the_browser(server, page, tmp_path):
    """Upload a clip, strength 0.6, a ControlNet on the clip's canny edges: the clip and the maps play."""
    url, studio = server
    previous = open_page(page, url)
    page.get_by_text("Video input (video to video, ControlNets)").click()
    clip = write_clips(tmp_path / "clips", 1)[0]
    page.set_input_files("#gen-input input[type=file]", str(clip))
    page.wait_for_selector("#gen-input video")  # uploaded: the clip is shown
    page.fill("#gen-strength input[type=number]", "0.6")
    page.press("#gen-strength input[type=number]", "Enter")
    pick(page, "gen-controlnet-1", CONTROLNETS[0])  # loads it into the running pipeline
    page.wait_for_function("() => document.querySelector('#studio-status').innerText.includes('edges-canny')")
    generate_and_wait(page, previous)
    page.wait_for_function("() => { const v = document.querySelector('#gen-maps-view video'); "
                           "return !!v && v.readyState >= 2 && v.duration > 0; }")
    recipe = page.inner_text("#gen-recipe")
    for line in ('"video": {', f'"path": "{clip.name}"', '"strength": 0.6', '"preprocessor": "canny"'):
        assert line in recipe, recipe
    assert studio.builds == 1 and studio.loaded["controlnets"] == [CONTROLNETS[0]]
    pick(page, "gen-controlnet-1", "(none)")  # unloaded again: the next flows are text to video
    page.wait_for_function("() => document.querySelector('#studio-status').innerText.includes('ControlNets: none')")
    page.click("#gen-input button[aria-label='Clear']")
    page.get_by_text("Video input (video to video, ControlNets)").click()


def test_image_to_video_in_the_browser(server, page, tmp_path):
    """Upload a first frame, pick a SparseCtrl encoder, an IP-Adapter and its image, Generate: a clip plays, and the
    recipe names both pictures."""
    url, studio = server
    previous = open_page(page, url)
    area = "Image input (first / last frame, IP-Adapter)"
    page.get_by_text(area).click()
    picture = write_picture(tmp_path / "red-circle.png")
    page.set_input_files("#gen-first-frame input[type=file]", str(picture))
    page.wait_for_selector("#gen-first-frame img")  # uploaded: the picture is shown
    pick(page, "gen-sparsectrl", SPARSECTRL)
    pick(page, "gen-ip-adapter", IP_ADAPTER)
    style = write_picture(tmp_path / "blue-square.png", "square", "blue")
    page.set_input_files("#gen-ip-image input[type=file]", str(style))
    page.wait_for_selector("#gen-ip-image img")
    generate_and_wait(page, previous)
    recipe = page.inner_text("#gen-recipe")
    for text in ('"image": {', picture.name, '"sparsectrl": {', '"ip_adapter": {', style.name):
        assert text in recipe, recipe
    assert str(tmp_path) not in recipe and studio.builds == 1
    status = status_text(page)
    assert f"SparseCtrl: {SPARSECTRL}" in status and f"IP-Adapter: {IP_ADAPTER}" in status, status
    pick(page, "gen-sparsectrl", "(automatic)")  # the next flows are text to video
    pick(page, "gen-ip-adapter", "(none)")
    for elem_id in ("gen-first-frame", "gen-ip-image"):
        page.click(f"#{elem_id} button[aria-label='Remove Image']")
        page.wait_for_function(f"() => !document.querySelector('#{elem_id} img')")
    page.get_by_text(area).click()


def test_train_in_the_browser_then_generate_with_the_new_lora(server, page, tmp_path):
    """Upload → train → the LoRA in the Generate dropdowns of the same page (no reload) → a clip with it."""
    import time

    url, studio = server
    if not page.url.startswith(url):  # run on its own: open the page (with the other test it is open already)
        page.goto(url)
    page.wait_for_selector("#gen-button")
    assert LORA not in studio.library.names("lora")
    t0 = time.perf_counter()
    page.get_by_role("tab", name="Train").click()
    clips = write_clips(tmp_path / "clips", 2)
    page.set_input_files("#train-clips input[type=file]", [str(c) for c in clips])
    for clip in clips:  # uploaded: listed with its size
        page.wait_for_selector(f'#train-clips td.filename[aria-label="{clip.name}"]')
    page.fill("#train-captions textarea", "a red square moving right")
    page.locator("#train-name").locator("input, textarea").first.fill("browser-lora")
    page.fill("#train-steps input", "2")
    page.click("#train-start")
    page.wait_for_function("() => /finished|failed|cancelled/.test(document.querySelector('#train-progress')"
                           ".innerText)")
    trained = time.perf_counter() - t0
    progress = page.inner_text("#train-progress")
    log = page.input_value("#train-log textarea")
    assert "finished" in progress and "step 2/2" in progress, progress + "\n" + log
    assert LORA in progress and "nothing the library recognises" not in progress
    assert "train motion_lora" in log and "2/2" in log, log  # the trainer's progress lines

    page.get_by_role("tab", name="Generate").click()
    page.get_by_text("LoRAs (motion and spatial; they stack)").click()
    previous = page.eval_on_selector("#gen-video video", "v => v.currentSrc") if page.query_selector(
        "#gen-video video") else ""
    pick(page, "gen-lora-1", LORA)  # offered without a reload: the finished job refreshed the dropdowns
    if page.input_value("#gen-prompt textarea") == "":
        page.fill("#gen-prompt textarea", PROMPT)
        page.fill("#gen-steps input", "6")
    generate_and_wait(page, previous)
    total = time.perf_counter() - t0
    recipe = page.inner_text("#gen-recipe")
    assert "motion_lora.safetensors" in recipe, recipe
    assert studio.loaded["loras"] == {LORA: 1.0}
    print(f"browser training flow: trained in {trained:.1f} s, clip with the LoRA after {total:.1f} s")
