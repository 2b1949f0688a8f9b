"""Google Drive's large-file confirmation flow and its error pages, against a Drive-like local server."""

from __future__ import annotations

import hashlib
import os

import pytest

from engine.store.download import RetryPolicy
from engine.store.gdrive import DriveUnavailableError, fetch_drive, next_url_from_page
from fakeserver import FakeServer

FAST = RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.01, timeout=5)
DATA = os.urandom(200_000)
FILE_ID = "1RBdjcBDbpAoW5qOkG-rBonIpcBApBF-q"

WARNING_FORM = """<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title></head><body>
<div class="uc-main"><p class="uc-warning-caption">Google Drive can't scan this file for viruses.</p>
<p class="uc-warning-subcaption"><span class="uc-name-size"><a href="/open?id={id}">x.pt</a> (245M)</span>
is too large for Google to scan for viruses. Would you still like to download this file?</p>
<form id="download-form" action="{action}" method="get">
<input type="submit" id="uc-download-link" class="goog-inline-block jfk-button" value="Download anyway"/>
<input type="hidden" name="id" value="{id}"><input type="hidden" name="export" value="download">
<input type="hidden" name="confirm" value="t"><input type="hidden" name="uuid" value="0f7c-uuid"></form></div>
<a href="https://accounts.google.com/ServiceLogin">Sign in</a></body></html>"""

WARNING_LINK = """<html><body>Google Drive can't scan this file for viruses.
<a id="uc-download-link" href="/uc?export=download&amp;confirm=AbC_12&amp;id={id}">Download anyway</a></body></html>"""

QUOTA = """<html><head><title>Google Drive - Quota exceeded</title></head><body><p class="uc-error-caption">
Sorry, you can't view or download this file at this time.</p><p class="uc-error-subcaption">Too many users have
viewed or downloaded this file recently. Please try accessing the file again later.</p></body></html>"""


