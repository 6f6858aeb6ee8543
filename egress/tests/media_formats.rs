//! The format layer end to end on real encoder output: ffmpeg's RTP through the jitter
//! buffer and depacketizers into WebM, Matroska and Ogg files that ffprobe and ffmpeg judge.

mod support;

use std::fs::File;
use std::io::BufWriter;
use std::path::Path;

use support::*;
use switchboard_egress::media::depacketize::Frame;
use switchboard_egress::media::mkv::{DocType, MkvWriter, TrackSpec};
use switchboard_egress::media::ogg::OggOpusWriter;
use switchboard_egress::media::{Codec, RtpPacketIn};

fn video_track(codec: Codec, d: &Depacketized) -> TrackSpec {
    TrackSpec {
        number: 1,
        name: "camera".into(),
        codec,
        codec_private: d.depacketizer.codec_private(),
        video: d.depacketizer.dimensions(),
        audio: None,
    }
}

fn opus_track(number: u64) -> TrackSpec {
    TrackSpec {
        number,
        name: "microphone".into(),
        codec: Codec::Opus,
        codec_private: None,
        video: None,
        audio: Some((48_000, 2)),
    }
}

fn write_video(path: &Path, doc_type: DocType, codec: Codec, d: &Depacketized) {
    let file = BufWriter::new(File::create(path).expect("create the file"));
    let mut writer = MkvWriter::new(file, doc_type, &[video_track(codec, d)]).expect("headers");
    let first = d.frames[0].timestamp;
    for frame in &d.frames {
        let ms = frame_ms(frame, first, codec.clock_rate());
        writer
            .write_frame(1, ms, frame.keyframe, &frame.data)
            .expect("write a frame");
    }
    let (_, stats) = writer.finish().expect("finish");
    assert_eq!(stats.frames, d.frames.len() as u64);
    assert_eq!(stats.bytes, std::fs::metadata(path).expect("size").len());
}

/// Records one video codec and checks the file with ffprobe and ffmpeg.
fn record_video(codec: Codec, args: &[&str], doc_type: DocType, name: &str, probe_name: &str) {
    let mut packets = capture_rtp(args);
    shuffle_some(&mut packets);
    let d = depacketize(codec, packets);
    assert_eq!(d.lost_packets, 0, "reordering must not look like loss");
    assert_eq!(d.depacketizer.stats().malformed_packets, 0);
    assert_eq!(d.depacketizer.dimensions(), Some((320, 240)));
    assert!(d.frames[0].keyframe);
    assert_eq!(d.frames.len(), 90, "frames depacketized");

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join(name);
    write_video(&path, doc_type, codec, &d);

    let probe = probe(&path);
    let video = stream(&probe, "video");
    assert_eq!(video["codec_name"], probe_name);
    assert_eq!(video["width"], 320);
    assert_eq!(video["height"], 240);
    assert_close(format_duration(&probe), 3.0, 0.1, "duration");
    assert_decodes_cleanly(&path);
    let frames = decoded_frames(&path, "v:0");
    assert!((87..=90).contains(&frames), "decoded {frames} frames");
}

#[test]
fn vp8_into_webm() {
    record_video(Codec::Vp8, &vp8_args(), DocType::WebM, "vp8.webm", "vp8");
}

#[test]
fn vp9_into_webm() {
    record_video(Codec::Vp9, &vp9_args(), DocType::WebM, "vp9.webm", "vp9");
}

#[test]
fn h264_into_matroska() {
    record_video(
        Codec::H264,
        &h264_args(),
        DocType::Matroska,
        "h264.mkv",
        "h264",
    );
}

