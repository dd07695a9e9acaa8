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

/**
 * Max-pool a window of the attention matrix (rows are queries from `qOff`, columns keys from
 * `kOff`; rows may be ragged, as a lower triangle is) into blocks of `factor` × `factor`.
 * Only blocks that hold a causal cell (a key at or before a query) are kept. Returns
 * {factor, rows, cols, cells: [[col, row, weight]]}. Pure.
 */
export function poolWindow(matrix, qOff = 0, kOff = 0, maxCells = MAX_CELLS) {
  const r = matrix.length;
  let c = 0;
  for (const row of matrix) if (row.length > c) c = row.length;
  const factor = Math.max(1, Math.ceil(Math.max(r, c) / maxCells));
  const rows = Math.ceil(r / factor);
  const cols = Math.ceil(c / factor);
  const cells = [];
  for (let bi = 0; bi < rows; bi += 1) {
    const iEnd = Math.min(r, (bi + 1) * factor);
    const lastQuery = qOff + iEnd - 1;
    for (let bj = 0; bj < cols; bj += 1) {
      if (kOff + bj * factor > lastQuery) break; // every key of this block comes after every query
      let v = 0;
      for (let i = bi * factor; i < iEnd; i += 1) {
        const row = matrix[i];
        const jEnd = Math.min(row.length, (bj + 1) * factor);
        for (let j = bj * factor; j < jEnd; j += 1) if (row[j] > v) v = row[j];
      }
      cells.push([bj, bi, v]);
    }
  }
  return { factor, rows, cols, cells };
}

/** The label of a head choice: the mean, the max, or head h with its KV head (GQA). Pure. */
export function headLabel(head, t, groupSize) {
  if (head === 'mean') return t('head.mean');
  if (head === 'max') return t('head.max');
  const h = Number(head);
  return t('head.n', { h, kv: Math.floor(h / groupSize) });
}

/** Cells per side of the mini-map's pooled overview of the whole matrix. */
export const MINIMAP_CELLS = 48;
const MINIMAP_PX = 84;

/**
 * Build the ECharts option. ctx: {t, selected, scale, width, height, groupSize, labels,
 * longLabels, zoom, overview}. `data` is the whole matrix (pooled), a square window or any
 * rectangle of it (a brushed zoom); `overview`, when given with a window, is the pooled whole
 * matrix drawn as a mini-map with the window marked on it. Pure.
 */
