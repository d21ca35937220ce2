#!/usr/bin/python3
"""A fake IP camera: an RTSP server (GStreamer) that plays a live test pattern.

Used by camrec's tests, lab runs and the local dev command. Run with /usr/bin/python3 (Debian's,
which has `gi`). Prints `READY rtsp://127.0.0.1:<port><path>` on stdout once it serves, and
`CLIENT OPEN` / `CLIENT CLOSED` for each RTSP connection, then runs
until killed (SIGTERM/SIGINT stop it cleanly).

    /usr/bin/python3 fake_camera.py --port 8554 --path /cam --user admin --password secret \
        --video h264 --audio aac --width 640 --height 360 --fps 25
"""
import argparse
import signal
import sys

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtsp", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtsp, GstRtspServer  # noqa: E402

VIDEO = {
    "h264": "x264enc tune=zerolatency speed-preset=ultrafast key-int-max={gop} bitrate={kbps} "
    "! h264parse ! rtph264pay name=pay0 pt=96 config-interval=1",
    "h265": "x265enc tune=zerolatency speed-preset=ultrafast key-int-max={gop} bitrate={kbps} "
    "! h265parse ! rtph265pay name=pay0 pt=96 config-interval=1",
}
AUDIO = {
    "aac": "audiotestsrc is-live=true wave=sine freq=440 volume=0.2 ! audioconvert ! audioresample "
    "! audio/x-raw,rate=48000,channels=1 ! avenc_aac bitrate=64000 ! rtpmp4gpay name=pay1 pt=97",
    "pcma": "audiotestsrc is-live=true wave=sine freq=440 volume=0.2 ! audioconvert ! audioresample "
    "! audio/x-raw,rate=8000,channels=1 ! alawenc ! rtppcmapay name=pay1 pt=8",
    "pcmu": "audiotestsrc is-live=true wave=sine freq=440 volume=0.2 ! audioconvert ! audioresample "
    "! audio/x-raw,rate=8000,channels=1 ! mulawenc ! rtppcmupay name=pay1 pt=0",
    "none": None,
}


def launch_line(a):
    video = (
        "( videotestsrc is-live=true pattern=smpte ! "
        f"video/x-raw,width={a.width},height={a.height},framerate={a.fps}/1 ! clockoverlay ! "
        "videoconvert ! " + VIDEO[a.video].format(gop=a.fps, kbps=a.kbps)
    )
    audio = AUDIO[a.audio]
    return video + (" " + audio if audio else "") + " )"


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8554)
    p.add_argument("--path", default="/cam")
    p.add_argument("--user", default="")
    p.add_argument("--password", default="")
    p.add_argument("--video", choices=sorted(VIDEO), default="h264")
    p.add_argument("--audio", choices=sorted(AUDIO), default="aac")
    p.add_argument("--width", type=int, default=640)
    p.add_argument("--height", type=int, default=360)
    p.add_argument("--fps", type=int, default=25)
    p.add_argument("--kbps", type=int, default=800)
    p.add_argument(
        "--shared",
        action="store_true",
        help="one pipeline for every client, as a real camera's encoder (default: one per client; "
        "a shared media sometimes went on resetting every new connection after a client was "
        "SIGKILLed, which the lab's long runs then counted as unreachable cameras)",
    )
    a = p.parse_args()

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address(a.host)
    server.set_service(str(a.port))
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch_line(a))
    factory.set_shared(a.shared)
    factory.set_protocols(GstRtsp.RTSPLowerTrans.TCP)
    if a.user:
        auth = GstRtspServer.RTSPAuth()
        token = GstRtspServer.RTSPToken()
        token.set_string(GstRtspServer.RTSP_TOKEN_MEDIA_FACTORY_ROLE, "user")
        auth.add_basic(GstRtspServer.RTSPAuth.make_basic(a.user, a.password), token)
        server.set_auth(auth)
        perms = GstRtspServer.RTSPPermissions()
        perms.add_permission_for_role("user", GstRtspServer.RTSP_PERM_MEDIA_FACTORY_ACCESS, True)
        perms.add_permission_for_role("user", GstRtspServer.RTSP_PERM_MEDIA_FACTORY_CONSTRUCT, True)
        factory.set_permissions(perms)
    server.get_mount_points().add_factory(a.path, factory)

    # Each RTSP connection is announced on stdout, so tests count the sessions a camera serves.
    def on_client(_server, client):
        print("CLIENT OPEN", flush=True)
        client.connect("closed", lambda _c: print("CLIENT CLOSED", flush=True))

    server.connect("client-connected", on_client)
    if server.attach(None) == 0:
        print(f"cannot listen on {a.host}:{a.port}", file=sys.stderr, flush=True)
        sys.exit(2)

    loop = GLib.MainLoop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, sig, loop.quit)
    print(f"READY rtsp://{a.host}:{a.port}{a.path}", flush=True)
    loop.run()


if __name__ == "__main__":
    main()
