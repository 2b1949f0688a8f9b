"""Fetching, importing, verifying and resolving artifacts (store in a temp folder, servers on 127.0.0.1)."""

from __future__ import annotations

import json
import os
import threading

import pytest

from engine.errors import ArtifactMissingError, CorruptFileError, UsageError
from engine.store import artifacts as A
from engine.store import manifest as mf
from engine.store.download import OfflineError, RetryPolicy
from engine.store.paths import artifact_dir, find_artifact
from fakeserver import sha, url_entry, write_registry, zip_bytes

FAST = RetryPolicy(attempts=3, base_delay=0.001, max_delay=0.01, timeout=5)
DATA = os.urandom(150_000)


def opts(**kw) -> A.FetchOptions:
    kw.setdefault("policy", FAST)
    return A.FetchOptions(**kw)


@pytest.fixture
def reg(store, server, tmp_path, monkeypatch):
    """A registry of test artifacts served by `server`; returns a function to (re)write it."""

    def make(*entries):
        monkeypatch.setenv("GENCBM_REGISTRY", write_registry(tmp_path / f"reg{len(os.listdir(tmp_path))}.json", list(entries)))

    return make


def test_download_with_published_sha256(reg, server, store):
    server.add("/w.bin", DATA)
    reg(url_entry("test-w", server.url("/w.bin"), "w.bin", sha256=sha(DATA), size=len(DATA)))
    entry = A.download("test-w", opts())
    final = store / "artifacts" / "test-w" / "w.bin"
    assert entry["status"] == "downloaded" and entry["verified_by"] == "sha256"
    assert final.read_bytes() == DATA
    assert entry["sha256"] == sha(DATA) and entry["size"] == len(DATA)
    doc = json.loads((store / "manifest.json").read_text())
    assert doc["artifacts"]["test-w"]["path"] == "artifacts/test-w/w.bin"
    assert doc["pins"] == {}  # nothing to pin: the checksum is published
    assert A.resolve_artifact("test-w") == final
    again = A.download("test-w", opts())
    assert again["status"] == "present" and len(server.hits("/w.bin")) == 1


def test_checksum_mismatch_stores_nothing(reg, server, store):
    server.add("/w.bin", DATA)
    reg(url_entry("test-w", server.url("/w.bin"), "w.bin", sha256=sha(b"something else")))
    with pytest.raises(CorruptFileError, match="published sha256") as info:
        A.download("test-w", opts())
    assert info.value.exit_code == 4
    assert mf.get_entry("test-w") is None
    assert [p.name for p in artifact_dir("test-w").iterdir()] == []  # no file, no .part left
    with pytest.raises(ArtifactMissingError, match="gencbm download test-w"):
        A.resolve_artifact("test-w")


def test_sha256_prefix_in_the_file_name_is_checked(reg, server):
    server.add("/resnet18-deadbeef.pth", DATA)
    reg(url_entry("test-p", server.url("/resnet18-deadbeef.pth"), "resnet18-deadbeef.pth", sha256_prefix="deadbeef"))
    with pytest.raises(CorruptFileError, match="prefix deadbeef"):
        A.download("test-p", opts())
    reg(url_entry("test-p", server.url("/resnet18-deadbeef.pth"), "resnet18-deadbeef.pth", sha256_prefix=sha(DATA)[:8]))
    assert A.download("test-p", opts())["verified_by"] == "sha256-prefix"


def test_trust_on_first_use_pins_and_then_refuses_a_different_file(reg, server, store):
    route = server.add("/g.pkl", DATA)
    reg(url_entry("test-g", server.url("/g.pkl"), "g.pkl", kind="generator"))
    messages = []
    entry = A.download("test-g", opts(info=messages.append))
    assert entry["verified_by"] == "tofu"
    assert mf.get_pins("test-g") == {"g.pkl": sha(DATA)}
    assert any("trust on first use" in m for m in messages)
    route.body = DATA[::-1]  # the source now serves something else
    with pytest.raises(CorruptFileError, match="differs from the file first downloaded"):
        A.download("test-g", opts(force=True))
    assert (store / "artifacts" / "test-g" / "g.pkl").read_bytes() == DATA  # the good copy is untouched
    route.body = DATA
    assert A.download("test-g", opts(force=True))["verified_by"] == "pinned"


def test_dropped_transfer_resumes_within_the_same_download(reg, server, store):
    server.add("/g.pkl", DATA, drop_first=1)
    reg(url_entry("test-g", server.url("/g.pkl"), "g.pkl"))
    A.download("test-g", opts())
    assert [h["range"] for h in server.hits("/g.pkl")] == [None, f"bytes={len(DATA) // 2}-"]
    assert (store / "artifacts" / "test-g" / "g.pkl").read_bytes() == DATA


