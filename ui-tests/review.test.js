// The review page and the API reference in headless Chromium (Debian's /usr/bin/chromium,
// driven by playwright-core), against a running camrec with a demo camera named `demo-camera`
// (scripts/ui-test.sh starts one and runs this file). The tests run in order and share the
// recordings they make.
//
// Chromium resolves no host name but localhost and 127.0.0.1 (the site is offline), and every
// request a page makes must go to camrec's own origin (or data:/blob:): nothing may come from
// the internet.
//
// Environment: UI_BASE_URL, UI_ADMIN_USERNAME, UI_ADMIN_PASSWORD; UI_SCREENSHOTS_DIR to write
// screenshots there; CHROMIUM (default /usr/bin/chromium).

import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { chromium } from 'playwright-core';

const BASE = required('UI_BASE_URL').replace(/\/$/, '');
const ORIGIN = new URL(BASE).origin;
const ADMIN = { username: required('UI_ADMIN_USERNAME'), password: required('UI_ADMIN_PASSWORD') };
const SHOTS = process.env.UI_SCREENSHOTS_DIR || null;
const DESKTOP = { width: 1280, height: 800 };
const PHONE = { width: 390, height: 844 };

// Deadlines of the waits on the system (the page polls every 2-4 s).
const RECORDING_STARTS_MS = 30_000;
const CLIP_READY_MS = 60_000;

function required(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set (run scripts/ui-test.sh)`);
  return v;
}

let browser;
const shared = {};

before(async () => {
  browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--autoplay-policy=no-user-gesture-required',
      // Offline: any other host name fails to resolve.
      '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1',
    ],
  });
});

after(async () => {
  await browser?.close();
});

/**
 * A fresh browser context (its own sessionStorage) with a page whose requests, uncaught
 * errors and console errors are recorded for `assertClean`, and its 206 answers in `ranges`.
 */
async function openPage(viewport = DESKTOP) {
  const context = await browser.newContext({ viewport, deviceScaleFactor: 1 });
  const page = await context.newPage();
  page.setDefaultTimeout(15_000);
  const log = { offsite: [], blocked: [], errors: [], requests: [], ranges: [] };
  page.on('request', (r) => {
    const url = new URL(r.url());
    log.requests.push(r.url());
    if (url.protocol !== 'data:' && url.protocol !== 'blob:' && url.origin !== ORIGIN) log.offsite.push(r.url());
  });
  // Chromium reports a request its Content-Security-Policy refused, though it never left.
  page.on('requestfailed', (r) => {
    if (r.failure()?.errorText === 'csp') log.blocked.push(r.url());
  });
  page.on('response', (r) => {
    if (r.status() === 206) log.ranges.push(r.url());
  });
  page.on('pageerror', (e) => log.errors.push(`page error: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') log.errors.push(`console: ${m.text()}`);
  });
  return { context, page, log };
}

/**
 * Nothing was fetched from elsewhere (requests the page's policy refused never left the
 * browser) and no script failed (`allowed`: expected console errors).
 */
function assertClean(log, allowed = []) {
  const left = log.offsite.filter((u) => !log.blocked.includes(u));
  assert.deepEqual(left, [], 'requests left camrec\'s origin');
  const errors = log.errors.filter((e) => !allowed.some((re) => re.test(e)));
  assert.deepEqual(errors, [], 'errors in the page');
}

async function api(method, url, { token, body } = {}) {
  const resp = await fetch(`${BASE}${url}`, {
    method,
    headers: {
      ...(token ? { authorization: `Bearer ${token}` } : {}),
      ...(body ? { 'content-type': 'application/json' } : {}),
    },
    body: body ? JSON.stringify(body) : undefined,
  });
  const text = await resp.text();
  return { status: resp.status, body: text ? JSON.parse(text) : null };
}

