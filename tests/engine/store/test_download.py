"""HTTP transfers against servers on 127.0.0.1: resume, retry, refusal, offline."""

from __future__ import annotations

import hashlib
import os

import pytest

from engine.errors import CorruptFileError
from engine.store.download import (
    DownloadError,
    OfflineError,
    RetryPolicy,
    UnavailableError,
    copy_local,
    fetch_url,
    join_url,
)
from fakeserver import FakeServer

FAST = RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.01, timeout=5)
DATA = os.urandom(300_000)
SHA = hashlib.sha256(DATA).hexdigest()


@pytest.fixture
def server():
    with FakeServer() as srv:
        yield srv


@pytest.fixture(autouse=True)
def _online(monkeypatch):
    monkeypatch.delenv("GENCBM_OFFLINE", raising=False)


def test_plain_transfer_hashes_what_it_writes(server, tmp_path):
    server.add("/f.bin", DATA)
    seen = []
    t = fetch_url(server.url("/f.bin"), tmp_path / "f", policy=FAST, progress=lambda d, tot: seen.append((d, tot)))
    assert (tmp_path / "f").read_bytes() == DATA
    assert t.sha256 == SHA and t.size == len(DATA) and t.resumes == 0
    assert seen[-1] == (len(DATA), len(DATA))
    assert all(b[0] >= a[0] for a, b in zip(seen, seen[1:]))  # monotone progress


def test_dropped_transfer_resumes_with_a_range_request(server, tmp_path):
    server.add("/f.bin", DATA, drop_first=1)
    messages = []
    t = fetch_url(server.url("/f.bin"), tmp_path / "f", policy=FAST, info=messages.append)
    hits = server.hits("/f.bin")
    assert len(hits) == 2
    assert hits[0]["range"] is None and hits[0].get("dropped")
    assert hits[1]["range"] == f"bytes={len(DATA) // 2}-" and hits[1]["status"] == 206
    assert (tmp_path / "f").read_bytes() == DATA
    assert t.sha256 == SHA and t.resumes == 1
    assert any("resuming" in m for m in messages)


def test_server_without_ranges_restarts_from_zero(server, tmp_path):
    server.add("/f.bin", DATA, drop_first=1, ranges=False)
    t = fetch_url(server.url("/f.bin"), tmp_path / "f", policy=FAST)
    assert [h["status"] for h in server.hits("/f.bin")] == [200, 200]
    assert (tmp_path / "f").read_bytes() == DATA
    assert t.sha256 == SHA and t.resumes == 0


def test_every_transfer_dropping_still_completes_by_resuming(server, tmp_path):
    server.add("/f.bin", DATA, drop_first=4)  # each try moves bytes, so none counts against the limit
    t = fetch_url(server.url("/f.bin"), tmp_path / "f", policy=FAST)
    assert (tmp_path / "f").read_bytes() == DATA and t.resumes == 4


def test_500_then_success_is_retried_with_backoff(server, tmp_path):
    server.add("/f.bin", DATA, fail_first=[500, 503])
    delays = []
    t = fetch_url(server.url("/f.bin"), tmp_path / "f", policy=RetryPolicy(attempts=5, base_delay=0.5, max_delay=8), sleep=delays.append)
    assert t.sha256 == SHA and t.retries == 2
    assert delays == [0.5, 1.0]  # exponential backoff
    assert [h["status"] for h in server.hits("/f.bin")] == [500, 503, 200]


def test_retry_after_is_honoured(server, tmp_path):
    server.add("/f.bin", DATA, fail_first=[429], headers={"Retry-After": "3"})
    delays = []
    fetch_url(server.url("/f.bin"), tmp_path / "f", policy=RetryPolicy(base_delay=0.1, max_delay=10), sleep=delays.append)
    assert delays == [3.0]


def test_persistent_500_gives_up_after_the_allowed_tries(server, tmp_path):
    server.add("/f.bin", DATA, fail_first=[500] * 10)
    with pytest.raises(DownloadError, match="giving up after 3 tries"):
        fetch_url(server.url("/f.bin"), tmp_path / "f", policy=FAST)
    assert len(server.hits("/f.bin")) == 3


def test_404_is_not_retried(server, tmp_path):
    with pytest.raises(UnavailableError) as info:
        fetch_url(server.url("/missing.bin"), tmp_path / "f", policy=FAST)
    assert info.value.exit_code == 3 and info.value.status == 404
    assert len(server.hits("/missing.bin")) == 1


def test_403_is_unavailable(server, tmp_path):
    server.add("/secret.bin", status=403)
    with pytest.raises(UnavailableError, match="no access"):
        fetch_url(server.url("/secret.bin"), tmp_path / "f", policy=FAST)


def test_html_page_instead_of_a_file_is_refused(server, tmp_path):
    server.add("/f.pkl", b"<html>please log in</html>", content_type="text/html")
    with pytest.raises(DownloadError, match="HTML page"):
        fetch_url(server.url("/f.pkl"), tmp_path / "f", policy=FAST)


def test_announced_size_different_from_the_published_one_is_refused(server, tmp_path):
    server.add("/f.bin", DATA)
    with pytest.raises(CorruptFileError, match="published size"):
        fetch_url(server.url("/f.bin"), tmp_path / "f", policy=FAST, expected_size=len(DATA) + 1)


def test_offline_never_opens_a_connection(server, tmp_path, monkeypatch):
    server.add("/f.bin", DATA)
    monkeypatch.setenv("GENCBM_OFFLINE", "1")
    with pytest.raises(OfflineError):
        fetch_url(server.url("/f.bin"), tmp_path / "f", policy=FAST)
    assert server.hits("/f.bin") == []
    assert not (tmp_path / "f").exists()


def test_copy_local_hashes_and_checks_size(tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(DATA)
    t = copy_local(src, tmp_path / "out" / "dst.bin")
    assert t.sha256 == SHA and (tmp_path / "out" / "dst.bin").read_bytes() == DATA
    with pytest.raises(CorruptFileError):
        copy_local(src, tmp_path / "dst2.bin", expected_size=1)


def test_join_url_for_remote_and_local_mirrors(tmp_path):
    assert join_url("http://h/m/", "google/ddpm x/config.json") == "http://h/m/google/ddpm%20x/config.json"
    assert join_url(str(tmp_path), "a/b.txt") == str(tmp_path / "a" / "b.txt")
    assert join_url(tmp_path.as_uri(), "b.txt") == str(tmp_path / "b.txt")