def drive_server(srv: FakeServer, page: str | None, *, require_cookie: bool = True, drop_first: int = 0) -> dict:
    """/uc answers `page` (or the file when None); /download answers the file after confirmation."""
    state = {"drops": drop_first}

    def uc(h, q):
        if q.get("confirm") == "AbC_12" and q.get("id") == FILE_ID:
            return h.send_file(DATA)
        if page is None:
            return h.send_file(DATA, {"Content-Disposition": 'attachment; filename="x.pt"'})
        h.send_page(page.format(id=FILE_ID, action=srv.url("/download")), {"Set-Cookie": "download_warning_1=tok; Path=/"})

    def download(h, q):
        ok = q.get("id") == FILE_ID and q.get("confirm") == "t" and q.get("uuid") == "0f7c-uuid"
        if not ok or (require_cookie and "download_warning_1=tok" not in (h.headers.get("Cookie") or "")):
            return h._plain(400, b"bad confirmation")
        rng = h.headers.get("Range")
        if rng:
            start = int(rng[6:].split("-")[0])
            h.send_response(206)
            h.send_header("Content-Type", "application/octet-stream")
            h.send_header("Content-Length", str(len(DATA) - start))
            h.send_header("Content-Range", f"bytes {start}-{len(DATA) - 1}/{len(DATA)}")
            h.end_headers()
            h.wfile.write(DATA[start:])
            return
        if state["drops"]:
            state["drops"] -= 1
            h.send_response(200)
            h.send_header("Content-Type", "application/octet-stream")
            h.send_header("Content-Length", str(len(DATA)))
            h.end_headers()
            h.wfile.write(DATA[: len(DATA) // 3])
            h.wfile.flush()
            h.close_connection = True
            import socket

            h.connection.shutdown(socket.SHUT_RDWR)
            return
        h.send_file(DATA)

    srv.add("/uc", handler=uc)
    srv.add("/download", handler=download)
    return state


@pytest.fixture
def server(monkeypatch):
    monkeypatch.delenv("GENCBM_OFFLINE", raising=False)
    with FakeServer() as srv:
        yield srv


def test_small_file_comes_directly(server, tmp_path):
    drive_server(server, None)
    t = fetch_drive("cbae-x", FILE_ID, "x.pt", tmp_path / "x", policy=FAST, base=server.url("/uc"))
    assert (tmp_path / "x").read_bytes() == DATA
    assert t.sha256 == hashlib.sha256(DATA).hexdigest()
    assert server.hits("/uc")[0]["query"] == {"export": "download", "id": FILE_ID}


def test_confirmation_form_is_followed_with_its_cookie(server, tmp_path):
    drive_server(server, WARNING_FORM)
    fetch_drive("cbae-x", FILE_ID, "x.pt", tmp_path / "x", policy=FAST, base=server.url("/uc"))
    assert (tmp_path / "x").read_bytes() == DATA
    (hit,) = server.hits("/download")
    assert hit["query"]["confirm"] == "t" and hit["query"]["uuid"] == "0f7c-uuid"
    assert "download_warning_1=tok" in hit["cookie"]


def test_confirmed_transfer_resumes_after_a_drop(server, tmp_path):
    drive_server(server, WARNING_FORM, drop_first=1)
    t = fetch_drive("cbae-x", FILE_ID, "x.pt", tmp_path / "x", policy=FAST, base=server.url("/uc"))
    assert (tmp_path / "x").read_bytes() == DATA
    assert t.resumes == 1
    assert [h["range"] for h in server.hits("/download")] == [None, f"bytes={len(DATA) // 3}-"]
    assert len(server.hits("/uc")) == 1  # the confirmed URL is reused, not the page


def test_older_confirmation_link_is_followed(server, tmp_path):
    drive_server(server, WARNING_LINK)
    fetch_drive("cbae-x", FILE_ID, "x.pt", tmp_path / "x", policy=FAST, base=server.url("/uc"))
    assert (tmp_path / "x").read_bytes() == DATA
    assert server.hits("/uc")[-1]["query"]["confirm"] == "AbC_12"


def test_quota_page_exits_3_with_from_file_instructions(server, tmp_path):
    drive_server(server, QUOTA)
    with pytest.raises(DriveUnavailableError) as info:
        fetch_drive("cbae-stylegan2-celebahq", FILE_ID, "celebahq_cbae.pt", tmp_path / "x", policy=FAST, base=server.url("/uc"))
    msg = str(info.value)
    assert info.value.exit_code == 3
    assert "quota" in msg
    assert "gencbm download cbae-stylegan2-celebahq --from-file PATH/TO/celebahq_cbae.pt" in msg
    assert f"https://drive.google.com/uc?id={FILE_ID}&export=download" in msg
    assert "\n" not in msg
    assert len(server.hits("/uc")) == 1  # not retried


def test_permission_error_exits_3(server, tmp_path):
    server.add("/uc", status=403)
    with pytest.raises(DriveUnavailableError, match="--from-file") as info:
        fetch_drive("x", FILE_ID, "x.pt", tmp_path / "x", policy=FAST, base=server.url("/uc"))
    assert info.value.exit_code == 3


def test_sign_in_page_exits_3(server, tmp_path):
    drive_server(server, "<html><body>You need access. <a href='https://accounts.google.com/ServiceLogin'>Sign in</a></body></html>")
    with pytest.raises(DriveUnavailableError, match="not shared"):
        fetch_drive("x", FILE_ID, "x.pt", tmp_path / "x", policy=FAST, base=server.url("/uc"))


def test_next_url_parsing():
    page = WARNING_FORM.format(id=FILE_ID, action="https://drive.usercontent.google.com/download")
    url = next_url_from_page("https://drive.google.com/uc?export=download&id=" + FILE_ID, page, FILE_ID)
    assert url.startswith("https://drive.usercontent.google.com/download?")
    assert f"id={FILE_ID}" in url and "confirm=t" in url and "uuid=0f7c-uuid" in url
    assert next_url_from_page("https://drive.google.com/uc", QUOTA, FILE_ID) is None
