// Perceptual colour maps (samples of matplotlib's magma / inferno / viridis) and small pure
// helpers to map a metric onto them.

export const MAGMA = ['#000004', '#180f3d', '#440f76', '#721f81', '#9e2f7f', '#cd4071',
  '#f1605d', '#fd9668', '#feca8d', '#fcfdbf'];
export const INFERNO = ['#000004', '#1b0c41', '#4a0c6b', '#781c6d', '#a52c60', '#cf4446',
  '#ed6925', '#fb9b06', '#f7d13d', '#fcffa4'];
export const VIRIDIS = ['#440154', '#482878', '#3e4989', '#31688e', '#26828e', '#1f9e89',
  '#35b779', '#6ece58', '#b5de2b', '#fde725'];

/** Chip map: magma without its near-black end, so a confident token is still a visible chip. */
export const CHIP_MAP = sliceMap(MAGMA, 0.16, 0.97, 9);
/** Heatmap map for attention: inferno, whose black end matches a dark plot background. */
export const ATTENTION_MAP = INFERNO;
export const SIMILARITY_MAP = VIRIDIS;

export function hexToRgb(hex) {
  const h = hex.replace('#', '');
  return [0, 2, 4].map((i) => parseInt(h.slice(i, i + 2), 16));
}

export function rgbToHex([r, g, b]) {
  return `#${[r, g, b].map((v) => Math.round(v).toString(16).padStart(2, '0')).join('')}`;
}

/** Interpolate a colour map (array of hex stops) at t in [0, 1]. Pure. */
export function sampleMap(stops, t) {
  const x = Math.min(1, Math.max(0, Number.isFinite(t) ? t : 0)) * (stops.length - 1);
  const i = Math.min(stops.length - 2, Math.floor(x));
  const f = x - i;
  const a = hexToRgb(stops[i]);
  const b = hexToRgb(stops[i + 1]);
  return rgbToHex(a.map((v, k) => v + (b[k] - v) * f));
}

/** Resample the [lo, hi] part of a colour map into n stops. Pure. */
export function sliceMap(stops, lo, hi, n) {
  return Array.from({ length: n }, (_, i) => sampleMap(stops, lo + ((hi - lo) * i) / (n - 1)));
}

/** Mix two hex colours: f = 0 gives a, f = 1 gives b. Pure. */
export function mixHex(a, b, f) {
  const x = hexToRgb(a);
  const y = hexToRgb(b);
  return rgbToHex(x.map((v, k) => v + (y[k] - v) * f));
}

/** WCAG relative luminance of a hex colour. */
export function luminance(hex) {
  const [r, g, b] = hexToRgb(hex).map((v) => {
    const c = v / 255;
    return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4;
  });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
}

/** Text colour that stays readable on the given background. */
export function textOn(hex) {
  return luminance(hex) > 0.32 ? '#14161a' : '#f3f4f7';
}

/** CSS linear-gradient for a legend bar. */
export function cssGradient(stops, direction = 'to right') {
  return `linear-gradient(${direction}, ${stops.join(', ')})`;
}

export const METRICS = Object.freeze(['prob', 'entropy', 'rank', 'gltr']);

/** GLTR's four rank buckets and colours (Gehrmann et al., 2019): top 10, 100, 1000, beyond. */
export const GLTR_BUCKETS = Object.freeze([
  { key: 'top10', max: 10, colour: '#adff80' },
  { key: 'top100', max: 100, colour: '#ffea80' },
  { key: 'top1000', max: 1000, colour: '#ff9280' },
  { key: 'beyond', max: Infinity, colour: '#e5b0ff' },
]);

/** Index of the GLTR bucket of a rank (0..3), or null without a rank. Pure. */
export function gltrBucket(rank) {
  if (rank == null || !Number.isFinite(rank)) return null;
  return GLTR_BUCKETS.findIndex((b) => rank <= b.max);
}

/** Hard-stop CSS gradient showing the four GLTR colours (for the legend bar). */
export function gltrGradient(direction = 'to right') {
  const n = GLTR_BUCKETS.length;
  const stops = GLTR_BUCKETS.map((b, i) => `${b.colour} ${(100 * i) / n}% ${(100 * (i + 1)) / n}%`);
  return `linear-gradient(${direction}, ${stops.join(', ')})`;
}

/**
 * Map a token's metric to t in [0, 1], where 1 is "interesting" (surprising, uncertain,
 * low-ranked). Returns null when the token has no statistic (position 0). Pure.
 */
export function metricT(token, metric, domain) {
  if (metric === 'prob') {
    return token.prob == null ? null : 1 - token.prob;
  }
  if (metric === 'entropy') {
    return token.entropy == null ? null : Math.min(1, token.entropy / domain.entropyMax);
  }
  if (metric === 'rank') {
    if (token.rank == null) return null;
    return Math.min(1, Math.log10(token.rank) / Math.log10(domain.rankMax));
  }
  if (metric === 'gltr') {
    const b = gltrBucket(token.rank);
    return b === null ? null : b / (GLTR_BUCKETS.length - 1);
  }
  return null;
}

/** The scale domain for a run: entropy max rounded up, rank max as a power of ten. Pure. */
export function metricDomain(tokens) {
  let ent = 0;
  let rank = 1;
  for (const tok of tokens) {
    if (tok.entropy != null) ent = Math.max(ent, tok.entropy);
    if (tok.rank != null) rank = Math.max(rank, tok.rank);
  }
  return {
    entropyMax: Math.max(1, Math.ceil(ent)),
    rankMax: Math.max(10, 10 ** Math.ceil(Math.log10(rank))),
  };
}
