import assert from 'node:assert/strict';
import { test } from 'node:test';

import { createSseParser, parseFrame, partialRun } from '../../llmvis/web/static/js/stream.js';

test('parseFrame reads event and data fields, one optional space after the colon', () => {
  assert.deepEqual(parseFrame('event: token\ndata: {"a":1}'), { event: 'token', data: '{"a":1}' });
  assert.deepEqual(parseFrame('data:x'), { event: 'message', data: 'x' });
  assert.deepEqual(parseFrame('data:  two'), { event: 'message', data: ' two' }, 'only one space is dropped');
  assert.deepEqual(parseFrame('data: a\ndata: b'), { event: 'message', data: 'a\nb' }, 'data lines join with LF');
  assert.deepEqual(parseFrame('data'), { event: 'message', data: '' }, 'a field name alone has an empty value');
  assert.deepEqual(parseFrame('id: 3\nretry: 10\ndata: x'), { event: 'message', data: 'x' }, 'other fields are ignored');
});

test('parseFrame drops comments and frames without data', () => {
  assert.equal(parseFrame(': keep-alive'), null);
  assert.equal(parseFrame('event: start'), null);
  assert.equal(parseFrame(''), null);
});

test('the parser returns complete frames and keeps the rest for the next chunk', () => {
  const p = createSseParser();
  assert.deepEqual(p.feed('event: a\ndata: 1\n\nevent: b\nda'), [{ event: 'a', data: '1' }]);
  assert.equal(p.pending, 'event: b\nda');
  assert.deepEqual(p.feed('ta: 2\n'), []);
  assert.deepEqual(p.feed('\n'), [{ event: 'b', data: '2' }]);
  assert.equal(p.pending, '');
});

test('the parser accepts CRLF and CR line ends, also a CRLF split across chunks', () => {
  const p = createSseParser();
  assert.deepEqual(p.feed('event: a\r\ndata: 1\r\n\r\ndata: 2\r\rdata: 3\r'), [
    { event: 'a', data: '1' }, { event: 'message', data: '2' },
  ]);
  assert.equal(p.pending, 'data: 3\r', 'a trailing CR may be half a CRLF');
  assert.deepEqual(p.feed('\n\r\n'), [{ event: 'message', data: '3' }]);
});

test('keep-alive comments produce no frames', () => {
  const p = createSseParser();
  assert.deepEqual(p.feed(': ping\n\n: ping\n\ndata: {}\n\n'), [{ event: 'message', data: '{}' }]);
});

test('partialRun: the run as known while it streams', () => {
  const start = { run_id: 'ab12', model: { name: 'm' }, params: { temperature: 0 }, num_prompt_tokens: 5 };
  const tokens = [{ position: 0 }];
  assert.deepEqual(partialRun(start, tokens), {
    run_id: 'ab12', model: { name: 'm' }, params: { temperature: 0 }, num_prompt_tokens: 5, kind: 'generate',
    parent_id: null, fork_position: null, tokens,
  });
  const fork = { ...start, kind: 'fork', parent_id: 'p1', fork_position: 3 };
  assert.equal(partialRun(fork, tokens).kind, 'fork', 'a streamed fork is a fork from its start event');
  assert.equal(partialRun(fork, tokens).fork_position, 3);
  assert.deepEqual(partialRun(null, []), {
    run_id: null, model: null, params: {}, num_prompt_tokens: 0, kind: 'generate', parent_id: null, fork_position: null, tokens: [],
  });
});
