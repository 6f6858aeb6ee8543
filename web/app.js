// Switchboard demo page: join a room with livekit-client, show a video grid, chat over data messages.
// Plain script, no build step. livekit-client's UMD bundle (global `LivekitClient`) is loaded first.
//
// Query parameters: ?room=R&name=N&autojoin=1 (dev token from the server) or
// ?url=WS&token=JWT&autojoin=1 (join with a given token); &codec=h264 picks the video codec;
// &adaptive=1 turns on livekit-client's adaptiveStream (subscribed video follows the size and
// visibility of its <video> element), &dynacast=1 its dynacast (the camera's simulcast layers
// no subscriber needs are paused). Both are off unless given. &relay=1 connects through TURN
// only (iceTransportPolicy 'relay', with the TURN servers the server announces).
//
// window.demo (for tests):
//   room    the current LivekitClient.Room, or null before the first join
//   state   'idle' | 'joining' | 'joined' | 'failed' | 'left'
//   joined  null before the first join; then a Promise for the latest join: true once connected
//           and camera/microphone publishing was attempted, false if joining failed (never rejects)
//   chat    received chat messages, oldest first: {from: sender identity, name, text}
//   transcripts  received transcription segments: {from: speaker identity, id, text, final}
//   error   the message shown in #error, or null
//   layoutFor(count) the grid class used for `count` tiles
'use strict';

