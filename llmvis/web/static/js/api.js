// The one client for the llmvis HTTP API v1: every request of the page goes through send()
// below, the event stream of a streamed generation included. Every error becomes an ApiError
// whose message is the server's own `error` text, so the page can show it verbatim.

import { createSseParser } from './stream.js';

export class ApiError extends Error {
  constructor(message, status, body) {
    super(message);
    this.name = 'ApiError';
    this.status = status;
    this.body = body;
  }
}

/** Build a query string from a plain object, skipping null/undefined. Pure. */
export function queryString(params) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) {
    if (v !== undefined && v !== null) q.set(k, String(v));
  }
  const s = q.toString();
  return s ? `?${s}` : '';
}

/** Parse a response body's text as JSON; null when empty or not JSON. Pure. */
export function parseBody(text) {
  try { return text ? JSON.parse(text) : null; } catch { return null; }
}

/** The ApiError for a refused answer: the server's `error` text, else "<status> <text>". Pure. */
export function errorFromBody(status, statusText, body) {
  const msg = (body && typeof body.error === 'string' && body.error) || `${status} ${statusText || 'error'}`;
  return new ApiError(msg, status, body);
}

const isEventStream = (res) => (res.headers.get('content-type') || '').startsWith('text/event-stream');

/**
 * Create an API client. GET responses are cached per URL (bounded), so switching tabs or
 * moving the selection back and forth does not refetch. POST is never cached. `fetchImpl`
 * replaces fetch (tests).
 */
