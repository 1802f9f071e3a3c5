"""`benchharness data fetch`: download, resume, verification and safe extraction.

Archives are built here and served from 127.0.0.1 by a small HTTP server that honours Range
requests and can drop a connection part-way; nothing else is ever contacted.
"""

from __future__ import annotations

import hashlib
import io
import re
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from benchharness.data.voc import fetch
from benchharness.data.voc.fetch import Archive, fetch_dataset, safe_extract
from benchharness.interfaces import DataError

GOOD_FILES = {
    "VOCdevkit/VOC2007/ImageSets/Main/train.txt": b"000001\n000002\n",
    "VOCdevkit/VOC2007/Annotations/000001.xml": b"<annotation/>\n" * 500,
    "VOCdevkit/VOC2007/JPEGImages/000001.jpg": bytes(range(256)) * 64,
}


def _tar(members: list[tuple[tarfile.TarInfo, bytes | None]], mode: str = "w") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode=mode) as tar:
        for info, data in members:
            if data is not None:
                info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buffer.getvalue()


def _file(name: str, data: bytes) -> tuple[tarfile.TarInfo, bytes]:
    return tarfile.TarInfo(name), data


def _link(name: str, target: str, kind: bytes = tarfile.SYMTYPE) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info, None


def good_archive(mode: str = "w") -> bytes:
    members = [_file(name, data) for name, data in GOOD_FILES.items()]
    members.append(_link("VOCdevkit/VOC2007/latest.jpg", "JPEGImages/000001.jpg"))  # inside: fine
    return _tar(members, mode)


class _Handler(BaseHTTPRequestHandler):
    """Serves ``server.files``; honours ``Range: bytes=N-``; may cut the next response short."""

    def do_GET(self):  # noqa: N802 (http.server's naming)
        server = self.server
        server.requests.append({"path": self.path, "range": self.headers.get("Range")})
        body = server.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        start, status = 0, 200
        asked = self.headers.get("Range")
        if asked and server.honour_range:
            start = int(re.fullmatch(r"bytes=(\d+)-", asked).group(1))
            if start >= len(body):
                self.send_error(416)
                return
            status = 206
        self.send_response(status)
        self.send_header("Content-Length", str(len(body) - start))
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.end_headers()
        payload = body[start:]
        if server.cut_next is not None:  # send a prefix, then drop the connection
            payload, server.cut_next = payload[:server.cut_next], None
            self.close_connection = True
        self.wfile.write(payload)
        self.wfile.flush()

    def log_message(self, *args):
        pass


@pytest.fixture
def server(monkeypatch):
    """A ThreadingHTTPServer on 127.0.0.1 (port 0) that shuts itself down after 60 s."""
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy",
                 "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)  # never route the test's requests elsewhere
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    httpd.files, httpd.requests, httpd.cut_next, httpd.honour_range = {}, [], None, True
    httpd.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                              daemon=True)
    thread.start()
    guard = threading.Timer(60, httpd.shutdown)
    guard.daemon = True
    guard.start()
    yield httpd
    guard.cancel()
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


def _publish(server, path: str, body: bytes, checksum: str = "sha256") -> Archive:
    """Serve ``body`` at ``path`` and describe it as an Archive with its true size/checksum."""
    server.files[path] = body
    digest = hashlib.new(checksum, body).hexdigest()
    return Archive(path.rsplit("/", 1)[-1], server.base + path, size=len(body),
                   **{checksum: digest})


def _fetch(archive: Archive, dest: Path, **kwargs) -> Path:
    kwargs.setdefault("retry_wait", 0.0)
    return fetch_dataset("toy", dest, datasets={"toy": (archive,)}, progress=False, **kwargs)


def _assert_good_tree(dest: Path) -> None:
    for name, data in GOOD_FILES.items():
        assert (dest / name).read_bytes() == data
    link = dest / "VOCdevkit/VOC2007/latest.jpg"
    assert link.is_symlink() and link.read_bytes() == GOOD_FILES[
        "VOCdevkit/VOC2007/JPEGImages/000001.jpg"]


def _leftovers(dest: Path) -> list[str]:
    return sorted(p.name for p in dest.rglob("*") if p.name.endswith(".part")
                  or p.name.startswith(".extracting"))


# -- downloads --------------------------------------------------------------------------------


@pytest.mark.parametrize("compression", ["w", "w:gz"])
def test_download_verify_extract(server, tmp_path, compression):
    archive = _publish(server, "/voc/toy.tar", good_archive(compression), checksum="md5")
    dest = tmp_path / "data"
    messages = []
    assert _fetch(archive, dest, log=messages.append) == dest
    _assert_good_tree(dest)
    assert (dest / "downloads" / "toy.tar").read_bytes() == server.files["/voc/toy.tar"]
    assert (dest / "downloads" / "toy.tar.done").is_file()
    assert _leftovers(dest) == []
    assert server.requests == [{"path": "/voc/toy.tar", "range": None}]
    # Fetching again finds it extracted and asks the server nothing.
    _fetch(archive, dest, log=messages.append)
    assert len(server.requests) == 1 and "already extracted" in messages[-1]