async function tokenOf({ username, password }) {
  const r = await api('POST', '/auth/login', { body: { username, password } });
  assert.equal(r.status, 200, `login as ${username}`);
  return r.body.accessToken;
}

async function newUser(role) {
  const user = { username: `ui-${role.toLowerCase()}-${randomBytes(3).toString('hex')}`, password: randomBytes(12).toString('hex') };
  const r = await api('POST', '/users', { token: await tokenOf(ADMIN), body: { ...user, role } });
  assert.equal(r.status, 201, `create ${role}: ${JSON.stringify(r.body)}`);
  return user;
}

async function signIn(page, { username, password }) {
  await page.goto(`${BASE}/`);
  await page.getByLabel('Username').fill(username);
  await page.getByLabel('Password').fill(password);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('heading', { name: 'Cameras', level: 1 }).waitFor();
}

function navLink(page, name) {
  return page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name });
}

function demoCard(page) {
  return page.getByRole('listitem').filter({ has: page.getByRole('heading', { name: 'demo-camera' }) });
}

/** The page fits the phone's width: no horizontal scrolling. */
async function assertFitsWidth(page) {
  const { scroll, width } = await page.evaluate(() => ({
    scroll: document.documentElement.scrollWidth, width: window.innerWidth,
  }));
  assert.ok(scroll <= width, `the page is ${scroll}px wide in a ${width}px window`);
}

/** Every form control has a label. */
async function assertLabelled(page) {
  const unlabelled = await page.evaluate(() => [...document.querySelectorAll('input, select, textarea')]
    .filter((el) => el.labels.length === 0 && !el.getAttribute('aria-label'))
    .map((el) => el.id || el.name || el.outerHTML));
  assert.deepEqual(unlabelled, [], 'form controls without a label');
}

/**
 * Checks the view as a person would see it: no stray `false`/`null`/`undefined`/`NaN` text,
 * and at a phone's width no horizontal scrolling. With UI_SCREENSHOTS_DIR, writes
 * `<name>.png` (desktop) and `<name>-phone.png` (the whole page) there.
 */
async function checkView(page, name, { desktopOnly = false } = {}) {
  const junk = await page.evaluate(() => document.body.innerText.match(/\b(false|null|undefined|NaN)\b/)?.[0]);
  assert.equal(junk, undefined, `"${junk}" shown on the ${name} view`);
  if (!desktopOnly) {
    await page.setViewportSize(PHONE);
    await assertFitsWidth(page);
    if (SHOTS) await page.screenshot({ path: path.join(SHOTS, `${name}-phone.png`), fullPage: true });
    await page.setViewportSize(DESKTOP);
  }
  if (SHOTS) await page.screenshot({ path: path.join(SHOTS, `${name}.png`) });
}

/** The status badge of the player reads `text` (the page polls; `ms` is the deadline). */
async function playerStatus(page, text, ms) {
  await page.locator('main > .badges .badge').first().filter({ hasText: text }).waitFor({ timeout: ms });
}

