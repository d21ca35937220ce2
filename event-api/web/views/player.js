// One recording: the clip in a `<video>` (seekable: the media route answers byte ranges) once
// it is COMPLETED; while it records, its live view (`liveUrl`, HLS: played by hls.js, or by the
// browser itself where it has HLS) and the live figures; its metadata, a download link, and the
// actions the user's role allows: end the event (OPERATOR, ADMIN), delete the recording (ADMIN).
// Polled until the recording settles (COMPLETED or FAILED).

import Hls from '../vendor/hls/hls.light.min.mjs';
import { api, ApiError } from '../api.js';
import { badge, every, facts, h, notify, safeUrl } from '../dom.js';
import { ACTIVE, bytes, duration, gap, kbps, statusText, time } from '../format.js';

const POLL_MS = 2000;

export function playerView(main, ctx, { id }) {
  document.title = 'Recording · camrec';
  const heading = h('h1', { tabindex: '-1' }, 'Recording');
  const status = h('p', { class: 'badges' });
  const stage = h('div', { class: 'stage' }, h('p', { class: 'stage-note' }, 'Loading…'));
  const actions = h('div', { class: 'actions' });
  const details = h('section', { class: 'details', 'aria-label': 'Details' });
  main.replaceChildren(
    h('p', { class: 'crumbs' }, h('a', { href: '#/timeline' }, 'All events')),
    heading, status,
    h('div', { class: 'player-layout' }, stage, h('div', { class: 'side' }, actions, details)));

  const shown = { stage: null, actions: null, live: null };
  let stop = () => {};

  async function refresh() {
    let p;
    try {
      p = await api(`/playbacks/${id}`);
    } catch (e) {
      if (!(e instanceof ApiError && e.status === 404)) throw e;
      stop();
      shown.live?.stop();
      heading.textContent = 'Recording not found';
      stage.replaceChildren(h('p', { class: 'stage-note' }, 'This recording does not exist; it may have been deleted.'));
      return;
    }
    const title = [p.camera?.name, p.event?.type?.toLowerCase(), time(p.event?.createdAt ?? p.createdAt)];
    heading.textContent = title.filter(Boolean).join(' · ');
    document.title = `${heading.textContent} · camrec`;
    status.replaceChildren(...[badge(statusText(p.recordingStatus), p.recordingStatus),
      p.partial && badge('partial', 'failed')].filter(Boolean));
    const stageKey = liveNow(p) ? 'live' : p.recordingStatus;
    if (shown.stage !== stageKey) {
      const wasActive = shown.stage === 'live' || ACTIVE.includes(shown.stage);
      if (wasActive && p.recordingStatus === 'COMPLETED') notify('The clip is ready.');
      shown.stage = stageKey;
      shown.live?.stop();
      shown.live = stageKey === 'live' ? liveView(p) : null;
      stage.replaceChildren(...(shown.live?.elements ?? stageFor(p)));
    }
    shown.live?.caption(p.recordingStatus);
    const actionKey = `${p.recordingStatus}/${Boolean(p.event?.endedAt)}`;
    if (shown.actions !== actionKey) {
      shown.actions = actionKey;
      actions.replaceChildren(...actionsFor(p, ctx, refresh));
    }
    details.replaceChildren(h('h2', {}, 'Details'), facts(detailsOf(p)));
    if (!ACTIVE.includes(p.recordingStatus)) stop();
  }

  stop = every(POLL_MS, refresh);
  return () => {
    stop();
    shown.live?.stop();
  };
}

/** Whether the recording is under way and can be watched live. */
function liveNow(p) {
  return ['RECORDING', 'PROCESSING'].includes(p.recordingStatus) && safeUrl(p.liveUrl) !== null;
}

/**
 * The live view: the recording's HLS playlist, a few seconds behind the camera, muted so the
 * browser lets it start by itself. hls.js feeds it through Media Source Extensions where the
 * browser has no HLS of its own (Safari has). Returns the stage's elements, the caption's
 * update and what stops the player.
 */
function liveView(p) {
  const src = safeUrl(p.liveUrl);
  const video = h('video', {
    id: 'live', controls: true, muted: true, autoplay: true, playsinline: true,
    'aria-label': `Live view of ${p.camera?.name ?? 'the camera'}`,
  });
  video.muted = true;
  const text = h('span', {}, 'Recording now');
  const caption = h('p', { class: 'stage-live stage-caption' }, h('span', { class: 'dot', 'aria-hidden': 'true' }), text);
  let hls = null;
  if (Hls.isSupported()) {
    hls = new Hls({ enableWorker: false });
    hls.loadSource(src);
    hls.attachMedia(video);
  } else {
    video.src = src;
  }
  return {
    elements: [video, caption],
    caption(status) {
      text.textContent = status === 'PROCESSING' ? 'Recording ended; finishing the clip' : 'Recording now';
    },
    stop() {
      hls?.destroy();
      video.removeAttribute('src');
      video.load();
    },
  };
}