def test_mirror_replaces_the_official_location(server, tmp_path):
    body = good_archive()
    server.files["/mirror/toy.tar"] = body
    official = Archive("toy.tar", "http://127.0.0.1:9/pascal/toy.tar", size=len(body),
                       sha256=hashlib.sha256(body).hexdigest())
    _fetch(official, tmp_path / "data", base_url=server.base + "/mirror/", keep_archives=False)
    _assert_good_tree(tmp_path / "data")
    assert [r["path"] for r in server.requests] == ["/mirror/toy.tar"]
    assert not (tmp_path / "data" / "downloads" / "toy.tar").exists()  # keep_archives=False


def test_resume_after_an_interrupted_download(server, tmp_path):
    archive = _publish(server, "/toy.tar", good_archive())
    dest = tmp_path / "data"
    server.cut_next = 5000
    with pytest.raises(DataError, match="interrupted after 5000 bytes.*run the command again"):
        _fetch(archive, dest, retries=0)
    part = dest / "downloads" / "toy.tar.part"
    assert part.read_bytes() == server.files["/toy.tar"][:5000]
    assert not (dest / "VOCdevkit").exists()

    _fetch(archive, dest, retries=0)
    assert [r["range"] for r in server.requests] == [None, "bytes=5000-"]
    _assert_good_tree(dest)
    assert not part.exists()


def test_a_dropped_connection_is_resumed_within_one_fetch(server, tmp_path):
    archive = _publish(server, "/toy.tar", good_archive())
    server.cut_next = 12345
    _fetch(archive, tmp_path / "data", retries=2)
    assert [r["range"] for r in server.requests] == [None, "bytes=12345-"]
    _assert_good_tree(tmp_path / "data")


def test_a_server_ignoring_range_restarts_from_zero(server, tmp_path):
    archive = _publish(server, "/toy.tar", good_archive())
    server.cut_next, server.honour_range = 3000, False
    _fetch(archive, tmp_path / "data", retries=1)
    assert [r["range"] for r in server.requests] == [None, "bytes=3000-"]
    _assert_good_tree(tmp_path / "data")  # the 200 reply overwrote the part file


@pytest.mark.parametrize("checksum", ["sha256", "md5"])
def test_a_corrupted_download_is_deleted_and_nothing_is_extracted(server, tmp_path, checksum):
    body = good_archive()
    archive = _publish(server, "/toy.tar", body, checksum=checksum)
    corrupted = bytearray(body)
    corrupted[700] ^= 0xFF
    server.files["/toy.tar"] = bytes(corrupted)
    dest = tmp_path / "data"
    with pytest.raises(DataError) as raised:
        _fetch(archive, dest)
    message = str(raised.value)
    expected = getattr(archive, checksum)
    actual = hashlib.new(checksum, bytes(corrupted)).hexdigest()
    assert "toy.tar" in message and f"expected {checksum} {expected}" in message
    assert f"got {actual}" in message
    assert sorted(p.name for p in dest.rglob("*")) == ["downloads"]  # no part file, no tree


def test_a_wrong_size_is_refused(server, tmp_path):
    body = good_archive()
    archive = _publish(server, "/toy.tar", body)
    server.files["/toy.tar"] = body + b"\0" * 512  # one more tar block, same content
    with pytest.raises(DataError, match=f"expected {len(body)} bytes, got {len(body) + 512}"):
        _fetch(archive, tmp_path / "data", retries=0)
    assert _leftovers(tmp_path / "data") == []


def test_http_errors_and_unknown_names(server, tmp_path):
    missing = Archive("gone.tar", server.base + "/gone.tar", size=10, md5="0" * 32)
    with pytest.raises(DataError, match="HTTP 404"):
        _fetch(missing, tmp_path / "data")
    assert len(server.requests) == 1  # a 404 is not retried
    with pytest.raises(DataError, match="unknown dataset; choose one of sbd, voc2007, voc2012"):
        fetch_dataset("voc2099", tmp_path / "data")


def test_the_official_table():
    names = {name: [a.filename for a in archives] for name, archives in fetch.DATASETS.items()}
    assert names == {"voc2007": ["VOCtrainval_06-Nov-2007.tar", "VOCtest_06-Nov-2007.tar"],
                     "voc2012": ["VOCtrainval_11-May-2012.tar"], "sbd": ["benchmark.tgz"]}
    for archives in fetch.DATASETS.values():
        for archive in archives:
            assert archive.url.endswith("/" + archive.filename)
            assert re.fullmatch(r"[0-9a-f]{32}", archive.md5) and archive.size > 10**8
            assert archive.url_from("http://mirror/x/") == f"http://mirror/x/{archive.filename}"