#[test]
fn opus_into_ogg() {
    let mut packets = capture_rtp(&opus_args());
    shuffle_some(&mut packets);
    let d = depacketize(Codec::Opus, packets);
    assert_eq!(d.lost_packets, 0);
    assert!(d.frames.len() >= 145, "{} Opus packets", d.frames.len());

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("audio.ogg");
    let file = BufWriter::new(File::create(&path).expect("create the file"));
    let mut writer = OggOpusWriter::new(file, 2, 0x5b0a_7d01).expect("headers");
    let first = d.frames[0].timestamp;
    for frame in &d.frames {
        let start = u64::from(frame.timestamp.wrapping_sub(first));
        writer
            .write_packet(&frame.data, start)
            .expect("write a packet");
    }
    let (_, stats) = writer.finish().expect("finish");
    assert_eq!(stats.frames, d.frames.len() as u64);
    assert_close(stats.duration_ms as f64, 3000.0, 0.1, "reported duration");

    let probe = probe(&path);
    let audio = stream(&probe, "audio");
    assert_eq!(audio["codec_name"], "opus");
    assert_eq!(audio["channels"], 2);
    assert_close(format_duration(&probe), 3.0, 0.1, "duration");
    assert_decodes_cleanly(&path);
    let packets = decoded_frames(&path, "a:0");
    assert_eq!(packets, d.frames.len() as u64);
}

/// A video and an audio track's frames in one timeline: (ms, track, frame).
fn interleave(video: &[Frame], audio: &[Frame]) -> Vec<(u64, u64, Frame)> {
    let mut all: Vec<(u64, u64, Frame)> = Vec::new();
    let (v0, a0) = (video[0].timestamp, audio[0].timestamp);
    all.extend(
        video
            .iter()
            .map(|f| (frame_ms(f, v0, 90_000), 1, f.clone())),
    );
    all.extend(
        audio
            .iter()
            .map(|f| (frame_ms(f, a0, 48_000), 2, f.clone())),
    );
    // Stable: equal times keep video first, as a recorder draining tracks in turn would.
    all.sort_by_key(|(ms, _, _)| *ms);
    all
}

#[test]
fn vp8_and_opus_interleaved_in_one_webm() {
    let audio_capture = std::thread::spawn(|| capture_rtp(&opus_args()));
    let video = depacketize(Codec::Vp8, capture_rtp(&vp8_args()));
    let audio = depacketize(Codec::Opus, audio_capture.join().expect("audio capture"));

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("av.webm");
    let file = BufWriter::new(File::create(&path).expect("create the file"));
    let tracks = [video_track(Codec::Vp8, &video), opus_track(2)];
    let mut writer = MkvWriter::new(file, DocType::WebM, &tracks).expect("headers");
    for (ms, track, frame) in interleave(&video.frames, &audio.frames) {
        writer
            .write_frame(track, ms, frame.keyframe, &frame.data)
            .expect("write a frame");
    }
    let (_, stats) = writer.finish().expect("finish");
    assert_eq!(
        stats.frames,
        (video.frames.len() + audio.frames.len()) as u64
    );

    let probe = probe(&path);
    assert_eq!(stream(&probe, "video")["codec_name"], "vp8");
    assert_eq!(stream(&probe, "video")["width"], 320);
    assert_eq!(stream(&probe, "audio")["codec_name"], "opus");
    assert_eq!(stream(&probe, "audio")["channels"], 2);
    assert_close(format_duration(&probe), 3.0, 0.1, "duration");
    assert_decodes_cleanly(&path);
    let frames = decoded_frames(&path, "v:0");
    assert!((87..=90).contains(&frames), "decoded {frames} video frames");
    let audio_frames = decoded_frames(&path, "a:0");
    assert_eq!(audio_frames, audio.frames.len() as u64);
}

/// Drops the first packet of a delta frame: that frame and the frames after it are refused
/// until the next keyframe, so the file still decodes without a single error.
#[test]
fn a_lost_packet_costs_frames_until_the_next_keyframe_but_no_decode_errors() {
    let mut packets = capture_rtp(&vp8_args());
    // The first packet of a delta frame about 1.5 s in (keyframes come every second).
    let victim = packets
        .iter()
        .enumerate()
        .skip(packets.len() / 2)
        .find(|(_, p)| vp8_delta_frame_start(&p.payload))
        .map(|(i, _)| i)
        .expect("a delta frame");
    let lost: RtpPacketIn = packets.remove(victim);
    let d = depacketize(Codec::Vp8, packets);
    assert_eq!(d.lost_packets, 1, "lost seq {}", lost.seq);
    let dropped = d.depacketizer.stats().dropped_frames;
    assert!((1..30).contains(&dropped), "{dropped} frames dropped");

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("lossy.webm");
    write_video(&path, DocType::WebM, Codec::Vp8, &d);
    assert_decodes_cleanly(&path);
    let frames = decoded_frames(&path, "v:0");
    assert_eq!(frames, d.frames.len() as u64);
    assert!(frames < 90);
}

