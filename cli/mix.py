"""The CLI's mix tracks: `--track` specs (and a mix preset's tracks) as POST /api/mix tracks and the
files to upload with them. Torch-free, and checked locally so a typo costs no round trip.

    SOURCE[@OFFSET][:GAIN][,KEY=VALUE ...]

- SOURCE: an audio file; `job:ID` (an earlier job's audio); `content:NAME` (an audio content item;
  a bare name that is not a file means one too). Files and content items are uploaded.
- @OFFSET: where the track starts in the mix, in seconds (`@2.5` or `@2.5s`).
- :GAIN: gain in dB (`:-3dB`, `:+2`, `:-6db`).
- KEY=VALUE: offset, gain, fade_in, fade_out, trim_start, trim_end, loop_crossfade (seconds; gain in
  dB), pan (-1 left to 1 right), role (music, effect or voice), loop (alone, or loop=true|false).

    music.wav@0:-3dB,fade_out=2     thunder.wav@2.5,role=effect     job:1a2b3c4d@10,loop,pan=-0.5
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cli.errors import CliError

TRACK_HELP = (
    "A track: SOURCE\\[@OFFSET_S]\\[:GAIN_dB]\\[,KEY=VALUE...]. SOURCE: a file, job:ID or content:NAME; "
    "KEY: offset, gain, fade_in, fade_out, trim_start, trim_end, loop, loop_crossfade, pan (-1..1), "
    "role (music|effect|voice). E.g. music.wav@0:-3dB,fade_out=2 or thunder.wav@2.5,role=effect. Repeat it"
)
# KEY -> the track's field; every one of these is in seconds but gain (dB), pan and role.
KEYS = {
    "offset": "offset_s",
    "gain": "gain_db",
    "fade_in": "fade_in_s",
    "fade_out": "fade_out_s",
    "trim_start": "trim_start_s",
    "trim_end": "trim_end_s",
    "loop_crossfade": "loop_crossfade_s",
    "pan": "pan",
    "role": "role",
    "loop": "loop",
}
ROLES = ("music", "effect", "voice")
_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_TAIL = rf"(?:@(?P<offset>{_NUMBER})s?)?(?::(?P<gain>[-+]?{_NUMBER})(?:db)?)?"
_PREFIXED = re.compile(r"(?P<kind>job|content):(?P<name>[A-Za-z0-9._-]+)" + _TAIL, re.IGNORECASE)
_FILE = re.compile(r"(?P<name>.+?)" + _TAIL, re.IGNORECASE)
_GAIN = re.compile(rf"(?P<db>[-+]?{_NUMBER})\s*(?:db)?", re.IGNORECASE)
_BOOLEANS = {"true": True, "yes": True, "1": True, "false": False, "no": False, "0": False}


@dataclass
class MixTracks:
    """The `tracks` of a mix request, and the files its uploads name (part name -> path)."""

    tracks: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, Path] = field(default_factory=dict)

    def add(self, track: dict[str, Any], path: Path | None = None) -> None:
        if path is not None:
            part = f"track{len(self.tracks)}"
            track = {"upload": part, **track}
            self.files[part] = path
        self.tracks.append(track)


def _number(value: str, key: str, spec: str) -> float:
    match = _GAIN.fullmatch(value.strip()) if key == "gain" else None
    try:
        return float(match["db"] if match else value.strip().removesuffix("s"))
    except ValueError:
        raise CliError(f"--track {spec!r}: {key}={value!r} is not a number", "e.g. fade_in=0.5") from None


def _option(item: str, spec: str) -> tuple[str, Any]:
    key, eq, value = item.partition("=")
    key = key.strip().lower().removesuffix("_s").removesuffix("_db")
    if key not in KEYS:
        raise CliError(f"--track {spec!r}: unknown key {key!r}", f"use one of: {', '.join(KEYS)}")
    if key == "loop":
        if not eq:
            return KEYS[key], True
        if value.strip().lower() not in _BOOLEANS:
            raise CliError(f"--track {spec!r}: loop={value!r}", "write loop, or loop=true|false")
        return KEYS[key], _BOOLEANS[value.strip().lower()]
    if not eq:
        raise CliError(f"--track {spec!r}: {key} needs a value", f"e.g. {key}=1")
    if key == "role":
        if value.strip().lower() not in ROLES:
            raise CliError(f"--track {spec!r}: role={value!r}", f"use one of: {', '.join(ROLES)}")
        return KEYS[key], value.strip().lower()
    number = _number(value, key, spec)
    if key == "pan" and not -1 <= number <= 1:
        raise CliError(f"--track {spec!r}: pan={value} is outside -1..1", "-1 is left, 0 centre, 1 right")
    if key not in ("gain", "pan") and number < 0:
        raise CliError(f"--track {spec!r}: {key}={value} is negative", "times are seconds, 0 or more")
    return KEYS[key], number


def parse_track(spec: str) -> tuple[str, str, dict[str, Any]]:
    """(kind, value, fields) of a --track: kind is file, job, content or name (a bare name)."""
    if Path(spec).expanduser().is_file():  # a file whose name looks like options is still the file
        return "file", spec, {}
    head, *items = spec.split(",")
    match = _PREFIXED.fullmatch(head) or _FILE.fullmatch(head)
    if match is None or not match["name"].strip():
        raise CliError(f"--track {spec!r} names no audio", "e.g. --track music.wav@0:-3dB")
    kind = match.groupdict().get("kind")
    fields: dict[str, Any] = {}
    if match["offset"] is not None:
        fields["offset_s"] = float(match["offset"])
    if match["gain"] is not None:
        fields["gain_db"] = float(match["gain"])
    for item in items:
        if item.strip():
            name, value = _option(item, spec)
            fields[name] = value
    if "trim_end_s" in fields and fields["trim_end_s"] <= fields.get("trim_start_s", 0.0):
        raise CliError(f"--track {spec!r}: trim_end must come after trim_start")
    if kind is not None:
        return kind.lower(), match["name"], fields
    name = match["name"]
    return ("file" if Path(name).expanduser().is_file() else "name"), name, fields


def _source(kind: str, value: str, data_dir: Path, spec: str) -> tuple[dict[str, Any], Path | None]:
    """The track's source field and the file to upload, if any."""
    if kind == "job":
        return {"job": value}, None
    if kind == "file":
        return {}, Path(value).expanduser()
    from lib.content import ContentError, ContentStore

    try:
        return {}, ContentStore.for_data_dir(data_dir).resolve_audio(value)
    except ContentError:
        if kind == "content":
            raise CliError(f"--track {spec!r}: no audio content item {value!r}", "see `content list`") from None
        raise CliError(
            f"--track {spec!r}: {value!r} is neither a file nor an audio content item",
            "give an audio file, job:ID or content:NAME",
        ) from None


