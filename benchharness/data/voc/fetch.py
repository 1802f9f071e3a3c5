"""``benchharness data fetch``: download, verify and safely extract the official archives.

``fetch_dataset("voc2007", dest)`` downloads each archive of :data:`DATASETS` into
``dest/downloads/`` (as ``<name>.part`` until it is complete; an interrupted download resumes
with an HTTP ``Range`` request), checks its size and checksum (a mismatch deletes the file and
raises :class:`~benchharness.interfaces.DataError` with the expected and actual values), then
extracts it into a temporary folder under ``dest`` and moves the result into place.

Extraction is safe by construction: every member is checked before it is written (no absolute
path, no ``..``, nothing resolving outside the destination, no link pointing outside it, no
device or other special file) and, where Python offers it, ``tarfile``'s ``"data"`` filter
applies too, so behaviour is the same on every Python. A refused member raises DataError
naming it and leaves nothing extracted. A killed extraction leaves only its temporary folder
(removed by the next attempt); an archive counts as extracted once its ``.done`` stamp exists.

Only the standard library (urllib, tarfile, hashlib) and tqdm are used.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import shutil
import tarfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, Sequence

from tqdm import tqdm

from ...interfaces import DataError

CHUNK = 1 << 20
_FILTER_ERROR = getattr(tarfile, "FilterError", ())  # Pythons without extraction filters


@dataclass(frozen=True)
class Archive:
    """One downloadable archive: its official URL, size in bytes and checksum.

    At least one of ``md5`` / ``sha256`` should be known; without either only the size is
    verified and the sha256 computed is reported.
    """

    filename: str
    url: str
    size: int | None = None
    md5: str | None = None
    sha256: str | None = None

    def url_from(self, base_url: str | None = None) -> str:
        """The URL to download from: the official one, or ``<base_url>/<filename>`` (a mirror)."""
        return f"{base_url.rstrip('/')}/{self.filename}" if base_url else self.url


_VOC = "http://host.robots.ox.ac.uk/pascal/VOC"

# md5 sums as published with the archives and used by torchvision's VOCDetection/SBDataset;
# sizes as served by the official hosts.
DATASETS: dict[str, tuple[Archive, ...]] = {
    "voc2007": (
        Archive("VOCtrainval_06-Nov-2007.tar", f"{_VOC}/voc2007/VOCtrainval_06-Nov-2007.tar",
                size=460_032_000, md5="c52e279531787c972589f7e41ab4ae64"),
        Archive("VOCtest_06-Nov-2007.tar", f"{_VOC}/voc2007/VOCtest_06-Nov-2007.tar",
                size=451_020_800, md5="b6e924de25625d8de591ea690078ad9f"),
    ),
    "voc2012": (
        Archive("VOCtrainval_11-May-2012.tar", f"{_VOC}/voc2012/VOCtrainval_11-May-2012.tar",
                size=1_999_639_040, md5="6cd6e144f989b92b3379bac3b3de84fd"),
    ),
    "sbd": (
        Archive("benchmark.tgz", "http://www2.eecs.berkeley.edu/Research/Projects/CS/vision/"
                                 "grouping/semantic_contours/benchmark.tgz",
                size=1_419_539_633, md5="82b4d87ceb2ed10f6038a1cba92111cb"),
    ),
}
"""The archives of each dataset name that ``benchharness data fetch`` accepts."""

WHAT_IT_GIVES = {
    "voc2007": "VOCdevkit/VOC2007 (trainval + test)",
    "voc2012": "VOCdevkit/VOC2012 (trainval)",
    "sbd": "benchmark_RELEASE/dataset (SBD: the extra segmentation labels)",
}
"""Where each dataset lands under the destination, for messages."""


class _Interrupted(Exception):
    """The transfer stopped before the end; the ``.part`` file keeps what arrived."""


def _quiet(_message: str) -> None:
    pass


# -- download ---------------------------------------------------------------------------------


def _open(url: str, offset: int, timeout: float):
    request = urllib.request.Request(url, headers={"User-Agent": "benchharness-fetch"})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    # A fresh opener per request: proxies come from the environment at call time.
    return urllib.request.build_opener().open(request, timeout=timeout)


def _transfer(url: str, part: Path, size: int | None, timeout: float, progress: bool) -> None:
    """Append the rest of ``url`` to ``part``; raise _Interrupted if the transfer stops early."""
    offset = part.stat().st_size if part.exists() else 0
    if size is not None and offset > size:
        part.unlink()  # longer than the archive: not a prefix of it
        offset = 0
    if size is not None and offset == size:
        return
    try:
        response = _open(url, offset, timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and offset:  # nothing left to send: the part file is complete
            return
        if exc.code >= 500:
            raise _Interrupted(f"HTTP {exc.code} {exc.reason}") from None
        raise DataError(part, f"cannot download {url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise _Interrupted(str(getattr(exc, "reason", exc))) from None
    with response:
        if offset and response.status != 206:
            offset = 0  # the server ignored the Range header: start over
        elif offset and not response.headers.get("Content-Range", "").startswith(
                f"bytes {offset}-"):
            got = response.headers.get("Content-Range")
            raise _Interrupted(f"unexpected Content-Range {got!r}")
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length is not None else size
        with open(part, "ab" if offset else "wb") as out, tqdm(
                total=total, initial=offset, unit="B", unit_scale=True, unit_divisor=1024,
                desc=part.name.removesuffix(".part"), disable=not progress,
                dynamic_ncols=True) as bar:
            try:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    bar.update(len(chunk))
            except (http.client.IncompleteRead, OSError) as exc:
                raise _Interrupted(f"connection lost ({type(exc).__name__})") from None
            received = out.tell()
    if total is not None and received < total:
        raise _Interrupted(f"connection closed after {received} of {total} bytes")


def _digest(path: Path, algorithm: str) -> str:
    hasher = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()


def verify(path: Path | str, archive: Archive, log: Callable[[str], None] = _quiet) -> None:
    """Check the size and checksum of a downloaded file; on a mismatch delete it and raise.

    The DataError names the file, the expected and the actual value. Without any checksum on
    record only the size is checked and the sha256 computed is logged.
    """
    path = Path(path)
    actual_size = path.stat().st_size
    if archive.size is not None and actual_size != archive.size:
        path.unlink()
        raise DataError(path, f"size mismatch for {archive.filename}: expected {archive.size} "
                              f"bytes, got {actual_size}; the file was deleted, run again to "
                              "download it afresh")
    algorithm, expected = ("sha256", archive.sha256) if archive.sha256 else ("md5", archive.md5)
    if expected is None:
        log(f"{archive.filename}: no checksum on record; sha256 {_digest(path, 'sha256')}")
        return
    actual = _digest(path, algorithm)
    if actual != expected.lower():
        path.unlink()
        raise DataError(path, f"checksum mismatch for {archive.filename}: expected {algorithm} "
                              f"{expected}, got {actual}; the file was deleted, run again to "
                              "download it afresh")


def download(archive: Archive, directory: Path | str, *, base_url: str | None = None,
             retries: int = 3, retry_wait: float = 2.0, timeout: float = 60.0,
             progress: bool = True, log: Callable[[str], None] = _quiet) -> Path:
    """Download ``archive`` into ``directory`` and verify it; returns the archive's path.

    An existing ``<filename>.part`` is resumed with a Range request, and a dropped connection
    is resumed up to ``retries`` times (``retry_wait`` seconds apart, doubling). If it still
    fails, DataError says so and the part file stays for the next attempt. An archive already
    downloaded is verified again, not downloaded again.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    final = directory / archive.filename
    if final.exists():
        verify(final, archive, log)
        return final
    part = directory / f"{archive.filename}.part"
    url = archive.url_from(base_url)
    for attempt in range(retries + 1):
        try:
            _transfer(url, part, archive.size, timeout, progress)
            break
        except _Interrupted as exc:
            have = part.stat().st_size if part.exists() else 0
            if attempt == retries:
                raise DataError(part, f"download of {url} interrupted after {have} bytes "
                                      f"({exc}); run the command again to resume") from None
            log(f"{archive.filename}: {exc}; resuming from byte {have} "
                f"(attempt {attempt + 2} of {retries + 1})")
            time.sleep(retry_wait * 2 ** attempt)
    verify(part, archive, log)
    os.replace(part, final)
    return final


