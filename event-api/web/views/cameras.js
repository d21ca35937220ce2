// Cameras: each with its status, its recording in progress if any, a thumbnail of its latest
// completed clip, and (OPERATOR, ADMIN) a button that starts a MANUAL recording. Refreshed
// every few seconds while the tab is visible.

import { api, withQuery } from '../api.js';
import { badge, every, facts, h, keyed, notify, pager, safeUrl } from '../dom.js';
import { ACTIVE, statusText, time } from '../format.js';

const POLL_MS = 4000;
const PAGE_SIZE = 48;

export function camerasView(main, ctx, params) {
  document.title = 'Cameras · camrec';
  const page = Number(params.page) || 1;
  const summary = h('p', { class: 'muted' }, 'Loading cameras…');
  const grid = h('ul', { class: 'cards', 'aria-label': 'Cameras' });
  const nav = h('div');
  main.replaceChildren(h('h1', { tabindex: '-1' }, 'Cameras'), summary, grid, nav);

  const cards = new Map();
  // Per camera: the id of its latest playback when its latest completed clip was looked up.
  const thumbs = new Map();

  async function refresh() {
    const list = await api(withQuery('/cameras', { sortBy: 'name', sortDir: 'asc', page, pageSize: PAGE_SIZE }));
    const rows = await Promise.all(list.data.map((camera) => withClips(camera, thumbs)));
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

/** The camera, its latest playback, and its latest completed clip (for the thumbnail). */
async function withClips(camera, thumbs) {
  const latest = (await api(withQuery('/playbacks', { cameraId: camera.id, pageSize: 1 }))).data[0] ?? null;
  let clip = latest?.recordingStatus === 'COMPLETED' ? latest : null;
  if (!clip && latest) {
    const known = thumbs.get(camera.id);
    if (known && known.latestId === latest.id) {
      clip = known.clip;
    } else {
      clip = (await api(withQuery('/playbacks', {
        cameraId: camera.id, recordingStatus: 'COMPLETED', pageSize: 1,
      }))).data[0] ?? null;
    }
  }
  thumbs.set(camera.id, { latestId: latest?.id, clip });
  return { camera, latest, clip };
}

function signature({ camera, latest, clip }) {
  return JSON.stringify([
    camera.name, camera.enabled, camera.captureStatus, camera.ipAddress, camera.rtspPort, camera.channel,
    camera.site, camera.vendor, camera.recordEventTypes, latest?.id, latest?.recordingStatus, clip?.id,
  ]);
}

function card({ camera, latest, clip }, ctx) {
  const active = latest && ACTIVE.includes(latest.recordingStatus) ? latest : null;
  const headingId = `camera-${camera.id}`;
  return h('li', { class: 'card', 'aria-labelledby': headingId },
    thumbnail(camera, clip),
    h('div', { class: 'card-body' },
      h('h2', { id: headingId }, camera.name),
      h('p', { class: 'badges' },
        cameraStatus(camera),
        active && badge(statusText(active.recordingStatus), active.recordingStatus)),
      facts([
        ['Address', `${camera.ipAddress}:${camera.rtspPort}, channel ${camera.channel}`],
        ['Site', camera.site],
        ['Vendor', camera.vendor],
        ['Latest clip', clip ? time(clip.startedAt ?? clip.createdAt) : 'none yet'],
      ]),
      h('div', { class: 'actions' },
        active && h('a', { class: 'button primary', href: `#/playbacks/${active.id}` }, 'Watch the recording'),
        ctx.canOperate && !active && startButton(camera, ctx),
        h('a', { class: 'button', href: `#/timeline?camera=${camera.id}` }, 'Timeline'))));
}

/** The capture status once the API reports it (`captureStatus`); until then enabled/disabled. */
function cameraStatus(camera) {
  if (camera.captureStatus) return badge(String(camera.captureStatus).toLowerCase());
  return camera.enabled ? badge('enabled') : badge('disabled');
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
