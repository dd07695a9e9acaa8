// Logit lens: every layer's prediction at every position (final norm + LM head on that layer's
// residual stream). Rows are layers (embeddings at the bottom, the model's output at the top),
// columns are positions; position p's lens predicts token p+1. Cells are coloured by the actual
// next token's probability, rank or the prediction's entropy; a marker shows the first layer at
// which the next token becomes top-1; a side chart shows each layer's mean entropy.

import { MAGMA, VIRIDIS } from '../colors.js';
import {
  FONT, MONO, PALETTE, baseTooltip, escapeHtml, highlightCategory, labelInterval, labelPicker,
} from '../charts.js';
import { visibleText } from '../tokens.js';

export const LENS_METRICS = Object.freeze(['prob', 'rank', 'entropy']);

export const LENS_TAIL = 64; // positions shown for "generated tokens" when a run has none (a scored text)

/**
 * Column range for the lens: every position, or those that predict generated tokens. A scored
 * text has none: it shows its last LENS_TAIL positions (`tail` is true), since the whole lens of a
 * long text costs minutes on a CPU. Pure.
 */
export function lensColumns(numTokens, numPrompt, range) {
  const end = numTokens - 1; // the last position predicts nothing we can check
  if (range !== 'generated') return { start: 0, end, tail: false };
  if (numPrompt < numTokens) return { start: Math.max(0, numPrompt - 1), end, tail: false };
  return { start: Math.max(0, end - LENS_TAIL), end, tail: true };
}

/**
 * The server computes and sends only a window [start, end) of positions (the lens costs one
 * full-vocabulary row per layer and position). Put the window's per-position arrays back at their
 * absolute positions, with null outside, so the chart indexes them by position. Pure.
 */
export function expandLensWindow(data) {
  const off = data.start || 0;
  if (!off) return data;
  const pad = (row) => new Array(off).fill(null).concat(row);
  const out = { ...data, start: 0 };
  for (const name of ['chosen_prob', 'chosen_rank', 'entropy', 'top_ids', 'top_probs']) out[name] = data[name].map(pad);
  for (const name of ['first_top1', 'settled_top1']) out[name] = pad(data[name]);
  out.window = { start: off, end: data.end };
  return out;
}

/** The most positions the lens shows at once; a longer range scrolls (a slider below it). */
export const LENS_WINDOW = 64;
/** Narrowest column of a scrolled lens, in pixels: every position keeps a readable label. */
export const LENS_MIN_COLUMN_PX = 12;

/** How many of `cols` columns fit readably in `plotW` pixels (all of them when they fit). Pure. */
export function lensVisibleColumns(cols, plotW) {
  const fit = Math.max(16, Math.min(LENS_WINDOW, Math.floor(plotW / LENS_MIN_COLUMN_PX)));
  return Math.min(cols, fit);
}

/**
 * The first column of the window on show: the previous window (`keep`, a column index) while it
 * still holds the selected column, else one that centres the selection, else the first. Pure.
 */
export function lensWindowStart(cols, visible, selCol, keep = null) {
  const last = Math.max(0, cols - visible);
  const clamp = (v) => Math.max(0, Math.min(last, v));
  if (keep != null && (selCol == null || (selCol >= keep && selCol < keep + visible))) return clamp(keep);
  if (selCol != null) return clamp(selCol - Math.floor(visible / 2));
  return 0;
}

/** Ranges longer than this ask before they start, with a time estimate. */
export const LENS_CONFIRM_FROM = 256;
/** ...unless the estimate is shorter than this many seconds. */
export const LENS_CONFIRM_S = 5;
/** Positions measured to estimate a long range when no lens of this model was timed yet. */
export const LENS_PROBE = 64;

/** Does a range of `count` positions ask first? rate: measured seconds per position, or null. Pure. */
export function lensNeedsConfirm(count, rate) {
  return count > LENS_CONFIRM_FROM && (rate == null || rate * count >= LENS_CONFIRM_S);
}

/** Seconds as "45 s" or "2 min 32 s" (t: the translator, keys time.s and time.min). Pure. */
export function fmtSeconds(sec, t) {
  const s = Math.max(1, Math.round(sec));
  return s < 60 ? t('time.s', { s }) : t('time.min', { m: Math.floor(s / 60), s: s % 60 });
}

