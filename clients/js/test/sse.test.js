// The text/event-stream parser on raw bytes, fed in every possible split: a line, a
// UTF-8 character or a CRLF cut in two must not change the events.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import { SSEParser } from '../index.js';

const encode = (text) => new TextEncoder().encode(text);

function parse(chunks, parser = new SSEParser()) {
  return chunks.flatMap((chunk) => parser.feed(chunk));
}

function everySplit(bytes) {
  const splits = [[bytes], Array.from(bytes, (_, i) => bytes.subarray(i, i + 1))];
  for (let i = 1; i < bytes.length; i += 1) splits.push([bytes.subarray(0, i), bytes.subarray(i)]);
  return splits;
}

const STATUS = JSON.stringify({ uuid: 'u1', status: 'running', title: 'Zürich ☃' });
const STREAM = [
  'retry: 3000\n',
  ': keepalive\n',
  '\n',
  `event: status\nid: a1\ndata: ${STATUS}\n\n`,
  'event: log\nid: a2\ndata: {"level": "info",\n',
  'data:  "message": "two lines"}\n\n',
  'event: close\ndata: {"reason": "finished", "reconnect": false}\n\n',
].join('');
const EXPECTED = [
  { event: 'status', data: STATUS, id: 'a1' },
  { event: 'log', data: '{"level": "info",\n "message": "two lines"}', id: 'a2' },
  { event: 'close', data: '{"reason": "finished", "reconnect": false}', id: null },
];

describe('SSEParser', () => {
  for (const [name, newline] of [
    ['LF', '\n'],
    ['CRLF', '\r\n'],
    ['CR', '\r'],
  ]) {
    test(`the same events whatever the chunks, with ${name} line ends`, () => {
      const bytes = encode(STREAM.replaceAll('\n', newline));
      for (const chunks of everySplit(bytes)) {
        const parser = new SSEParser();
        assert.deepEqual(parse(chunks, parser), EXPECTED);
        assert.deepEqual([parser.retry, parser.lastEventId, parser.comments], [3000, 'a2', 1]);
      }
    });
  }

  test('a CRLF split between chunks is one line end, not a blank line', () => {
    assert.deepEqual(parse([encode('data: a\r'), encode('\ndata: b\r\n\r\n')]), [
      { event: 'message', data: 'a\nb', id: null },
    ]);
  });

  test('field syntax: optional space, no colon, unknown fields, no data', () => {
    const events = parse([
      encode('data:no space\n\ndata:  two\n\ndata\n\ndata: x\ncolour: blue\n\nevent: log\n\ndata: y\n\n'),
    ]);
    assert.deepEqual(
      events.map((event) => [event.event, event.data]),
      [
        ['message', 'no space'],
        ['message', ' two'],
        ['message', ''],
        ['message', 'x'],
        ['message', 'y'],
      ],
    );
  });

  test('retry takes digits only; ids persist, skip a NUL, and clear when empty', () => {
    const parser = new SSEParser('before');
    assert.equal(parser.lastEventId, 'before');
    parse([encode('retry: 1500\nretry: soon\nretry: -1\nid: 5\ndata: a\n\nid: x\0y\ndata: b\n\n')], parser);
    assert.equal(parser.retry, 1500);
    assert.equal(parser.lastEventId, '5');
    parse([encode('id\ndata: c\n\n')], parser);
    assert.equal(parser.lastEventId, '');
  });

  test('a byte order mark at the start is dropped', () => {
    for (const chunks of everySplit(encode('\ufeffevent: log\ndata: x\n\n'))) {
      assert.deepEqual(parse(chunks), [{ event: 'log', data: 'x', id: null }]);
    }
  });

  test('reset drops a half-received event and keeps the id and retry', () => {
    const parser = new SSEParser();
    parse([encode('retry: 100\nid: 1\ndata: ok\n\nevent: log\ndata: cut off')], parser);
    parser.reset();
    assert.deepEqual(parse([encode('\n\ndata: next\n\n')], parser), [
      { event: 'message', data: 'next', id: null },
    ]);
    assert.deepEqual([parser.retry, parser.lastEventId], [100, '1']);
  });
});
