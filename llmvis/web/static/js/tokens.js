// Pure helpers for token text: visible whitespace, UTF-8 byte handling and grouping of
// partial-byte tokens (byte-level BPE splits e.g. one Chinese character over several tokens).

const WS_MAP = new Map([
  [' ', '·'],
  ['\n', '↵'],
  ['\t', '⇥'],
  ['\r', '␍'],
  ['\u00a0', '⍽'],
  ['\u3000', '□'],
]);

// Invisible format characters (zero-width, bidi controls, BOM, soft hyphen): shown as their
// code point, so hostile text cannot hide content or reorder what the reader sees.
const INVISIBLE = /^[\u00ad\u061c\u180e\u200b-\u200f\u202a-\u202e\u2060-\u2064\u2066-\u2069\ufeff]$/u;

/** The marker shown for this character, or null when it is shown as itself. */
function markerFor(ch) {
  if (WS_MAP.has(ch)) return WS_MAP.get(ch);
  if (INVISIBLE.test(ch)) return `⟨U+${ch.codePointAt(0).toString(16).toUpperCase().padStart(4, '0')}⟩`;
  const c = ch.codePointAt(0);
  if (c < 0x20) return String.fromCodePoint(0x2400 + c); // ␀..␟ control pictures
  if (c === 0x7f) return '␡';
  return null;
}

/**
 * Split text into runs of plain text and visible-whitespace markers.
 * Returns [{text, ws}] where ws runs hold markers (·, ↵, ⇥…). Pure.
 */
export function visibleParts(text) {
  const parts = [];
  for (const ch of String(text ?? '')) {
    const m = markerFor(ch);
    const ws = m !== null;
    const shown = ws ? m : ch;
    const last = parts[parts.length - 1];
    if (last && last.ws === ws) last.text += shown;
    else parts.push({ text: shown, ws });
  }
  return parts;
}

/** Visible form of a token's text as one string (for axis labels and tooltips). Pure. */
export function visibleText(text, maxLen = Infinity) {
  const s = visibleParts(text).map((p) => p.text).join('');
  const chars = Array.from(s);
  return chars.length > maxLen ? `${chars.slice(0, maxLen - 1).join('')}…` : s;
}

/** Number of newlines in a token's text (each forces a line break after its chip). Pure. */
export function newlineCount(text) {
  return (String(text ?? '').match(/\n/g) || []).length;
}

/** Hex string ("e4bda0") to bytes. Invalid input gives an empty array. Pure. */
export function hexToBytes(hex) {
  const h = String(hex ?? '');
  if (h.length % 2 !== 0 || /[^0-9a-f]/i.test(h)) return new Uint8Array(0);
  const out = new Uint8Array(h.length / 2);
  for (let i = 0; i < out.length; i += 1) out[i] = parseInt(h.slice(2 * i, 2 * i + 2), 16);
  return out;
}

/** Bytes as spaced hex ("e4 bd a0"). Pure. */
export function formatBytes(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, '0')).join(' ');
}

const isContinuation = (b) => (b & 0xc0) === 0x80;

function sequenceLength(lead) {
  if (lead < 0x80) return 1;
  if ((lead & 0xe0) === 0xc0) return 2;
  if ((lead & 0xf0) === 0xe0) return 3;
  if ((lead & 0xf8) === 0xf0) return 4;
  return 0;
}

/** True when the bytes end inside a multi-byte UTF-8 sequence. Pure. */
export function endsIncomplete(bytes) {
  const n = bytes.length;
  let i = n - 1;
  while (i >= 0 && n - i < 4 && isContinuation(bytes[i])) i -= 1;
  if (i < 0) return false;
  const need = sequenceLength(bytes[i]);
  return need > 1 && n - i < need;
}

/** True when the bytes begin with a continuation byte (they finish an earlier character). Pure. */
export function startsWithContinuation(bytes) {
  return bytes.length > 0 && isContinuation(bytes[0]);
}

function concatBytes(list) {
  const total = list.reduce((s, b) => s + b.length, 0);
  const out = new Uint8Array(total);
  let o = 0;
  for (const b of list) { out.set(b, o); o += b.length; }
  return out;
}

