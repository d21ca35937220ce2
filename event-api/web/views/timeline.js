// The timeline: events, newest first, each with its recording, filtered by camera, event type,
// recording status and time range (kept in the URL), paginated, and refreshed every few seconds
// so recordings move PENDING → RECORDING → COMPLETED on screen.
//
// The API filters events by type (`GET /events`) and recordings by status (`GET /playbacks`),
// not both at once: with a status chosen the list comes from `/playbacks`, and the type filter
// is set aside (the form says so).

import { api, ApiError, withQuery } from '../api.js';
import { badge, every, h, keyed, notify, pager, safeUrl } from '../dom.js';
import {
  ACTIVE, bytes, duration, EVENT_TYPES, fromLocalInput, STATUSES, statusText, time, toLocalInput,
} from '../format.js';

const POLL_MS = 3000;
const PAGE_SIZE = 20;
const FILTERS = ['camera', 'type', 'status', 'from', 'to'];

export function timelineView(main, ctx, params) {
  document.title = 'Timeline · camrec';
  const state = {
    filters: Object.fromEntries(FILTERS.map((f) => [f, params[f] ?? ''])),
    page: Number(params.page) || 1,
  };

  const summary = h('p', { class: 'muted', 'aria-live': 'polite' }, 'Loading…');
  const list = h('ol', { class: 'timeline', 'aria-label': 'Events, newest first' });
  const nav = h('div');
  const rows = new Map();
  // Playbacks that reached COMPLETED or FAILED do not change any more: fetched once.
  const settled = new Map();

  async function refresh() {
    const asked = JSON.stringify(state);
    const { filters, page } = state;
    const result = filters.status ? await recordings(filters, page) : await events(filters, page, settled);
    if (JSON.stringify(state) !== asked) return; // the filters changed meanwhile: a newer answer comes
    summary.textContent = result.total === 0
      ? 'Nothing matches these filters.'
      : `${result.total} ${filters.status ? 'recording' : 'event'}${result.total === 1 ? '' : 's'}.`;
    keyed(list, rows, result.entries, {
      key: (e) => e.key,
      signature: (e) => JSON.stringify([e.key, e.endedAt, e.playback?.recordingStatus, e.playback?.durationSec,
        e.playback?.progress?.mediaTimeSec, e.playback?.id, e.missing]),
      render: entry,
    });
    nav.replaceChildren(pager(result, filters.status ? 'recordings' : 'events', (p) => show({ page: p })));
  }

  // New filters or page: into the URL (a history entry, so Back returns to them) and onto the
  // list at once. The form stays as it is, and so does the keyboard focus.
  function show(changes) {
    state.filters = { ...state.filters, ...(changes.filters ?? {}) };
    state.page = changes.page ?? 1;
    const query = new URLSearchParams(Object.entries({ ...state.filters, page: state.page })
      .filter(([k, v]) => v !== '' && !(k === 'page' && v === 1))).toString();
    window.history.pushState(null, '', `#/timeline${query ? `?${query}` : ''}`);
    form.update(state.filters);
    summary.textContent = 'Loading…';
    refresh().catch((e) => notify(e.message, 'error'));
  }

  const form = filterForm(state.filters, (filters) => show({ filters }));
  main.replaceChildren(h('h1', { tabindex: '-1' }, 'Timeline'), form.element, summary, list, nav);
  loadCameraChoices(form.cameraSelect, state.filters.camera).catch(() => {});
  return every(POLL_MS, refresh);
}

/** The filters; `apply(filters)` is called with all of them when one changes. */
function filterForm(filters, apply) {
  const field = (id, text, control, hint) => h('div', { class: 'field' },
    h('label', { for: id }, text), control, hint);
  const select = (id, all, options, value) => h('select', { id, name: id },
    h('option', { value: '' }, all),
    options.map(([v, text]) => h('option', { value: v, selected: v === value }, text)));

  const cameraSelect = select('f-camera', 'All cameras', [], filters.camera);
  const typeSelect = select('f-type', 'All types', EVENT_TYPES.map((t) => [t, t.toLowerCase()]), filters.type);
  const statusSelect = select('f-status', 'Any status', STATUSES.map((s) => [s, statusText(s)]), filters.status);
  const from = h('input', { id: 'f-from', name: 'from', type: 'datetime-local', value: toLocalInput(filters.from) });
  const to = h('input', { id: 'f-to', name: 'to', type: 'datetime-local', value: toLocalInput(filters.to) });
  const typeHint = h('p', { class: 'hint', id: 'f-type-hint' },
    'Not combined with a status: the API filters recordings by status only.');

  const element = h('form', { class: 'filters', 'aria-label': 'Filters' },
    field('f-camera', 'Camera', cameraSelect),
    field('f-type', 'Event type', typeSelect, typeHint),
    field('f-status', 'Recording status', statusSelect),
    field('f-from', 'From', from),
    field('f-to', 'To', to),
    h('div', { class: 'filter-actions' },
      h('button', { type: 'submit', class: 'primary' }, 'Apply'),
      h('button', { type: 'button', onclick: () => apply({ camera: '', type: '', status: '', from: '', to: '' }) },
        'Clear')));
  const read = () => ({
    camera: cameraSelect.value,
    type: typeSelect.value,
    status: statusSelect.value,
    from: fromLocalInput(from.value),
    to: fromLocalInput(to.value),
  });
  element.addEventListener('submit', (ev) => {
    ev.preventDefault();
    apply(read());
  });
  // Lists apply at once; times wait for Apply (typing a date fires change on every part).
  for (const s of [cameraSelect, typeSelect, statusSelect]) s.addEventListener('change', () => apply(read()));

  /** Shows `f` (after Clear, or a status that sets the type aside). */
  function update(f) {
    cameraSelect.value = f.camera;
    typeSelect.value = f.type;
    statusSelect.value = f.status;
    from.value = toLocalInput(f.from);
    to.value = toLocalInput(f.to);
    typeSelect.disabled = Boolean(f.status);
    typeHint.hidden = !f.status;
    if (f.status) typeSelect.setAttribute('aria-describedby', 'f-type-hint');
    else typeSelect.removeAttribute('aria-describedby');
  }
  update(filters);
  return { element, cameraSelect, update };
}

