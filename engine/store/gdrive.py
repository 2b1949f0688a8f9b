"""Google Drive downloads: the large-file confirmation flow, and quota/permission errors.

`https://drive.google.com/uc?export=download&id=ID` answers a small file directly. For a large file
it answers an HTML page ("can't scan this file for viruses") whose form or link carries a
confirmation token (`confirm=...`, sometimes a `uuid`); the file comes from following it, with the
cookies the first answer set. When too many people downloaded the file recently, Drive answers a
"quota exceeded" page instead, and a private file answers a sign-in or "you need access" page or
HTTP 401/403. Those cannot be fixed by retrying: the message says how to fetch the file in a browser
and import it with `gencbm download NAME --from-file PATH` (exit code 3).
"""

from __future__ import annotations

import html
import os
import re
import urllib.parse
from html.parser import HTMLParser
from pathlib import Path

from engine.errors import ArtifactMissingError, GencbmError
from engine.store.download import Info, Progress, RetryPolicy, Transfer, UnavailableError, fetch_url, make_opener

DRIVE_ENDPOINT = "https://drive.google.com/uc"  # GENCBM_GDRIVE_ENDPOINT replaces it (tests, proxies)

_QUOTA = re.compile(r"too many users have viewed or downloaded|quota (?:has been )?exceeded|download quota", re.I)
_ACCESS = re.compile(r"you need access|request access|you need permission|sign in|servicelogin|accounts\.google\.com", re.I)
_NOT_FOUND = re.compile(r"(?:file|page) (?:does not exist|not found)|sorry, the file you have requested does not exist", re.I)


class DriveUnavailableError(ArtifactMissingError):
    """Drive will not serve the file now (quota, permissions, deleted): import it with --from-file."""


def endpoint() -> str:
    return os.environ.get("GENCBM_GDRIVE_ENDPOINT") or DRIVE_ENDPOINT


def drive_url(file_id: str, base: str | None = None) -> str:
    return f"{base or endpoint()}?{urllib.parse.urlencode({'export': 'download', 'id': file_id})}"


def browser_url(file_id: str) -> str:
    return f"https://drive.google.com/uc?id={file_id}&export=download"


def from_file_hint(name: str, file_id: str, file_name: str) -> str:
    return (
        f"download it in a browser from {browser_url(file_id)} (or https://drive.google.com/file/d/{file_id}/view), "
        f"then run: gencbm download {name} --from-file PATH/TO/{file_name}"
    )


class _PageParser(HTMLParser):
    """Collects the forms (action, hidden inputs) and links of a Drive page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.forms: list[dict] = []
        self.links: list[str] = []
        self._form: dict | None = None
        self.text: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k.lower(): (v or "") for k, v in attrs}
        if tag == "form":
            self._form = {"id": a.get("id", ""), "action": a.get("action", ""), "method": a.get("method", "get").lower(), "inputs": {}}
            self.forms.append(self._form)
        elif tag == "input" and self._form is not None and a.get("name"):
            if a.get("type", "text").lower() in ("hidden", "text"):
                self._form["inputs"][a["name"]] = a.get("value", "")
        elif tag == "a" and a.get("href"):
            self.links.append(a["href"])

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._form = None

    def handle_data(self, data: str) -> None:
        self.text.append(data)


def next_url_from_page(page_url: str, page: str, file_id: str) -> str | None:
    """The URL that confirms the download on a Drive warning page, or None if there is none."""
    parser = _PageParser()
    try:
        parser.feed(page)
    except Exception:  # a malformed page: fall back to the regular expressions below
        pass
    for form in parser.forms:
        inputs = form["inputs"]
        if form["method"] == "get" and ("confirm" in inputs or form["id"] == "download-form") and inputs.get("id", file_id) == file_id:
            action = urllib.parse.urljoin(page_url, html.unescape(form["action"]) or page_url)
            query = urllib.parse.urlencode(inputs)
            return f"{action}{'&' if '?' in action else '?'}{query}"
    for href in parser.links:
        href = html.unescape(href)
        if "confirm=" in href and ("id=" + file_id in href or "export=download" in href):
            return urllib.parse.urljoin(page_url, href)
    m = re.search(r"confirm=([0-9A-Za-z_\-]+)", page)
    if m:
        return drive_url(file_id, base=urllib.parse.urljoin(page_url, urllib.parse.urlsplit(page_url).path)) + f"&confirm={m.group(1)}"
    return None


def page_handler(name: str, file_id: str, file_name: str):
    """An html_handler for fetch_url: follows confirmation pages, turns error pages into exit 3."""

    def handle(page_url: str, page: str) -> str:
        text = re.sub(r"<[^>]+>", " ", page)
        if _QUOTA.search(text):
            raise DriveUnavailableError(
                f"Google Drive refused {name}: its download quota is exceeded (too many downloads recently); "
                + from_file_hint(name, file_id, file_name)
            )
        nxt = next_url_from_page(page_url, page, file_id)
        if nxt is not None:
            return nxt
        if _NOT_FOUND.search(text):
            raise DriveUnavailableError(f"Google Drive says {name} ({file_id}) does not exist any more; if you have the file, run: gencbm download {name} --from-file PATH/TO/{file_name}")
        if _ACCESS.search(text) or "accounts.google.com" in page_url:
            raise DriveUnavailableError(f"Google Drive refused {name}: the file is not shared publicly (sign-in or access page); " + from_file_hint(name, file_id, file_name))
        raise GencbmError(f"Google Drive answered an unexpected page for {name} (no download link found); " + from_file_hint(name, file_id, file_name))

    return handle


def fetch_drive(
    name: str,  # artifact name (for messages)
    file_id: str,  # Drive file id
    file_name: str,  # the file name it is stored under (for the --from-file hint)
    dest: str | Path,
    *,
    expected_size: int | None = None,
    policy: RetryPolicy = RetryPolicy(),
    progress: Progress | None = None,
    info: Info | None = None,
    base: str | None = None,  # Drive endpoint (default: GENCBM_GDRIVE_ENDPOINT or drive.google.com/uc)
) -> Transfer:
    """Download a Drive file into `dest` through the confirmation flow (resumable like fetch_url)."""
    try:
        return fetch_url(
            drive_url(file_id, base), dest, label=name, expected_size=expected_size, policy=policy,
            progress=progress, info=info, html_handler=page_handler(name, file_id, file_name), opener=make_opener(),
        )
    except UnavailableError as exc:
        if exc.status in (401, 403):
            raise DriveUnavailableError(f"Google Drive refused {name} (HTTP {exc.status}: quota exceeded or not shared); " + from_file_hint(name, file_id, file_name)) from None
        raise DriveUnavailableError(f"Google Drive has no file {file_id} for {name} (HTTP {exc.status}); if you have the file, run: gencbm download {name} --from-file PATH/TO/{file_name}") from None
