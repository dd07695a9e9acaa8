// Small helpers shared by every module: building elements (text only ever through textContent)
// and the byte-count format. No DOM access at module level.

/** A new `tag` element with an optional class and text (set with textContent, never HTML). */
export function el(doc, tag, className, text) {
  const node = doc.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined && text !== null) node.textContent = text;
  return node;
}

/** An <option> with `value` (as a string) and its text. */
export function option(doc, value, text) {
  const o = doc.createElement('option');
  o.value = String(value);
  o.textContent = text;
  return o;
}

/** Bytes as a short human string ("512 B", "48 MB", "1.2 GB"). Pure. */
export function fmtBytes(n) {
  if (!Number.isFinite(n)) return '—';
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let v = n;
  let u = 0;
  while (v >= 1024 && u < units.length - 1) { v /= 1024; u += 1; }
  return `${v >= 10 || u === 0 ? Math.round(v) : v.toFixed(1)} ${units[u]}`;
}

/** Heads that share one KV head (GQA): num_heads / num_kv_heads, at least 1. Pure. */
export function kvGroupSize(model) {
  if (!model) return 1;
  return Math.max(1, Math.round(model.num_heads / (model.num_kv_heads || model.num_heads)));
}