# -- extraction -------------------------------------------------------------------------------


def _inside(root: str, path: str) -> bool:
    return os.path.commonpath([root, path]) == root


def _refusal(member: tarfile.TarInfo, root: str) -> str | None:
    """Why ``member`` must not be extracted under ``root`` (a real path), or None."""
    name = member.name
    pure = PurePosixPath(name)
    if pure.is_absolute() or os.path.isabs(name) or (len(name) > 1 and name[1] == ":"):
        return "absolute path"
    if ".." in pure.parts:
        return "path contains '..'"
    # realpath follows links already extracted, so a chain of links cannot escape either.
    if not _inside(root, os.path.realpath(os.path.join(root, name))):
        return "path resolves outside the destination"
    if member.issym() or member.islnk():
        link = member.linkname
        if PurePosixPath(link).is_absolute() or os.path.isabs(link):
            return f"link to an absolute path ({link})"
        base = os.path.dirname(name) if member.issym() else ""  # hard links: archive-relative
        if not _inside(root, os.path.realpath(os.path.join(root, base, link))):
            return f"link points outside the destination ({link})"
        return None
    if member.ischr() or member.isblk() or member.isfifo():
        return "device or FIFO"
    if not (member.isfile() or member.isdir()):
        return f"unsupported member type {member.type!r}"
    return None