test('the API reference renders from event-api alone, with no outside request', async () => {
  const { context, page, log } = await openPage();
  await page.goto(`${BASE}/docs`);
  await page.getByRole('heading', { name: /camrec event-api/, level: 1 }).waitFor({ timeout: 30_000 });
  await page.getByText('/events/{id}/end').first().waitFor();
  assert.ok(log.requests.some((u) => u.startsWith(`${BASE}/docs/redoc.standalone.js`)), 'Redoc came from event-api');
  if (SHOTS) await page.screenshot({ path: path.join(SHOTS, 'api-docs.png') });
  // The bundle's sidebar logo is on Redocly's CDN: the page's policy refuses it before any request.
  assert.deepEqual(log.blocked, ['https://cdn.redoc.ly/redoc/logo-mini.svg']);
  assertClean(log, [/the image 'https:\/\/cdn\.redoc\.ly\/.*Content Security Policy/]);
  await context.close();
});

test('an admin signs in, records a MANUAL clip, watches it live (video and figures), ends it, plays and seeks it', async () => {
  const { context, page, log } = await openPage();
  await page.goto(`${BASE}/`);
  await page.getByRole('heading', { name: 'Sign in' }).waitFor();
  await assertLabelled(page);
  await checkView(page, 'login');
  await signIn(page, ADMIN);
  // scripts/ui-test.sh gives access tokens 20 s: the session must outlive its first one.
  const tokenRefresh = page.waitForResponse((r) => r.url() === `${BASE}/auth/refresh`, { timeout: 60_000 });
  tokenRefresh.catch(() => {}); // awaited below; no unhandled rejection if a step fails first

  const card = demoCard(page);
  await card.waitFor();
  // A worker captures the demo camera: its pre-roll is in the ring before the recording starts.
  await card.getByText('capturing', { exact: true }).waitFor({ timeout: RECORDING_STARTS_MS });
  await card.getByRole('button', { name: 'Start manual recording' }).click();

  await page.waitForURL(/#\/playbacks\/[0-9a-f-]{36}$/);
  const playbackId = page.url().split('/').pop();
  shared.first = playbackId;
  await playerStatus(page, 'Recording', RECORDING_STARTS_MS);
  await page.getByText('Recording now').waitFor();
  // The live view plays while it records: its time advances (hls.js, the worker's segments).
  const live = page.locator('video#live');
  await live.waitFor();
  const liveStart = await page.waitForFunction(() => {
    const v = document.querySelector('video#live');
    return v && v.readyState >= 2 && v.currentTime > 0 ? v.currentTime : null;
  }, null, { timeout: RECORDING_STARTS_MS }).then((h) => h.jsonValue());
  await page.waitForFunction((t) => document.querySelector('video#live').currentTime > t + 1, liveStart,
    { timeout: 15_000 });
  assert.ok(log.requests.some((u) => new URL(u).pathname === `/playbacks/${playbackId}/live.m3u8`),
    'the live view loaded its playlist');

  // A second tab on the timeline sees the recording change without being reloaded.
  const watcher = await context.newPage();
  watcher.on('pageerror', (e) => log.errors.push(`page error (timeline tab): ${e.message}`));
  await signIn(watcher, ADMIN);
  await navLink(watcher, 'Timeline').click();
  const row = watcher.getByRole('listitem').filter({ has: watcher.locator(`a[href="#/playbacks/${playbackId}"]`) });
  await row.getByText('Recording', { exact: true }).waitFor();
  await watcher.evaluate(() => { window.notReloaded = true; });

  // Let the clip grow a few seconds; the figures update live.
  await page.locator('.facts div').filter({ has: page.locator('dt', { hasText: 'Recorded' }) }).locator('dd')
    .filter({ hasText: /^0:0[4-9]$|^0:[1-5]\d$/ }).waitFor({ timeout: RECORDING_STARTS_MS });
  await checkView(page, 'recording', { desktopOnly: true });

  await page.getByRole('button', { name: 'End recording' }).click();
  await playerStatus(page, 'Completed', CLIP_READY_MS);
  await row.getByText('Completed', { exact: true }).waitFor({ timeout: 10_000 });
  assert.equal(await watcher.evaluate(() => window.notReloaded), true, 'the timeline tab was reloaded');
  await watcher.close();

  // The clip plays (its time advances) and seeks; the media route answers byte ranges.
  const video = page.locator('video#clip');
  await video.waitFor();
  await page.waitForFunction(() => document.querySelector('video#clip').readyState >= 1, null, { timeout: 15_000 });
  const length = await video.evaluate((v) => v.duration);
  assert.ok(length >= 3, `the clip lasts ${length}s`);
  await video.evaluate((v) => { v.muted = true; return v.play(); });
  await page.waitForFunction(() => document.querySelector('video#clip').currentTime > 1, null, { timeout: 15_000 });
  const target = Math.round(length * 0.6 * 10) / 10;
  const landed = await video.evaluate((v, t) => new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('no seeked event within 10 s')), 10_000);
    v.pause();
    v.addEventListener('seeked', () => {
      clearTimeout(timer);
      resolve(v.currentTime);
    }, { once: true });
    v.currentTime = t;
  }), target);
  assert.ok(Math.abs(landed - target) < 0.5, `seeked to ${landed}s, asked for ${target}s`);
  assert.ok(log.ranges.some((u) => new URL(u).pathname === `/media/playbacks/${playbackId}/video.mp4`),
    'the clip was served in byte ranges (206)');

  const details = page.locator('.details');
  for (const [term, value] of [['Video', 'h264'], ['Audio', 'aac'], ['Resolution', '640x360']]) {
    await details.locator('div').filter({ has: page.locator('dt', { hasText: term }) }).locator('dd')
      .filter({ hasText: value }).waitFor();
  }
  await details.locator('div').filter({ has: page.locator('dt', { hasText: 'Size' }) }).locator('dd')
    .filter({ hasText: /\d.* (kB|MB)$/ }).waitFor();
  const download = await page.getByRole('link', { name: 'Download MP4' }).getAttribute('href');
  // A signed URL that expires, like object storage's presigned ones.
  assert.match(download,
    new RegExp(`^${ORIGIN}/media/playbacks/${playbackId}/video\\.mp4\\?exp=\\d+&sig=[0-9a-f]{64}$`));
  await checkView(page, 'player');

  // The camera's card shows the new clip's thumbnail.
  await navLink(page, 'Cameras').click();
  const thumb = demoCard(page).locator(`a[href="#/playbacks/${playbackId}"] img`);
  await thumb.waitFor({ timeout: 10_000 });
  await page.waitForFunction((el) => el.complete && el.naturalWidth > 0, await thumb.elementHandle());
  await checkView(page, 'cameras');

  // The timeline's filters: status and type narrow the list, and say when they do not combine.
  await navLink(page, 'Timeline').click();
  const entry = page.locator(`.entry:has(a[href="#/playbacks/${playbackId}"])`);
  await entry.waitFor();
  await assertLabelled(page);
  await page.getByLabel('Event type').selectOption('MOTION');
  await page.getByText('Nothing matches these filters.').waitFor();
  await page.getByLabel('Event type').selectOption('MANUAL');
  await entry.waitFor();
  await page.getByLabel('Recording status').selectOption('FAILED');
  await page.getByText('Nothing matches these filters.').waitFor();
  assert.equal(await page.getByLabel('Event type').isDisabled(), true, 'type is set aside with a status');
  await page.getByLabel('Recording status').selectOption('COMPLETED');
  await entry.waitFor();
  await page.getByRole('button', { name: 'Clear' }).click();
  await entry.waitFor();
  await checkView(page, 'timeline');

  assert.equal((await tokenRefresh).status(), 200, 'the access token was refreshed');
  const polled = await page.waitForResponse((r) => r.url().startsWith(`${BASE}/events?`));
  assert.equal(polled.status(), 200, 'the timeline polls on with the new token');
  assertClean(log);
  await context.close();
});