export function buildAttentionOption(data, ctx) {
  const { t } = ctx;
  const n = data.num_tokens ?? data.matrix.length;
  // The server may already have pooled (block > 1) or cut a window; pool further here only if
  // it sent more than MAX_CELLS per side.
  const qOff = data.q_start ?? 0;
  const kOff = data.k_start ?? qOff;
  const block = data.block ?? 1;
  const local = poolWindow(data.matrix, qOff / block, kOff / block);
  const factor = block * local.factor;
  const { rows, cols, cells } = local;
  const qEnd = Math.min(n, qOff + rows * factor);
  const kEnd = Math.min(n, kOff + cols * factor);
  const square = qOff === kOff && rows === cols;
  const windowed = qOff > 0 || kOff > 0 || qEnd < n || kEnd < n;
  const scaleName = resolveScale(ctx.scale, n);
  const scale = SCALES[scaleName];
  let vmax = 0;
  for (const c of cells) if (c[2] > vmax) vmax = c[2];
  const seriesData = cells.map(([x, y, w]) => [x, y, scale.fwd(w), w]);
  const lo = scaleName === 'log' ? scale.fwd(1e-4) : 0;
  const hi = Math.max(scale.fwd(vmax || 1), lo + 1e-6);

  const short = ctx.labels || data.tokens.map((x) => visibleText(x, 12));
  const long = ctx.longLabels || data.tokens.map((x) => visibleText(x, 32));
  // pooled blocks and zoomed windows name their positions; a whole short run needs no numbers
  const blockLabel = (start) => (factor === 1 && !ctx.zoom ? short[start] : `${start}: ${short[start]}`);
  const yLabels = Array.from({ length: rows }, (_, b) => blockLabel(qOff + b * factor));
  const xLabels = Array.from({ length: cols }, (_, b) => blockLabel(kOff + b * factor));
  const range = (s) => {
    const e = Math.min(n, s + factor) - 1;
    return s === e ? `${s}` : `${s}–${e}`;
  };

  const inside = (p, off, end) => p != null && p >= off && p < end;
  const selRow = inside(ctx.selected, qOff, qEnd) ? Math.floor((ctx.selected - qOff) / factor) : null;
  const selCol = inside(ctx.selected, kOff, kEnd) ? Math.floor((ctx.selected - kOff) / factor) : null;
  const overview = windowed && ctx.overview ? ctx.overview : null;
  // A square plot of square cells: queries and keys share one scale, so the diagonal is at 45
  // degrees. The right column holds the colour legend (and the mini-map above it).
  const W = ctx.width || 600;
  const H = ctx.height || 600;
  const right = overview ? 112 : 78;
  const side = Math.max(120, Math.min(W - 96 - right, H - 24 - 96));
  const longest = Math.max(rows, cols);
  const plotW = Math.round((side * cols) / longest);
  const plotH = Math.round((side * rows) / longest);
  const gridLeft = Math.max(96, Math.round((W - plotW - 96 - right) / 2) + 96);
  const gridTop = Math.max(20, Math.round((H - plotH - 96) / 2));
  // Thin the labels, but always show (and highlight) the selected token's label.
  const yInterval = labelPicker(rows, Math.floor(plotH / 13), selRow);
  const xInterval = labelPicker(cols, Math.floor(plotW / 13), selCol);

  const series = [{
    id: 'attention',
    type: 'heatmap',
    data: seriesData,
    encode: { x: 0, y: 1, value: 2 },
    progressive: 0, // at most MAX_CELLS^2 cells: one synchronous pass beats many animation frames
    emphasis: { itemStyle: { borderColor: '#ffffff', borderWidth: 1 } },
  }];
  if (selRow !== null) {
    const lastQuery = Math.min(qEnd, qOff + (selRow + 1) * factor) - 1;
    const lastCol = Math.min(cols - 1, Math.floor((lastQuery - kOff) / factor));
    if (lastCol >= 0) {
      series.push({
        id: 'selected-row',
        type: 'custom',
        silent: true,
        z: 10,
        data: [[selRow]],
        renderItem: (params, api) => {
          const r = api.value(0);
          const start = api.coord([0, r]);
          const end = api.coord([lastCol, r]);
          const [cw, ch] = api.size([1, 1]);
          return {
            type: 'rect',
            shape: { x: start[0] - cw / 2, y: start[1] - ch / 2, width: end[0] - start[0] + cw, height: ch },
            style: { fill: 'rgba(247, 118, 142, 0.10)', stroke: PALETTE.highlight, lineWidth: 1.5 },
          };
        },
      });
    }
  }

  const legendTop = overview ? gridTop + MINIMAP_PX + 18 : gridTop;
  const legendSpace = overview ? Math.max(60, plotH - MINIMAP_PX - 18) : plotH;
  const legendH = Math.max(40, Math.min(320, legendSpace - 40));
  const visualMap = [{
    type: 'continuous',
    min: lo,
    max: hi,
    dimension: 2,
    seriesIndex: 0,
    calculable: true,
    realtime: false,
    orient: 'vertical',
    left: Math.min(W - 60, gridLeft + plotW + 18),
    top: legendTop + Math.max(0, (legendSpace - legendH) / 2),
    itemHeight: legendH,
    itemWidth: 12,
    precision: 3,
    inRange: { color: ATTENTION_MAP },
    textStyle: { color: PALETTE.muted, fontFamily: FONT, fontSize: 11 },
    formatter: (v) => {
      const raw = scale.inv(v);
      if (raw < 1e-9) return '0';
      return raw >= 0.01 ? raw.toFixed(2) : raw.toExponential(0);
    },
  }];
  const grid = [{ left: gridLeft, top: gridTop, width: plotW, height: plotH }];
  const xAxis = [{
    type: 'category',
    data: highlightCategory(xLabels, selCol),
    name: t('attn.xName'),
    nameLocation: 'middle',
    nameGap: 72,
    splitArea: { show: false },
    axisTick: { show: false },
    axisLine: { show: false },
    axisLabel: { interval: xInterval, rotate: 90, fontFamily: MONO, fontSize: 10, color: PALETTE.muted },
  }];
  const yAxis = [{
    type: 'category',
    data: highlightCategory(yLabels, selRow),
    inverse: true,
    name: t('attn.yName'),
    nameLocation: 'middle',
    nameGap: 84,
    nameRotate: 90,
    axisTick: { show: false },
    axisLine: { show: false },
    axisLabel: { interval: yInterval, fontFamily: MONO, fontSize: 10, color: PALETTE.muted, width: 80, overflow: 'truncate' },
  }];
  const graphic = [];
  if (overview) {
    // The mini-map: the whole matrix, pooled, with the window on show outlined.
    const ov = poolWindow(overview.matrix, 0, 0, MINIMAP_CELLS);
    const ovSide = Math.max(ov.rows, ov.cols);
    const ovSpan = ovSide * ov.factor * (overview.block ?? 1); // positions the mini-map covers
    const mmLeft = gridLeft + plotW + 18;
    grid.push({ left: mmLeft, top: gridTop, width: MINIMAP_PX, height: MINIMAP_PX, show: true, borderColor: PALETTE.axis, borderWidth: 1 });
    const hidden = { axisLabel: { show: false }, axisTick: { show: false }, axisLine: { show: false }, splitLine: { show: false } };
    const cats = Array.from({ length: ovSide }, (_, i) => String(i));
    xAxis.push({ type: 'category', gridIndex: 1, data: cats, ...hidden });
    yAxis.push({ type: 'category', gridIndex: 1, data: cats, inverse: true, ...hidden });
    series.push({
      id: 'minimap',
      type: 'heatmap',
      xAxisIndex: 1,
      yAxisIndex: 1,
      silent: true,
      data: ov.cells.map(([x, y, w]) => [x, y, scale.fwd(w)]),
      progressive: 0,
    });
    let ovMax = 0;
    for (const c of ov.cells) if (c[2] > ovMax) ovMax = c[2];
    visualMap.push({ // the same scale, up to the whole run's own largest weight
      type: 'continuous', show: false, min: lo, max: Math.max(scale.fwd(ovMax || 1), lo + 1e-6), dimension: 2,
      seriesIndex: series.length - 1, inRange: { color: ATTENTION_MAP },
    });
    const px = (p) => (p / ovSpan) * MINIMAP_PX;
    graphic.push({
      type: 'rect',
      id: 'minimap-window',
      silent: true,
      z: 100,
      shape: {
        x: mmLeft + px(kOff),
        y: gridTop + px(qOff),
        width: Math.max(2, px(kEnd - kOff)),
        height: Math.max(2, px(qEnd - qOff)),
      },
      style: { fill: 'rgba(122, 162, 247, 0.18)', stroke: PALETTE.accent, lineWidth: 1.5 },
    });
    graphic.push({
      type: 'text',
      silent: true,
      left: mmLeft,
      top: gridTop + MINIMAP_PX + 3,
      style: { text: t('attn.minimap'), fill: PALETTE.muted, font: `10px ${FONT}` },
    });
  }

  const option = {
    animation: false,
    grid: grid.length === 1 ? grid[0] : grid,
    tooltip: baseTooltip({
      trigger: 'item',
      formatter: (p) => {
        if (p.seriesId !== 'attention') return '';
        const [x, y, , w] = p.data;
        const qs = qOff + y * factor;
        const ks = kOff + x * factor;
        const q = factor === 1 ? escapeHtml(long[qs]) : range(qs);
        const k = factor === 1 ? escapeHtml(long[ks]) : range(ks);
        const qi = factor === 1 ? `#${qs}` : '';
        const ki = factor === 1 ? `#${ks}` : '';
        return `<div class="ec-tip"><div><span class="ec-k">${escapeHtml(t('attn.query'))}</span> ${qi} <b class="ec-tok">${q}</b></div>`
          + `<div><span class="ec-k">${escapeHtml(t('attn.key'))}</span> ${ki} <b class="ec-tok">${k}</b></div>`
          + `<div><span class="ec-k">${escapeHtml(t('attn.weight'))}</span> <b>${w.toFixed(4)}</b>${factor > 1 ? ' (max)' : ''}</div></div>`;
      },
    }),
    xAxis: xAxis.length === 1 ? xAxis[0] : xAxis,
    yAxis: yAxis.length === 1 ? yAxis[0] : yAxis,
    visualMap: visualMap.length === 1 ? visualMap[0] : visualMap,
    series,
  };
  if (graphic.length) option.graphic = graphic;
  let where = '';
  if (ctx.zoom) where = ` · ${t('attn.zoom', { q0: qOff, q1: qEnd - 1, k0: kOff, k1: kEnd - 1 })}`;
  else if (windowed) {
    where = ` · ${square ? t('attn.window', { a: qOff, b: qEnd - 1 })
      : t('attn.zoom', { q0: qOff, q1: qEnd - 1, k0: kOff, k1: kEnd - 1 })}`;
  }
  const caption = t('attn.caption', {
    layer: data.layer,
    head: headLabel(data.head, t, ctx.groupSize || 1),
    n,
  }) + ` · ${t('attn.scale', { scale: t(`scale.${scaleName}`) })}`
    + (factor > 1 ? ` · ${t('attn.pooled', { f: factor })}` : '')
    + where;
  const meta = { layer: data.layer, head: data.head, cells: cells.length, pool: factor, offset: qOff, scale: scaleName };
  if (windowed) Object.assign(meta, { koffset: kOff, rows, cols, window: `${qOff}-${qEnd}x${kOff}-${kEnd}` });
  if (ctx.zoom) meta.zoom = 1;
  if (overview) meta.minimap = 1;
  return { option, caption, meta };
}