async function loadCameraChoices(select, current) {
  const cameras = await api(withQuery('/cameras', { sortBy: 'name', sortDir: 'asc', pageSize: 100 }));
  for (const c of cameras.data) {
    select.append(h('option', { value: c.id, selected: c.id === current }, c.name));
  }
}

/** A page of events (`/events`), each with its playback. */
async function events(filters, page, settled) {
  const list = await api(withQuery('/events', {
    cameraId: filters.camera, type: filters.type, createdFrom: filters.from, createdTo: filters.to,
    page, pageSize: PAGE_SIZE,
  }));
  const entries = await Promise.all(list.data.map(async (e) => {
    const playback = e.playbackId ? await playbackOf(e.playbackId, settled) : null;
    return {
      key: e.id,
      at: e.createdAt,
      cameraName: e.camera.name,
      type: e.type,
      description: e.description,
      endedAt: e.endedAt,
      playback,
      missing: e.playbackId !== null && playback === null,
    };
  }));
  return { ...list, entries };
}

async function playbackOf(id, settled) {
  if (settled.has(id)) return settled.get(id);
  try {
    const p = await api(`/playbacks/${id}`);
    if (!ACTIVE.includes(p.recordingStatus)) settled.set(id, p);
    return p;
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) return null;
    throw e;
  }
}

/** A page of recordings (`/playbacks`), each with its event. */
async function recordings(filters, page) {
  const list = await api(withQuery('/playbacks', {
    cameraId: filters.camera, recordingStatus: filters.status, startedFrom: filters.from,
    startedTo: filters.to, page, pageSize: PAGE_SIZE,
  }));
  const entries = list.data.map((p) => ({
    key: p.event?.id ?? p.id,
    at: p.event?.createdAt ?? p.createdAt,
    cameraName: p.camera?.name ?? 'deleted camera',
    type: p.event?.type,
    description: p.event?.description,
    endedAt: p.event?.endedAt,
    playback: p,
    missing: false,
  }));
  return { ...list, entries };
}

function entry(e) {
  const p = e.playback;
  const when = time(e.at);
  return h('li', { class: 'entry' },
    h('time', { datetime: e.at }, when),
    h('div', { class: 'entry-main' },
      h('p', { class: 'entry-title' }, h('strong', {}, e.cameraName), ' ', e.type && badge(e.type.toLowerCase(), 'type')),
      e.description && h('p', { class: 'entry-description' }, e.description),
      h('p', { class: 'badges' },
        p ? badge(statusText(p.recordingStatus), p.recordingStatus) : badge(e.missing ? 'recording deleted' : 'not recorded', 'none'),
        p && recordingFigures(p),
        h('span', { class: 'muted' }, e.endedAt ? 'event ended' : 'event open'))),
    p && entryThumb(p),
    p && h('a', { class: 'button', href: `#/playbacks/${p.id}`, 'aria-label': `Open the recording of ${e.cameraName}, ${when}` },
      'Open'));
}

function recordingFigures(p) {
  if (p.recordingStatus === 'RECORDING') {
    const t = duration(p.progress?.mediaTimeSec);
    return h('span', {}, t ? `${t} recorded so far` : 'starting');
  }
  const parts = [duration(p.durationSec), bytes(p.fileSizeBytes), p.partial && 'partial'].filter(Boolean);
  return parts.length ? h('span', {}, parts.join(' · ')) : null;
}

function entryThumb(p) {
  const src = safeUrl(p.thumbnailUrl);
  return src ? h('img', { class: 'entry-thumb', src, alt: '', width: 96, height: 54, loading: 'lazy' }) : null;
}
