"""Debian's Firefox ESR driven over WebDriver BiDi, straight from Python.

Playwright drives only its own patched Firefox builds, which cannot be downloaded here;
a stock Firefox speaks the W3C WebDriver BiDi protocol itself (a WebSocket opened with
``--remote-debugging-port``). BiDi is plain JSON commands and events, so a small client on
``websockets`` (already a dependency) is all it takes: no Node driver, no second process.

    async with launch_firefox(tmp_path) as firefox:
        tab = await firefox.new_tab(url)            # its own user context: own storage
        await tab.fill("Handle (email or phone)", "ann@example.com")
        await tab.click("Sign in")
        await tab.wait_for("window.visavis.store.get().status === 'online'")
        frames = await tab.eval("window.visavis.stats()")   # promises are awaited
        tab.errors                                  # console errors, uncaught exceptions

Each tab lives in its own BiDi user context (a container with its own cookies,
localStorage and IndexedDB), so each is its own visavis device, as a Playwright context
is. Clicks and typing go through ``input.performActions``: real pointer and key events,
with the user activation they carry. The profile's prefs give a fake camera and
microphone without a prompt, keep Firefox off the network and let ICE use loopback.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import signal
import subprocess
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

FIREFOX = "/usr/bin/firefox-esr"

#: user.js of every test profile. Firefox's remote agent adds its own recommended prefs
#: for automation on top (no updates, no telemetry, no first-run pages).
PREFS: dict[str, bool | int | str] = {
    # fake camera (a moving colour pattern) and microphone (a tone), no permission prompt
    "media.navigator.streams.fake": True,
    "media.navigator.permission.disabled": True,
    "media.autoplay.default": 0,
    "media.autoplay.block-webaudio": False,
    # ICE on loopback, real host addresses rather than mDNS names
    "media.peerconnection.ice.loopback": True,
    "media.peerconnection.ice.obfuscate_host_addresses": False,
    # nothing leaves the machine
    "network.captive-portal-service.enabled": False,
    "network.connectivity-service.enabled": False,
    "network.dns.disablePrefetch": True,
    "network.http.speculative-parallel-limit": 0,
    "network.proxy.type": 0,
    "browser.safebrowsing.malware.enabled": False,
    "browser.safebrowsing.phishing.enabled": False,
    "browser.safebrowsing.downloads.enabled": False,
    "browser.safebrowsing.blockedURIs.enabled": False,
    "browser.region.network.url": "",
    "browser.region.update.enabled": False,
    "services.settings.server": "http://127.0.0.1:9/none",
    "extensions.getAddons.cache.enabled": False,
    "extensions.update.enabled": False,
    "datareporting.policy.dataSubmissionEnabled": False,
    "toolkit.telemetry.enabled": False,
    "app.normandy.enabled": False,
    "browser.ping-centre.telemetry": False,
    "browser.newtabpage.enabled": False,
    "browser.startup.page": 0,
    "browser.shell.checkDefaultBrowser": False,
    "toolkit.startup.max_resumed_crashes": -1,
}

#: WebDriver's codes for the modifier keys (W3C WebDriver, "keyboard actions").
KEYS = {"SHIFT": "\ue008", "CONTROL": "\ue009", "ALT": "\ue00a", "META": "\ue03d"}

LISTENING = re.compile(r"WebDriver BiDi listening on (ws://\S+)")
# Bounds for a loaded 2-core machine: Firefox's cold start there takes 5-20 s.
START_TIMEOUT = 60.0
COMMAND_TIMEOUT = 60.0


class BidiError(Exception):
    """A BiDi command failed (its ``error`` and ``message``), or the page threw."""


@dataclass
class Tab:
    """One top-level browsing context in its own user context: a visavis device."""

    firefox: Firefox
    context: str
    user_context: str
    errors: list[str] = field(default_factory=list)

    async def navigate(self, url: str) -> None:
        await self.firefox.command(
            "browsingContext.navigate", {"context": self.context, "url": url, "wait": "complete"}
        )

    async def set_viewport(self, width: int, height: int) -> None:
        await self.firefox.command(
            "browsingContext.setViewport",
            {"context": self.context, "viewport": {"width": width, "height": height}},
        )

    async def _evaluate(self, expression: str) -> dict[str, Any]:
        reply = await self.firefox.command(
            "script.evaluate",
            {
                "expression": expression,
                "target": {"context": self.context},
                "awaitPromise": True,
                "userActivation": False,
            },
        )
        if reply.get("type") == "exception":
            details = reply.get("exceptionDetails", {})
            raise BidiError(f"page threw: {details.get('text')} (evaluating {expression[:200]})")
        result: dict[str, Any] = reply["result"]
        return result

    async def eval(self, expression: str) -> Any:
        """The value of a JavaScript expression (a promise is awaited), through JSON."""
        wrapped = f"(async () => JSON.stringify(await ({expression})) ?? 'null')()"
        result = await self._evaluate(wrapped)
        return json.loads(result["value"])

    async def wait_for(self, expression: str, within: float = 30.0, what: str = "") -> Any:
        """Poll ``expression`` (awaited) until it is truthy; return its value. Bounded."""
        deadline = time.monotonic() + within
        value: Any = None
        while True:
            with contextlib.suppress(BidiError):
                value = await self.eval(expression)
                if value:
                    return value
            if time.monotonic() > deadline:
                raise AssertionError(f"{what or expression} not true within {within} s: {value!r}")
            await asyncio.sleep(0.25)

    async def _element(self, finder: str, description: str, within: float) -> dict[str, Any]:
        """A reference to the first visible element ``finder`` returns (polled)."""
        deadline = time.monotonic() + within
        while True:
            result = await self._evaluate(f"({FINDERS})().{finder}")
            if result.get("type") == "node":
                return {"sharedId": result["sharedId"]}
            if time.monotonic() > deadline:
                raise AssertionError(f"no visible {description} within {within} s")
            await asyncio.sleep(0.25)

    async def click(
        self, name: str, within: float = 30.0, exact: bool = True, nth: int = 0
    ) -> None:
        """Click the visible button (or tab, link) named ``name`` with the pointer: the
        ``nth`` of those with that name (-1: the last)."""
        element = await self._element(
            f"button({json.dumps(name)}, {json.dumps(exact)}, {nth})", f"button {name!r}", within
        )
        await self._pointer_click(element)

    async def fill(self, label: str, text: str, within: float = 30.0) -> None:
        """Focus the field labelled ``label`` (a click), clear it and type ``text``."""
        element = await self._element(f"field({json.dumps(label)})", f"field {label!r}", within)
        await self._pointer_click(element)
        await self.firefox.command(
            "script.callFunction",
            {
                "functionDeclaration": "(el) => el.select()",
                "arguments": [element],
                "target": {"context": self.context},
                "awaitPromise": False,
            },
        )
        keys: list[dict[str, str]] = [{"type": "keyDown", "value": "\ue003"}]  # backspace
        keys.append({"type": "keyUp", "value": "\ue003"})
        for char in text:
            keys += [{"type": "keyDown", "value": char}, {"type": "keyUp", "value": char}]
        await self.firefox.command(
            "input.performActions",
            {"context": self.context, "actions": [{"type": "key", "id": "kb", "actions": keys}]},
        )

    async def press(self, key: str, *modifiers: str) -> None:
        """Press ``key`` (one character) while holding ``modifiers`` (WebDriver key codes,
        e.g. ``ALT``)."""
        held = [KEYS[m] for m in modifiers]
        keys = [{"type": "keyDown", "value": k} for k in held]
        keys += [{"type": "keyDown", "value": key}, {"type": "keyUp", "value": key}]
        keys += [{"type": "keyUp", "value": k} for k in reversed(held)]
        await self.firefox.command(
            "input.performActions",
            {"context": self.context, "actions": [{"type": "key", "id": "kb", "actions": keys}]},
        )

    async def _pointer_click(self, element: dict[str, Any]) -> None:
        origin = {"type": "element", "element": element}
        actions = [
            {"type": "pointerMove", "x": 0, "y": 0, "origin": origin},
            {"type": "pointerDown", "button": 0},
            {"type": "pointerUp", "button": 0},
        ]
        await self.firefox.command(
            "input.performActions",
            {
                "context": self.context,
                "actions": [{"type": "pointer", "id": "mouse", "actions": actions}],
            },
        )

    async def text(self) -> str:
        """The page's visible text (for diagnostics and text checks)."""
        text: str = await self.eval("document.body.innerText")
        return text

    async def close(self) -> None:
        await self.firefox.command("browsingContext.close", {"context": self.context})
        await self.firefox.command("browser.removeUserContext", {"userContext": self.user_context})


