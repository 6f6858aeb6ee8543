// A participant on @livekit/rtc-node (LiveKit's Rust core through N-API), for
// tests/sdk-rtc-node.test.mjs: it publishes a camera of solid-colour frames and a 440 Hz
// tone, and reports what it decodes from others as JSON lines ("video", "audio"). A "stop"
// line on stdin makes it leave.
//
//   node rtc-node-peer.mjs WS_URL TOKEN [--publish-only]
//
// --publish-only subscribes to nothing: a test about what another participant receives
// then does not pay for every peer decoding every other (six of them on two cores made
// their own signaling miss its deadlines).
import { createInterface } from 'node:readline';
import {
  AudioFrame, AudioSource, AudioStream, LocalAudioTrack, LocalVideoTrack, Room, RoomEvent,
  TrackKind, TrackPublishOptions, TrackSource, VideoBufferType, VideoFrame, VideoSource, VideoStream, dispose,
} from '@livekit/rtc-node';

const emit = (event, fields = {}) => process.stdout.write(`${JSON.stringify({ event, ...fields })}\n`);
const [url, token, mode] = process.argv.slice(2);
const publishOnly = mode === '--publish-only';
const WIDTH = 320;
const HEIGHT = 240;
const COLOUR = [40, 180, 60];
const RATE = 48_000;
const FRAME = 480;

async function watchVideo(track, from) {
  let frames = 0;
  for await (const { frame } of new VideoStream(track)) {
    frames += 1;
    if (frames >= 30) {
      const rgba = frame.convert(VideoBufferType.RGBA);
      const at = (Math.floor(rgba.height / 2) * rgba.width + Math.floor(rgba.width / 2)) * 4;
      emit('video', { from, frames, width: rgba.width, height: rgba.height, centre: [...rgba.data.slice(at, at + 3)] });
      return;
    }
  }
}

async function listenAudio(track, from) {
  let frames = 0;
  let peak = 0;
  for await (const frame of new AudioStream(track, RATE, 1)) {
    frames += 1;
    for (const s of frame.data) peak = Math.max(peak, Math.abs(s));
    if (frames >= 200) {
      emit('audio', { from, frames, peak });
      return;
    }
  }
}

const room = new Room();
const seen = new Set();
room.on(RoomEvent.TrackSubscribed, (track, _publication, participant) => {
  const key = `${track.kind}:${participant.identity}`;
  if (seen.has(key)) return;
  seen.add(key);
  const watch = track.kind === TrackKind.KIND_VIDEO ? watchVideo : listenAudio;
  watch(track, participant.identity).catch((e) => emit('error', { message: `decoding from ${participant.identity}: ${e}` }));
});

await room.connect(url, token, { autoSubscribe: !publishOnly, dynacast: false });
const video = new VideoSource(WIDTH, HEIGHT);
const audio = new AudioSource(RATE, 1);
const camera = LocalVideoTrack.createVideoTrack('camera', video);
const microphone = LocalAudioTrack.createAudioTrack('microphone', audio);
await room.localParticipant.publishTrack(camera, new TrackPublishOptions({ source: TrackSource.SOURCE_CAMERA }));
await room.localParticipant.publishTrack(microphone, new TrackPublishOptions({ source: TrackSource.SOURCE_MICROPHONE }));
emit('joined', { sid: room.localParticipant.sid });

const pixels = new Uint8Array(WIDTH * HEIGHT * 4);
for (let i = 0; i < WIDTH * HEIGHT; i += 1) pixels.set([...COLOUR, 255], i * 4);
const picture = new VideoFrame(pixels, WIDTH, HEIGHT, VideoBufferType.RGBA);
const timer = setInterval(() => video.captureFrame(picture), 1000 / 15);
let stopping = false;
const tone = (async () => {
  let n = 0;
  while (!stopping) {
    const samples = new Int16Array(FRAME);
    for (let i = 0; i < FRAME; i += 1) samples[i] = Math.round(12000 * Math.sin((2 * Math.PI * 440 * (n + i)) / RATE));
    n += FRAME;
    await audio.captureFrame(new AudioFrame(samples, RATE, 1, FRAME)); // paced by the source's queue
  }
})();

for await (const line of createInterface({ input: process.stdin })) {
  if (line.trim() === 'stop') break;
}
stopping = true;
clearInterval(timer);
await tone;
await room.disconnect();
emit('left');
await dispose();
