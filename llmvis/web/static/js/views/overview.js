// The all-heads overview ("model view"): a grid of layers × heads, each cell a small pooled
// attention map. The pure parts: float16 decoding, a colour lookup table, one thumbnail's RGBA
// pixels, the export picture's layout and the caption. overview.js draws them.

import { ATTENTION_MAP, sampleMap } from '../colors.js';
import { FONT, MONO, PALETTE } from '../charts.js';
import { SCALES, resolveScale } from './attention.js';

/** Cells per side of a thumbnail: the server max-pools each head to at most POOL × POOL. */
export const POOL = 32;

/** One IEEE 754 half-precision number (its 16 bits) as a JS number. Pure. */
export function halfToFloat(h) {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * 2 ** -14 * (frac / 1024);
  if (exp === 31) return frac ? NaN : sign * Infinity;
  return sign * 2 ** (exp - 15) * (1 + frac / 1024);
}

/**
 * The answer of GET /api/attention?head=all&format=f16: little-endian float16, head after head,
 * rows of `cols`. Returns {heads, rows, cols, block, heads: [Float32Array(rows*cols)]}. Pure.
 */
export function decodeHeads(buffer, heads, rows, cols) {
  const bits = new Uint16Array(buffer);
  if (bits.length !== heads * rows * cols) {
    throw new Error(`attention: expected ${heads}×${rows}×${cols} float16 values, got ${bits.length}`);
  }
  const out = [];
  for (let h = 0; h < heads; h += 1) {
    const m = new Float32Array(rows * cols);
    const base = h * rows * cols;
    for (let i = 0; i < m.length; i += 1) m[i] = halfToFloat(bits[base + i]);
    out.push(m);
  }
  return out;
}

/** 256 RGB colours of the attention map, for t in [0, 1]. Pure. */
export function colourTable(stops = ATTENTION_MAP) {
  const lut = new Uint8ClampedArray(256 * 3);
  for (let i = 0; i < 256; i += 1) {
    const hex = sampleMap(stops, i / 255);
    const n = parseInt(hex.slice(1), 16);
    lut.set([(n >> 16) & 255, (n >> 8) & 255, n & 255], i * 3);
  }
  return lut;
}

const BG = [0x16, 0x1b, 0x22]; // the panel colour: cells where every key comes after the query

/**
 * RGBA pixels (one per pooled cell) of one head's thumbnail. m: rows × cols weights; block: the
 * pooling tile (cell (i, j) holds queries i·block… and keys j·block…); scaleName: 'sqrt' | 'log'
 * | 'linear'. Each head is scaled to its own largest weight, so every head shows its structure.
 * Returns {pixels, max}. Pure.
 */
export function thumbnailPixels(m, rows, cols, scaleName, lut) {
  const scale = SCALES[scaleName] || SCALES.sqrt;
  let max = 0;
  for (let i = 0; i < m.length; i += 1) if (m[i] > max) max = m[i];
  const lo = scaleName === 'log' ? scale.fwd(Math.max(1e-4, max * 1e-3)) : 0;
  const hi = scale.fwd(max || 1);
  const span = hi - lo || 1;
  const pixels = new Uint8ClampedArray(rows * cols * 4);
  for (let i = 0; i < rows; i += 1) {
    for (let j = 0; j < cols; j += 1) {
      const at = (i * cols + j) * 4;
      if (j > i) { // above the diagonal: no key there is causal
        pixels.set([BG[0], BG[1], BG[2], 255], at);
        continue;
      }
      const v = m[i * cols + j];
      const tv = Math.max(0, Math.min(1, (scale.fwd(v) - lo) / span));
      const k = Math.round(tv * 255) * 3;
      pixels.set([lut[k], lut[k + 1], lut[k + 2], 255], at);
    }
  }
  return { pixels, max };
}

/** The colour scale the overview draws with ('auto': √ on short runs, log on long). Pure. */
export function overviewScale(scale, n) {
  return resolveScale(scale, n);
}

/** The caption under the overview. Pure. */
export function overviewCaption(t, { layers, heads, n, block, scaleName }) {
  return t('overview.caption', { layers, heads, n, pool: POOL, block, scale: t(`scale.${scaleName}`) });
}

/**
 * The ECharts option that stands for the overview when it is saved as PNG or SVG: the picture of
 * every thumbnail drawn so far (`image`, a data URL of cw × ch pixels laid out by
 * compositeLayout) fitted into width × height, with layer and head numbers as text. Pure.
 */
export function exportOption(image, cw, ch, { width, height, layers, heads, cell, gap, t }) {
  const left = 44;
  const top = 28;
  const s = Math.min((width - left - 16) / cw, (height - top - 16) / ch, 3);
  const graphic = [];
  if (image) graphic.push({ type: 'image', id: 'overview-image', left, top, style: { image, width: cw * s, height: ch * s } });
  const step = (cell + gap) * s;
  const every = Math.max(1, Math.ceil(12 / step));
  for (let l = 0; l < layers; l += every) {
    graphic.push({ type: 'text', left: 8, top: top + l * step + step / 2 - 6,
      style: { text: `L${l}`, fill: PALETTE.muted, font: `10px ${MONO}` } });
  }
  for (let h = 0; h < heads; h += Math.max(1, Math.ceil(18 / step))) {
    graphic.push({ type: 'text', left: left + h * step + 2, top: 10,
      style: { text: `H${h}`, fill: PALETTE.muted, font: `10px ${MONO}` } });
  }
  graphic.push({ type: 'text', left: left + heads * step + 8, top, style: { text: t('overview.exportNote'), fill: PALETTE.muted, font: `11px ${FONT}` } });
  return { animation: false, backgroundColor: 'transparent', graphic };
}

/** Where thumbnail (layer, head) sits in the export picture. Pure. */
export function compositeLayout(layers, heads, cell = POOL, gap = 2) {
  return { cw: heads * (cell + gap), ch: layers * (cell + gap), cell, gap, at: (l, h) => [h * (cell + gap), l * (cell + gap)] };
}
