"""HTTP transfers with the standard library: resume, retry, streaming sha256, offline guard.

`fetch_url(url, dest)` writes the body to `dest` (the caller's temporary file) and hashes it as it
arrives. When a connection drops, it asks for the rest with a `Range` request and appends (or starts
again when the server ignores ranges); transient failures (connection errors, timeouts, HTTP 408,
425, 429, 5xx) are retried with exponential backoff, and a try that moved bytes does not count
against the limit. 404/410 and 401/403 are not retried. An HTML page where a file was expected goes
to `html_handler` (Google Drive's confirmation pages) or is refused, so a captive portal or an error
page is never stored as a model.

Nothing here touches the network when `GENCBM_OFFLINE=1`.
"""

from __future__ import annotations

import email.utils
import hashlib
import http.client
import os
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from engine.errors import ArtifactMissingError, CorruptFileError, GencbmError

CHUNK = 1 << 20
RETRY_STATUS = (408, 425, 429, 500, 502, 503, 504)
MAX_PAGES = 5  # HTML pages followed (confirmation steps) before giving up

Progress = Callable[[int, "int | None"], None]  # (bytes done, total bytes or None)
Info = Callable[[str], None]


class DownloadError(GencbmError):
    """A transfer failed (network, server error after retries, unexpected reply): exit code 1."""

    exit_code = 1


class OfflineError(ArtifactMissingError):
    """GENCBM_OFFLINE=1 forbids the network and the artifact is not in the store (exit code 3)."""


class UnavailableError(ArtifactMissingError):
    """The source answered 404/410 (gone) or 401/403 (no access): fetch it another way (exit code 3)."""

    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class LocalWriteError(GencbmError):
    """Writing the downloaded bytes failed (disk full, permissions): not retried."""


class _Transient(Exception):
    def __init__(self, message: str, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


def offline() -> bool:
    """True when GENCBM_OFFLINE asks gencbm never to touch the network."""
    return os.environ.get("GENCBM_OFFLINE", "").strip().lower() not in ("", "0", "false", "no")


def ensure_online(what: str) -> None:
    if offline():
        raise OfflineError(f"GENCBM_OFFLINE=1: not downloading {what}")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 5  # tries without progress before giving up
    base_delay: float = 0.5  # seconds before the first retry; doubles each time
    max_delay: float = 15.0  # longest wait between tries (also caps Retry-After)
    timeout: float = 60.0  # socket timeout per read, seconds
    max_total_attempts: int = 200  # tries in all, even when each one moved some bytes


@dataclass
class Transfer:
    path: Path  # where the body was written
    size: int  # bytes written
    sha256: str  # hex digest of what was written
    url: str  # the final URL (after redirects and confirmation pages)
    resumes: int = 0  # how many times a dropped transfer was resumed with a Range request
    retries: int = 0  # how many tries failed in all


def user_agent() -> str:
    try:
        from importlib.metadata import version

        return f"gencbm/{version('gencbm')}"
    except Exception:
        return "gencbm"


def make_opener() -> urllib.request.OpenerDirector:
    """An opener that keeps cookies (Google Drive's confirmation flow needs them)."""
    import http.cookiejar

    return urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()))


def is_local(url: str) -> bool:
    """True for file:// URLs and plain paths (a mirror folder); False for http(s)."""
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    return scheme in ("", "file") or (len(scheme) == 1 and os.name == "nt")


def local_path(url: str) -> Path:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() == "file":
        return Path(urllib.request.url2pathname(parts.path))
    return Path(url).expanduser()


def join_url(base: str, path: str) -> str:
    """`{base}/{path}` with each path segment quoted (for mirrors, local or remote)."""
    if is_local(base):
        return str(local_path(base) / path)
    quoted = "/".join(urllib.parse.quote(seg) for seg in path.split("/"))
    return base.rstrip("/") + "/" + quoted


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _content_range_start(value: str | None) -> tuple[int | None, int | None]:
    """(start, total) of a `Content-Range: bytes START-END/TOTAL` header."""
    if not value or not value.startswith("bytes "):
        return None, None
    try:
        span, total = value[6:].split("/", 1)
        start = int(span.split("-", 1)[0])
        return start, (int(total) if total.strip() != "*" else None)
    except ValueError:
        return None, None