(() => {
  const $ = (id) => document.getElementById(id);
  const els = {
    status: $('status'), error: $('error'), form: $('join-form'), room: $('room'), name: $('name'),
    join: $('join'), call: $('call'), grid: $('grid'), cam: $('toggle-camera'), mic: $('toggle-mic'),
    startAudio: $('start-audio'), leave: $('leave'), invite: $('invite'),
    chatForm: $('chat-form'), chatInput: $('chat-input'), chatLog: $('chat-log'),
  };

  // Room options from the query string, for autojoin and the join form alike.
  const q = new URLSearchParams(location.search);
  const pageOptions = {
    codec: q.get('codec') || undefined, adaptive: q.get('adaptive') === '1', dynacast: q.get('dynacast') === '1',
    relay: q.get('relay') === '1',
  };

  const layoutFor = (count) => (count <= 1 ? 'layout-1' : count <= 4 ? 'layout-2x2' : 'layout-3x3');
  const demo = { room: null, state: 'idle', joined: null, chat: [], transcripts: [], error: null, layoutFor };
  window.demo = demo;

  const LK = window.LivekitClient;
  const tiles = new Map(); // identity -> {el, video, audio, caption, videoTrack, audioTrack}
  const encoder = new TextEncoder();
  const decoder = new TextDecoder();
  const messageOf = (e) => (e && e.message) || String(e);

  function showError(message) {
    demo.error = message || null;
    els.error.textContent = message || '';
    els.error.hidden = !message;
  }

  function setState(state, status) {
    demo.state = state;
    document.body.dataset.state = state;
    els.status.textContent = status;
    const inCall = state === 'joined';
    els.form.hidden = inCall;
    els.call.hidden = !inCall;
    els.join.disabled = state === 'joining';
  }

  async function fetchDevToken(roomId, name) {
    const resp = await fetch('/v1/dev/token', {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ room_id: roomId, name }),
    });
    const text = await resp.text();
    let body = null;
    try { body = JSON.parse(text); } catch { /* not JSON */ }
    if (!resp.ok) {
      const plain = text.trim();
      const detail = (body && (body.detail || body.title))
        || (plain && !plain.startsWith('<') && plain.length < 300 ? plain : resp.statusText || 'request failed');
      throw new Error(`token request failed (HTTP ${resp.status}): ${detail}`);
    }
    if (!body || !body.token || !body.url) throw new Error('token request returned no token/url');
    return body;
  }

  // Joins with {room, name} (asks the server for a dev token) or with {url, token}.
  function join(params) {
    if (demo.state === 'joining' || demo.state === 'joined') return demo.joined;
    showError(null);
    demo.room = null;
    demo.chat = [];
    els.chatLog.replaceChildren();
    setState('joining', 'Joining…');
    demo.joined = connect(params);
    return demo.joined;
  }

  async function connect(params) {
    let room = null;
    try {
      if (!LK) throw new Error('livekit-client did not load from /vendor/livekit-client.umd.js');
      let { url, token } = params;
      let roomLabel = params.room || '';
      if (!token) {
        const dev = await fetchDevToken(params.room, params.name);
        ({ url, token } = dev);
        roomLabel = dev.room_id || params.room;
      }
      const options = { adaptiveStream: !!params.adaptive, dynacast: !!params.dynacast };
      // ?codec=h264|vp8|vp9|av1 picks the camera's codec (livekit-client falls back to VP8).
      if (params.codec) options.publishDefaults = { videoCodec: params.codec };
      room = new LK.Room(options);
      demo.room = room;
      wire(room);
      await room.connect(url, token, params.relay ? { rtcConfig: { iceTransportPolicy: 'relay' } } : undefined);
      const me = room.localParticipant;
      const roomName = room.name || roomLabel;
      setState('joined', `In room “${roomName}” as ${me.name || me.identity}`);
      els.invite.href = `${location.origin}${location.pathname}?room=${encodeURIComponent(roomName)}`;
      render();
      try {
        await room.localParticipant.enableCameraAndMicrophone();
      } catch (e) {
        showError(`Could not start camera or microphone: ${messageOf(e)}`);
      }
      render();
      return true;
    } catch (e) {
      console.error('join failed', e);
      if (room) room.disconnect().catch(() => {});
      setState('failed', 'Not connected');
      showError(`Could not join the room: ${messageOf(e)}`);
      return false;
    }
  }

  function wire(room) {
    const E = LK.RoomEvent;
    for (const ev of [E.ParticipantConnected, E.ParticipantDisconnected, E.TrackSubscribed,
      E.TrackUnsubscribed, E.TrackMuted, E.TrackUnmuted, E.LocalTrackPublished,
      E.LocalTrackUnpublished, E.ParticipantNameChanged, E.ActiveSpeakersChanged,
      E.ConnectionQualityChanged]) {
      room.on(ev, () => { if (room === demo.room) render(); });
    }
    room.on(E.DataReceived, (payload, participant, _kind, topic, _encryption, participantIdentity) => {
      if (topic !== 'chat') return;
      const from = (participant && participant.identity) || participantIdentity || '';
      const name = (participant && participant.name) || from;
      const text = decoder.decode(payload);
      demo.chat.push({ from, name, text });
      addChatLine(name, text);
    });
    // Captions relayed by the server from a speech-to-text worker; final ones join the chat log.
    room.on(E.TranscriptionReceived, (segments, participant) => {
      const from = (participant && participant.identity) || '';
      for (const seg of segments) {
        demo.transcripts.push({ from, id: seg.id, text: seg.text, final: seg.final });
        if (seg.final) addChatLine(`${(participant && participant.name) || from} (caption)`, seg.text);
      }
    });
    room.on(E.AudioPlaybackStatusChanged, () => { els.startAudio.hidden = room.canPlaybackAudio; });
    room.on(E.Disconnected, (reason) => {
      if (room !== demo.room || demo.state !== 'joined') return;
      setState('left', 'Not connected');
      render();
      if (reason !== undefined && reason !== LK.DisconnectReason.CLIENT_INITIATED) {
        showError(`Disconnected from the room: ${LK.DisconnectReason[reason] || reason}`);
      }
    });
  }

  // Attaches `track` to `el` unless it is already attached there.
  function bind(tile, key, el, track) {
    if (tile[key] === (track || null)) return;
    if (tile[key]) tile[key].detach(el);
    tile[key] = track || null;
    if (track) track.attach(el);
  }

  function tileFor(p) {
    let t = tiles.get(p.identity);
    if (t) return t;
    const el = document.createElement('figure');
    el.className = 'tile';
    el.setAttribute('role', 'listitem');
    el.dataset.identity = p.identity;
    const video = document.createElement('video');
    video.autoplay = true;
    video.playsInline = true;
    video.muted = true; // sound comes from the <audio> element
    const caption = document.createElement('figcaption');
    el.append(video, caption);
    let audio = null;
    if (!p.isLocal) {
      audio = document.createElement('audio');
      audio.autoplay = true;
      el.append(audio);
    }
    els.grid.append(el);
    t = { el, video, audio, caption, videoTrack: null, audioTrack: null };
    tiles.set(p.identity, t);
    return t;
  }

  function removeTile(identity) {
    const t = tiles.get(identity);
    if (!t) return;
    bind(t, 'videoTrack', t.video, null);
    if (t.audio) bind(t, 'audioTrack', t.audio, null);
    t.el.remove();
    tiles.delete(identity);
  }

  // Brings the grid and the buttons in line with the room.
  function render() {
    const room = demo.room;
    const people = room && demo.state === 'joined'
      ? [room.localParticipant, ...room.remoteParticipants.values()] : [];
    const present = new Set();
    for (const p of people) {
      present.add(p.identity);
      const t = tileFor(p);
      const cam = p.getTrackPublication(LK.Track.Source.Camera);
      const mic = p.getTrackPublication(LK.Track.Source.Microphone);
      bind(t, 'videoTrack', t.video, cam && cam.track);
      if (t.audio) bind(t, 'audioTrack', t.audio, mic && mic.track);
      const videoOff = !cam || !cam.track || cam.isMuted;
      const micOff = !mic || mic.isMuted;
      t.el.classList.toggle('no-video', videoOff);
      t.el.classList.toggle('mic-off', micOff);
      const label = `${p.name || p.identity}${p.isLocal ? ' (you)' : ''}`;
      // The server's SpeakersChanged and ConnectionQualityUpdate, as livekit-client keeps them.
      const quality = p.connectionQuality && p.connectionQuality !== 'unknown' ? p.connectionQuality : null;
      t.el.classList.toggle('speaking', !!p.isSpeaking);
      t.el.dataset.quality = quality || '';
      t.caption.textContent = `${micOff ? `${label} · muted` : label}${quality ? ` · ${quality}` : ''}`;
      t.el.setAttribute('aria-label', `${label}${videoOff ? ', camera off' : ''}${micOff ? ', microphone muted' : ''}`);
    }
    for (const identity of [...tiles.keys()]) if (!present.has(identity)) removeTile(identity);
    els.grid.className = `grid ${layoutFor(people.length)}`;
    els.grid.dataset.count = String(people.length);
    if (room && demo.state === 'joined') {
      const lp = room.localParticipant;
      els.cam.textContent = lp.isCameraEnabled ? 'Mute camera' : 'Unmute camera';
      els.mic.textContent = lp.isMicrophoneEnabled ? 'Mute mic' : 'Unmute mic';
      els.startAudio.hidden = room.canPlaybackAudio;
    }
  }

  function addChatLine(name, text, mine = false) {
    const li = document.createElement('li');
    if (mine) li.className = 'mine';
    const who = document.createElement('strong');
    who.textContent = name;
    const body = document.createElement('span');
    body.textContent = text;
    li.append(who, ' ', body);
    els.chatLog.append(li);
    els.chatLog.scrollTop = els.chatLog.scrollHeight;
  }

  async function toggle(kind) {
    const lp = demo.room && demo.room.localParticipant;
    if (!lp || demo.state !== 'joined') return;
    try {
      if (kind === 'camera') await lp.setCameraEnabled(!lp.isCameraEnabled);
      else await lp.setMicrophoneEnabled(!lp.isMicrophoneEnabled);
    } catch (e) {
      showError(`Could not switch the ${kind}: ${messageOf(e)}`);
    }
    render();
  }

  els.form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    join({ room: els.room.value.trim(), name: els.name.value.trim(), ...pageOptions });
  });
  els.cam.addEventListener('click', () => toggle('camera'));
  els.mic.addEventListener('click', () => toggle('microphone'));
  els.startAudio.addEventListener('click', () => demo.room && demo.room.startAudio());
  els.leave.addEventListener('click', () => { if (demo.room) demo.room.disconnect(); });
  els.chatForm.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const text = els.chatInput.value.trim();
    if (!text || demo.state !== 'joined') return;
    const room = demo.room;
    try {
      await room.localParticipant.publishData(encoder.encode(text), { reliable: true, topic: 'chat' });
      els.chatInput.value = '';
      addChatLine('You', text, true);
    } catch (e) {
      showError(`Could not send the message: ${messageOf(e)}`);
    }
  });
  window.addEventListener('pagehide', () => { if (demo.room) demo.room.disconnect(); });

  setState('idle', 'Not connected');
  if (q.has('room')) els.room.value = q.get('room');
  if (q.has('name')) els.name.value = q.get('name');
  if (!LK) showError('livekit-client did not load from /vendor/livekit-client.umd.js');
  else if (q.get('autojoin') === '1') {
    if (q.get('url') && q.get('token')) join({ url: q.get('url'), token: q.get('token'), ...pageOptions });
    else if (els.room.value && els.name.value) join({ room: els.room.value, name: els.name.value, ...pageOptions });
    else showError('autojoin needs room= and name=, or url= and token=');
  }
})();
