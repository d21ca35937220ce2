// The review page's entry: who is signed in, which view the URL's hash names, and the header.
// Views are `view(main, ctx, params)` functions that render into `main` and answer a function
// that stops their polling when the user leaves.
//
//   #/cameras                    cameras, their status and latest clip
//   #/timeline?camera=&type=...  events and their recordings, filtered, paginated, live
//   #/playbacks/<id>             one recording: player, metadata, actions

import { api, hasSession, logout, whenSignedOut } from './api.js';
import { clearNotice, notify } from './dom.js';
import { camerasView } from './views/cameras.js';
import { loginView } from './views/login.js';
import { playerView } from './views/player.js';
import { timelineView } from './views/timeline.js';

const main = document.getElementById('main');
const RANK = { VIEWER: 0, OPERATOR: 1, ADMIN: 2 };

let user = null;
let stopView = () => {};
// A message for the view `go` leads to (navigating clears the one shown before).
let nextNotice = null;

/** What the signed-in user may do; views show only the controls it allows. */
function context() {
  const rank = RANK[user.role] ?? -1;
  return {
    user,
    // Start a MANUAL recording, end an event (the API's OPERATOR routes).
    canOperate: rank >= RANK.OPERATOR,
    // Delete a playback (an ADMIN route).
    canDelete: rank >= RANK.ADMIN,
    // Shows another view; `notice` ([message, kind]) is said once it is there.
    go: (hash, notice = null) => {
      nextNotice = notice;
      window.location.hash = hash;
    },
  };
}

function routePath() {
  return window.location.hash.replace(/^#/, '').split('?')[0];
}

function parseRoute() {
  const path = routePath();
  const query = window.location.hash.split('?')[1] ?? '';
  const params = Object.fromEntries(new URLSearchParams(query));
  const playback = path.match(/^\/playbacks\/([0-9a-fA-F-]{36})$/);
  if (playback) return { view: playerView, params: { id: playback[1] } };
  if (path === '/timeline') return { view: timelineView, params };
  return { view: camerasView, params };
}

function showHeader(signedIn) {
  document.getElementById('nav').hidden = !signedIn;
  document.getElementById('who').hidden = !signedIn;
  document.getElementById('who-name').textContent = signedIn ? `${user.username} (${user.role.toLowerCase()})` : '';
  const path = window.location.hash.split('?')[0];
  for (const a of document.querySelectorAll('#nav a')) {
    const current = a.getAttribute('href') === path || (path === '' && a.getAttribute('href') === '#/cameras');
    if (current) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
}

function render({ focus = false } = {}) {
  stopView();
  stopView = () => {};
  if (!user) {
    showHeader(false);
    loginView(main, { onSignedIn: signedIn });
    return;
  }
  showHeader(true);
  const { view, params } = parseRoute();
  stopView = view(main, context(), params) ?? (() => {});
  if (focus) main.querySelector('h1')?.focus();
}

async function loadUser() {
  user = await api('/users/profile');
}

async function signedIn() {
  await loadUser();
  clearNotice();
  render({ focus: true });
}

function signedOut(message) {
  user = null;
  render();
  if (message) notify(message, 'error');
}

async function boot() {
  whenSignedOut(signedOut);
  document.getElementById('sign-out').addEventListener('click', async () => {
    await logout();
    signedOut();
    notify('Signed out.');
  });
  let shownPath = routePath();
  window.addEventListener('hashchange', () => {
    // Focus goes to the new view's heading only when the view changes, not its query.
    const focus = routePath() !== shownPath;
    shownPath = routePath();
    clearNotice();
    render({ focus });
    if (nextNotice) notify(...nextNotice);
    nextNotice = null;
  });
  if (hasSession()) {
    try {
      await loadUser();
    } catch (e) {
      user = null;
      if (e.status !== 401) notify(`Could not load your profile: ${e.message}`, 'error');
    }
  }
  render();
}

boot();