test('the page keeps the session: an expired access token is refreshed, not a new sign-in', async () => {
  const { context, page, log } = await openPage();
  await signIn(page, ADMIN);
  const refreshed = page.waitForResponse((r) => r.url() === `${BASE}/auth/refresh` && r.status() === 200);
  await page.evaluate(() => {
    const s = JSON.parse(sessionStorage.getItem('camrec.session'));
    s.accessToken = 'expired';
    sessionStorage.setItem('camrec.session', JSON.stringify(s));
  });
  await page.reload();
  await refreshed;
  await demoCard(page).waitFor();
  await page.getByRole('button', { name: 'Sign out' }).waitFor();
  // The server's 401 for the stale token is the browser's console error, expected here.
  assertClean(log, [/401 \(Unauthorized\)/]);

  // Signing out revokes the refresh token: the stored session is gone and the form is back.
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.getByRole('heading', { name: 'Sign in' }).waitFor();
  assert.equal(await page.evaluate(() => sessionStorage.getItem('camrec.session')), null);
  await context.close();
});

test('a viewer sees no button it may not use; an operator may start and end but not delete', async () => {
  const viewer = await newUser('VIEWER');
  const operator = await newUser('OPERATOR');
  const camera = (await api('GET', '/cameras?name=demo-camera', { token: await tokenOf(ADMIN) })).body.data[0];
  const started = await api('POST', '/events', { token: await tokenOf(operator), body: { cameraId: camera.id, type: 'MANUAL' } });
  assert.equal(started.status, 201);
  shared.second = started.body.playbackId;

  // The viewer signs in with the keyboard only.
  const v = await openPage();
  await v.page.goto(`${BASE}/`);
  await v.page.getByLabel('Username').waitFor();
  await v.page.keyboard.type(viewer.username);
  await v.page.keyboard.press('Tab');
  await v.page.keyboard.type(viewer.password);
  await v.page.keyboard.press('Enter');
  await demoCard(v.page).waitFor();
  await demoCard(v.page).getByRole('link', { name: 'Watch the recording' }).waitFor({ timeout: RECORDING_STARTS_MS });
  const forbidden = /start manual recording|end recording|delete recording/i;
  assert.equal(await v.page.getByRole('button', { name: forbidden }).count(), 0, 'cameras: no operator button');
  await v.page.goto(`${BASE}/#/playbacks/${shared.second}`);
  await playerStatus(v.page, 'Recording', RECORDING_STARTS_MS);
  assert.equal(await v.page.getByRole('button', { name: forbidden }).count(), 0, 'live recording: no operator button');
  await v.page.goto(`${BASE}/#/playbacks/${shared.first}`);
  await v.page.locator('video#clip').waitFor();
  await v.page.getByRole('link', { name: 'Download MP4' }).waitFor();
  assert.equal(await v.page.getByRole('button', { name: forbidden }).count(), 0, 'clip: no operator button');
  assertClean(v.log);
  await v.context.close();

  // The operator sees Start on a camera that is not recording, End on the recording, no Delete.
  const o = await openPage();
  await signIn(o.page, operator);
  await o.page.goto(`${BASE}/#/playbacks/${shared.second}`);
  await playerStatus(o.page, 'Recording', RECORDING_STARTS_MS);
  assert.equal(await o.page.getByRole('button', { name: 'Delete recording' }).count(), 0);
  await o.page.getByRole('button', { name: 'End recording' }).click();
  await playerStatus(o.page, 'Completed', CLIP_READY_MS);
  assert.equal(await o.page.getByRole('button', { name: 'Delete recording' }).count(), 0);
  await navLink(o.page, 'Cameras').click();
  await demoCard(o.page).getByRole('button', { name: 'Start manual recording' }).waitFor();
  assertClean(o.log);
  await o.context.close();
});

test('an admin deletes a recording', async () => {
  assert.ok(shared.second, 'the previous test made a recording');
  const { context, page, log } = await openPage();
  await signIn(page, ADMIN);
  await page.goto(`${BASE}/#/playbacks/${shared.second}`);
  await playerStatus(page, 'Completed', CLIP_READY_MS);
  page.once('dialog', (d) => d.accept());
  await page.getByRole('button', { name: 'Delete recording' }).click();
  await page.waitForURL(/#\/timeline$/);
  await page.getByText('Recording deleted.').waitFor();
  const gone = await api('GET', `/playbacks/${shared.second}`, { token: await tokenOf(ADMIN) });
  assert.equal(gone.status, 404);
  assertClean(log);
  await context.close();
});
