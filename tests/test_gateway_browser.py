"""The browser page in a real headless Chromium (Debian's ``chromium``, driven by playwright).

Each step saves a screenshot under ``tests/artifacts/`` when it fails.
"""

from __future__ import annotations

import json
import shutil
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio

from trio_session._cli import demo_agent
from trio_session.server import open_gateway

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(__file__).parent / "artifacts"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium"),
]


def _timeline(base: str, token: str, session_id: str) -> list[dict[str, Any]]:
    request = urllib.request.Request(
        f"{base}sessions/{session_id}", headers={"authorization": f"Bearer {token}"}
    )
    with urllib.request.urlopen(request) as response:
        state = json.loads(response.read())
    assert state["current_execution"] is None
    timeline: list[dict[str, Any]] = state["timeline"]
    return timeline


def _drive(url: str, screenshot: Path | None) -> None:
    from playwright.sync_api import expect, sync_playwright

    base, token = url.split("?token=")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1100, "height": 720})

        @contextmanager
        def step(name: str) -> Iterator[None]:
            try:
                yield
            except BaseException:
                page.screenshot(path=str(ARTIFACTS / f"browser-{name}.png"))
                raise

        message = page.get_by_label("Message")
        send = page.get_by_role("button", name="Send")
        assistant = page.locator(".msg.assistant")

        def say(text: str) -> None:
            message.fill(text)
            send.click()

        with step("load"):
            page.goto(url)
            expect(message).to_be_visible()
            assert "token" not in page.url  # kept in sessionStorage, not in the address bar

        with step("send"):
            say("what is 6 * 7?")
            expect(assistant.last).to_contain_text("6 * 7 = 42.", timeout=20_000)
            session_id = page.evaluate("decodeURIComponent(location.hash.slice(1))")
            assert session_id
            expect(page.locator("#sessions a")).to_have_count(1)

        with step("stream"):
            say("tell me a story")
            streaming = page.locator(".msg.assistant.streaming .text")
            expect(streaming).to_be_visible(timeout=20_000)
            first = streaming.inner_text()
            expect(streaming).not_to_have_text(first, timeout=20_000)
            # Typing while the agent works: the message joins the run.
            say("and what time is it?")
            expect(page.locator(".msg.user").last).to_have_text("and what time is it?")
            expect(page.locator(".msg.assistant.streaming")).to_have_count(0, timeout=30_000)
            expect(page.get_by_role("button", name="Abort")).to_be_disabled(timeout=30_000)
            expect(assistant.last).to_contain_text("It is", timeout=30_000)

        with step("approve"):
            say("remember to buy milk")
            card = page.locator(".card")
            expect(card).to_be_visible(timeout=20_000)
            expect(card.get_by_label("Arguments")).to_have_value(
                json.dumps({"action": "add", "text": "buy milk"}, indent=2)
            )
            card.get_by_role("button", name="Approve").click()
            expect(card).to_have_count(0, timeout=20_000)
            expect(assistant.last).to_contain_text("Done.", timeout=20_000)

        with step("deny"):
            say("remember to call mum")
            card = page.locator(".card")
            expect(card).to_be_visible(timeout=20_000)
            card.get_by_label("Reason").fill("not now")
            card.get_by_role("button", name="Deny").click()
            expect(assistant.last).to_contain_text("OK, I did not run notes", timeout=20_000)

        with step("abort"):
            say("tell me a story")
            expect(page.locator(".msg.assistant.streaming")).to_be_visible(timeout=20_000)
            page.get_by_role("button", name="Abort").click()
            expect(assistant.last).to_contain_text("Stopped.", timeout=20_000)
            expect(page.get_by_role("button", name="Abort")).to_be_disabled()

        with step("reload"):
            say("tell me a story")
            streaming = page.locator(".msg.assistant.streaming .text")
            expect(streaming).to_be_visible(timeout=20_000)
            first = streaming.inner_text()
            expect(streaming).not_to_have_text(first, timeout=20_000)
            page.reload()
            expect(page.locator(".msg.assistant.streaming")).to_be_visible(timeout=20_000)
            expect(page.get_by_role("button", name="Abort")).to_be_disabled(timeout=30_000)
            timeline = _timeline(base, token, session_id)
            answers = [
                "".join(b["text"] for b in m["content"] if b["type"] == "text")
                for m in timeline
                if m["role"] == "assistant"
            ]
            shown = [t.replace("Stopped.", "") for t in assistant.all_inner_texts()]
            story = answers[-1]
            assert shown[-1].startswith(story)  # tool chips may follow the text
            assert shown[-1].count(story[:40]) == 1
            expect(assistant).to_have_count(len(answers))
            users = page.locator(".msg.user").all_inner_texts()
            assert users == [m["content"][0]["text"] for m in timeline if m["role"] == "user"]

        if screenshot is not None:
            page.screenshot(path=str(screenshot))
        browser.close()


async def test_the_page_in_chromium() -> None:
    async with open_gateway(demo_agent(delay=0.02), port=0) as gateway:
        await trio.to_thread.run_sync(partial(_drive, gateway.url, ARTIFACTS / "browser-done.png"))
