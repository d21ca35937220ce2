// The sign-in form: the API's username and password login.

import { login } from '../api.js';
import { h } from '../dom.js';

export function loginView(main, { onSignedIn }) {
  document.title = 'Sign in · camrec';
  const error = h('p', { class: 'form-error', id: 'login-error', role: 'alert' });
  const username = h('input', {
    id: 'username', name: 'username', autocomplete: 'username', required: true, autocapitalize: 'none',
    spellcheck: 'false',
  });
  const password = h('input', {
    id: 'password', name: 'password', type: 'password', autocomplete: 'current-password', required: true,
  });
  const submit = h('button', { type: 'submit', class: 'primary' }, 'Sign in');
  const form = h('form', { class: 'login', 'aria-describedby': 'login-error' },
    h('h1', { tabindex: '-1' }, 'Sign in'),
    h('p', { class: 'muted' }, 'Recordings of your cameras: review, play, download.'),
    h('label', { for: 'username' }, 'Username'),
    username,
    h('label', { for: 'password' }, 'Password'),
    password,
    error,
    submit);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    error.textContent = '';
    submit.disabled = true;
    try {
      await login(username.value.trim(), password.value);
      await onSignedIn();
    } catch (e) {
      error.textContent = e.status === 401 ? 'Wrong username or password.' : `Could not sign in: ${e.message}`;
      password.select();
    } finally {
      submit.disabled = false;
    }
  });
  main.replaceChildren(h('section', { class: 'login-wrap' }, form));
  username.focus();
}
