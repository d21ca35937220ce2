#!/usr/bin/python3
"""The new user's path through camrec, automated (`bash scripts/dev.sh --smoke` runs it).

POST a MOTION event, wait for its playback to be RECORDING, record for N seconds, end the event,
wait for COMPLETED, download videoUrl and thumbnailUrl and ffprobe the clip. Exits 0 when the clip
plays with about the recorded duration, 1 otherwise. Standard library only.
"""
import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.request


class Api:
    def __init__(self, base, token):
        self.base = base.rstrip("/")
        self.token = token

    def call(self, method, path, body=None):
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.base + path, data=data, method=method)
        req.add_header("authorization", "Bearer " + self.token)
        if data is not None:
            req.add_header("content-type", "application/json")
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.load(resp)


def wait_for_status(api, playback_id, wanted, timeout):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        playback = api.call("GET", f"/playbacks/{playback_id}")
        status = playback["recordingStatus"]
        if status != last:
            print(f"smoke: playback {playback_id} is {status}", flush=True)
            last = status
        if status in wanted:
            return playback
        if status == "FAILED":
            sys.exit(f"smoke: FAILED: {playback.get('errorCode')}: {playback.get('errorMessage')}")
        time.sleep(0.5)
    sys.exit(f"smoke: playback still {last} after {timeout}s, wanted {'/'.join(wanted)}")


def download(url, path):
    with urllib.request.urlopen(url, timeout=30) as resp, open(path, "wb") as out:
        out.write(resp.read())


def probe(path):
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", "-show_streams", path],
        check=True, capture_output=True,
    ).stdout
    return json.loads(out)


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--api", required=True)
    p.add_argument("--token", required=True)
    p.add_argument("--camera", required=True)
    p.add_argument("--seconds", type=float, default=6)
    a = p.parse_args()
    api = Api(a.api, a.token)

    created = api.call("POST", "/events", {"cameraId": a.camera, "type": "MOTION",
                                           "description": "scripts/dev.sh --smoke"})
    event_id, playback_id = created["id"], created["playbackId"]
    print(f"smoke: event {event_id}, playback {playback_id}", flush=True)
    wait_for_status(api, playback_id, ["RECORDING"], 60)
    time.sleep(a.seconds)  # the length of the clip, not a synchronisation
    api.call("POST", f"/events/{event_id}/end")
    playback = wait_for_status(api, playback_id, ["COMPLETED"], 120)

    with tempfile.TemporaryDirectory() as tmp:
        video, thumb = f"{tmp}/video.mp4", f"{tmp}/thumb.jpg"
        download(playback["videoUrl"], video)
        download(playback["thumbnailUrl"], thumb)
        info = probe(video)
    duration = float(info["format"]["duration"])
    streams = {s["codec_type"]: s for s in info["streams"]}
    v = streams["video"]
    print(f"smoke: videoUrl {playback['videoUrl']}")
    print(f"smoke: {duration:.1f} s, {v['codec_name']} {v['width']}x{v['height']}, audio "
          f"{streams.get('audio', {}).get('codec_name', 'none')}, {playback['fileSizeBytes']} bytes")
    # The clip is the event's window: its pre-roll (what the camera's capture held of it), the
    # event, its post-roll; each end within a keyframe interval.
    camera = api.call("GET", f"/cameras/{a.camera}")
    pre, post = camera["preRollSec"], camera["postRollSec"]
    low, high = a.seconds + post - 1, a.seconds + pre + post + 3
    print(f"smoke: startedAt {playback['startedAt']}, endedAt {playback['endedAt']}, "
          f"startedLate {playback['startedLate']}, gaps {playback['gaps']}")
    if not low <= duration <= high:
        sys.exit(f"smoke: clip lasts {duration:.1f} s, expected {low:.0f}-{high:.0f} s "
                 f"({a.seconds} s of event, pre-roll {pre} s, post-roll {post} s)")
    print("smoke: ok")


if __name__ == "__main__":
    main()
