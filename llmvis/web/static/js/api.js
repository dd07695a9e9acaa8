// Thin client for the llmvis HTTP API v1. Every error becomes an ApiError whose message is the
// server's own `error` text, so the page can show it verbatim.

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

async function request(url, init = {}) {
  let res;
  try {
    res = await fetch(url, { headers: { Accept: 'application/json' }, ...init });
  } catch (err) {
    if (err?.name === 'AbortError') throw err;
    throw new ApiError(String(err?.message || err), 0, null);
  }
  let body = null;
  const text = await res.text();
  try { body = text ? JSON.parse(text) : null; } catch { body = null; }
  if (!res.ok) {
    const msg = (body && typeof body.error === 'string' && body.error)
      || `${res.status} ${res.statusText || 'error'}`;
    throw new ApiError(msg, res.status, body);
  }
  if (body === null) throw new ApiError(`invalid JSON from ${url}`, res.status, null);
  return body;
}

/**
 * Create an API client. GET responses are cached per URL (bounded), so switching tabs or
 * moving the selection back and forth does not refetch. POST is never cached.
 */
export function createApi({ base = '', cacheSize = 64 } = {}) {
  const cache = new Map();

  // The cache holds promises, so two views asking for the same URL at once share one request.
  const getJSON = (path, params, { signal } = {}) => {
    const url = `${base}${path}${queryString(params)}`;
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

  const postJSON = (path, payload, { signal } = {}) => request(`${base}${path}`, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
    body: JSON.stringify(payload),
    signal,
  });

  return {
    clearCache: () => cache.clear(),
    // Interactive generation (fork, diff, score, cancel). A run is fetched uncached: its
    // `children` grow as it is forked.
    run: (runId, opts) => request(`${base}/api/run${queryString({ run_id: runId })}`, opts),
    fork: (payload, opts) => postJSON('/api/fork', payload, opts),
    score: (payload, opts) => postJSON('/api/score', payload, opts),
    cancel: (runId, opts) => postJSON('/api/cancel', { run_id: runId }, opts),
    diff: (runA, runB, opts) => getJSON('/api/diff', { run_a: runA, run_b: runB }, opts),
    model: (opts) => getJSON('/api/model', {}, opts),
    generate: (payload, opts) => postJSON('/api/generate', payload, opts),
    estimate: (payload, opts) => postJSON('/api/estimate', payload, opts),
    tokenProbs: (runId, position, topN, opts) =>
      getJSON('/api/token_probs', { run_id: runId, position, top_n: topN }, opts),
    attention: (runId, layer, head, extra = {}, opts) =>
      getJSON('/api/attention', { run_id: runId, layer, head, ...extra }, opts),
    hiddenSimilarity: (runId, opts) => getJSON('/api/hidden_similarity', { run_id: runId }, opts),
    projection: (runId, layer, opts) =>
      getJSON('/api/embedding_projection', { run_id: runId, layer, method: 'pca' }, opts),
    logitLens: (runId, topK, window = {}, opts) =>
      getJSON('/api/logit_lens', { run_id: runId, top_k: topK, ...window }, opts),
    attentionInsights: (runId, opts) => getJSON('/api/attention_insights', { run_id: runId }, opts),
    attentionRow: (runId, position, head, opts) =>
      getJSON('/api/attention_row', { run_id: runId, position, head }, opts),
    segments: (runId, attention = 1, opts) => getJSON('/api/segments', { run_id: runId, attention }, opts),
  };
}
