"""Zip archives unpack safely: nothing escapes the target folder, nothing at all when one member is bad."""

from __future__ import annotations

import hashlib
import stat
import zipfile

import pytest

from engine.errors import CorruptFileError
from engine.store.unzip import list_members, safe_extract


def make_zip(path, members: dict[str, bytes], links: dict[str, str] | None = None):
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in (links or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return path


def test_good_archive_unpacks_with_hashes(tmp_path):
    members = {"celebahq_Smiling_rn18_conclsf.pth": b"a" * 1000, "sub/celebahq_Male_rn18_conclsf.pth": b"b" * 10}
    archive = make_zip(tmp_path / "c.zip", members)
    written = safe_extract(archive, tmp_path / "out")
    assert {w["path"] for w in written} == set(members)
    for w in written:
        data = (tmp_path / "out" / w["path"]).read_bytes()
        assert data == members[w["path"]]
        assert w["sha256"] == hashlib.sha256(data).hexdigest() and w["size"] == len(data)


@pytest.mark.parametrize("bad", ["../escape.txt", "a/../../escape.txt", "/abs/escape.txt", "C:/escape.txt", "..\\escape.txt"])
def test_escaping_member_makes_the_archive_unsafe_and_writes_nothing(tmp_path, bad):
    archive = make_zip(tmp_path / "c.zip", {"good.pth": b"ok", bad: b"evil"})
    target = tmp_path / "deep" / "out"
    with pytest.raises(CorruptFileError, match="unsafe archive") as info:
        safe_extract(archive, target)
    assert info.value.exit_code == 4
    assert not target.exists()  # checked before anything was written
    assert not (tmp_path / "deep" / "escape.txt").exists() and not (tmp_path / "escape.txt").exists()


def test_symlink_member_is_refused(tmp_path):
    archive = make_zip(tmp_path / "c.zip", {"good.pth": b"ok"}, links={"link": "/etc/passwd"})
    with pytest.raises(CorruptFileError, match="symbolic link"):
        list_members(archive)


def test_duplicate_member_is_refused(tmp_path):
    archive = tmp_path / "c.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a.pth", b"1")
        with pytest.warns(UserWarning):
            zf.writestr("a.pth", b"2")
    with pytest.raises(CorruptFileError, match="twice"):
        safe_extract(archive, tmp_path / "out")


def test_not_a_zip_is_corrupt(tmp_path):
    (tmp_path / "c.zip").write_bytes(b"<html>quota exceeded</html>")
    with pytest.raises(CorruptFileError, match="not a readable zip"):
        safe_extract(tmp_path / "c.zip", tmp_path / "out")


def test_damaged_member_is_corrupt(tmp_path):
    archive = make_zip(tmp_path / "c.zip", {"a.pth": b"x" * 5000})
    raw = bytearray(archive.read_bytes())
    start = raw.index(b"x" * 100)
    raw[start + 10] ^= 0xFF  # flip a byte of the stored data: CRC check fails
    archive.write_bytes(bytes(raw))
    with pytest.raises(CorruptFileError):
        safe_extract(archive, tmp_path / "out")