# -- malicious archives -----------------------------------------------------------------------


def _device(name: str) -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
    return info, None


def _malicious(outside: Path) -> dict[str, tuple[str, list]]:
    """Each case: the member that must be named, and the archive's members (a good one first)."""
    first = _file("VOCdevkit/ok.txt", b"fine\n")
    return {
        "dotdot": ("../evil.txt", [first, _file("../evil.txt", b"x")]),
        "dotdot-2": ("../../evil.txt", [first, _file("../../evil.txt", b"x")]),
        "nested-dotdot": ("VOCdevkit/../../evil.txt",
                          [first, _file("VOCdevkit/../../evil.txt", b"x")]),
        "absolute": (str(outside / "abs.txt"), [first, _file(str(outside / "abs.txt"), b"x")]),
        "symlink-out": ("VOCdevkit/passwd", [first, _link("VOCdevkit/passwd", "/etc/passwd")]),
        "symlink-dotdot": ("VOCdevkit/up", [first, _link("VOCdevkit/up", "../../..")]),
        "hardlink-out": ("VOCdevkit/hard", [first, _link("VOCdevkit/hard", "../outside/victim",
                                                         tarfile.LNKTYPE)]),
        "hardlink-abs": ("VOCdevkit/hard", [first, _link("VOCdevkit/hard",
                                                         str(outside / "victim"),
                                                         tarfile.LNKTYPE)]),
        "device": ("VOCdevkit/null", [first, _device("VOCdevkit/null")]),
    }


CASES = ["dotdot", "dotdot-2", "nested-dotdot", "absolute", "symlink-out", "symlink-dotdot",
         "hardlink-out", "hardlink-abs", "device"]


@pytest.mark.parametrize("with_filter", [True, False], ids=["data-filter", "no-filter"])
@pytest.mark.parametrize("case", CASES)
def test_malicious_archives_are_refused(tmp_path, monkeypatch, case, with_filter):
    if not with_filter:  # as on a Python without extraction filters: our checks alone
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "victim").write_text("untouched")
    member, members = _malicious(outside)[case]
    archive = tmp_path / "evil.tar"
    archive.write_bytes(_tar(members))
    dest = tmp_path / "dest"
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    with pytest.raises(DataError) as raised:
        safe_extract(archive, dest, progress=False)
    assert f"refusing to extract member {member!r}" in str(raised.value)
    assert raised.value.path == archive
    assert list(dest.iterdir()) == []  # not even the good member before it
    assert sorted(str(p) for p in tmp_path.rglob("*")) == sorted(before + [str(dest)])
    assert (outside / "victim").read_text() == "untouched"
    assert not (tmp_path / "evil.txt").exists()


def test_a_malicious_download_is_refused_end_to_end(server, tmp_path):
    archive = _publish(server, "/evil.tar", _tar([_file("../evil.txt", b"x")]))
    dest = tmp_path / "data"
    with pytest.raises(DataError, match="refusing to extract member '../evil.txt'"):
        _fetch(archive, dest)
    assert not (tmp_path / "evil.txt").exists()
    assert sorted(p.name for p in dest.iterdir()) == ["downloads"]
    assert not (dest / "downloads" / "evil.tar.done").exists()


def test_extraction_merges_into_an_existing_tree_and_cleans_a_killed_one(tmp_path):
    dest = tmp_path / "data"
    (dest / "VOCdevkit" / "VOC2007" / "JPEGImages").mkdir(parents=True)
    (dest / "VOCdevkit" / "VOC2007" / "JPEGImages" / "000999.jpg").write_bytes(b"kept")
    (dest / ".extracting-toy.tar" / "half").mkdir(parents=True)  # left by a killed extraction
    archive = tmp_path / "toy.tar"
    archive.write_bytes(good_archive())
    assert safe_extract(archive, dest, progress=False) == ["VOCdevkit"]
    _assert_good_tree(dest)
    assert (dest / "VOCdevkit" / "VOC2007" / "JPEGImages" / "000999.jpg").read_bytes() == b"kept"
    assert _leftovers(dest) == []


def test_a_truncated_archive_is_a_data_error(tmp_path):
    archive = tmp_path / "cut.tar.gz"
    archive.write_bytes(good_archive("w:gz")[:300])
    with pytest.raises(DataError, match="cannot read the archive"):
        safe_extract(archive, tmp_path / "dest", progress=False)
    assert list((tmp_path / "dest").iterdir()) == []
