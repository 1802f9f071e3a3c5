"""The synthetic world's video clips: determinism, class-dependent motion and sound, the reader."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from benchharness.data.datasets import locate_clips
from benchharness.data.loading.clip_cache import load_clips
from benchharness.data.loading.video import list_videos, read_clip, write_clip
from benchharness.data.synthetic.clips import (CLIP_SIZES, CLIPS_VERSION, MANIFEST, ClipSize, clips_info,
                                               ensure_clips, make_clip, read_manifest, write_clips)
from benchharness.data.synthetic.sound import RECIPES, make_sound
from benchharness.data.synthetic.world import CLASS_STYLES, _rng
from benchharness.data.voc.identity import synthetic_recipe
from benchharness.data.voc.classes import VOC_CLASSES
from benchharness.interfaces import DataError

TINY = CLIP_SIZES["tiny"]
SMALL_TEST = ClipSize(clips=0, frames=12, side=96, fps=12)  # shorter clips: quicker tests


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_world_has_clips_and_counts_them(tiny_world: Path):
    clips = locate_clips(tiny_world)
    assert len(list_videos(clips)) == TINY.clips
    manifest = read_manifest(clips)
    assert [c["file"] for c in manifest["clips"]] == [p.name for p in list_videos(clips)]
    # every class has its clips, and the manifest's facts are the class's
    assert sorted({c["class"] for c in manifest["clips"]}) == sorted(VOC_CLASSES)
    for record in manifest["clips"]:
        style = CLASS_STYLES[record["class"]]
        assert (record["motion"], record["sound"]) == (style.motion, style.sound)
        assert record["objects"][0]["class"] == record["class"]
        assert all(len(o["boxes"]) == TINY.frames for o in record["objects"])
    info = json.loads((tiny_world / "world.json").read_text())
    assert info["counts"]["clips"] == TINY.clips and info["clips"]["frames"] == TINY.frames


def test_same_seed_same_bytes_and_samples_other_seed_differs(tiny_world: Path, tmp_path: Path):
    again = write_clips(tmp_path / "again", seed=3, size="tiny")  # the tiny world's seed
    assert _digests(again) == _digests(tiny_world / "clips")
    first = read_clip(again / "clip_000004.mkv", TINY.frames, 96)
    second = read_clip(tiny_world / "clips" / "clip_000004.mkv", TINY.frames, 96)
    assert np.array_equal(first[0], second[0]) and np.array_equal(first[1], second[1])
    other = write_clips(tmp_path / "other", seed=4, size="tiny")
    different = read_clip(other / "clip_000004.mkv", TINY.frames, 96)  # same class, other seed
    assert not np.array_equal(different[0], first[0]) and not np.array_equal(different[1], first[1])


def test_clip_generation_is_independent_of_the_images(tiny_world: Path, tmp_path: Path):
    """Clips come from their own random stream: the same clip whatever was generated before."""
    direct = make_clip(_rng(3, 5, 7), 7, TINY)
    decoded, audio = read_clip(tiny_world / "clips" / "clip_000007.mkv", TINY.frames, 96)
    assert np.abs(decoded.astype(int) - direct.frames).mean() < 6  # lossy video, same content
    assert np.abs(audio - direct.audio).max() < 1e-4  # 16-bit PCM


def _centres(boxes):
    return np.array([[(b[0] + b[2]) / 2, (b[1] + b[3]) / 2] if b else [np.nan, np.nan] for b in boxes])


def _motion_stats(cls: str, clips: int = 6):
    """Mean per-frame speed, and horizontal / vertical extents of the main object's path."""
    speeds, spans = [], []
    for i in range(clips):
        clip = make_clip(_rng(11, 5, i), VOC_CLASSES.index(cls), SMALL_TEST, occlude=False)
        centres = _centres(clip.boxes[0])
        step = np.linalg.norm(np.diff(centres, axis=0), axis=1)
        speeds.append(np.nanmean(step))
        spans.append(np.nanmax(centres, 0) - np.nanmin(centres, 0))
    return float(np.mean(speeds)), np.mean(spans, axis=0)


