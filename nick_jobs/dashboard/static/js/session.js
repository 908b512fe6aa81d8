// The logged-in user's token: kept in sessionStorage only (this tab, until it closes;
// no cookie, so no request is ever authenticated without the page asking), renewed with
// @login-renew before it expires, and dropped on the first 401 with the reason shown.

import Client, { NickJobsError } from '../vendor/nick-jobs-client.js';

const KEY = 'nick-jobs.dashboard.token';
// Renew once this share of the token's lifetime has passed, or RENEW_MARGIN_S seconds
// before it ends when that is sooner (a 12-hour token: after 9 hours, leaving 3 to ride
// out an outage; a 10-minute one: after 5), but never before half its lifetime; and not
// sooner than MIN_WAIT_MS from now, or than halfway to its end when it ends within twice
// that: however short the lifetime, never once a second.
const RENEW_AT = 0.75;
const RENEW_MARGIN_S = 300;
const MIN_WAIT_MS = 5000;

function decodeClaims(token) {
  try {
    const part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
    const binary = atob(part + '='.repeat((4 - (part.length % 4)) % 4));
    const bytes = Uint8Array.from(binary, (char) => char.charCodeAt(0));
    return JSON.parse(new TextDecoder().decode(bytes));
  } catch {
    return null;
  }
}

export class Session extends EventTarget {
  constructor(apiPath) {
    super();
    this.client = Client.initialize({ apiPath });
    this.token = sessionStorage.getItem(KEY);
    this.isAdmin = false;
    this.renewTimer = null;
    this.renewAt = 0;
    if (this.token && !this.validClaims()) this.forget();
  }

  get claims() {
    return this.token ? decodeClaims(this.token) : null;
  }

  /** The claims of a token that has not expired yet, or null. */
  validClaims() {
    const claims = this.claims;
    if (!claims || typeof claims.exp !== 'number') return null;
    return claims.exp * 1000 > Date.now() ? claims : null;
  }

  get loggedIn() {
    return Boolean(this.token);
  }

  get login() {
    return this.claims?.sub ?? '';
  }

  get fullname() {
    return this.claims?.fullname || this.login;
  }

  /** POST /@login; rejects with the API's error (401 "Wrong login and/or password."). */
  async logIn(login, password) {
    const { data } = await this.client.login({ data: { login, password } });
    this.keep(data.token);
    await this.learnRole();
  }

  /** POST /@logout (which revokes the token), then forget it whatever the answer. */
  async logOut() {
    const token = this.token;
    this.forget();
    if (token) await this.client.logout({ token }).catch(() => {});
    this.dispatchEvent(new CustomEvent('ended', { detail: { reason: 'You have logged out.' } }));
  }

  /** The session ends (a 401): back to the login form, saying why. */
  end(reason) {
    if (!this.token) return;
    this.forget();
    this.dispatchEvent(new CustomEvent('ended', { detail: { reason } }));
  }

  keep(token) {
    this.token = token;
    sessionStorage.setItem(KEY, token);
    this.scheduleRenew();
  }

  forget() {
    this.token = null;
    this.isAdmin = false;
    sessionStorage.removeItem(KEY);
    clearTimeout(this.renewTimer);
    this.renewTimer = null;
  }

  scheduleRenew() {
    clearTimeout(this.renewTimer);
    const claims = this.validClaims();
    if (!claims) return;
    const now = Date.now();
    const expires = claims.exp * 1000;
    const issued = Math.min((claims.iat ?? now / 1000) * 1000, expires);
    const lifetime = expires - issued;
    const at = Math.max(
      Math.min(issued + lifetime * RENEW_AT, expires - RENEW_MARGIN_S * 1000),
      issued + lifetime / 2,
    );
    // Not at once, even for a token read back late (a reloaded page) whose time is past.
    const soonest = now + Math.min(MIN_WAIT_MS, (expires - now) / 2);
    this.renewAt = Math.max(at, soonest);
    // setTimeout holds at most 2^31-1 ms; a later renewal is rescheduled when it fires.
    const wait = Math.min(this.renewAt - now, 2 ** 31 - 1);
    this.renewTimer = setTimeout(() => this.renew(), wait);
  }

  /** POST /@login-renew: a fresh token before this one expires. */
  async renew() {
    if (!this.token) return;
    if (Date.now() < this.renewAt - 1000) {
      this.scheduleRenew(); // woken early: setTimeout can't wait longer than about 24 days
      return;
    }
    try {
      const { data } = await this.client.loginRenew({ token: this.token });
      this.keep(data.token);
      this.dispatchEvent(new CustomEvent('renewed'));
    } catch (error) {
      if (error.status === 401) this.end(`Your session has ended: ${error.message}`);
      else this.renewTimer = setTimeout(() => this.renew(), 30000); // the server is away: try again
    }
  }

  /** Whether the user may manage the site: only administrators may read @scheduled-jobs. */
  async learnRole() {
    try {
      await this.client.getScheduledJobs({ token: this.token });
      this.isAdmin = true;
    } catch (error) {
      if (error.status === 401) this.end(`Your session has ended: ${error.message}`);
      this.isAdmin = false;
    }
  }

  /**
   * `session.call('getJobs', { query })`: the client's method with the token; a 401 ends
   * the session (and still rejects, so the view stops what it was doing).
   */
  async call(method, args = {}) {
    try {
      return await this.client[method]({ token: this.token, ...args });
    } catch (error) {
      this.check(error);
      throw error;
    }
  }

  /** `session.request('GET', '/@jobs/@stats', { query })`, for what the client has no method for. */
  async request(method, path, args = {}) {
    try {
      return await this.client.request(method, path, { token: this.token, ...args });
    } catch (error) {
      this.check(error);
      throw error;
    }
  }

  check(error) {
    if (error instanceof NickJobsError && error.status === 401) {
      this.end(`Your session has ended: ${error.message}`);
    }
  }

  /**
   * Follow a stream (`streamJobs`, `streamJob`) for as long as `signal` is not aborted:
   * `onEvent` gets each event. A stream the server ends, or that fails while the server
   * is away, is opened again with the current token (renewed meanwhile); a 401 ends the
   * session; any other refusal goes to `onError`.
   */
  async follow(method, args, { signal, onEvent, onError, onOpen }) {
    let lastEventId = args.lastEventId;
    let failures = 0;
    while (!signal.aborted && this.token) {
      try {
        onOpen?.();
        for await (const event of this.client[method]({ ...args, token: this.token, lastEventId, signal })) {
          if (event.id) lastEventId = event.id;
          failures = 0;
          const more = onEvent(event);
          if (more === false) return;
        }
        return; // the stream said it is over (a finished job)
      } catch (error) {
        if (signal.aborted) return;
        this.check(error);
        if (error.status === 401) return;
        failures += 1;
        if (error.status && ![0, 502, 503, 504].includes(error.status)) {
          onError?.(error);
          return;
        }
        await new Promise((resolve) => setTimeout(resolve, Math.min(1000 * 2 ** failures, 30000)));
      }
    }
  }
}
