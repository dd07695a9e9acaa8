// Hidden-state similarity: cos(h_l, h_{l+1}) averaged over tokens (top grid) and per token
// (bottom grid, layer × token heatmap). Low values mark the layers that rewrite the state.

import { SIMILARITY_MAP } from '../colors.js';
import {
  FONT, MONO, PALETTE, baseTooltip, escapeHtml, highlightCategory, labelInterval, labelPicker,
} from '../charts.js';
import { visibleText } from '../tokens.js';

export const MAX_COLS = 400;

/** The q-quantile of finite values. Pure. */
export function quantile(values, q) {
  const v = values.filter(Number.isFinite).sort((a, b) => a - b);
  if (!v.length) return 0;
  const idx = Math.min(v.length - 1, Math.max(0, Math.floor(q * (v.length - 1))));
  return v[idx];
}

/** Build the ECharts option. ctx: {t, selected, width, height, labels, longLabels}. Pure. */
export function buildSimilarityOption(data, ctx) {
  const { t } = ctx;
  const L = data.per_layer.length;
  const n = data.tokens.length;
  // Long runs: average blocks of tokens into at most MAX_COLS columns (a column narrower than a
  // pixel shows nothing, and 30 x 4,096 cells would make the chart sluggish).
  const block = Math.max(1, Math.ceil(n / MAX_COLS));
  const cols = Math.ceil(n / block);
  const layerLabels = Array.from({ length: L }, (_, l) => `${l}→${l + 1}`);
  const short = ctx.labels || data.tokens.map((x) => visibleText(x, 10));
  const long = ctx.longLabels || data.tokens.map((x) => visibleText(x, 32));
  const tokenLabels = Array.from({ length: cols }, (_, c) => (block === 1 ? short[c] : `${c * block}: ${short[c * block]}`));
  const colRange = (c) => {
    const a = c * block;
    const b = Math.min(n, a + block) - 1;
    return a === b ? `#${a}` : `#${a}–${b}`;
  };
  const flat = data.per_token.flat().filter(Number.isFinite);
  // Clip the colour scale at the 10th percentile: the first and last layers (and the
  // attention-sink token) change the state far more than the rest and would otherwise wash
  // out all the variation in the middle layers. Clipped cells take the lowest colour.
  const lo = quantile(flat, 0.1);
  const hi = Math.max(lo + 1e-6, flat.reduce((m, v) => Math.max(m, v), -Infinity));
  const cells = [];
  for (let l = 0; l < L; l += 1) {
    const row = data.per_token[l];
    for (let c = 0; c < cols; c += 1) {
      let sum = 0;
      let k = 0;
      for (let i = c * block; i < Math.min(n, (c + 1) * block); i += 1) {
        if (Number.isFinite(row[i])) { sum += row[i]; k += 1; }
      }
      const v = k ? sum / k : null;
      cells.push([c, l, v === null ? null : Math.min(hi, Math.max(lo, v)), v, c * block]);
    }
  }
  const selCol = ctx.selected != null && ctx.selected < n ? Math.floor(ctx.selected / block) : null;
  const H = ctx.height || 600;
  const W = ctx.width || 600;
  const topH = Math.round((H - 110) * 0.3);
  const top1 = 36;
  const top2 = top1 + topH + 44;
  const bottomH = H - top2 - 70;
  const yMin = Math.min(0.75, Math.floor(Math.min(...data.per_layer) * 4) / 4);
  const worst = data.per_layer.reduce((best, v, l) => (v < data.per_layer[best] ? l : best), 0);

  const series = [
    {
      id: 'per-layer',
      name: t('similarity.perLayer'),
      type: 'line',
      xAxisIndex: 0,
      yAxisIndex: 0,
      data: data.per_layer,
      symbolSize: 5,
      lineStyle: { width: 2, color: PALETTE.accent },
      itemStyle: { color: PALETTE.accent },
      areaStyle: { color: 'rgba(122,162,247,0.08)' },
      markPoint: {
        symbol: 'circle',
        symbolSize: 9,
        itemStyle: { color: PALETTE.highlight },
        label: { show: false },
        data: [{ coord: [worst, data.per_layer[worst]] }],
      },
    },
    {
      id: 'per-token',
      name: t('similarity.perToken'),
      type: 'heatmap',
      xAxisIndex: 1,
      yAxisIndex: 1,
      data: cells,
      progressive: 0,
      emphasis: { itemStyle: { borderColor: '#fff', borderWidth: 1 } },
    },
  ];
  if (selCol !== null) {
    series.push({
      id: 'selected-col',
      type: 'custom',
      xAxisIndex: 1,
      yAxisIndex: 1,
      silent: true,
      z: 10,
      data: [[selCol]],
      renderItem: (params, api) => {
        const c = api.value(0);
        const a = api.coord([c, 0]);
        const b = api.coord([c, L - 1]);
        const [cw, ch] = api.size([1, 1]);
        return {
          type: 'rect',
          shape: { x: a[0] - cw / 2, y: Math.min(a[1], b[1]) - ch / 2, width: cw, height: Math.abs(b[1] - a[1]) + ch },
          style: { fill: 'rgba(247,118,142,0.08)', stroke: PALETTE.highlight, lineWidth: 1.5 },
        };
      },
    });
  }

  const option = {
    animation: false,
    title: [
      { text: t('similarity.perLayer'), left: 56, top: 6, textStyle: { fontSize: 12, fontWeight: 500, color: PALETTE.text, fontFamily: FONT } },
      { text: t('similarity.perToken'), left: 56, top: top2 - 26, textStyle: { fontSize: 12, fontWeight: 500, color: PALETTE.text, fontFamily: FONT } },
    ],
    grid: [
      { left: 60, right: 86, top: top1, height: topH },
      { left: 60, right: 86, top: top2, height: bottomH },
    ],
    tooltip: baseTooltip({
      trigger: 'item',
      formatter: (p) => {
        if (p.seriesId === 'per-layer') {
          return `<div class="ec-tip"><div><span class="ec-k">${escapeHtml(t('similarity.layer'))}</span> <b>${layerLabels[p.dataIndex]}</b></div><div><span class="ec-k">cos</span> <b>${p.value.toFixed(4)}</b></div></div>`;
        }
        if (p.seriesId === 'per-token') {
          const [c, l, , v] = p.data;
          const what = block === 1 ? `<span class="ec-k">#${c}</span> <b class="ec-tok">${escapeHtml(long[c])}</b>` : `<span class="ec-k">${colRange(c)}</span> <b>${escapeHtml(t('similarity.blockMean', { k: block }))}</b>`;
          return `<div class="ec-tip"><div>${what}</div><div><span class="ec-k">${escapeHtml(t('similarity.layer'))}</span> <b>${layerLabels[l]}</b></div><div><span class="ec-k">cos</span> <b>${v.toFixed(4)}</b></div></div>`;
        }
        return '';
      },
    }),
    xAxis: [
      {
        type: 'category',
        gridIndex: 0,
        data: layerLabels,
        boundaryGap: false,
        axisLabel: { fontFamily: MONO, fontSize: 10, interval: labelInterval(L, Math.floor((W - 150) / 44)) },
        axisTick: { show: false },
      },
      {
        type: 'category',
        gridIndex: 1,
        data: highlightCategory(tokenLabels, selCol),
        axisTick: { show: false },
        axisLine: { show: false },
        axisLabel: {
          fontFamily: MONO,
          fontSize: 10,
          rotate: 90,
          interval: labelPicker(cols, Math.floor((W - 150) / 13), selCol),
          color: PALETTE.muted,
        },
      },
    ],
    yAxis: [
      {
        type: 'value',
        gridIndex: 0,
        min: yMin,
        max: 1,
        interval: (1 - yMin) / 4,
        axisLabel: { fontSize: 10, formatter: (v) => v.toFixed(2) },
      },
      {
        type: 'category',
        gridIndex: 1,
        data: layerLabels,
        inverse: true,
        name: t('similarity.layer'),
        nameLocation: 'middle',
        nameGap: 44,
        axisTick: { show: false },
        axisLine: { show: false },
        axisLabel: { fontFamily: MONO, fontSize: 10, interval: labelInterval(L, Math.floor(bottomH / 12)) },
      },
    ],
    visualMap: {
      type: 'continuous',
      seriesIndex: 1,
      min: lo,
      max: hi,
      calculable: false,
      right: 14,
      top: top2 + 4,
      itemHeight: Math.max(60, Math.min(260, bottomH - 40)),
      itemWidth: 12,
      precision: 2,
      dimension: 2,
      text: [hi.toFixed(2), `≤ ${lo.toFixed(2)}`],
      inRange: { color: SIMILARITY_MAP },
      textStyle: { color: PALETTE.muted, fontSize: 11 },
    },
    series,
  };
  const caption = t('similarity.caption', { l: worst, l1: worst + 1, v: data.per_layer[worst].toFixed(3) });
  return { option, caption, meta: { layers: L, tokens: n, cells: cells.length, block } };
}
