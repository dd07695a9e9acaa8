// Attention heatmap for one layer and head (or the mean / max over heads).
// Long sequences are max-pooled to at most MAX_CELLS per side: beyond that a cell would be
// smaller than a pixel anyway, and max-pooling keeps the peaks that matter in attention.

import { ATTENTION_MAP } from '../colors.js';
import {
  FONT, MONO, PALETTE, baseTooltip, escapeHtml, highlightCategory, labelPicker,
} from '../charts.js';
import { visibleText } from '../tokens.js';

export const MAX_CELLS = 240;

/** Value transforms for the colour scale; `inv` maps back for legend labels. */
export const SCALES = {
  linear: { fwd: (v) => v, inv: (v) => v },
  sqrt: { fwd: (v) => Math.sqrt(Math.max(0, v)), inv: (v) => v * v },
  log: { fwd: (v) => Math.log10(Math.max(v, 1e-4)), inv: (v) => 10 ** v },
};

/** Beyond this many tokens the automatic colour scale is log: √ leaves a long run near-black. */
export const LOG_SCALE_FROM = 128;

/** The colour scale to draw with: 'auto' is √ on short runs and log on long ones. Pure. */
export function resolveScale(scale, n) {
  if (scale === 'auto' || !SCALES[scale]) return n > LOG_SCALE_FROM ? 'log' : 'sqrt';
  return scale;
}

/**
 * Max-pool a lower-triangular matrix into blocks of `factor` × `factor`.
 * Returns {factor, size, cells: [[col, row, weight]]} with only blocks on or below the
 * diagonal. Pure.
 */
export function poolLowerTriangular(matrix, maxCells = MAX_CELLS) {
  const n = matrix.length;
  const factor = Math.max(1, Math.ceil(n / maxCells));
  const size = Math.ceil(n / factor);
  const cells = [];
  for (let bi = 0; bi < size; bi += 1) {
    for (let bj = 0; bj <= bi; bj += 1) {
      let v = 0;
      const iEnd = Math.min(n, (bi + 1) * factor);
      for (let i = bi * factor; i < iEnd; i += 1) {
        const row = matrix[i];
        const jEnd = Math.min(i + 1, (bj + 1) * factor);
        for (let j = bj * factor; j < jEnd; j += 1) if (row[j] > v) v = row[j];
      }
      cells.push([bj, bi, v]);
    }
  }
  return { factor, size, cells };
}

/** The label of a head choice: the mean, the max, or head h with its KV head (GQA). Pure. */
export function headLabel(head, t, groupSize) {
  if (head === 'mean') return t('head.mean');
  if (head === 'max') return t('head.max');
  const h = Number(head);
  return t('head.n', { h, kv: Math.floor(h / groupSize) });
}

