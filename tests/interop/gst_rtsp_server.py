#!/usr/bin/python3
"""An RTSP server we did not write, for interop tests: GStreamer's gst-rtsp-server.

Serves two mounts on 127.0.0.1:

    /h264   the H.264 clip given with --h264
    /h265   the H.265 clip given with --h265

without re-encoding: each clip is demuxed (qtdemux), parsed (h264parse/h265parse, which
also repeats the parameter sets before every keyframe) and packetised (rtph264pay/
rtph265pay). A clip loops forever, so that a client can stay connected for minutes: a
reader pipeline demuxes the file into an appsink, and every pass after the first is
shifted in time by the clip's length before it is handed to the served pipeline's appsrc,
so timestamps (and RTP timestamps) keep increasing across the loop. The served media is
shared: every client of a mount joins the same stream, as with a camera.

Prints `READY rtsp://127.0.0.1:PORT` on stdout once it accepts connections (`--port 0`
picks a free port) and exits with status 0 on SIGTERM or SIGINT.

Needs Debian's python3-gi and gir1.2-gst-rtsp-server-1.0 (`make setup`) and runs with the
system Python (/usr/bin/python3), which is where python3-gi installs.
"""

import argparse
import os
import signal
import sys

try:
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstApp", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstApp, GstRtspServer  # noqa: F401
except (ImportError, ValueError) as error:
    sys.exit(
        f"gst_rtsp_server.py: GStreamer's RTSP server is not usable from {sys.executable}: "
        f"{error}; run `make setup` (installs python3-gi and gir1.2-gst-rtsp-server-1.0)"
    )

# codec name -> (caps the reader accepts from qtdemux, parser, payloader)
CODECS = {
    "h264": ("video/x-h264", "h264parse", "rtph264pay"),
    "h265": ("video/x-h265", "h265parse", "rtph265pay"),
}

# How long the served pipeline waits for the reader before declaring it broken.
READER_TIMEOUT = 10 * Gst.SECOND


def log(message):
    print(f"gst_rtsp_server.py: {message}", file=sys.stderr, flush=True)


class LoopingReader:
    """Demuxes one clip over and over, handing out its access units with timestamps that
    keep increasing: pass k is shifted by k times the clip's length."""

    def __init__(self, path, codec):
        caps, _, _ = CODECS[codec]
        self.path = path
        self.pipeline = Gst.parse_launch(
            f"filesrc name=file ! qtdemux ! {caps} ! "
            "appsink name=sink sync=false max-buffers=64 enable-last-sample=false"
        )
        self.pipeline.get_by_name("file").set_property("location", path)
        self.sink = self.pipeline.get_by_name("sink")
        self.offset = 0  # added to every timestamp of the current pass
        self.period = None  # the clip's length, known after the first pass
        self.first_pts = None  # earliest pts of the first pass (qtdemux may start > 0)
        self.pass_end = 0  # end (pts + duration) of the latest access unit of this pass
        self.loops = 0
        self.stopped = False
        self.pipeline.set_state(Gst.State.PLAYING)

    def next_buffer(self):
        """The next access unit with shifted timestamps, and its caps; None if the reader
        failed (the reason is logged)."""
        for _ in range(2):  # at most one loop back per access unit
            sample = self.sink.try_pull_sample(READER_TIMEOUT)
            if sample is not None:
                return self._shift(sample), sample.get_caps()
            if self.stopped:
                return None
            if not self.sink.is_eos():
                log(f"{self.path}: no data from the reader within {READER_TIMEOUT // Gst.SECOND} s")
                return None
            self._loop()
        log(f"{self.path}: the clip has no video")
        return None

    def _shift(self, sample):
        buf = sample.get_buffer().copy()  # a new buffer, so its timestamps are writable
        if buf.pts != Gst.CLOCK_TIME_NONE:
            duration = buf.duration if buf.duration != Gst.CLOCK_TIME_NONE else 0
            self.pass_end = max(self.pass_end, buf.pts + duration)
            if self.period is None:
                self.first_pts = buf.pts if self.first_pts is None else min(self.first_pts, buf.pts)
            buf.pts += self.offset
        if buf.dts != Gst.CLOCK_TIME_NONE:
            buf.dts += self.offset
        return buf

    def _loop(self):
        if self.period is None:
            # The next pass starts where this one ended: one frame after its last one.
            self.period = self.pass_end - (self.first_pts or 0)
        self.offset += self.period
        self.loops += 1
        self.pass_end = 0
        log(f"{self.path}: looping (pass {self.loops + 1}, offset {self.offset / Gst.SECOND:.3f} s)")
        if not self.pipeline.seek_simple(Gst.Format.TIME, Gst.SeekFlags.FLUSH | Gst.SeekFlags.KEY_UNIT, 0):
            log(f"{self.path}: cannot seek back to the start")

    def stop(self):
        self.stopped = True
        self.pipeline.set_state(Gst.State.NULL)