def _is_html(content_type: str | None) -> bool:
    return bool(content_type) and content_type.split(";")[0].strip().lower() in ("text/html", "application/xhtml+xml")


def _short(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    return urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def fetch_url(
    url: str,  # http(s) URL
    dest: str | Path,  # file to write (replaced; the caller moves it into place after verification)
    *,
    label: str = "",  # what is being fetched, for messages
    expected_size: int | None = None,  # exact size when known: a different Content-Length is refused
    policy: RetryPolicy = RetryPolicy(),
    progress: Progress | None = None,
    info: Info | None = None,
    html_handler: Callable[[str, str], str] | None = None,  # (url, page) -> next url, or raises
    allow_html: bool = False,  # the file itself may be an HTML page
    opener: urllib.request.OpenerDirector | None = None,
    headers: dict[str, str] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> Transfer:
    """Download `url` into `dest`, resuming dropped transfers and retrying transient failures."""
    ensure_online(label or url)
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    opener = opener or make_opener()
    label = label or _short(url)
    base_headers = {"User-Agent": user_agent(), "Accept-Encoding": "identity", **(headers or {})}
    current = url
    hasher = hashlib.sha256()
    done = 0
    total: int | None = None
    failures = attempts = resumes = retries = pages = 0

    def say(message: str) -> None:
        if info is not None:
            info(message)

    with open(dest, "wb") as out:

        def write(chunk: bytes) -> None:
            nonlocal done
            try:
                out.write(chunk)
            except OSError as exc:
                raise LocalWriteError(f"{label}: cannot write {dest}: {exc.strerror or exc}") from None
            hasher.update(chunk)
            done += len(chunk)

        def restart() -> None:
            nonlocal hasher, done
            out.seek(0)
            out.truncate()
            hasher = hashlib.sha256()
            done = 0

        while True:
            attempts += 1
            moved = 0
            try:
                req_headers = dict(base_headers)
                if done > 0:
                    req_headers["Range"] = f"bytes={done}-"
                try:
                    resp = opener.open(urllib.request.Request(current, headers=req_headers), timeout=policy.timeout)
                except urllib.error.HTTPError as exc:
                    exc.close()
                    if exc.code == 416 and done > 0:
                        if total is not None and done == total:
                            break  # everything had arrived
                        say(f"{label}: the server refused to resume; starting again")
                        restart()
                        raise _Transient("HTTP 416 on resume") from None
                    if exc.code in (404, 410):
                        raise UnavailableError(f"{label}: HTTP {exc.code} {exc.reason} from {_short(current)}", exc.code) from None
                    if exc.code in (401, 403):
                        raise UnavailableError(f"{label}: HTTP {exc.code} {exc.reason} (no access) from {_short(current)}", exc.code) from None
                    if exc.code in RETRY_STATUS:
                        raise _Transient(f"HTTP {exc.code} {exc.reason}", _retry_after(exc.headers.get("Retry-After") if exc.headers else None)) from None
                    raise DownloadError(f"{label}: HTTP {exc.code} {exc.reason} from {_short(current)}") from None
                with resp:
                    status = getattr(resp, "status", 200)
                    ctype = resp.headers.get("Content-Type")
                    if _is_html(ctype) and not allow_html:
                        page = resp.read(4 << 20).decode("utf-8", errors="replace")
                        if html_handler is None:
                            raise DownloadError(f"{label}: {_short(current)} answered with an HTML page instead of the file (a login page, a proxy, or an error page)")
                        pages += 1
                        if pages > MAX_PAGES:
                            raise DownloadError(f"{label}: still getting HTML pages after {MAX_PAGES} confirmation steps")
                        current = html_handler(resp.geturl(), page)
                        if done:
                            restart()
                        attempts -= 1  # a confirmation step is not a failed try
                        continue
                    length = resp.headers.get("Content-Length")
                    length_i = int(length) if length and length.isdigit() else None
                    if done > 0:
                        start, range_total = _content_range_start(resp.headers.get("Content-Range"))
                        if status == 206 and start == done:
                            resumes += 1
                            say(f"{label}: resuming at {done} bytes")
                            total = range_total if range_total is not None else (done + length_i if length_i is not None else total)
                        else:
                            say(f"{label}: the server does not resume transfers; starting again")
                            restart()
                            total = length_i
                    else:
                        total = length_i
                        if status == 206:  # a range we did not ask for: read its total
                            _, total = _content_range_start(resp.headers.get("Content-Range"))
                    if expected_size is not None and total is not None and total != expected_size:
                        raise CorruptFileError(f"{label}: the server announces {total} bytes but the published size is {expected_size}; nothing was stored")
                    current = resp.geturl() or current
                    if progress is not None:
                        progress(done, total)
                    while True:
                        try:
                            chunk = resp.read(CHUNK)
                        except http.client.IncompleteRead as exc:
                            chunk = exc.partial
                            if chunk:
                                write(chunk)
                                moved += len(chunk)
                            raise _Transient(f"connection dropped at {done} of {total} bytes") from None
                        if not chunk:
                            break
                        write(chunk)
                        moved += len(chunk)
                        if progress is not None:
                            progress(done, total)
                    if total is not None and done < total:
                        raise _Transient(f"connection dropped at {done} of {total} bytes")
                    if total is not None and done > total:
                        raise DownloadError(f"{label}: received {done} bytes, more than the {total} announced")
                    break
            except _Transient as exc:
                reason, wait_hint = str(exc), exc.retry_after
            except (OSError, http.client.HTTPException) as exc:  # URLError, timeouts, resets, bad replies
                if isinstance(exc, (FileNotFoundError, PermissionError)) and getattr(exc, "filename", None):
                    raise
                reason = getattr(exc, "reason", None) or exc
                reason, wait_hint = f"{type(exc).__name__}: {reason}", None
            retries += 1
            failures = 0 if moved else failures + 1
            if failures >= policy.attempts or attempts >= policy.max_total_attempts:
                raise DownloadError(f"{label}: giving up after {attempts} tries ({reason}) from {_short(current)}")
            delay = min(policy.max_delay, policy.base_delay * (2 ** max(failures - 1, 0)))
            if wait_hint is not None:
                delay = min(policy.max_delay, max(delay, wait_hint))
            say(f"{label}: {reason}; retrying in {delay:.1f} s")
            sleep(delay)
        out.flush()
        os.fsync(out.fileno())
    if expected_size is not None and done != expected_size:
        raise CorruptFileError(f"{label}: received {done} bytes but the published size is {expected_size}; nothing was stored")
    if progress is not None:
        progress(done, total if total is not None else done)
    return Transfer(path=dest, size=done, sha256=hasher.hexdigest(), url=current, resumes=resumes, retries=retries)


def copy_local(src: str | Path, dest: str | Path, *, label: str = "", expected_size: int | None = None, progress: Progress | None = None) -> Transfer:
    """Copy a local file (a folder mirror, --from-file) into `dest`, hashing what is written."""
    src, dest = Path(src), Path(dest)
    if not src.is_file():
        raise FileNotFoundError(2, "No such file", str(src))
    total = src.stat().st_size
    if expected_size is not None and total != expected_size:
        raise CorruptFileError(f"{label or src}: {src} has {total} bytes but the published size is {expected_size}; nothing was stored")
    dest.parent.mkdir(parents=True, exist_ok=True)
    hasher = hashlib.sha256()
    done = 0
    with open(src, "rb") as fin, open(dest, "wb") as out:
        if progress is not None:
            progress(0, total)
        while True:
            chunk = fin.read(CHUNK)
            if not chunk:
                break
            out.write(chunk)
            hasher.update(chunk)
            done += len(chunk)
            if progress is not None:
                progress(done, total)
        out.flush()
        os.fsync(out.fileno())
    return Transfer(path=dest, size=done, sha256=hasher.hexdigest(), url=str(src))