/** Value and colour-scale value of one cell for a metric. Pure. */
export function lensCellValue(data, metric, layer, pos) {
  if (metric === 'entropy') {
    const e = data.entropy[layer][pos];
    return e == null ? null : e;
  }
  if (metric === 'rank') {
    const r = data.chosen_rank[layer][pos];
    return r == null ? null : Math.log10(r);
  }
  return data.chosen_prob[layer][pos];
}

/** Build the ECharts option. ctx: {t, selected, metric, range, width, height, labels, longLabels}. Pure. */
export function buildLensOption(data, ctx) {
  const { t } = ctx;
  const metric = LENS_METRICS.includes(ctx.metric) ? ctx.metric : 'prob';
  const L1 = data.num_layers + 1;
  const n = data.num_tokens;
  const { start, end, tail } = lensColumns(n, data.num_prompt_tokens, ctx.range);
  const cols = Math.max(0, end - start);
  const short = ctx.labels || data.tokens.map((x) => visibleText(x, 12));
  const long = ctx.longLabels || data.tokens.map((x) => visibleText(x, 32));
  const topText = (id) => visibleText(data.texts[String(id)] ?? `#${id}`, 10);
  const layerName = (l) => (l === 0 ? t('lens.embeddings') : l === L1 - 1 ? t('lens.output', { l }) : String(l));

  const cells = [];
  let vmax = 0;
  for (let l = 0; l < L1; l += 1) {
    for (let p = start; p < end; p += 1) {
      const v = lensCellValue(data, metric, l, p);
      if (v != null && v > vmax) vmax = v;
      cells.push([p - start, l, v]);
    }
  }
  const firstTop1 = [];
  for (let p = start; p < end; p += 1) {
    const f = data.first_top1[p];
    if (f != null) firstTop1.push([p - start, f]);
  }

  const W = ctx.width || 800;
  const H = ctx.height || 600;
  const sideW = Math.min(150, Math.max(90, Math.round(W * 0.16)));
  const left = 74;
  const top = 28;
  const plotW = Math.max(120, W - left - sideW - 120);
  // A long range is shown a window at a time, with a slider under the axis to scroll it.
  const visible = lensVisibleColumns(cols, plotW);
  const scrolled = visible < cols;
  const bottom = scrolled ? 136 : 92;
  const plotH = Math.max(120, H - top - bottom);
  const cellW = visible ? plotW / visible : plotW;
  const cellH = plotH / L1;
  const showText = cellW >= 30 && cellH >= 11;

  const colours = metric === 'entropy' ? VIRIDIS : MAGMA;
  const visual = metric === 'prob'
    ? { min: 0, max: 1, inRange: { color: MAGMA }, text: ['p = 1', 'p = 0'] }
    : metric === 'rank'
      ? { min: 0, max: Math.max(1, Math.ceil(vmax)), inRange: { color: [...MAGMA].reverse() },
        text: [`≥ 10^${Math.max(1, Math.ceil(vmax))}`, t('lens.rank1')] }
      : { min: 0, max: Math.max(1e-6, vmax), inRange: { color: colours }, text: [`${vmax.toFixed(1)} nats`, '0'] };

  const selCol = ctx.selected != null && ctx.selected >= start && ctx.selected < end ? ctx.selected - start : null;
  const winStart = scrolled ? lensWindowStart(cols, visible, selCol, ctx.keepWindow ?? null) : 0;
  // labels thinned for the window on show, not for the whole range
  const interval = labelPicker(cols, Math.floor((plotW / 13) * (cols / Math.max(1, visible))), selCol);
  const series = [
    {
      id: 'lens',
      type: 'heatmap',
      xAxisIndex: 0,
      yAxisIndex: 0,
      data: cells,
      progressive: 4000,
      label: {
        show: showText,
        fontFamily: MONO,
        fontSize: 9,
        color: '#e8ecf2',
        textBorderColor: 'rgba(0,0,0,0.7)',
        textBorderWidth: 2,
        overflow: 'truncate',
        width: Math.max(10, cellW - 4),
        formatter: (p) => topText(data.top_ids[p.data[1]][p.data[0] + start][0]),
      },
      emphasis: { itemStyle: { borderColor: '#ffffff', borderWidth: 1 } },
    },
    {
      id: 'first-top1',
      name: t('lens.firstTop1'),
      type: 'scatter',
      xAxisIndex: 0,
      yAxisIndex: 0,
      data: firstTop1,
      symbol: 'diamond',
      symbolSize: Math.max(5, Math.min(11, cellW * 0.45, cellH * 0.8)),
      itemStyle: { color: 'transparent', borderColor: PALETTE.green, borderWidth: 1.6 },
      z: 5,
    },
    {
      id: 'mean-entropy',
      name: t('lens.meanEntropy'),
      type: 'line',
      xAxisIndex: 1,
      yAxisIndex: 1,
      data: data.mean_entropy.map((v, l) => [v, l]),
      symbolSize: 4,
      lineStyle: { color: PALETTE.accent, width: 2 },
      itemStyle: { color: PALETTE.accent },
      areaStyle: { color: 'rgba(122,162,247,0.08)' },
    },
  ];
  if (selCol !== null) {
    series.push({
      id: 'selected-col',
      type: 'custom',
      xAxisIndex: 0,
      yAxisIndex: 0,
      silent: true,
      z: 10,
      data: [[selCol]],
      renderItem: (params, api) => {
        const a = api.coord([api.value(0), 0]);
        const b = api.coord([api.value(0), L1 - 1]);
        const [cw, ch] = api.size([1, 1]);
        return {
          type: 'rect',
          shape: { x: a[0] - cw / 2, y: Math.min(a[1], b[1]) - ch / 2, width: cw, height: Math.abs(b[1] - a[1]) + ch },
          style: { fill: 'rgba(247,118,142,0.06)', stroke: PALETTE.highlight, lineWidth: 1.5 },
        };
      },
    });
  }

  const tipTop = (l, p) => {
    const ids = data.top_ids[l][p];
    const probs = data.top_probs[l][p];
    return ids.map((id, i) => `<div><span class="ec-k">${i + 1}.</span> <b class="ec-tok">${escapeHtml(visibleText(data.texts[String(id)] ?? `#${id}`, 24))}</b> ${(probs[i] * 100).toFixed(1)}%</div>`).join('');
  };
  const option = {
    animation: false,
    grid: [
      { left, top, width: plotW, height: plotH },
      { left: left + plotW + 70, top, width: sideW - 20, height: plotH },
    ],
    tooltip: baseTooltip({
      trigger: 'item',
      formatter: (p) => {
        if (p.seriesId === 'mean-entropy') {
          const l = p.data[1];
          return `<div class="ec-tip"><div><span class="ec-k">${escapeHtml(t('lens.layer'))}</span> <b>${escapeHtml(layerName(l))}</b></div>`
            + `<div><span class="ec-k">${escapeHtml(t('lens.meanEntropy'))}</span> <b>${p.data[0].toFixed(3)}</b> nats</div></div>`;
        }
        if (p.seriesId !== 'lens' && p.seriesId !== 'first-top1') return '';
        const [x, l] = p.data;
        const pos = x + start;
        const next = data.next_ids[pos];
        const prob = data.chosen_prob[l][pos];
        const rank = data.chosen_rank[l][pos];
        return `<div class="ec-tip"><div><span class="ec-k">#${pos}</span> <b class="ec-tok">${escapeHtml(long[pos])}</b> → <b class="ec-tok">${escapeHtml(long[pos + 1] ?? '')}</b></div>`
          + `<div><span class="ec-k">${escapeHtml(t('lens.layer'))}</span> <b>${escapeHtml(layerName(l))}</b></div>`
          + (next == null ? '' : `<div><span class="ec-k">${escapeHtml(t('lens.nextProb'))}</span> <b>${prob == null ? '—' : `${(prob * 100).toFixed(2)}%`}</b> · ${escapeHtml(t('lens.rank'))} <b>${rank ?? '—'}</b></div>`)
          + `<div><span class="ec-k">${escapeHtml(t('lens.entropy'))}</span> <b>${data.entropy[l][pos].toFixed(3)}</b> nats</div>`
          + `<div class="ec-k">${escapeHtml(t('lens.top'))}</div>${tipTop(l, pos)}`
          + (data.first_top1[pos] != null ? `<div><span class="ec-k">${escapeHtml(t('lens.firstTop1'))}</span> <b>${escapeHtml(layerName(data.first_top1[pos]))}</b></div>` : '')
          + '</div>';
      },
    }),
    xAxis: [
      {
        type: 'category',
        gridIndex: 0,
        data: highlightCategory(Array.from({ length: cols }, (_, i) => short[i + start]), selCol),
        axisTick: { show: false },
        axisLine: { show: false },
        name: t('lens.xName'),
        nameLocation: 'middle',
        nameGap: 78,
        axisLabel: {
          fontFamily: MONO,
          fontSize: 10,
          rotate: 90,
          interval,
          color: PALETTE.muted,
        },
      },
      {
        type: 'value',
        gridIndex: 1,
        min: 0,
        name: t('lens.meanEntropy'),
        nameLocation: 'middle',
        nameGap: 26,
        splitNumber: 2,
        axisLabel: { fontSize: 10 },
      },
    ],
    yAxis: [
      {
        type: 'category',
        gridIndex: 0,
        data: Array.from({ length: L1 }, (_, l) => layerName(l)),
        name: t('lens.layer'),
        nameLocation: 'middle',
        nameGap: 54,
        axisTick: { show: false },
        axisLine: { show: false },
        axisLabel: { fontFamily: MONO, fontSize: 10, interval: labelInterval(L1, Math.floor(plotH / 13)) },
      },
      {
        type: 'category',
        gridIndex: 1,
        data: Array.from({ length: L1 }, (_, l) => String(l)),
        boundaryGap: true,
        axisLabel: { show: false },
        axisTick: { show: false },
      },
    ],
    visualMap: {
      type: 'continuous',
      seriesIndex: 0,
      dimension: 2,
      calculable: false,
      orient: 'horizontal',
      left: left + plotW + 40,
      bottom: 18,
      itemWidth: 10,
      itemHeight: Math.max(60, sideW - 40),
      precision: 2,
      textStyle: { color: PALETTE.muted, fontFamily: FONT, fontSize: 10 },
      ...visual,
    },
    series,
  };
  if (scrolled) {
    const zoom = { xAxisIndex: 0, startValue: winStart, endValue: winStart + visible - 1, zoomLock: true, filterMode: 'filter' };
    option.dataZoom = [
      {
        id: 'lens-window',
        type: 'slider',
        ...zoom,
        left,
        width: plotW,
        bottom: 8,
        height: 16,
        brushSelect: false,
        showDetail: true,
        labelFormatter: (v) => `#${Number(v) + start}`,
        textStyle: { color: PALETTE.muted, fontFamily: MONO, fontSize: 10 },
      },
      { id: 'lens-window-inside', type: 'inside', ...zoom, zoomOnMouseWheel: false, moveOnMouseWheel: true, moveOnMouseMove: true },
    ];
  }
  let settledAt = 0;
  let counted = 0;
  for (let p = start; p < end; p += 1) {
    if (data.settled_top1[p] != null) { settledAt += data.settled_top1[p]; counted += 1; }
  }
  const caption = t('lens.caption', { n: cols, metric: t(`lens.metric.${metric}`) })
    + (counted ? ` · ${t('lens.settled', { l: (settledAt / counted).toFixed(1) })}` : '')
    + (tail ? ` · ${t('lens.tail', { k: cols })}` : '')
    + (scrolled ? ` · ${t('lens.scrolled', { k: visible })}` : '');
  return {
    option,
    caption,
    meta: {
      metric, layers: L1, columns: cols, start, cells: cells.length, 'first-top1': firstTop1.length, labels: showText ? 1 : 0,
      plot: `${left},${top},${Math.round(plotW)},${Math.round(plotH)}`,
      ...(scrolled ? { visible, 'window-start': winStart } : {}),
    },
  };
}

/** Map a clicked lens cell back to a position. Pure. */
export function lensCellToPosition(cell, meta) {
  return (meta.start || 0) + cell[0];
}
