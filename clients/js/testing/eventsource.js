// A small EventSource for the tests (Node 20 has none), read with fetch as the HTML
// standard describes one: `open`, named events as MessageEvents with `lastEventId`,
// `error`; a dropped connection or an ended response is reconnected after `retry:` ms with
// Last-Event-ID (readyState CONNECTING); an answer other than a 200 text/event-stream
// fails it for good (readyState CLOSED). Not part of the package.
import { SSEParser } from '../index.js';

export class TestEventSource extends EventTarget {
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSED = 2;

  constructor(url, { fetch: fetchImpl = globalThis.fetch } = {}) {
    super();
    this.url = String(url);
    this.withCredentials = false;
    this.readyState = TestEventSource.CONNECTING;
    this.fetchImpl = fetchImpl;
    this.controller = new AbortController();
    this.lastId = '';
    this.retry = 1000;
    /** The HTTP status of each connection's answer, or 0 when none came. */
    this.answers = [];
    this.connect();
  }

  get CONNECTING() {
    return TestEventSource.CONNECTING;
  }

  get OPEN() {
    return TestEventSource.OPEN;
  }

  get CLOSED() {
    return TestEventSource.CLOSED;
  }

  async connect() {
    const headers = { Accept: 'text/event-stream', 'Cache-Control': 'no-cache' };
    if (this.lastId) headers['Last-Event-ID'] = this.lastId;
    let response;
    try {
      response = await this.fetchImpl(this.url, { headers, signal: this.controller.signal });
    } catch {
      this.answers.push(0);
      this.reestablish();
      return;
    }
    this.answers.push(response.status);
    if (this.readyState === TestEventSource.CLOSED) {
      response.body?.cancel().catch(() => {});
      return;
    }
    const type = response.headers.get('Content-Type') ?? '';
    if (response.status !== 200 || !type.startsWith('text/event-stream')) {
      response.body?.cancel().catch(() => {});
      this.fail();
      return;
    }
    this.readyState = TestEventSource.OPEN;
    this.dispatchEvent(new Event('open'));
    const parser = new SSEParser();
    const reader = response.body.getReader();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        for (const event of parser.feed(value)) {
          if (parser.retry !== null) this.retry = parser.retry;
          if (event.id !== null) this.lastId = event.id;
          if (this.readyState === TestEventSource.CLOSED) return;
          this.dispatchEvent(
            new MessageEvent(event.event, {
              data: event.data,
              lastEventId: this.lastId,
              origin: new URL(this.url).origin,
            }),
          );
        }
        if (parser.retry !== null) this.retry = parser.retry;
      }
    } catch {
      // dropped: reestablished below
    }
    this.reestablish();
  }

  reestablish() {
    if (this.readyState === TestEventSource.CLOSED) return;
    this.readyState = TestEventSource.CONNECTING;
    this.dispatchEvent(new Event('error'));
    if (this.readyState === TestEventSource.CLOSED) return;
    this.timer = setTimeout(() => this.connect(), this.retry);
  }

  fail() {
    if (this.readyState === TestEventSource.CLOSED) return;
    this.readyState = TestEventSource.CLOSED;
    this.dispatchEvent(new Event('error'));
  }

  close() {
    this.readyState = TestEventSource.CLOSED;
    clearTimeout(this.timer);
    this.controller.abort();
  }
}

/**
 * A TestEventSource class that records every instance it makes, in `made`, so that a test
 * sees each URL a client opened.
 */
export function recordingEventSource() {
  const made = [];
  class Recording extends TestEventSource {
    constructor(url, init) {
      super(url, init);
      made.push(this);
    }
  }
  return { EventSource: Recording, made };
}