/** Build the ECharts option. ctx: {t, selected, scale, width, height, groupSize, labels, longLabels}. Pure. */
export function buildAttentionOption(data, ctx) {
  const { t } = ctx;
  const n = data.num_tokens ?? data.matrix.length;
  // The server may already have pooled (block > 1) or cut a square window starting at
  // q_start == k_start; pool further here only if it sent more than MAX_CELLS per side.
  const offset = data.q_start ?? 0;
  const local = poolLowerTriangular(data.matrix);
  const factor = (data.block ?? 1) * local.factor;
  const { size, cells } = local;
  const windowed = offset > 0 || (data.rows ?? data.matrix.length) * factor < n;
  const scaleName = resolveScale(ctx.scale, n);
  const scale = SCALES[scaleName];
  let vmax = 0;
  for (const c of cells) if (c[2] > vmax) vmax = c[2];
  const seriesData = cells.map(([x, y, w]) => [x, y, scale.fwd(w), w]);
  const lo = scaleName === 'log' ? scale.fwd(1e-4) : 0;
  const hi = Math.max(scale.fwd(vmax || 1), lo + 1e-6);

  const short = ctx.labels || data.tokens.map((x) => visibleText(x, 12));
  const long = ctx.longLabels || data.tokens.map((x) => visibleText(x, 32));
  const blockLabel = (b) => {
    const start = offset + b * factor;
    return factor === 1 ? short[start] : `${start}: ${short[start]}`;
  };
  const labels = Array.from({ length: size }, (_, b) => blockLabel(b));
  const blockRange = (b) => {
    const s = offset + b * factor;
    const e = Math.min(n, s + factor) - 1;
    return s === e ? `${s}` : `${s}–${e}`;
  };

  const selInside = ctx.selected != null && ctx.selected >= offset && ctx.selected < offset + size * factor;
  const selRow = selInside ? Math.floor((ctx.selected - offset) / factor) : null;
  // A square plot: queries and keys share one scale, so the diagonal is at 45 degrees.
  const W = ctx.width || 600;
  const H = ctx.height || 600;
  const side = Math.max(120, Math.min(W - 96 - 78, H - 24 - 96));
  const gridLeft = Math.max(96, Math.round((W - side - 96 - 78) / 2) + 96);
  const gridTop = Math.max(20, Math.round((H - side - 96) / 2));
  const plotH = side;
  const plotW = side;
  // Thin the labels, but always show (and highlight) the selected row's label.
  const yInterval = labelPicker(size, Math.floor(plotH / 13), selRow);
  const xInterval = labelPicker(size, Math.floor(plotW / 13), selRow);
  const axisData = highlightCategory(labels, selRow);

  const series = [{
    id: 'attention',
    type: 'heatmap',
    data: seriesData,
    encode: { x: 0, y: 1, value: 2 },
    progressive: 0, // at most MAX_CELLS^2 / 2 cells: one synchronous pass beats many animation frames
    emphasis: { itemStyle: { borderColor: '#ffffff', borderWidth: 1 } },
  }];
  if (selRow !== null && selRow < size) {
    series.push({
      id: 'selected-row',
      type: 'custom',
      silent: true,
      z: 10,
      data: [[selRow]],
      renderItem: (params, api) => {
        const r = api.value(0);
        const start = api.coord([0, r]);
        const end = api.coord([r, r]);
        const [cw, ch] = api.size([1, 1]);
        return {
          type: 'rect',
          shape: { x: start[0] - cw / 2, y: start[1] - ch / 2, width: end[0] - start[0] + cw, height: ch },
          style: { fill: 'rgba(247, 118, 142, 0.10)', stroke: PALETTE.highlight, lineWidth: 1.5 },
        };
      },
    });
  }

  const option = {
    animation: false,
    grid: { left: gridLeft, top: gridTop, width: side, height: side },
    tooltip: baseTooltip({
      trigger: 'item',
      formatter: (p) => {
        if (p.seriesId !== 'attention') return '';
        const [x, y, , w] = p.data;
        const q = factor === 1 ? escapeHtml(long[offset + y]) : blockRange(y);
        const k = factor === 1 ? escapeHtml(long[offset + x]) : blockRange(x);
        const qi = factor === 1 ? `#${offset + y}` : '';
        const ki = factor === 1 ? `#${offset + x}` : '';
        return `<div class="ec-tip"><div><span class="ec-k">${escapeHtml(t('attn.query'))}</span> ${qi} <b class="ec-tok">${q}</b></div>`
          + `<div><span class="ec-k">${escapeHtml(t('attn.key'))}</span> ${ki} <b class="ec-tok">${k}</b></div>`
          + `<div><span class="ec-k">${escapeHtml(t('attn.weight'))}</span> <b>${w.toFixed(4)}</b>${factor > 1 ? ' (max)' : ''}</div></div>`;
      },
    }),
    xAxis: {
      type: 'category',
      data: axisData,
      name: t('attn.xName'),
      nameLocation: 'middle',
      nameGap: 72,
      splitArea: { show: false },
      axisTick: { show: false },
      axisLine: { show: false },
      axisLabel: { interval: xInterval, rotate: 90, fontFamily: MONO, fontSize: 10, color: PALETTE.muted },
    },
    yAxis: {
      type: 'category',
      data: axisData,
      inverse: true,
      name: t('attn.yName'),
      nameLocation: 'middle',
      nameGap: 84,
      nameRotate: 90,
      axisTick: { show: false },
      axisLine: { show: false },
      axisLabel: { interval: yInterval, fontFamily: MONO, fontSize: 10, color: PALETTE.muted, width: 80, overflow: 'truncate' },
    },
    visualMap: {
      type: 'continuous',
      min: lo,
      max: hi,
      dimension: 2,
      seriesIndex: 0,
      calculable: true,
      realtime: false,
      orient: 'vertical',
      left: Math.min(W - 60, gridLeft + side + 18),
      top: gridTop + Math.max(0, (side - Math.min(320, side - 40)) / 2),
      itemHeight: Math.min(320, side - 40),
      itemWidth: 12,
      precision: 3,
      inRange: { color: ATTENTION_MAP },
      textStyle: { color: PALETTE.muted, fontFamily: FONT, fontSize: 11 },
      formatter: (v) => {
        const raw = scale.inv(v);
        if (raw < 1e-9) return '0';
        return raw >= 0.01 ? raw.toFixed(2) : raw.toExponential(0);
      },
    },
    series,
  };
  const caption = t('attn.caption', {
    layer: data.layer,
    head: headLabel(data.head, t, ctx.groupSize || 1),
    n,
  }) + ` · ${t('attn.scale', { scale: t(`scale.${scaleName}`) })}`
    + (factor > 1 ? ` · ${t('attn.pooled', { f: factor })}` : '')
    + (windowed ? ` · ${t('attn.window', { a: offset, b: offset + size * factor - 1 })}` : '');
  return {
    option,
    caption,
    meta: { layer: data.layer, head: data.head, cells: cells.length, pool: factor, offset, scale: scaleName },
  };
}

/** Map a clicked heatmap cell back to a query position. Pure. */
export function attentionRowToPosition(cell, meta) {
  return (meta.offset || 0) + cell[1] * (meta.pool || 1);
}

export const WINDOW = 128;

/**
 * Request parameters for the attention view: a pooled overview of the whole sequence, or a
 * full-resolution square window around the selection. The window start snaps to steps of
 * WINDOW / 4 so that moving the selection reuses cached windows. Pure.
 */
export function attentionRequest(n, range, selected) {
  if (range !== 'window' || n <= WINDOW || selected == null) return { pool: MAX_CELLS };
  const step = WINDOW / 4;
  const start = Math.max(0, Math.min(n - WINDOW, Math.floor((selected - (3 * WINDOW) / 4) / step) * step));
  return { q_start: start, q_end: start + WINDOW, k_start: start, k_end: start + WINDOW };
}
