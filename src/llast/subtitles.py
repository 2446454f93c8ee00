"""Output formats of timed segments: plain text, JSON, SRT (the `srt` package) and WebVTT.

    render([Segment(0.4, 3.9, "Hello."), ...], "srt") -> "1\\n00:00:00,400 --> 00:00:03,900\\nHello.\\n\\n..."

Segments without text get no cue in SRT or VTT (an empty cue is invalid in both); JSON keeps them.
"""

from __future__ import annotations

import datetime
import json

import srt

FORMATS = ("text", "json", "srt", "vtt")


def _cues(segments) -> list:
    return [s for s in segments if s.text.strip()]


def to_srt(segments, first: int = 1) -> str:
    """SRT cues numbered from `first` (a live stream prints its cues one at a time)."""
    subs = [
        srt.Subtitle(index=i, start=datetime.timedelta(seconds=s.start), end=datetime.timedelta(seconds=s.end),
                     content=" ".join(s.text.split()))
        for i, s in enumerate(_cues(segments), first)
    ]
    return srt.compose(subs, reindex=False)


def vtt_time(seconds: float) -> str:
    ms = int(round(seconds * 1000))
    h, ms = divmod(ms, 3_600_000)
    m, ms = divmod(ms, 60_000)
    s, ms = divmod(ms, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}.{ms:03d}"


def to_vtt(segments, header: bool = True) -> str:
    lines = ["WEBVTT", ""] if header else []
    for s in _cues(segments):
        # "-->" would end the cue timing line early in a player; it cannot occur in a VTT cue payload.
        lines += [f"{vtt_time(s.start)} --> {vtt_time(s.end)}", " ".join(s.text.replace("-->", "->").split()), ""]
    return "\n".join(lines) + "\n"


def to_dicts(segments) -> list[dict]:
    return [{"start": s.start, "end": s.end, "text": s.text} for s in segments]


def joined_text(segments) -> str:
    return " ".join(s.text for s in segments if s.text)


def render(segments, fmt: str, meta: dict | None = None) -> str:
    """`segments` (llast.segment.Segment with text) as `fmt`: text | json | srt | vtt. `meta` goes into JSON."""
    if fmt == "text":
        return joined_text(segments) + "\n"
    if fmt == "json":
        record = {**(meta or {}), "text": joined_text(segments), "segments": to_dicts(segments)}
        return json.dumps(record, ensure_ascii=False) + "\n"
    if fmt == "srt":
        return to_srt(segments)
    if fmt == "vtt":
        return to_vtt(segments)
    raise ValueError(f"unknown output format {fmt!r} (expected one of {', '.join(FORMATS)})")
