// Streaming generation: POST /api/generate/stream answers Server-Sent Events, which EventSource
// cannot request (it only GETs), so the body is read with fetch() + a stream reader and parsed
// here. Frames: start, prompt, token (one per step), then done or error; ':' lines are keep-alives.

import { ApiError } from './api.js';

/** Parse one SSE frame (lines without the blank separator) into {event, data} or null. Pure. */
export function parseFrame(frame) {
  let event = 'message';
  const data = [];
  for (const line of frame.split('\n')) {
    if (!line || line.startsWith(':')) continue;
    const colon = line.indexOf(':');
    const field = colon < 0 ? line : line.slice(0, colon);
    let value = colon < 0 ? '' : line.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') event = value;
    else if (field === 'data') data.push(value);
  }
  return data.length ? { event, data: data.join('\n') } : null;
}

/**
 * Incremental SSE parser: feed(text) returns the complete frames seen so far as
 * [{event, data}] (data still a string); comment-only frames (keep-alives) are dropped.
 */
export function createSseParser() {
  let buf = '';
  return {
    feed(chunk) {
      buf += chunk;
      // CRLF / CR line ends become LF; a CR at the very end may be half of a CRLF, so wait.
      const tailCr = buf.endsWith('\r');
      buf = (tailCr ? buf.slice(0, -1) : buf).replace(/\r\n?/g, '\n') + (tailCr ? '\r' : '');
      const out = [];
      let cut = buf.indexOf('\n\n');
      while (cut >= 0) {
        const parsed = parseFrame(buf.slice(0, cut));
        if (parsed) out.push(parsed);
        buf = buf.slice(cut + 2);
        cut = buf.indexOf('\n\n');
      }
      return out;
    },
    get pending() { return buf; },
  };
}

/**
 * POST `payload` to `url` and read the event stream. onEvent(kind, data) is called for every
 * event with its data parsed from JSON. Resolves with the `done` run; rejects with an ApiError
 * for a JSON error answer (bad input is refused before streaming starts), an `error` event, or
 * a stream that ends early, and with the AbortError when `signal` aborts.
 */
export async function streamGenerate(url, payload, { signal, onEvent = () => {}, fetchImpl = fetch } = {}) {
  let res;
  try {
    res = await fetchImpl(url, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', Accept: 'text/event-stream' },
      body: JSON.stringify(payload),
      signal,
    });
  } catch (err) {
    if (err?.name === 'AbortError') throw err;
    throw new ApiError(String(err?.message || err), 0, null);
  }
  const type = res.headers.get('content-type') || '';
  if (!res.ok || !type.startsWith('text/event-stream')) {
    const text = await res.text();
    let body = null;
    try { body = text ? JSON.parse(text) : null; } catch { body = null; }
    const msg = (body && typeof body.error === 'string' && body.error) || `${res.status} ${res.statusText || 'error'}`;
    throw new ApiError(msg, res.status, body);
  }
  const reader = res.body.getReader();
  const decoder = new TextDecoder('utf-8');
  const parser = createSseParser();
  try {
    for (;;) {
      const { value, done } = await reader.read();
      const frames = parser.feed(done ? decoder.decode() : decoder.decode(value, { stream: true }));
      for (const frame of frames) {
        let data;
        try { data = JSON.parse(frame.data); } catch { throw new ApiError(`invalid event data (${frame.event})`, 0, null); }
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
}

/** The run as known while it streams: what `start` and `prompt` gave, plus tokens so far. Pure. */
export function partialRun(start, tokens) {
  return {
    run_id: start?.run_id ?? null,
    model: start?.model ?? null,
    params: start?.params ?? {},
    num_prompt_tokens: start?.num_prompt_tokens ?? 0,
    kind: 'generate',
    tokens,
  };
}