# In-page element finders: visible elements by accessible name (aria-label, else the text
# that is not aria-hidden), as a person or a screen reader finds them.
FINDERS = r"""() => {
  const visible = (el) =>
    el.getClientRects().length > 0 && getComputedStyle(el).visibility !== "hidden";
  const squash = (text) => (text || "").replace(/\s+/g, " ").trim();
  const text = (node) =>
    node.nodeType === Node.TEXT_NODE ? node.data
      : node.nodeType !== Node.ELEMENT_NODE || node.getAttribute("aria-hidden") === "true" ? ""
      : [...node.childNodes].map(text).join(" ");
  const name = (el) => squash(el.getAttribute("aria-label") || text(el));
  const labelOf = (el) => {
    const byId = el.id && document.querySelector(`label[for="${CSS.escape(el.id)}"]`);
    return squash(el.getAttribute("aria-label") || (byId || el.closest("label"))?.textContent);
  };
  const shown = (selector) => [...document.querySelectorAll(selector)].filter(visible);
  return {
    button(wanted, exact, nth) {
      const all = shown("button, [role=button], [role=tab], a[href]");
      const found = all.filter((el) => (exact ? name(el) === wanted : name(el).includes(wanted)));
      return found.at(nth) ?? null;
    },
    field(wanted) {
      const all = shown("input, textarea, select");
      const exact = all.find((el) => labelOf(el) === wanted);
      return exact || all.find((el) => labelOf(el).startsWith(wanted)) || null;
    },
  };
}"""