def test_mirror_replaces_the_host(reg, server, store, tmp_path):
    server.add("/mirror/g.pkl", DATA)
    reg(url_entry("test-g", "http://127.0.0.1:9/never/g.pkl", "g.pkl"))  # port 9: nothing listens
    entry = A.download("test-g", opts(mirror=server.url("/mirror")))
    assert entry["fetched_from"] == "mirror" and entry["origin"] == server.url("/mirror/g.pkl")
    assert (store / "artifacts" / "test-g" / "g.pkl").read_bytes() == DATA


def test_mirror_from_environment_and_missing_file(reg, server, monkeypatch):
    reg(url_entry("test-g", "http://127.0.0.1:9/g.pkl", "g.pkl"))
    monkeypatch.setenv("GENCBM_MIRROR", server.url("/empty"))
    with pytest.raises(ArtifactMissingError, match="has no g.pkl") as info:
        A.download("test-g", opts())
    assert info.value.exit_code == 3
    assert len(server.hits("/empty/g.pkl")) == 1


def test_offline_with_a_local_folder_mirror_works_and_without_fails(reg, server, store, tmp_path, monkeypatch):
    folder = tmp_path / "mirror"
    folder.mkdir()
    (folder / "g.pkl").write_bytes(DATA)
    server.add("/g.pkl", DATA)
    reg(url_entry("test-g", server.url("/g.pkl"), "g.pkl"), url_entry("test-h", server.url("/g.pkl"), "h.pkl"))
    monkeypatch.setenv("GENCBM_OFFLINE", "1")
    with pytest.raises(OfflineError, match="--from-file") as info:
        A.download("test-h", opts())
    assert info.value.exit_code == 3
    entry = A.download("test-g", opts(mirror=str(folder)))
    assert entry["fetched_from"] == "mirror"
    assert A.resolve_artifact("test-g").read_bytes() == DATA
    assert server.hits("/g.pkl") == []  # never touched the network


def test_two_concurrent_downloads_fetch_once(reg, server, store):
    server.add("/slow.pkl", DATA, chunk_delay=0.05)
    reg(url_entry("test-s", server.url("/slow.pkl"), "slow.pkl"))
    results, errors = [], []

    def run():
        try:
            results.append(A.download("test-s", opts()))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors
    assert sorted(r["status"] for r in results) == ["downloaded", "present"]
    assert len(server.hits("/slow.pkl")) == 1
    assert (store / "artifacts" / "test-s" / "slow.pkl").read_bytes() == DATA
    assert not list((store / "artifacts" / "test-s").glob(".*"))


def test_from_file_right_and_wrong_checksum(reg, tmp_path, store):
    reg(url_entry("test-w", "http://127.0.0.1:9/w.bin", "w.bin", sha256=sha(DATA)))
    wrong = tmp_path / "wrong.bin"
    wrong.write_bytes(DATA + b"x")
    with pytest.raises(CorruptFileError):
        A.download("test-w", opts(from_file=wrong))
    assert mf.get_entry("test-w") is None
    right = tmp_path / "Downloads" / "w (1).bin"
    right.parent.mkdir()
    right.write_bytes(DATA)
    entry = A.download("test-w", opts(from_file=right))
    assert entry["status"] == "imported" and entry["fetched_from"] == "file"
    assert A.resolve_artifact("test-w").read_bytes() == DATA
    assert right.exists()  # the user's file is copied, not moved


def test_from_file_of_an_unpublished_checksum_is_pinned(reg, tmp_path):
    reg(url_entry("test-g", "http://127.0.0.1:9/g.pkl", "g.pkl"))
    src = tmp_path / "g.pkl"
    src.write_bytes(DATA)
    A.download("test-g", opts(from_file=src))
    assert mf.get_pins("test-g") == {"g.pkl": sha(DATA)}


def test_corrupted_store_is_detected_never_loaded_and_force_repairs(reg, server, store, monkeypatch):
    server.add("/g.pkl", DATA)
    reg(url_entry("test-g", server.url("/g.pkl"), "g.pkl"))
    A.download("test-g", opts())
    path = store / "artifacts" / "test-g" / "g.pkl"
    raw = bytearray(path.read_bytes())
    raw[1000] ^= 0x01  # same size, one bit different
    path.write_bytes(bytes(raw))
    for call in (lambda: A.resolve_artifact("test-g"), lambda: find_artifact("test-g"), lambda: A.download("test-g", opts())):
        with pytest.raises(CorruptFileError, match="gencbm download test-g --force") as info:
            call()
        assert info.value.exit_code == 4
    assert A.verify("test-g")["status"] == "corrupt"
    A.download("test-g", opts(force=True))
    assert A.resolve_artifact("test-g").read_bytes() == DATA
    assert A.verify("test-g")["status"] == "ok"