/**
 * The window a rectangle dragged on the heatmap asks for, or null when it is too small or
 * holds no causal cell. a, b: the rectangle's corners as [column, row] cells of the chart on
 * show (whose meta says where its cells are); n: the run's length. Returns {q0, q1, k0, k1}
 * (half-open positions): rows before the first key and keys after the last query are dropped,
 * as they hold nothing. Pure.
 */
export function brushWindow(meta, a, b, n) {
  const f = meta.pool || 1;
  const qOff = meta.offset || 0;
  const kOff = meta.koffset ?? qOff;
  const rows = meta.rows ?? Math.ceil((n - qOff) / f);
  const cols = meta.cols ?? Math.ceil((n - kOff) / f);
  const clamp = (v, hi) => Math.max(0, Math.min(hi - 1, Math.round(v)));
  const [r0, r1] = [clamp(Math.min(a[1], b[1]), rows), clamp(Math.max(a[1], b[1]), rows)];
  const [c0, c1] = [clamp(Math.min(a[0], b[0]), cols), clamp(Math.max(a[0], b[0]), cols)];
  const q1 = Math.min(n, qOff + (r1 + 1) * f);
  const k0 = kOff + c0 * f;
  const q0 = Math.max(qOff + r0 * f, k0);
  const k1 = Math.min(n, kOff + (c1 + 1) * f, q1);
  if (q1 - q0 < ZOOM_MIN || k1 - k0 < ZOOM_MIN) return null;
  return { q0, q1, k0, k1 };
}

/** The fewest positions a zoom keeps on each side (a smaller drag is a click). */
export const ZOOM_MIN = 4;

/** Request parameters of a zoom window (pooled by the server if it is still large). Pure. */
export function zoomRequest(zoom) {
  return { q_start: zoom.q0, q_end: zoom.q1, k_start: zoom.k0, k_end: zoom.k1, pool: MAX_CELLS };
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
