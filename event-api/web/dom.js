// Building the DOM without markup strings: every text from the API goes in as a text node, so
// nothing it holds is ever parsed as HTML.

/**
 * `h('a', {href: '#/x', class: 'btn'}, 'text', child)`: an element with attributes (`on*`
 * functions become listeners, `false`/null/undefined values are left out) and children (strings
 * become text nodes; null, undefined and false are skipped; arrays are flattened).
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith('on') && typeof value === 'function') {
      el.addEventListener(name.slice(2), value);
    } else {
      el.setAttribute(name, value === true ? '' : String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : String(child));
  }
}

/** A URL from the API that is safe to put in `src` or `href` (http, https or same-origin). */
export function safeUrl(url) {
  if (typeof url !== 'string' || url === '') return null;
  try {
    const u = new URL(url, window.location.href);
    return u.protocol === 'http:' || u.protocol === 'https:' ? u.href : null;
  } catch {
    return null;
  }
}

/** A status badge: the text says the state (colour only repeats it). */
export function badge(text, kind = text) {
  return h('span', { class: `badge badge-${String(kind).toLowerCase()}` }, text);
}

/** A `<dl>` of the pairs whose value is not null/undefined/''. */
export function facts(pairs) {
  const dl = h('dl', { class: 'facts' });
  for (const [term, value] of pairs) {
    if (value === null || value === undefined || value === '') continue;
    dl.append(h('div', {}, h('dt', {}, term), h('dd', {}, value)));
  }
  return dl;
}

/** Says something in the page's live region (read out by screen readers). */
export function notify(message, kind = 'info') {
  const region = document.getElementById('notice');
  region.replaceChildren(h('p', { class: `notice-${kind}` }, message));
  region.setAttribute('role', kind === 'error' ? 'alert' : 'status');
}

export function clearNotice() {
  document.getElementById('notice').replaceChildren();
}

/**
 * Renders `items` into `list`, keeping the element of every item whose signature did not
 * change and replacing changed ones in place while the order stays, so a poll neither reloads
 * images nor takes the keyboard focus out of an unchanged row. `cache` is the caller's `Map`.
 */
export function keyed(list, cache, items, { key, signature, render }) {
  const before = [...cache.keys()];
  const next = new Map(items.map((item) => {
    const k = key(item);
    const sig = signature(item);
    const old = cache.get(k);
    return [k, { sig, el: old && old.sig === sig ? old.el : render(item) }];
  }));
  const keys = [...next.keys()];
  if (keys.length === before.length && keys.every((k, i) => k === before[i])) {
    for (const k of keys) {
      const old = cache.get(k).el;
      if (old !== next.get(k).el) old.replaceWith(next.get(k).el);
    }
  } else {
    list.replaceChildren(...keys.map((k) => next.get(k).el));
  }
  cache.clear();
  for (const [k, v] of next) cache.set(k, v);
}

/** Previous/next buttons for a page of the API (`{page, totalPages}`); hidden for one page. */
export function pager({ page, totalPages }, label, go) {
  const nav = h('nav', { class: 'pager', 'aria-label': `Pages of ${label}`, hidden: totalPages <= 1 });
  nav.append(
    h('button', { type: 'button', disabled: page <= 1, onclick: () => go(page - 1) }, 'Previous page'),
    h('span', {}, `Page ${page} of ${Math.max(totalPages, 1)}`),
    h('button', { type: 'button', disabled: page >= totalPages, onclick: () => go(page + 1) }, 'Next page'));
  return nav;
}

/**
 * Runs `task` now and then every `ms` (after each run ends), skipping runs while the tab is
 * hidden. Answers a function that stops it.
 */
export function every(ms, task) {
  let timer = null;
  let stopped = false;
  const run = async () => {
    if (stopped) return;
    if (!document.hidden) {
      try {
        await task();
      } catch (e) {
        notify(e.message, 'error');
      }
    }
    if (!stopped) timer = setTimeout(run, ms);
  };
  run();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}
