// How figures from the API read on the page.

/** `83.4` → `1:23`; `4000` → `1:06:40`. */
export function duration(seconds) {
  if (typeof seconds !== 'number' || !Number.isFinite(seconds)) return null;
  const s = Math.max(0, Math.round(seconds));
  const hh = Math.floor(s / 3600);
  const mm = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, '0');
  return hh > 0 ? `${hh}:${String(mm).padStart(2, '0')}:${ss}` : `${mm}:${ss}`;
}

/** `1536000` → `1.5 MB`. */
export function bytes(n) {
  if (typeof n !== 'number' || !Number.isFinite(n)) return null;
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let v = n;
  let i = 0;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i += 1;
  }
  return `${i === 0 ? v : v.toFixed(1)} ${units[i]}`;
}

/** An RFC 3339 time in the reader's locale, to the second. */
export function time(iso) {
  if (!iso) return null;
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? null : d.toLocaleString(undefined, {
    year: 'numeric', month: 'short', day: 'numeric', hour: '2-digit', minute: '2-digit', second: '2-digit',
  });
}

export function kbps(v) {
  return typeof v === 'number' && Number.isFinite(v) ? `${Math.round(v)} kbit/s` : null;
}

/** A `<input type="datetime-local">` value → RFC 3339 (UTC), or '' when empty. */
export function fromLocalInput(value) {
  if (!value) return '';
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? '' : d.toISOString();
}

/** RFC 3339 → a `<input type="datetime-local">` value in local time. */
export function toLocalInput(iso) {
  if (!iso) return '';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return '';
  const local = new Date(d.getTime() - d.getTimezoneOffset() * 60_000);
  return local.toISOString().slice(0, 16);
}

/** One item of a clip's `gaps` (`{from, to}`, where the camera delivered nothing). */
export function gap(g) {
  if (typeof g !== 'object' || g === null) return String(g);
  const seconds = (new Date(g.to) - new Date(g.from)) / 1000;
  const length = Number.isFinite(seconds) ? ` (${duration(seconds)})` : '';
  return `${time(g.from)} to ${time(g.to)}${length}`;
}

export const ACTIVE = ['PENDING', 'RECORDING', 'PROCESSING'];
export const STATUSES = ['PENDING', 'RECORDING', 'PROCESSING', 'COMPLETED', 'FAILED'];
export const EVENT_TYPES = ['MOTION', 'ALERT', 'ERROR', 'MANUAL'];

/** What a recording status means, for people. */
export function statusText(status) {
  return {
    PENDING: 'Waiting for the recorder',
    RECORDING: 'Recording',
    PROCESSING: 'Finishing the clip',
    COMPLETED: 'Completed',
    FAILED: 'Failed',
  }[status] ?? status;
}