export function createApi({ base = '', cacheSize = 64, fetchImpl = (...args) => fetch(...args) } = {}) {
  const cache = new Map();

  /**
   * The one fetch-and-check routine. Resolves with the Response when it is what was asked for
   * (`stream`: an event stream); rejects with an ApiError for a network failure or a refused
   * answer (its JSON `error`), and with the AbortError itself when `init.signal` aborts.
   */
  const send = async (path, init = {}, { stream = false } = {}) => {
    let res;
    try {
      res = await fetchImpl(`${base}${path}`, { headers: { Accept: 'application/json' }, ...init });
    } catch (err) {
      if (err?.name === 'AbortError') throw err;
      throw new ApiError(String(err?.message || err), 0, null);
    }
    if (res.ok && (!stream || isEventStream(res))) return res;
    throw errorFromBody(res.status, res.statusText, parseBody(await res.text()));
  };

  /** send() and parse the JSON answer (an empty or non-JSON answer is an ApiError). */
  const request = async (path, init) => {
    const res = await send(path, init);
    const body = parseBody(await res.text());
    if (body === null) throw new ApiError(`invalid JSON from ${base}${path}`, res.status, null);
    return body;
  };

  // The cache holds promises, so two views asking for the same URL at once share one request.
  const getJSON = (path, params, { signal } = {}) => {
    const url = `${path}${queryString(params)}`;
    if (cache.has(url)) {
      const hit = cache.get(url);
      cache.delete(url);
      cache.set(url, hit); // refresh LRU order
      return hit;
    }
    const pending = request(url, { signal });
    cache.set(url, pending);
    pending.catch(() => { if (cache.get(url) === pending) cache.delete(url); }); // never cache a failure
    while (cache.size > cacheSize) cache.delete(cache.keys().next().value);
    return pending;
  };

  const sendJSON = (method, path, payload, { signal } = {}) => request(path, {
    method,
    headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
    body: JSON.stringify(payload),
    signal,
  });

  /**
   * POST `payload` and read the Server-Sent Events answer (EventSource cannot POST).
   * onEvent(kind, data) is called for every event with its data parsed from JSON. Resolves with
   * the `done` run; rejects with an ApiError for a JSON error answer (bad input is refused
   * before streaming starts), an `error` event, or a stream that ends early, and with the
   * AbortError when `signal` aborts.
   */
  const stream = async (path, payload, { signal, onEvent = () => {} } = {}) => {
    const res = await send(path, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Accept: 'text/event-stream' },
      body: JSON.stringify(payload),
      signal,
    }, { stream: true });
    const reader = res.body.getReader();
    const decoder = new TextDecoder('utf-8');
    const parser = createSseParser();
    try {
      for (;;) {
        const { value, done } = await reader.read();
        const frames = parser.feed(done ? decoder.decode() : decoder.decode(value, { stream: true }));
        for (const frame of frames) {
          const data = parseBody(frame.data);
          if (data === null) throw new ApiError(`invalid event data (${frame.event})`, 0, null);
          if (frame.event === 'error') {
            throw new ApiError(String(data?.error || 'generation failed'), data?.status ?? 500, data);
          }
          onEvent(frame.event, data);
          if (frame.event === 'done') return data;
        }
        if (done) throw new ApiError('the event stream ended before the run was done', 0, null);
      }
    } finally {
      reader.cancel().catch(() => {});
    }
  };

  return {
    clearCache: () => cache.clear(),
    // Generation. A run is fetched uncached: its `children` grow as it is forked.
    model: (opts) => getJSON('/api/model', {}, opts),
    generate: (payload, opts) => sendJSON('POST', '/api/generate', payload, opts),
    generateStream: (payload, opts) => stream('/api/generate/stream', payload, opts),
    estimate: (payload, opts) => sendJSON('POST', '/api/estimate', payload, opts),
    run: (runId, opts) => request(`/api/run${queryString({ run_id: runId })}`, opts),
    fork: (payload, opts) => sendJSON('POST', '/api/fork', payload, opts),
    forkStream: (payload, opts) => stream('/api/fork/stream', payload, opts),
    score: (payload, opts) => sendJSON('POST', '/api/score', payload, opts),
    cancel: (runId, opts) => sendJSON('POST', '/api/cancel', { run_id: runId }, opts),
    // Views of a run.
    diff: (runA, runB, opts = {}) => getJSON('/api/diff', { run_a: runA, run_b: runB, align: opts.align }, opts), // align: 'position' (default) | 'edit' | 'auto'
    tokenProbs: (runId, position, topN, opts) =>
      getJSON('/api/token_probs', { run_id: runId, position, top_n: topN }, opts),
    attention: (runId, layer, head, extra = {}, opts) =>
      getJSON('/api/attention', { run_id: runId, layer, head, ...extra }, opts),
    /** Every head of a layer as raw float16 (never cached): {buffer, heads, rows, cols, block, numTokens}. */
    attentionHeadsF16: async (runId, layer, params = {}, opts = {}) => {
      const res = await send(`/api/attention${queryString({ run_id: runId, layer, head: 'all', format: 'f16', ...params })}`,
        { signal: opts.signal });
      const num = (name) => Number(res.headers.get(`X-Llmvis-${name}`));
      return { buffer: await res.arrayBuffer(), heads: num('Heads'), rows: num('Rows'), cols: num('Cols'), block: num('Block'), numTokens: num('Num-Tokens') };
    },
    hiddenSimilarity: (runId, opts) => getJSON('/api/hidden_similarity', { run_id: runId }, opts),
    projection: (runId, layer, opts) =>
      getJSON('/api/embedding_projection', { run_id: runId, layer, method: 'pca' }, opts),
    logitLens: (runId, topK, window = {}, opts) =>
      getJSON('/api/logit_lens', { run_id: runId, top_k: topK, ...window }, opts),
    job: (jobId, opts) => request(`/api/jobs/${encodeURIComponent(jobId)}`, opts), // progress of a named view job (never cached)
    attentionInsights: (runId, opts) => getJSON('/api/attention_insights', { run_id: runId }, opts),
    attentionRow: (runId, position, head, opts) =>
      getJSON('/api/attention_row', { run_id: runId, position, head }, opts),
    segments: (runId, attention = 1, opts) => getJSON('/api/segments', { run_id: runId, attention }, opts),
    // Explain a token (docs/EXPLAIN.md): params {run_id, position, target, contrast, ...}.
    explainLogit: (params, opts) => getJSON('/api/explain/logit', params, opts),
    explainInputs: (params, opts) => getJSON('/api/explain/inputs', params, opts),
    explainFlow: (params, opts) => getJSON('/api/explain/flow', params, opts),
    // Interventions (docs/INTERVENE.md): the POSTs make runs or run a sweep (never cached).
    tokenize: (payload, opts) => sendJSON('POST', '/api/tokenize', payload, opts),
    ablate: (payload, opts) => sendJSON('POST', '/api/intervene/ablate', payload, opts),
    effects: (runId, params = {}, opts) => getJSON('/api/intervene/effects', { run_id: runId, ...params }, opts),
    steer: (payload, opts) => sendJSON('POST', '/api/intervene/steer', payload, opts),
    patch: (payload, opts) => sendJSON('POST', '/api/intervene/patch', payload, opts),
    // History (never cached: it changes under the page).
    history: (limit, opts) => request(`/api/history${queryString({ limit })}`, opts),
    renameHistory: (runId, title, opts) =>
      sendJSON('PATCH', `/api/history/${encodeURIComponent(runId)}`, { title }, opts),
    deleteHistory: (runId, opts) =>
      request(`/api/history/${encodeURIComponent(runId)}`, { method: 'DELETE', ...opts }),
    importRun: (file, opts) => request('/api/import', {
      method: 'POST',
      headers: { 'Content-Type': 'application/octet-stream', Accept: 'application/json' },
      body: file,
      ...opts,
    }),
  };
}
