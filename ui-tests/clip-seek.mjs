// Plays an MP4 in a headless browser and seeks it: Debian's Chromium or Firefox ESR, driven by
// puppeteer-core (Chromium through CDP, Firefox through WebDriver BiDi). Run by
// recorder-worker's test of the clip assembled while recording (tests/live.rs), which serves
// the clip with byte ranges and checks what the browser asked for.
//
//   node clip-seek.mjs <chromium|firefox> <page url> <seek to, seconds>
//
// The page at <page url> holds `<video id="clip">`; `/seeking` on its origin is fetched just
// before the seek, so the server can tell the seek's requests apart. Prints one JSON line: the
// duration the browser read when the metadata arrived, where it landed after seeking, its
// readyState there and whether playback then advanced. Exits non-zero with a message when a
// step fails or times out.
// Environment: CHROMIUM (default /usr/bin/chromium), FIREFOX (default /usr/bin/firefox-esr).

import puppeteer from 'puppeteer-core';

const [browserName, url, seekArg] = process.argv.slice(2);
if (!['chromium', 'firefox'].includes(browserName) || !url || !seekArg) {
  console.error('usage: node clip-seek.mjs <chromium|firefox> <page url> <seek to, seconds>');
  process.exit(2);
}
const seekTo = Number(seekArg);

const launch = browserName === 'firefox'
  ? {
    browser: 'firefox',
    executablePath: process.env.FIREFOX || '/usr/bin/firefox-esr',
    extraPrefsFirefox: {
      'media.autoplay.default': 0,
      'media.autoplay.blocking_policy': 0,
    },
  }
  : {
    browser: 'chrome',
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking',
      '--autoplay-policy=no-user-gesture-required'],
  };

// Rejects after `ms` with `what`, so that a step that never happens fails the run.
function within(ms, what, promise) {
  let timer;
  const late = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${ms / 1000} s`)), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

const browser = await puppeteer.launch({ headless: true, ...launch });
try {
  const page = await browser.newPage();
  page.setDefaultTimeout(20_000);
  const errors = [];
  page.on('pageerror', (e) => errors.push(e.message));
  await page.goto(url);
  await page.waitForFunction(() => {
    const v = document.querySelector('video#clip');
    return v && (v.readyState >= 1 || v.error);
  });
  const duration = await page.evaluate(() => {
    const v = document.querySelector('video#clip');
    if (v.error) throw new Error(`media error ${v.error.code}: ${v.error.message}`);
    return v.duration;
  });
  // Tells the server that what the browser asks from now on is for the seek.
  await page.evaluate(async (u) => { await fetch(u); }, new URL('/seeking', url).href);
  const landed = await within(20_000, 'seeked', page.evaluate((t) => new Promise((resolve, reject) => {
    const v = document.querySelector('video#clip');
    const timer = setTimeout(() => reject(new Error('no seeked event within 15 s')), 15_000);
    v.addEventListener('seeked', () => { clearTimeout(timer); resolve(v.currentTime); }, { once: true });
    v.currentTime = t;
  }), seekTo));
  const readyState = await page.evaluate(() => document.querySelector('video#clip').readyState);
  const advanced = await within(20_000, 'playing on', page.evaluate((from) => new Promise((resolve) => {
    const v = document.querySelector('video#clip');
    v.muted = true;
    v.play().catch(() => {});
    const timer = setTimeout(() => resolve(false), 10_000);
    v.addEventListener('timeupdate', function check() {
      if (v.currentTime > from + 0.5) {
        clearTimeout(timer);
        v.removeEventListener('timeupdate', check);
        resolve(true);
      }
    });
  }), landed));
  console.log(JSON.stringify({ duration, landed, readyState, advanced, errors }));
} finally {
  await browser.close();
}