/** Decode UTF-8 bytes, replacing invalid sequences with U+FFFD. Pure. */
export function decodeUtf8(bytes) {
  return new TextDecoder('utf-8', { fatal: false }).decode(bytes);
}

const MAX_GROUP = 12;

/**
 * Group consecutive tokens whose bytes only make sense together.
 * Returns items: {kind: 'token', token} or {kind: 'group', tokens, bytes: [Uint8Array], text}.
 * A group starts at a token flagged partial (or whose bytes are an incomplete sequence) and
 * grows while the joined bytes end mid-character or the next token starts with a
 * continuation byte. Pure.
 */
export function groupTokens(tokens) {
  const items = [];
  const byteList = tokens.map((t) => hexToBytes(t.bytes));
  let i = 0;
  while (i < tokens.length) {
    const tok = tokens[i];
    const b = byteList[i];
    const starts = !tok.special && (tok.partial || endsIncomplete(b) || startsWithContinuation(b));
    if (!starts) {
      items.push({ kind: 'token', token: tok });
      i += 1;
      continue;
    }
    const group = [tok];
    const bytes = [b];
    let j = i + 1;
    while (j < tokens.length && group.length < MAX_GROUP) {
      const next = tokens[j];
      const nb = byteList[j];
      const joined = concatBytes(bytes);
      const needMore = endsIncomplete(joined) || startsWithContinuation(nb)
        || (nb.length === 0 && next.partial);
      if (next.special || next.source !== tok.source || !needMore) break;
      group.push(next);
      bytes.push(nb);
      j += 1;
    }
    const joined = concatBytes(bytes);
    const text = joined.length ? decodeUtf8(joined) : group.map((t) => t.text).join('');
    items.push({ kind: 'group', tokens: group, bytes, text });
    i = j;
  }
  return items;
}

const SUBSCRIPTS = '₀₁₂₃₄₅₆₇₈₉';
const subscript = (k) => String(k).split('').map((d) => SUBSCRIPTS[Number(d)]).join('');

/**
 * One short label per position for chart axes and tooltips. A token that is only part of a
 * character is labelled with the character its group decodes to plus its piece number
 * (你₁, 你₂), never with U+FFFD. Pure.
 */
export function tokenLabels(tokens, maxLen = 12) {
  const labels = new Array(tokens.length).fill('');
  for (const item of groupTokens(tokens)) {
    if (item.kind === 'token') {
      labels[item.token.position] = visibleText(item.token.text, maxLen);
    } else {
      const text = visibleText(item.text, maxLen);
      item.tokens.forEach((tok, k) => { labels[tok.position] = `${text}${subscript(k + 1)}`; });
    }
  }
  return labels;
}

/** Label for a candidate token: its bytes in hex when it is not a complete character. Pure. */
export function candidateLabel(cand, maxLen = 16) {
  if (cand.partial) return `⟨${formatBytes(hexToBytes(cand.bytes))}⟩`;
  return visibleText(cand.text, maxLen);
}

/** Human-readable text of the grouped conversation (what a reader sees, markers included). Pure. */
export function readableText(items) {
  return items.map((it) => visibleText(it.kind === 'group' ? it.text : it.token.text)).join('');
}

/** A probability in short form: 3 decimals from 0.1, 4 from 0.001, an exponent below. Pure. */
export function fmtProb(p) {
  if (p == null || !Number.isFinite(p)) return '—';
  if (p === 0) return '0';
  if (p >= 0.001) return p.toFixed(p >= 0.1 ? 3 : 4);
  return p.toExponential(1);
}

/** A number with `digits` decimals, or — when missing. Pure. */
export function fmtNum(x, digits = 3) {
  return x == null || !Number.isFinite(x) ? '—' : x.toFixed(digits);
}

/** A share as a percentage, or — when missing. Pure. */
export function fmtPct(x, digits = 1) {
  return x == null || !Number.isFinite(x) ? '—' : `${(100 * x).toFixed(digits)}%`;
}