def test_motion_is_class_dependent():
    fast, fast_span = _motion_stats("aeroplane")     # fast-linear
    slow, _ = _motion_stats("cow")                   # slow
    still, still_span = _motion_stats("bottle")      # still
    bob, bob_span = _motion_stats("boat")            # bob: up and down, little drift
    gallop, gallop_span = _motion_stats("horse")     # gallop: fast, horizontal
    assert still < 0.3 and still_span.max() < 1.5
    assert fast > 2.5 > slow > still and fast > 3 * slow
    assert bob_span[1] > 2 * bob_span[0]
    assert gallop_span[0] > 2 * gallop_span[1] and gallop > 2.0


def _spectrum(audio: np.ndarray, bins: int = 64) -> np.ndarray:
    power = np.abs(np.fft.rfft(audio)) ** 2
    return np.log(np.array([chunk.mean() for chunk in np.array_split(power, bins)]) + 1e-9)


def test_sound_is_class_dependent_and_deterministic():
    a = make_sound(np.random.default_rng(0), "whistle", 1.0)
    assert np.array_equal(a, make_sound(np.random.default_rng(0), "whistle", 1.0))
    assert a.dtype == np.float32 and abs(np.abs(a).max() - 0.5) < 1e-6
    sounds = ["whistle", "engine", "chirp", "moo", "rustle", "bell"]
    spectra = {s: [_spectrum(make_sound(np.random.default_rng(100 + i), s, 1.0)) for i in range(3)]
               for s in sounds}
    within = np.mean([np.linalg.norm(v[0] - v[k]) for v in spectra.values() for k in (1, 2)])
    between = min(np.linalg.norm(spectra[a][0] - spectra[b][0]) for a in sounds for b in sounds if a < b)
    assert between > within, (between, within)
    # the whistle's energy sits around its 2.2 kHz tone, the engine's far below 1 kHz
    freqs = np.fft.rfftfreq(16000, 1 / 16000)
    for name, low, high in (("whistle", 1800, 2700), ("engine", 0, 1000)):
        power = np.abs(np.fft.rfft(make_sound(np.random.default_rng(5), name, 1.0))) ** 2
        centroid = (freqs * power).sum() / power.sum()
        assert low < centroid < high, (name, centroid)
    assert set(RECIPES) >= {style.sound for style in CLASS_STYLES.values()}


def test_main_object_box_matches_the_drawn_object():
    clip = make_clip(_rng(1, 5, 0), VOC_CLASSES.index("bus"), SMALL_TEST)
    for f in (0, 6, 11):
        box = clip.boxes[0][f]
        assert box is not None and 1 <= box[0] <= box[2] <= 96 and 1 <= box[1] <= box[3] <= 96
        # the bus is yellow: its box holds clearly more yellow than the rest of the frame
        frame = clip.frames[f].astype(int)
        yellow = (frame[..., 0] > 150) & (frame[..., 1] > 150) & (frame[..., 2] < 100)
        inside = np.zeros_like(yellow)
        inside[box[1] - 1:box[3], box[0] - 1:box[2]] = True
        assert yellow[inside].mean() > 0.2 and yellow[~inside].mean() < 0.05


# ---------------------------------------------------------------------------------------------
# The reader


