// Cameras: each with its status, its recording in progress if any, a thumbnail of its latest
// completed clip, and (OPERATOR, ADMIN) a button that starts a MANUAL recording. Refreshed
// every few seconds while the tab is visible.

import { api, withQuery } from '../api.js';
import { badge, every, facts, h, keyed, notify, pager, safeUrl } from '../dom.js';
import { ACTIVE, statusText, time } from '../format.js';

const POLL_MS = 4000;
const PAGE_SIZE = 48;
// A camera's latest clip is looked up again when its recording in progress changes, and at
// least this often (a clip may have been deleted).
const CLIP_RECHECK_MS = 60_000;

export function camerasView(main, ctx, params) {
  document.title = 'Cameras · camrec';
  const page = Number(params.page) || 1;
  const summary = h('p', { class: 'muted' }, 'Loading cameras…');
  const grid = h('ul', { class: 'cards', 'aria-label': 'Cameras' });
  const nav = h('div');
  main.replaceChildren(h('h1', { tabindex: '-1' }, 'Cameras'), summary, grid, nav);

  const cards = new Map();
  const clips = new Map();

  async function refresh() {
    const [list, active] = await Promise.all([
      api(withQuery('/cameras', { sortBy: 'name', sortDir: 'asc', page, pageSize: PAGE_SIZE })),
      activeRecordings(),
    ]);
    const rows = await Promise.all(list.data.map(async (camera) => {
      const recording = active.get(camera.id) ?? null;
      return { camera, recording, clip: await latestClip(camera.id, recording?.id, clips) };
    }));
    summary.textContent = list.total === 0
      ? 'No camera yet. An admin adds cameras through the API (POST /cameras).'
      : `${list.total} camera${list.total === 1 ? '' : 's'}.`;
    keyed(grid, cards, rows, {
      key: (row) => row.camera.id,
      signature,
      render: (row) => card(row, ctx),
    });
    nav.replaceChildren(pager(list, 'cameras', (p) => ctx.go(`#/cameras?page=${p}`)));
  }

  return every(POLL_MS, refresh);
}

/**
 * Per camera, its newest recording in progress: one request per active status, whatever the
 * number of cameras (the first 100 of each status; a site records fewer at once).
 */
async function activeRecordings() {
  const pages = await Promise.all(ACTIVE.map((status) => api(withQuery('/playbacks', {
    recordingStatus: status, pageSize: 100,
  }))));
  const byCamera = new Map();
  for (const p of pages.flatMap((page) => page.data)) {
    const id = p.camera?.id;
    if (id && !(byCamera.get(id)?.createdAt > p.createdAt)) byCamera.set(id, p);
  }
  return byCamera;
}

/** The camera's latest completed clip (for the thumbnail), from `cache` while still fresh. */
async function latestClip(cameraId, recordingId, cache) {
  const known = cache.get(cameraId);
  if (known && known.recordingId === recordingId && Date.now() - known.at < CLIP_RECHECK_MS) return known.clip;
  const clip = (await api(withQuery('/playbacks', {
    cameraId, recordingStatus: 'COMPLETED', pageSize: 1,
  }))).data[0] ?? null;
  cache.set(cameraId, { recordingId, clip, at: Date.now() });
  return clip;
}

function signature({ camera, recording, clip }) {
  return JSON.stringify([
    camera.name, camera.enabled, camera.captureStatus, camera.ipAddress, camera.rtspPort, camera.channel,
    camera.site, camera.vendor, camera.recordEventTypes, recording?.id, recording?.recordingStatus, clip?.id,
  ]);
}

function card({ camera, recording, clip }, ctx) {
  const headingId = `camera-${camera.id}`;
  return h('li', { class: 'card', 'aria-labelledby': headingId },
    thumbnail(camera, clip),
    h('div', { class: 'card-body' },
      h('h2', { id: headingId }, camera.name),
      h('p', { class: 'badges' },
        cameraStatus(camera),
        recording && badge(statusText(recording.recordingStatus), recording.recordingStatus)),
      facts([
        ['Address', `${camera.ipAddress}:${camera.rtspPort}, channel ${camera.channel}`],
        ['Site', camera.site],
        ['Vendor', camera.vendor],
        ['Latest clip', clip ? time(clip.startedAt ?? clip.createdAt) : 'none yet'],
      ]),
      h('div', { class: 'actions' },
        recording && h('a', { class: 'button primary', href: `#/playbacks/${recording.id}` }, 'Watch the recording'),
        ctx.canOperate && !recording && startButton(camera, ctx),
        h('a', { class: 'button', href: `#/timeline?camera=${camera.id}` }, 'Timeline'))));
}

/** What the camera's capture is doing (`captureStatus.state`), its last error as the tooltip. */
const CAPTURE_LABELS = {
  capturing: 'capturing',
  connecting: 'connecting',
  unreachable: 'unreachable',
  disk_full: 'worker disk full',
  unassigned: 'no worker',
  disabled: 'disabled',
};

function cameraStatus(camera) {
  const state = camera.captureStatus?.state ?? (camera.enabled ? 'unassigned' : 'disabled');
  const b = badge(CAPTURE_LABELS[state] ?? state, state);
  if (camera.captureStatus?.lastError) b.title = camera.captureStatus.lastError;
  return b;
}

function thumbnail(camera, clip) {
  const src = safeUrl(clip?.thumbnailUrl);
  if (!clip || !src) {
    return h('div', { class: 'thumb thumb-empty' }, clip ? 'No thumbnail' : 'No clip yet');
  }
  return h('a', { class: 'thumb', href: `#/playbacks/${clip.id}` },
    h('img', {
      src, alt: `Latest clip of ${camera.name}, ${time(clip.startedAt ?? clip.createdAt)}`, loading: 'lazy',
      width: 320, height: 180,
    }));
}

/** Only for cameras that are enabled and record MANUAL events (the API would refuse or ignore). */
function startButton(camera, ctx) {
  if (!camera.enabled || !(camera.recordEventTypes ?? []).includes('MANUAL')) return null;
  const button = h('button', { type: 'button', class: 'primary' }, 'Start manual recording');
  button.addEventListener('click', async () => {
    button.disabled = true;
    try {
      const event = await api('/events', { method: 'POST', body: { cameraId: camera.id, type: 'MANUAL' } });
      if (event.playbackId) ctx.go(`#/playbacks/${event.playbackId}`, [`Recording started on ${camera.name}.`]);
      else notify(`${camera.name} does not record MANUAL events.`, 'error');
    } catch (e) {
      notify(`Could not start a recording: ${e.message}`, 'error');
      button.disabled = false;
    }
  });
  return button;
}