/// S set (a frame's first packet) and the frame tag's low bit set (not a keyframe), past the
/// descriptor's optional PictureID (7 or 15 bits), TL0PICIDX and TID/KEYIDX bytes.
fn vp8_delta_frame_start(payload: &[u8]) -> bool {
    let mut at = 1;
    if payload[0] & 0x80 != 0 {
        let ext = payload[1];
        at = 2;
        if ext & 0x80 != 0 {
            at += if payload[at] & 0x80 != 0 { 2 } else { 1 };
        }
        at += usize::from(ext & 0x40 != 0) + usize::from(ext & 0x30 != 0);
    }
    payload[0] & 0x10 != 0 && payload.get(at).is_some_and(|tag| tag & 0x01 == 1)
}

#[test]
fn a_killed_recording_plays_up_to_its_last_cluster() {
    let d = depacketize(Codec::Vp8, capture_rtp(&vp8_args()));
    let dir = tempfile::tempdir().expect("tempdir");

    // A crash: the writer is dropped without `finish`. Written clusters are on disk (the
    // writer flushes after each), the open one is lost, the Segment size stays unknown.
    let crashed = dir.path().join("crashed.webm");
    let file = File::create(&crashed).expect("create the file");
    let mut writer =
        MkvWriter::new(file, DocType::WebM, &[video_track(Codec::Vp8, &d)]).expect("headers");
    let first = d.frames[0].timestamp;
    for frame in &d.frames {
        let ms = frame_ms(frame, first, 90_000);
        writer
            .write_frame(1, ms, frame.keyframe, &frame.data)
            .expect("write a frame");
    }
    let on_disk = writer.bytes_written();
    drop(writer);
    assert_eq!(std::fs::metadata(&crashed).expect("size").len(), on_disk);
    assert_decodes_cleanly(&crashed);
    let frames = decoded_frames(&crashed, "v:0");
    // Keyframes every 30 frames close clusters: the last second is still open and lost.
    assert!((55..=61).contains(&frames), "decoded {frames} frames");

    // A finished file cut in the middle of a cluster, as a crash during a write would.
    let whole = dir.path().join("whole.webm");
    write_video(&whole, DocType::WebM, Codec::Vp8, &d);
    let bytes = std::fs::read(&whole).expect("read the file");
    let cut = dir.path().join("cut.webm");
    std::fs::write(&cut, &bytes[..bytes.len() * 6 / 10]).expect("write the cut file");
    let (ok, errors) = decode(&cut, false);
    assert!(ok, "ffmpeg failed on the cut file: {errors}");
    let frames = decoded_frames(&cut, "v:0");
    assert!((30..90).contains(&frames), "decoded {frames} frames");
}

#[test]
fn rtp_helper_handles_csrcs_extensions_and_padding() {
    let mut packet = vec![0xb1, 0xe0, 0x12, 0x34, 0, 0, 0x10, 0, 0, 0, 0, 1];
    packet.extend_from_slice(&[9, 9, 9, 9]); // one CSRC
    packet.extend_from_slice(&[0xbe, 0xde, 0, 1, 7, 7, 7, 7]); // a one-word extension
    packet.extend_from_slice(&[0xaa, 0xbb]);
    packet.extend_from_slice(&[0, 0, 3]); // three bytes of padding
    let rtp = parse_rtp(&packet).expect("an RTP packet");
    assert_eq!(rtp.seq, 0x1234);
    assert_eq!(rtp.timestamp, 0x1000);
    assert!(rtp.marker);
    assert_eq!(rtp.payload_type, 96);
    assert_eq!(rtp.payload, [0xaa, 0xbb]);
    // RTCP sender report.
    assert!(parse_rtp(&[0x80, 200, 0, 6, 0, 0, 0, 1, 0, 0, 0, 0]).is_none());

    let mut ext = SeqExtender::default();
    let seqs: Vec<u64> = [65_534u16, 65_535, 0, 65_533, 1]
        .into_iter()
        .map(|s| ext.extend(s))
        .collect();
    assert_eq!(seqs, [131_070, 131_071, 131_072, 131_069, 131_073]);
}