class Firefox:
    """A running headless Firefox ESR and its BiDi session."""

    def __init__(self, process: subprocess.Popen[bytes], socket: ClientConnection) -> None:
        self.process = process
        self.socket = socket
        self.ids = itertools.count(1)
        self.pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.tabs: dict[str, Tab] = {}
        self.errors: list[str] = []  # console errors from realms outside any tab (workers)
        self.reader = asyncio.get_running_loop().create_task(self._read())

    @property
    def version(self) -> str:
        return str(self.capabilities.get("browserVersion", "?"))

    async def _read(self) -> None:
        try:
            async for raw in self.socket:
                message = json.loads(raw)
                if "id" in message and message["id"] in self.pending:
                    future = self.pending.pop(message["id"])
                    if not future.done():
                        future.set_result(message)
                elif message.get("method") == "log.entryAdded":
                    self._log(message["params"])
        finally:
            for future in self.pending.values():
                if not future.done():
                    future.set_exception(BidiError("Firefox closed the BiDi connection"))

    def _log(self, entry: Mapping[str, Any]) -> None:
        if entry.get("level") != "error":
            return
        text = f"{entry.get('type')}: {entry.get('text')}"
        tab = self.tabs.get(entry.get("source", {}).get("context", ""))
        (tab.errors if tab else self.errors).append(text)

    async def command(self, method: str, params: Mapping[str, Any]) -> dict[str, Any]:
        """Send one command and wait (bounded) for its answer."""
        ident = next(self.ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self.pending[ident] = future
        await self.socket.send(json.dumps({"id": ident, "method": method, "params": params}))
        try:
            reply = await asyncio.wait_for(future, COMMAND_TIMEOUT)
        finally:
            self.pending.pop(ident, None)
        if reply.get("type") == "error":
            raise BidiError(f"{method}: {reply.get('error')}: {reply.get('message')}")
        result: dict[str, Any] = reply["result"]
        return result

    async def start_session(self) -> None:
        reply = await self.command(
            "session.new",
            {"capabilities": {"alwaysMatch": {"unhandledPromptBehavior": {"default": "ignore"}}}},
        )
        self.capabilities: dict[str, Any] = reply.get("capabilities", {})
        await self.command("session.subscribe", {"events": ["log.entryAdded"]})

    async def new_tab(self, url: str, width: int = 1000, height: int = 700) -> Tab:
        """A fresh device: a new user context (own storage) with one tab opened at ``url``."""
        user_context = (await self.command("browser.createUserContext", {}))["userContext"]
        context = (
            await self.command(
                "browsingContext.create", {"type": "tab", "userContext": user_context}
            )
        )["context"]
        tab = Tab(self, context, user_context)
        self.tabs[context] = tab
        await tab.set_viewport(width, height)
        await tab.navigate(url)
        return tab

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.command("browser.close", {}), 10)
        with contextlib.suppress(Exception):
            await self.socket.close()
        self.reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.reader


