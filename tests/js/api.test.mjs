// The one API client, with a fake fetch: errors, the GET cache, and the event stream.
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { ApiError, createApi, errorFromBody, parseBody, queryString } from '../../llmvis/web/static/js/api.js';

const json = (body, status = 200) => new Response(JSON.stringify(body), {
  status, headers: { 'Content-Type': 'application/json' },
});

/** A fake fetch answering from `answer(url, init)`, recording every call. */
function fakeFetch(answer) {
  const calls = [];
  const impl = async (url, init) => { calls.push({ url, init }); return answer(url, init); };
  return { impl, calls };
}

/** An event-stream Response whose body arrives in the given chunks. */
function sse(chunks, status = 200) {
  const enc = new TextEncoder();
  const body = new ReadableStream({
    start(controller) {
      for (const c of chunks) controller.enqueue(enc.encode(c));
      controller.close();
    },
  });
  return new Response(body, { status, headers: { 'Content-Type': 'text/event-stream; charset=utf-8' } });
}

test('queryString skips null and undefined and encodes values', () => {
  assert.equal(queryString({ a: 1, b: null, c: 'x y', d: undefined }), '?a=1&c=x+y');
  assert.equal(queryString({}), '');
});

test('parseBody: JSON or null', () => {
  assert.deepEqual(parseBody('{"a":1}'), { a: 1 });
  assert.equal(parseBody(''), null);
  assert.equal(parseBody('<html>'), null);
});

test('errorFromBody uses the server\'s error text, else the status line', () => {
  const e = errorFromBody(400, 'Bad Request', { error: 'prompt: must not be empty' });
  assert.ok(e instanceof ApiError && e instanceof Error);
  assert.equal(e.name, 'ApiError');
  assert.equal(e.message, 'prompt: must not be empty');
  assert.equal(e.status, 400);
  assert.deepEqual(e.body, { error: 'prompt: must not be empty' });
  assert.equal(errorFromBody(502, 'Bad Gateway', null).message, '502 Bad Gateway');
  assert.equal(errorFromBody(500, '', { error: 42 }).message, '500 error', 'a non-string error is not shown');
});

test('a GET is cached per URL (LRU), a POST never is; clearCache forgets', async () => {
  const f = fakeFetch((url) => json({ url }));
  const api = createApi({ fetchImpl: f.impl, cacheSize: 2 });
  assert.deepEqual(await api.model(), { url: '/api/model' });
  await api.model();
  assert.equal(f.calls.length, 1);
  assert.equal(f.calls[0].init.headers.Accept, 'application/json');
  await api.tokenProbs('r1', 3, 20);
  assert.equal(f.calls[1].url, '/api/token_probs?run_id=r1&position=3&top_n=20');
  await api.model(); // still cached, and now the most recent
  await api.hiddenSimilarity('r1'); // evicts the least recent: token_probs
  await api.tokenProbs('r1', 3, 20);
  assert.equal(f.calls.length, 4);
  await api.estimate({ prompt: 'x' });
  await api.estimate({ prompt: 'x' });
  assert.equal(f.calls.length, 6);
  assert.equal(f.calls[5].init.method, 'POST');
  assert.equal(f.calls[5].init.body, '{"prompt":"x"}');
  api.clearCache();
  await api.model();
  assert.equal(f.calls.length, 7);
});

test('two views asking for one URL at once share one request', async () => {
  const f = fakeFetch(() => json({ ok: true }));
  const api = createApi({ fetchImpl: f.impl });
  const [a, b] = await Promise.all([api.segments('r', 0), api.segments('r', 0)]);
  assert.deepEqual(a, b);
  assert.equal(f.calls.length, 1);
  assert.equal(f.calls[0].url, '/api/segments?run_id=r&attention=0');
});

test('a refused answer becomes an ApiError with the server\'s message and is not cached', async () => {
  let fail = true;
  const f = fakeFetch(() => (fail ? json({ error: 'run_id: unknown run' }, 404) : json({ ok: 1 })));
  const api = createApi({ fetchImpl: f.impl });
  await assert.rejects(api.diff('a', 'b'), (e) => e instanceof ApiError && e.status === 404 && e.message === 'run_id: unknown run');
  fail = false;
  assert.deepEqual(await api.diff('a', 'b'), { ok: 1 });
  assert.equal(f.calls.length, 2);
});

