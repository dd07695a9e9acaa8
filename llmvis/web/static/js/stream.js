// Streaming generation, the pure part: POST /api/generate/stream answers Server-Sent Events,
// which EventSource cannot request (it only GETs), so api.js reads the body with fetch() and a
// stream reader and parses it with the parser here. Frames: start, prompt, token (one per
// step), then done or error; ':' lines are keep-alives.

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

/** The run as known while it streams: what `start` and `prompt` gave, plus tokens so far. Pure. */
export function partialRun(start, tokens) {
  return {
    run_id: start?.run_id ?? null,
    model: start?.model ?? null,
    params: start?.params ?? {},
    num_prompt_tokens: start?.num_prompt_tokens ?? 0,
    kind: start?.kind ?? 'generate',
    parent_id: start?.parent_id ?? null,
    fork_position: start?.fork_position ?? null,
    tokens,
  };
}