/** What the big area shows: the clip, or what is happening to it. */
function stageFor(p) {
  const src = safeUrl(p.videoUrl);
  switch (p.recordingStatus) {
    case 'COMPLETED':
      if (!src) return [h('p', { class: 'stage-note' }, 'The clip has no URL.')];
      return [h('video', {
        id: 'clip', controls: true, preload: 'metadata', playsinline: true, src,
        poster: safeUrl(p.thumbnailUrl), 'aria-label': `Clip from ${p.camera?.name ?? 'the camera'}`,
      }, h('p', {}, 'This browser cannot play the clip: ', h('a', { href: src }, 'download it'), '.'))];
    case 'RECORDING':
      return [h('p', { class: 'stage-live' }, h('span', { class: 'dot', 'aria-hidden': 'true' }), 'Recording now'),
        h('p', { class: 'stage-note' }, 'The clip can be played here when the recording ends. The figures update live.')];
    case 'PENDING':
      return [h('p', { class: 'stage-note' }, 'Waiting for a recorder to pick up the event…')];
    case 'PROCESSING':
      return [h('p', { class: 'stage-note' }, 'The recording has stopped; the clip is being finished and uploaded…')];
    default:
      return [h('p', { class: 'stage-note' }, `The recording failed${p.errorMessage ? `: ${p.errorMessage}` : '.'}`)];
  }
}

function actionsFor(p, ctx, refresh) {
  const src = safeUrl(p.videoUrl);
  const eventOpen = p.event && !p.event.endedAt;
  return [
    p.recordingStatus === 'COMPLETED' && src && h('a', { class: 'button', href: src, download: `camrec-${p.id}.mp4` },
      'Download MP4'),
    ctx.canOperate && eventOpen && ['PENDING', 'RECORDING'].includes(p.recordingStatus)
      && endButton(p, refresh),
    ctx.canDelete && deleteButton(p, ctx),
  ].filter(Boolean);
}

function endButton(p, refresh) {
  const button = h('button', { type: 'button', class: 'primary' }, 'End recording');
  button.addEventListener('click', async () => {
    button.disabled = true;
    try {
      await api(`/events/${p.event.id}/end`, { method: 'POST' });
      notify('Ending the recording; the clip will be ready in a few seconds.');
      await refresh();
    } catch (e) {
      notify(`Could not end the recording: ${e.message}`, 'error');
      button.disabled = false;
    }
  });
  return button;
}

function deleteButton(p, ctx) {
  const button = h('button', { type: 'button', class: 'danger' }, 'Delete recording');
  button.addEventListener('click', async () => {
    const what = `this recording of ${p.camera?.name ?? 'a deleted camera'}`;
    // The browser's own dialog: keyboard and screen-reader friendly as it is.
    if (!window.confirm(`Delete ${what}? The clip is removed for good.`)) return;
    button.disabled = true;
    try {
      await api(`/playbacks/${p.id}`, { method: 'DELETE' });
      ctx.go('#/timeline', ['Recording deleted.']);
    } catch (e) {
      notify(`Could not delete the recording: ${e.message}`, 'error');
      button.disabled = false;
    }
  });
  return button;
}

function detailsOf(p) {
  const e = p.event;
  const live = p.recordingStatus === 'RECORDING' ? p.progress ?? {} : null;
  const gaps = Array.isArray(p.gaps)
    ? (p.gaps.length ? h('ul', {}, p.gaps.map((g) => h('li', {}, gap(g)))) : 'none')
    : null;
  return [
    ['Recorded', live && duration(live.mediaTimeSec)],
    ['Frames', live?.frames],
    ['Bitrate', live && kbps(live.bitrateKbps)],
    ['Camera', p.camera?.name],
    ['Event', e && `${e.type.toLowerCase()}${e.endedAt ? ', ended' : ', open'}`],
    ['Description', e?.description],
    ['Event time', time(e?.createdAt)],
    ['Started', time(p.startedAt)],
    ['Ended', time(p.endedAt)],
    ['Duration', duration(p.durationSec)],
    ['Video', p.codec],
    ['Audio', p.audioCodec],
    ['Resolution', p.resolution],
    ['Size', bytes(p.fileSizeBytes)],
    ['Gaps', gaps],
    ['Started late', p.startedLate ? 'yes: the capture did not hold the whole pre-roll' : null],
    ['Cut short', p.partial ? 'yes: the camera or the recorder was lost before the end' : null],
    ['Error', p.errorCode && `${p.errorCode}${p.errorMessage ? `: ${p.errorMessage}` : ''}`],
    ['SHA-256', p.sha256],
    ['Recording id', p.id],
  ];
}
