// The REST API as the page uses it, and the session: tokens live in sessionStorage (this tab
// only, gone when it closes), the access token is refreshed before it expires, and a request
// answered 401 is retried once after a refresh. Refresh tokens rotate and a reused one revokes
// its whole family, so at most one refresh runs at a time.

const KEY = 'camrec.session';
// Refresh when this share of the access token's lifetime has passed.
const REFRESH_AT = 0.75;

/** An answer other than 2xx: `status`, the API's `message` and, for 400, the `field`. */
export class ApiError extends Error {
  constructor(status, message, field) {
    super(message);
    this.status = status;
    this.field = field;
  }
}

let session = read();
let refreshing = null;
let refreshTimer = null;
let onSignedOut = () => {};

function read() {
  try {
    return JSON.parse(sessionStorage.getItem(KEY));
  } catch {
    return null;
  }
}

function keep(tokens) {
  session = {
    accessToken: tokens.accessToken,
    refreshToken: tokens.refreshToken,
    accessExpiresAt: Date.now() + tokens.expiresIn * 1000,
    lifetimeMs: tokens.expiresIn * 1000,
  };
  sessionStorage.setItem(KEY, JSON.stringify(session));
  scheduleRefresh();
}

function forget() {
  session = null;
  sessionStorage.removeItem(KEY);
  clearTimeout(refreshTimer);
}

function scheduleRefresh() {
  clearTimeout(refreshTimer);
  if (!session) return;
  const due = session.accessExpiresAt - session.lifetimeMs * (1 - REFRESH_AT);
  refreshTimer = setTimeout(() => refresh().catch(() => {}), Math.max(0, due - Date.now()));
}

/** Whether a session is stored (it may still turn out to be revoked). */
export function hasSession() {
  return session !== null;
}

/** Called with a reason when the session ends against the user's will (refresh refused). */
export function whenSignedOut(callback) {
  onSignedOut = callback;
}

async function send(path, { method = 'GET', body, token } = {}) {
  const headers = { accept: 'application/json' };
  if (body !== undefined) headers['content-type'] = 'application/json';
  if (token) headers.authorization = `Bearer ${token}`;
  const resp = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: 'no-store',
  });
  if (resp.status === 204) return { resp, data: null };
  const data = await resp.json().catch(() => null);
  return { resp, data };
}

function failure(resp, data) {
  return new ApiError(resp.status, data?.message ?? `${resp.status} ${resp.statusText}`, data?.field);
}

/** Logs in and keeps the tokens. */
export async function login(username, password) {
  const { resp, data } = await send('/auth/login', { method: 'POST', body: { username, password } });
  if (!resp.ok) throw failure(resp, data);
  keep(data);
}

/** Revokes the refresh token's family (best effort) and forgets the session. */
export async function logout() {
  const refreshToken = session?.refreshToken;
  forget();
  if (refreshToken) {
    await send('/auth/logout', { method: 'POST', body: { refreshToken } }).catch(() => {});
  }
}

function refresh() {
  refreshing ??= doRefresh().finally(() => {
    refreshing = null;
  });
  return refreshing;
}

async function doRefresh() {
  if (!session) throw new ApiError(401, 'not signed in');
  const { resp, data } = await send('/auth/refresh', {
    method: 'POST',
    body: { refreshToken: session.refreshToken },
  });
  if (resp.ok) {
    keep(data);
    return;
  }
  if (resp.status === 401) {
    forget();
    onSignedOut('Your session has ended. Please sign in again.');
  } else {
    // The server could not answer (restarting, database down): keep the session, try later.
    refreshTimer = setTimeout(() => refresh().catch(() => {}), 10_000);
  }
  throw failure(resp, data);
}

/** An authenticated request; answers the JSON body (null for 204). */
export async function api(path, options = {}) {
  if (!session) throw new ApiError(401, 'not signed in');
  if (refreshing) await refreshing.catch(() => {});
  let { resp, data } = await send(path, { ...options, token: session?.accessToken });
  if (resp.status === 401 && session) {
    await refresh();
    ({ resp, data } = await send(path, { ...options, token: session.accessToken }));
  }
  if (!resp.ok) throw failure(resp, data);
  return data;
}

/** `path?query` with the empty values left out. */
export function withQuery(path, params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null && v !== '') q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `${path}?${s}` : path;
}

// A session kept from before a reload is refreshed on the same schedule.
scheduleRefresh();