test('network failures, aborts and bad JSON', async () => {
  const down = createApi({ fetchImpl: async () => { throw new TypeError('fetch failed'); } });
  await assert.rejects(down.model(), (e) => e instanceof ApiError && e.status === 0 && e.message === 'fetch failed');
  const abort = new DOMException('The operation was aborted.', 'AbortError');
  const aborted = createApi({ fetchImpl: async () => { throw abort; } });
  await assert.rejects(aborted.model(), (e) => e === abort, 'an abort is passed on as it is');
  const garbled = createApi({ fetchImpl: async () => new Response('nope', { status: 200 }) });
  await assert.rejects(garbled.run('ab'), (e) => e instanceof ApiError && e.message === 'invalid JSON from /api/run?run_id=ab');
});

test('history calls: methods, paths and bodies', async () => {
  const f = fakeFetch(() => json({ ok: true }));
  const api = createApi({ fetchImpl: f.impl, base: 'http://h' });
  await api.history(200);
  await api.renameHistory('abc', 'New title');
  await api.deleteHistory('abc');
  const file = new Blob(['x']);
  await api.importRun(file);
  assert.deepEqual(f.calls.map((c) => [c.init.method ?? 'GET', c.url]), [
    ['GET', 'http://h/api/history?limit=200'],
    ['PATCH', 'http://h/api/history/abc'],
    ['DELETE', 'http://h/api/history/abc'],
    ['POST', 'http://h/api/import'],
  ]);
  assert.equal(f.calls[1].init.body, '{"title":"New title"}');
  assert.equal(f.calls[3].init.body, file);
  assert.equal(f.calls[3].init.headers['Content-Type'], 'application/octet-stream');
});

test('the stream goes through the same client: events in order, resolves with the done run', async () => {
  const f = fakeFetch(() => sse([
    'event: start\ndata: {"run_id":"ab",',
    '"num_prompt_tokens":2}\n\n: keep-alive\n\nevent: prompt\ndata: {"tokens":[1,2]}\n\n',
    'event: token\ndata: {"position":2,"text":"\u4f60"}\n\nevent: done\ndata: {"run_id":"ab","status":"done"}\n\n',
  ]));
  const api = createApi({ fetchImpl: f.impl });
  const seen = [];
  const run = await api.generateStream({ prompt: 'hi' }, { onEvent: (kind, data) => seen.push([kind, data]) });
  assert.deepEqual(run, { run_id: 'ab', status: 'done' });
  assert.deepEqual(seen, [
    ['start', { run_id: 'ab', num_prompt_tokens: 2 }],
    ['prompt', { tokens: [1, 2] }],
    ['token', { position: 2, text: '你' }],
    ['done', { run_id: 'ab', status: 'done' }],
  ]);
  assert.equal(f.calls[0].url, '/api/generate/stream');
  assert.equal(f.calls[0].init.method, 'POST');
  assert.equal(f.calls[0].init.headers.Accept, 'text/event-stream');
  assert.equal(f.calls[0].init.body, '{"prompt":"hi"}');
});

test('a UTF-8 character split across chunks arrives whole', async () => {
  const bytes = new TextEncoder().encode('event: done\ndata: {"t":"你"}\n\n');
  const cut = bytes.indexOf(0xe4) + 1; // inside the three bytes of 你
  const body = new ReadableStream({
    start(c) { c.enqueue(bytes.slice(0, cut)); c.enqueue(bytes.slice(cut)); c.close(); },
  });
  const api = createApi({ fetchImpl: async () => new Response(body, { headers: { 'Content-Type': 'text/event-stream' } }) });
  assert.deepEqual(await api.generateStream({}), { t: '你' });
});

test('stream errors: a JSON refusal, an error event, an early end, bad event data', async () => {
  const refuse = createApi({ fetchImpl: async () => json({ error: 'max_new_tokens: must be at most 512' }, 400) });
  await assert.rejects(refuse.generateStream({}), (e) => e.status === 400 && e.message === 'max_new_tokens: must be at most 512');
  const failed = createApi({ fetchImpl: async () => sse(['event: start\ndata: {}\n\nevent: error\ndata: {"error":"out of memory","status":507}\n\n']) });
  await assert.rejects(failed.generateStream({}), (e) => e instanceof ApiError && e.status === 507 && e.message === 'out of memory');
  const early = createApi({ fetchImpl: async () => sse(['event: start\ndata: {}\n\n']) });
  await assert.rejects(early.generateStream({}), /the event stream ended before the run was done/);
  const bad = createApi({ fetchImpl: async () => sse(['event: token\ndata: {oops\n\n']) });
  await assert.rejects(bad.generateStream({}), /invalid event data \(token\)/);
  const notStream = createApi({ fetchImpl: async () => json({ run_id: 'x' }) });
  await assert.rejects(notStream.generateStream({}), /200/, 'a JSON answer where a stream was asked for is an error');
});