def _merge(source: Path, target: Path) -> None:
    """Move the tree ``source`` into ``target``: directories merged, files replaced (renames)."""
    for entry in sorted(source.iterdir()):
        destination = target / entry.name
        if entry.is_dir() and not entry.is_symlink() and destination.is_dir():
            _merge(entry, destination)
            continue
        try:
            os.replace(entry, destination)
        except OSError as exc:
            raise DataError(destination, f"cannot put the extracted {entry.name} here: "
                                         f"{exc.strerror or exc}") from None


def safe_extract(archive_path: Path | str, dest: Path | str, *, progress: bool = True) -> list[str]:
    """Extract a tar archive (any compression) into ``dest`` safely; returns its top-level names.

    Members are checked one by one before being written into ``dest/.extracting-<archive>``;
    the whole tree is moved into ``dest`` only after the last member. A refused member raises
    DataError naming it, and the temporary folder is removed: nothing lands in ``dest``.
    """
    archive_path, dest = Path(archive_path), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    staging = dest / f".extracting-{archive_path.name}"
    if staging.exists():
        shutil.rmtree(staging)  # left by a killed extraction
    staging.mkdir()
    root = os.path.realpath(staging)
    options = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
    try:
        try:
            with tarfile.open(archive_path, "r:*") as tar, tqdm(
                    unit=" files", desc=f"extract {archive_path.name}", disable=not progress,
                    dynamic_ncols=True) as bar:
                for member in tar:
                    why = _refusal(member, root)
                    if why is not None:
                        raise DataError(archive_path, f"refusing to extract member "
                                                      f"{member.name!r}: {why}")
                    try:
                        tar.extract(member, staging, set_attrs=not member.isdir(), **options)
                    except _FILTER_ERROR as exc:
                        raise DataError(archive_path, f"refusing to extract member "
                                                      f"{member.name!r}: {exc}") from None
                    bar.update()
        except (tarfile.TarError, EOFError) as exc:
            raise DataError(archive_path, f"cannot read the archive (corrupt?): {exc}") from None
        names = sorted(entry.name for entry in staging.iterdir())
        _merge(staging, dest)
        return names
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# -- the command ------------------------------------------------------------------------------


def fetch_archive(archive: Archive, dest: Path | str, *, base_url: str | None = None,
                  keep_archive: bool = True, retries: int = 3, retry_wait: float = 2.0,
                  timeout: float = 60.0, progress: bool = True,
                  log: Callable[[str], None] = _quiet) -> list[str]:
    """Download, verify and extract one archive into ``dest``; returns its top-level names.

    Skipped when ``dest/downloads/<filename>.done`` says it was extracted and what it
    extracted is still there. ``keep_archive=False`` deletes the archive once extracted.
    """
    dest = Path(dest)
    downloads = dest / "downloads"
    stamp = downloads / f"{archive.filename}.done"
    if stamp.is_file():
        try:
            names = json.loads(stamp.read_text())["top_level"]
        except (ValueError, KeyError, TypeError):
            names = None
        if names and all((dest / name).exists() for name in names):
            log(f"{archive.filename}: already extracted ({', '.join(names)})")
            return names
    path = download(archive, downloads, base_url=base_url, retries=retries,
                    retry_wait=retry_wait, timeout=timeout, progress=progress, log=log)
    log(f"{archive.filename}: verified; extracting into {dest}")
    names = safe_extract(path, dest, progress=progress)
    stamp.write_text(json.dumps({"archive": archive.filename, "url": archive.url_from(base_url),
                                 "md5": archive.md5, "sha256": archive.sha256,
                                 "top_level": names}, indent=1))
    if not keep_archive:
        path.unlink()
    return names


def fetch_dataset(name: str, dest: Path | str, *, base_url: str | None = None,
                  keep_archives: bool = True, retries: int = 3, retry_wait: float = 2.0,
                  timeout: float = 60.0, progress: bool = True,
                  log: Callable[[str], None] = _quiet,
                  datasets: dict[str, Sequence[Archive]] | None = None) -> Path:
    """Fetch every archive of dataset ``name`` (``voc2007``, ``voc2012``, ``sbd``) into ``dest``.

    ``base_url`` replaces the official location (a mirror holding the same file names).
    Returns ``dest``. Raises DataError for an unknown name or any download/verification/
    extraction failure.
    """
    table = DATASETS if datasets is None else datasets
    if name not in table:
        raise DataError(name, f"unknown dataset; choose one of {', '.join(sorted(table))}")
    dest = Path(dest)
    for archive in table[name]:
        fetch_archive(archive, dest, base_url=base_url, keep_archive=keep_archives,
                      retries=retries, retry_wait=retry_wait, timeout=timeout,
                      progress=progress, log=log)
    return dest