def write_profile(profile: Path, prefs: Mapping[str, bool | int | str]) -> None:
    profile.mkdir(parents=True, exist_ok=True)
    lines = [f"user_pref({json.dumps(k)}, {json.dumps(v)});" for k, v in prefs.items()]
    (profile / "user.js").write_text("\n".join(lines) + "\n")


async def _listening_url(process: subprocess.Popen[bytes], log: list[str]) -> str:
    """Read Firefox's stderr until it says where BiDi listens (bounded)."""
    assert process.stderr is not None
    stream = process.stderr
    loop = asyncio.get_running_loop()
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        line = await asyncio.wait_for(
            loop.run_in_executor(None, stream.readline), deadline - time.monotonic()
        )
        if not line:
            break
        text = line.decode(errors="replace").rstrip()
        log.append(text)
        found = LISTENING.search(text)
        if found:
            return found.group(1)
    raise RuntimeError("Firefox did not open WebDriver BiDi:\n" + "\n".join(log[-30:]))


def _drain(process: subprocess.Popen[bytes], log: list[str]) -> None:
    """Keep reading stderr so Firefox never blocks on a full pipe (last lines kept)."""
    assert process.stderr is not None
    for line in process.stderr:
        log.append(line.decode(errors="replace").rstrip())
        del log[:-200]


@contextlib.asynccontextmanager
async def launch_firefox(
    workdir: Path, prefs: Mapping[str, bool | int | str] | None = None
) -> AsyncIterator[Firefox]:
    """A headless Firefox ESR with a fresh profile in ``workdir``, closed on exit."""
    process = _spawn(workdir, prefs)
    log: list[str] = []
    firefox: Firefox | None = None
    drain: asyncio.Future[None] | None = None
    try:
        url = await _listening_url(process, log)
        drain = asyncio.get_running_loop().run_in_executor(None, _drain, process, log)
        socket = await connect(
            url + "/session",
            proxy=None,
            ping_interval=None,
            max_size=64 * 2**20,
            open_timeout=START_TIMEOUT,
        )
        firefox = Firefox(process, socket)
        await firefox.start_session()
        yield firefox
    finally:
        if firefox is not None:
            await firefox.close()
        _stop(process)
        if drain is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(drain, 10)


def _spawn(workdir: Path, prefs: Mapping[str, bool | int | str] | None) -> subprocess.Popen[bytes]:
    """Start Firefox on a fresh profile; it prints where BiDi listens on stderr."""
    if not os.path.exists(FIREFOX):
        raise RuntimeError(f"{FIREFOX} is missing: scripts/setup installs firefox-esr")
    profile = workdir / "profile"
    write_profile(profile, {**PREFS, **(prefs or {})})
    env = {
        **os.environ,
        "HOME": str(workdir),  # caches and crash reports stay in the test's directory
        "MOZ_CRASHREPORTER_DISABLE": "1",
        "MOZ_HEADLESS": "1",
    }
    for proxy in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY"):
        env.pop(proxy, None)
    command = [FIREFOX, "--headless", "--no-remote", "--profile", str(profile)]
    return subprocess.Popen(
        [*command, "--remote-debugging-port", "0", "about:blank"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
        start_new_session=True,
    )


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Firefox and its content processes (its own session): TERM, then KILL."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
    else:
        # the parent is gone; its content processes may linger in its group
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