def test_verification_hashes_only_when_the_file_changed(reg, server, store, monkeypatch):
    server.add("/g.pkl", DATA)
    reg(url_entry("test-g", server.url("/g.pkl"), "g.pkl"))
    A.download("test-g", opts())
    calls = []
    real = mf.sha256_file
    monkeypatch.setattr(mf, "sha256_file", lambda p, progress=None: calls.append(p) or real(p, progress))
    A.resolve_artifact("test-g")
    A.resolve_artifact("test-g")
    assert calls == []  # the hash computed while downloading is cached by (size, mtime)
    path = store / "artifacts" / "test-g" / "g.pkl"
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    A.resolve_artifact("test-g")
    assert len(calls) == 1
    A.resolve_artifact("test-g")
    assert len(calls) == 1


def test_truncated_store_file_is_corrupt_and_a_deleted_one_missing(reg, server, store):
    server.add("/g.pkl", DATA)
    reg(url_entry("test-g", server.url("/g.pkl"), "g.pkl"))
    A.download("test-g", opts())
    path = store / "artifacts" / "test-g" / "g.pkl"
    path.write_bytes(DATA[:100])
    with pytest.raises(CorruptFileError, match="100 bytes"):
        A.resolve_artifact("test-g")
    path.unlink()
    with pytest.raises(ArtifactMissingError, match="`gencbm download test-g`"):
        A.resolve_artifact("test-g")
    assert A.download("test-g", opts())["status"] == "downloaded"  # a lost file is simply fetched again


def test_zip_archive_is_verified_and_unpacked(reg, server, store):
    members = {"celebahq_Smiling_rn18_conclsf.pth": b"s" * 500, "celebahq_Male_rn18_conclsf.pth": b"m" * 700}
    blob = zip_bytes(members)
    server.add("/c.zip", blob)
    reg(url_entry("test-c", server.url("/c.zip"), "c.zip", kind="classifiers", archive="zip", sha256=sha(blob)))
    entry = A.download("test-c", opts())
    folder = A.resolve_artifact("test-c")
    assert folder == store / "artifacts" / "test-c" and folder.is_dir()
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == members
    assert entry["sha256"] == sha(blob) and {f["path"] for f in entry["files"]} == set(members)
    assert not (store / "artifacts" / "c.zip").exists() and not list((store / "artifacts").glob(".test-c*"))


def test_zip_with_a_path_escape_member_is_refused(reg, server, store):
    blob = zip_bytes({"ok.pth": b"1", "../../evil.txt": b"2"})
    server.add("/c.zip", blob)
    reg(url_entry("test-c", server.url("/c.zip"), "c.zip", kind="classifiers", archive="zip"))
    with pytest.raises(CorruptFileError, match="escapes") as info:
        A.download("test-c", opts())
    assert info.value.exit_code == 4
    assert not artifact_dir("test-c").exists()
    assert not (store / "evil.txt").exists() and not (store.parent / "evil.txt").exists()
    assert mf.get_entry("test-c") is None and mf.get_pins("test-c") == {}


def test_file_list_artifact_through_a_mirror(reg, server, store):
    server.add("/m/CelebAMask-HQ/train.txt", b"0.jpg 1\n", content_type="text/plain")
    server.add("/m/CelebAMask-HQ/test.txt", b"1.jpg 0\n", content_type="text/plain")
    reg({"name": "test-splits", "kind": "splits", "source": {"type": "files", "files": [
        {"path": "CelebAMask-HQ/train.txt", "url": "http://127.0.0.1:9/train.txt"},
        {"path": "CelebAMask-HQ/test.txt", "url": "http://127.0.0.1:9/test.txt"}]}})
    entry = A.download("test-splits", opts(mirror=server.url("/m")))
    folder = A.resolve_artifact("test-splits")
    assert (folder / "CelebAMask-HQ" / "train.txt").read_bytes() == b"0.jpg 1\n"
    assert entry["verified_by"] == "tofu" and set(mf.get_pins("test-splits")) == {"CelebAMask-HQ/train.txt", "CelebAMask-HQ/test.txt"}