def from_specs(specs: list[str], data_dir: Path) -> MixTracks:
    if not specs:
        raise CliError("a mix needs at least one --track", "e.g. --track music.wav@0:-3dB --track thunder.wav@2.5")
    out = MixTracks()
    for spec in specs:
        kind, value, fields = parse_track(spec)
        source, path = _source(kind, value, data_dir, spec)
        out.add({**source, **fields}, path)
    return out


def from_preset(tracks: Any, data_dir: Path) -> MixTracks:
    """A mix preset's tracks: --track specs as strings, or track objects (the API's fields) whose audio is
    `file` (a path), `content` (uploaded from the content store), `job` or `audio_base64`."""
    if not isinstance(tracks, list) or not tracks:
        raise CliError('a mix preset needs "tracks": a non-empty list', 'e.g. {"type": "mix", "tracks": ["a.wav@0"]}')
    out = MixTracks()
    for item in tracks:
        if isinstance(item, str):
            kind, value, fields = parse_track(item)
            source, path = _source(kind, value, data_dir, item)
            out.add({**source, **fields}, path)
        elif isinstance(item, dict):
            track = dict(item)
            if "file" in track:
                out.add(track, Path(str(track.pop("file"))).expanduser())
            elif "content" in track:
                name = str(track.pop("content"))
                out.add(track, _source("content", name, data_dir, name)[1])
            else:
                out.add(track)
        else:
            raise CliError(f"a mix preset's track must be a string or an object, not {item!r}")
    missing = [str(p) for p in out.files.values() if not p.is_file()]
    if missing:
        raise CliError(f"a track's file does not exist: {missing[0]}")
    return out


def request_body(
    tracks: MixTracks,
    duration: float | None = None,
    fmt: str | None = None,
    sample_rate: str | None = None,
    bit_depth: int | None = None,
    normalize: str | None = None,
    channels: int | None = None,
    duck_db: float | None = None,
    duck_attack: float | None = None,
    duck_release: float | None = None,
) -> dict[str, Any]:
    """The POST /api/mix body; unset options are left out (the service's defaults apply)."""
    from cli.generation import build_request

    if duration is not None and duration <= 0:
        raise CliError(f"invalid --duration {duration:g}: must be more than 0 seconds")
    if channels is not None and channels not in (1, 2):
        raise CliError(f"invalid --channels {channels}", "a mix has 1 or 2 channels")
    if duck_db is None and (duck_attack is not None or duck_release is not None):
        raise CliError("--duck-attack and --duck-release go with --duck DB", "e.g. --duck 6")
    if duck_db is not None and duck_db <= 0:
        raise CliError(f"invalid --duck {duck_db:g}", "how many dB the music goes down: more than 0, e.g. 6")
    body: dict[str, Any] = {"tracks": tracks.tracks, "duration_s": duration, "channels": channels}
    body |= build_request(None, fmt=fmt, sample_rate=sample_rate, bit_depth=bit_depth, normalize=normalize)
    if duck_db is not None:
        duck = {"db": duck_db, "attack_s": duck_attack, "release_s": duck_release}
        body["ducking"] = {k: v for k, v in duck.items() if v is not None}
    return {k: v for k, v in body.items() if v is not None}