class LoopingFactory(GstRtspServer.RTSPMediaFactory):
    """One shared media per mount: appsrc (fed by a LoopingReader) ! parser ! payloader."""

    def __init__(self, path, codec):
        super().__init__()
        _, parser, payloader = CODECS[codec]
        self.path = path
        self.codec = codec
        self.set_launch(
            "( appsrc name=src is-live=false format=time stream-type=stream max-bytes=1000000 "
            f"! {parser} config-interval=-1 ! {payloader} name=pay0 pt=96 )"
        )
        self.set_shared(True)
        self.connect("media-configure", self._configure)

    def _configure(self, _factory, media):
        reader = LoopingReader(self.path, self.codec)
        appsrc = media.get_element().get_by_name_recurse_up("src")
        state = {"caps": None, "ended": False}

        # Runs on appsrc's streaming thread whenever its queue runs low: one access unit
        # a call. The served pipeline's sinks pace it in real time.
        def need_data(src, _length):
            if state["ended"]:
                return
            item = reader.next_buffer()
            if item is None:
                state["ended"] = True
                src.end_of_stream()
                return
            buf, caps = item
            if state["caps"] is None or not caps.is_equal(state["caps"]):
                src.set_caps(caps)  # qtdemux's caps carry the parameter sets (codec_data)
                state["caps"] = caps
            src.push_buffer(buf)

        appsrc.connect("need-data", need_data)
        media.connect("unprepared", lambda _media: reader.stop())
        log(f"serving {self.path} as {self.codec}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, default=8554, help="RTSP port; 0 picks a free one")
    parser.add_argument("--h264", required=True, help="H.264 MP4 served at /h264")
    parser.add_argument("--h265", required=True, help="H.265 MP4 served at /h265")
    args = parser.parse_args()
    for path in (args.h264, args.h265):
        if not os.path.isfile(path):
            sys.exit(f"gst_rtsp_server.py: {path}: no such file")

    Gst.init(None)
    for element in ("qtdemux", "h264parse", "h265parse", "rtph264pay", "rtph265pay", "appsrc", "appsink"):
        if Gst.ElementFactory.find(element) is None:
            sys.exit(f"gst_rtsp_server.py: GStreamer element {element} is missing; run `make setup`")

    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    mounts = server.get_mount_points()
    mounts.add_factory("/h264", LoopingFactory(os.path.abspath(args.h264), "h264"))
    mounts.add_factory("/h265", LoopingFactory(os.path.abspath(args.h265), "h265"))
    if server.attach(None) == 0:
        sys.exit(f"gst_rtsp_server.py: cannot listen on 127.0.0.1:{args.port}")

    loop = GLib.MainLoop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signum, loop.quit)
    print(f"READY rtsp://127.0.0.1:{server.get_bound_port()}", flush=True)
    loop.run()
    log("stopping")


if __name__ == "__main__":
    main()