def hf_entry(**source):
    return {"name": "test-ddpm", "kind": "generator", "source": {"type": "hf", "repo": "google/ddpm-test", "files": ["config.json"],
            "optional_files": ["diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"],
            "require_one_of": ["diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin"], **source}}


def test_hugging_face_repo_through_a_mirror(reg, server, store):
    server.add("/hf/google/ddpm-test/config.json", b'{"sample_size": 256}', content_type="application/json")
    server.add("/hf/google/ddpm-test/diffusion_pytorch_model.bin", DATA)
    reg(hf_entry())
    entry = A.download("test-ddpm", opts(mirror=server.url("/hf")))
    folder = A.resolve_artifact("test-ddpm")
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "diffusion_pytorch_model.bin"]
    assert len(server.hits("/hf/google/ddpm-test/diffusion_pytorch_model.safetensors")) == 1  # optional: a 404 is fine
    assert {f["path"] for f in entry["files"]} == {"config.json", "diffusion_pytorch_model.bin"}


def test_hugging_face_repo_without_weights_is_missing(reg, server):
    server.add("/hf/google/ddpm-test/config.json", b"{}", content_type="application/json")
    reg(hf_entry())
    with pytest.raises(ArtifactMissingError, match="none of"):
        A.download("test-ddpm", opts(mirror=server.url("/hf")))
    assert mf.get_entry("test-ddpm") is None


def test_hugging_face_offline_uses_the_hub_cache(reg, store, tmp_path, monkeypatch):
    hub = tmp_path / "hf" / "hub" / "models--google--ddpm-test"
    commit = "0" * 40
    snap = hub / "snapshots" / commit
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    (snap / "diffusion_pytorch_model.safetensors").write_bytes(DATA)
    (hub / "refs").mkdir()
    (hub / "refs" / "main").write_text(commit)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("GENCBM_OFFLINE", "1")
    reg(hf_entry())
    entry = A.download("test-ddpm", opts(hub_progress=False))
    assert entry["fetched_from"] == "hf-cache"
    assert (A.resolve_artifact("test-ddpm") / "diffusion_pytorch_model.safetensors").read_bytes() == DATA


def test_resolve_accepts_paths_and_names(reg, server, store, tmp_path):
    server.add("/g.pkl", DATA)
    reg(url_entry("test-g", server.url("/g.pkl"), "g.pkl", kind="generator"))
    local = tmp_path / "mine.pkl"
    local.write_bytes(b"x")
    assert A.resolve(str(local)) == local
    with pytest.raises(ArtifactMissingError, match="gencbm download test-g"):
        A.resolve("test-g", kinds=("generator",))
    A.download("test-g", opts())
    assert A.resolve("TEST_G", kinds=("generator",)).read_bytes() == DATA  # forgiving names
    with pytest.raises(UsageError, match="not a classifier set"):
        A.resolve("test-g", kinds=("classifiers",), what="classifier set")
    with pytest.raises(ArtifactMissingError, match="did you mean 'test-g'"):
        A.resolve("test-gg", kinds=("generator",), what="generator")
    with pytest.raises(ArtifactMissingError, match="no such file"):
        A.resolve(str(tmp_path / "nope.pkl"))


def test_drive_artifact_quota_error_names_from_file(reg, server, store, monkeypatch):
    server.add("/uc", b"<html><body>Too many users have viewed or downloaded this file recently.</body></html>", content_type="text/html")
    monkeypatch.setenv("GENCBM_GDRIVE_ENDPOINT", server.url("/uc"))
    reg({"name": "test-cbae", "kind": "cbae", "source": {"type": "gdrive", "id": "1RBdjcBDbpAoW5qOkG-rBonIpcBApBF-q"}, "file": "c.pt"})
    with pytest.raises(ArtifactMissingError, match="gencbm download test-cbae --from-file PATH/TO/c.pt") as info:
        A.download("test-cbae", opts())
    assert info.value.exit_code == 3


def test_unknown_name_suggests_the_closest(store):
    with pytest.raises(UsageError, match="did you mean 'stylegan2-celebahq-256'"):
        A.download("stylegan2-celeba-256", opts())


def test_list_reports_stored_state(reg, server):
    server.add("/g.pkl", DATA)
    reg(url_entry("test-g", server.url("/g.pkl"), "g.pkl"))
    before = {r["name"]: r for r in A.list_artifacts()}
    assert before["test-g"]["stored"] is False and "stylegan2-celebahq-256" in before
    A.download("test-g", opts())
    after = {r["name"]: r for r in A.list_artifacts()}
    assert after["test-g"]["stored"] is True and after["test-g"]["stored_sha256"] == sha(DATA)