def _write(path: Path, frames=12, side=(48, 64), audio=True, fps=12):
    height, width = side
    video = np.zeros((frames, height, width, 3), np.uint8)
    for k in range(frames):
        video[k] = (10 * k + 40) % 256  # brightness tells the frame
    sound = 0.3 * np.sin(2 * np.pi * 440 * np.arange(16000 * frames // fps) / 16000) if audio else None
    write_clip(path, video, sound, fps, 16000)
    return path


def test_reader_resizes_samples_frames_and_resamples_audio(tmp_path: Path):
    path = _write(tmp_path / "a.mkv")
    frames, audio = read_clip(path, 12, 32, audio_rate=8000, audio_seconds=0.5)
    assert frames.shape == (12, 32, 32, 3) and frames.dtype == np.uint8
    assert audio.shape == (4000,) and audio.dtype == np.float32
    assert abs(np.abs(audio).max() - 0.3) < 0.02
    every_other, _ = read_clip(path, 6, 32, frame_rate=6, audio_seconds=None)
    assert np.allclose(every_other[:, 16, 16, 0].astype(int), [40 + 20 * k for k in range(6)], atol=4)


def test_reader_errors_name_the_file_and_the_problem(tmp_path: Path):
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"\x00not a video at all" * 64)
    with pytest.raises(DataError, match="garbage.mp4: not a readable video file"):
        read_clip(garbage, 4, 32)
    whole = _write(tmp_path / "whole.mkv", frames=24, fps=24).read_bytes()
    truncated = tmp_path / "truncated.mkv"
    truncated.write_bytes(whole[: len(whole) // 3])
    with pytest.raises(DataError, match=r"truncated.mkv: only \d+ of the 24 video frames .* truncated"):
        read_clip(truncated, 24, 32, audio_seconds=None)
    silent = _write(tmp_path / "silent.mkv", audio=False)
    with pytest.raises(DataError, match="silent.mkv: has no audio stream"):
        read_clip(silent, 4, 32)
    frames, audio = read_clip(silent, 4, 32, need_audio=False)
    assert frames.shape[0] == 4 and audio is None
    with pytest.raises(DataError, match="whole.mkv|short.mkv"):
        read_clip(_write(tmp_path / "short.mkv", frames=6, fps=12), 8, 32, audio_seconds=None)
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="empty: no video files"):
        list_videos(empty)


def test_clip_cache_decodes_once(tmp_path: Path, monkeypatch):
    folder = tmp_path / "videos"
    folder.mkdir()
    for i in range(3):
        _write(folder / f"v{i}.mkv")
    (folder / "notes.txt").write_text("not a video")
    first = load_clips(folder, 8, 32, audio_seconds=0.5, need_audio=True, cache_dir=tmp_path / "cache")
    assert first.frames.shape == (3, 8, 32, 32, 3) and first.audio.shape == (3, 8000)
    assert len(list((tmp_path / "cache" / "clips").glob("*.npy"))) == 2

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again")

    monkeypatch.setattr("benchharness.data.loading.clip_cache.read_clip", no_decoding)
    second = load_clips(folder, 8, 32, audio_seconds=0.5, need_audio=True, cache_dir=tmp_path / "cache")
    assert np.array_equal(second.frames, first.frames) and np.array_equal(second.audio, first.audio)


def test_older_world_gets_its_clips_and_missing_clips_are_explained(tmp_path: Path):
    world = tmp_path / "old"
    world.mkdir()
    (world / "world.json").write_text(json.dumps({"generator": "benchharness.data.synth", "seed": 3,
                                                  "size": "tiny", "counts": {}}))
    with pytest.raises(DataError, match="clips: video clips with sound expected here"):
        locate_clips(world)
    assert not ensure_clips(world)  # not complete: left alone
    (world / ".complete").write_bytes(b"")
    assert ensure_clips(world)
    assert (world / "clips" / MANIFEST).is_file() and not ensure_clips(world)
    fresh = write_clips(tmp_path / "fresh", 3, "tiny")
    assert _digests(world / "clips") == _digests(fresh)
    assert json.loads((world / "world.json").read_text())["counts"]["clips"] == TINY.clips
    shutil.rmtree(fresh)


def test_clips_of_an_older_generator_are_made_again_and_change_the_worlds_identity(tmp_path: Path):
    world = tmp_path / "w"
    write_clips(world / "clips", 3, "tiny")
    info = {"generator": "benchharness.data.synth", "generator_version": "1", "seed": 3, "size": "tiny",
            "counts": {}, "clips": {k: v for k, v in clips_info("tiny").items() if k != "version"}}
    (world / "world.json").write_text(json.dumps(info))
    (world / ".complete").write_bytes(b"")
    manifest = read_manifest(world / "clips")
    del manifest["generator_version"]  # as version 1 wrote it
    (world / "clips" / MANIFEST).write_text(json.dumps(manifest))
    before = synthetic_recipe(world)
    assert ensure_clips(world)
    assert read_manifest(world / "clips")["generator_version"] == CLIPS_VERSION
    assert json.loads((world / "world.json").read_text())["clips"]["version"] == CLIPS_VERSION
    assert synthetic_recipe(world) != before  # cached representations of the old clips are not reused
    assert not ensure_clips(world)  # current now: left alone


def test_manifest_records_scale_lighting_same_class_distractors_and_occluders(tiny_world: Path):
    records = read_manifest(tiny_world / "clips")["clips"]
    occluded = [r for r in records if r["occluder"] is not None]
    assert 0 < len(occluded) < len(records)
    for r in occluded:
        assert len(r["occluder"]["boxes"]) == TINY.frames and len(r["occluder"]["hidden_share"]) == TINY.frames
    assert any(max(r["occluder"]["hidden_share"]) > 0.2 for r in occluded)  # it does hide the object
    assert any(r["same_class_distractor"] for r in records)
    for r in records:
        assert r["same_class_distractor"] == (len(r["objects"]) > 1 and r["objects"][1]["class"] == r["class"])
        for obj in r["objects"]:
            if CLASS_STYLES[obj["class"]].motion == "still":
                assert obj["scale_change"] == obj["lighting_change"] == 1.0
    moving = [o for r in records for o in r["objects"] if CLASS_STYLES[o["class"]].motion != "still"]
    assert max(abs(np.log(o["scale_change"])) for o in moving) > 0.1
    assert max(abs(np.log(o["lighting_change"])) for o in moving) > 0.1


def test_occluder_hides_the_object_and_the_rest_is_the_unoccluded_render():
    i = next(i for i in range(40) if make_clip(_rng(5, 5, i), 0, SMALL_TEST).occluded_frames)
    occluded = make_clip(_rng(5, 5, i), 0, SMALL_TEST)
    clean = make_clip(_rng(5, 5, i), 0, SMALL_TEST, occlude=False)
    assert clean.occluder_boxes is None and clean.occluded_frames == []
    np.testing.assert_array_equal(occluded.audio, clean.audio)
    for f in range(SMALL_TEST.frames):
        x1, y1, x2, y2 = clean.boxes[0][f]
        a = occluded.frames[f, y1 - 1:y2, x1 - 1:x2].astype(int)
        b = clean.frames[f, y1 - 1:y2, x1 - 1:x2].astype(int)
        if occluded.hidden[f] > 0.1:  # the main object's region is painted over
            assert (np.abs(a - b).max(axis=2) > 30).mean() > 0.05, f
        box = occluded.occluder_boxes[f]
        if box is None or not (box[0] <= x2 and x1 <= box[2] and box[1] <= y2 and y1 <= box[3]):
            np.testing.assert_array_equal(a, b)  # away from the occluder nothing changed
    # the manifest's box is the visible part: smaller where the object is hidden
    f = int(np.argmax(occluded.hidden))
    area = lambda b: (b[2] - b[0] + 1) * (b[3] - b[1] + 1)  # noqa: E731
    assert occluded.hidden[f] > 0.2 and area(occluded.boxes[0][f]) <= area(clean.boxes[0][f])


def test_a_smoke_run_adds_clips_to_an_older_world_at_its_default_place_only(tmp_path: Path):
    from benchharness.runner import prepare_data_root
    from benchharness.suite import load_suite

    world = tmp_path / "old"
    (world / "VOCdevkit" / "VOC2007").mkdir(parents=True)
    (world / "world.json").write_text(json.dumps({"generator": "benchharness.data.synth", "seed": 3,
                                                  "size": "tiny", "counts": {}}))
    (world / ".complete").write_bytes(b"")
    suite = tmp_path / "s.toml"
    suite.write_text('name = "s"\nbackbone = "alexnet-small"\n[synthetic]\nseed = 3\nsize = "tiny"\n'
                     '[methods]\nuse = ["random"]\n[tasks]\nuse = ["voc07-cls"]\n')
    logs = []
    # given as --data-root, elsewhere than the suite's default: only read, no clips added
    assert prepare_data_root(load_suite(str(suite)), str(world), logs.append) == world
    assert not (world / "clips").exists()
    assert [line.split(" (layout")[0] for line in logs] == [f"found VOC2007 at {world / 'VOCdevkit' / 'VOC2007'}"]
    # where the suite's own data_root points, the older world gets its clips
    the_suite = load_suite(str(suite))
    the_suite.data_root = str(world)
    logs.clear()
    assert prepare_data_root(the_suite, None, logs.append) == world
    assert len(list_videos(world / "clips")) == TINY.clips
    assert logs[0] == f"generated the current video clips of the synthetic world in {world}"
    assert logs[1] == f"added the camera-motion sequences to the synthetic world in {world}"
    assert (world / "egomotion" / "manifest.json").is_file()
