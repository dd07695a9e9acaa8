// The Heads tab: three views of attention across all layers.
//  - grid: layers × query heads coloured by one statistic (entropy, normalised entropy, sink
//    share, previous-token share); heads that share a KV head (GQA) sit in one band.
//  - row: which earlier tokens the selected token attends to, in every layer (layer × key).
//  - segments: the share of attention generated tokens pay to each chat segment, per layer,
//    and the mean attention entropy of each segment's query rows.

import { ATTENTION_MAP, INFERNO, VIRIDIS } from '../colors.js';
import {
  FONT, MONO, PALETTE, baseTooltip, escapeHtml, highlightCategory, labelPicker, layerAxis,
} from '../charts.js';
import { visibleText } from '../tokens.js';

export const HEAD_METRICS = Object.freeze(['entropy', 'entropy_norm', 'sink', 'prev']);
export const HEADS_MODES = Object.freeze(['grid', 'row', 'segments']);
export const SEGMENT_COLOURS = Object.freeze({
  system: '#bb9af7', user: '#7aa2f7', assistant: '#e0af68', think: '#9ece6a', template: '#6b7280',
});

/** Heads grouped by the KV head they read: [{kv, heads: [h...]}]. Pure. */
export function kvBands(kvGroup) {
  const bands = [];
  kvGroup.forEach((kv, h) => {
    if (!bands.length || bands[bands.length - 1].kv !== kv) bands.push({ kv, heads: [] });
    bands[bands.length - 1].heads.push(h);
  });
  return bands;
}

/** Layers × heads grid. ctx: {t, metric, width, height, layer, head}. Pure. */
export function buildHeadsGridOption(data, ctx) {
  const { t } = ctx;
  const metric = HEAD_METRICS.includes(ctx.metric) ? ctx.metric : 'entropy';
  const L = data.num_layers;
  const Hq = data.num_heads;
  const values = data[metric];
  const cells = [];
  let vmax = 0;
  for (let l = 0; l < L; l += 1) {
    for (let h = 0; h < Hq; h += 1) {
      const v = values[l][h];
      if (v != null && v > vmax) vmax = v;
      cells.push([h, l, v]);
    }
  }
  const bounded = metric !== 'entropy';
  const W = ctx.width || 700;
  const H = ctx.height || 600;
  const left = 64;
  const top = 44;
  const plotW = Math.max(160, Math.min(W - left - 110, Hq * 64));
  const plotH = Math.max(160, H - top - 70);
  const bands = kvBands(data.kv_group);
  const headLabels = Array.from({ length: Hq }, (_, h) => `h${h}`);
  const bandMarks = bands.map((b, i) => [
    { xAxis: b.heads[0], name: t('heads.kv', { kv: b.kv }), itemStyle: { color: i % 2 ? 'rgba(255,255,255,0.0)' : 'rgba(255,255,255,0.035)' } },
    { xAxis: b.heads[b.heads.length - 1] },
  ]);
  const cellW = plotW / Hq;
  const cellH = plotH / L;
  const selected = ctx.layer != null && typeof ctx.head === 'number' ? [[ctx.head, ctx.layer]] : [];
  const option = {
    animation: false,
    grid: { left, top, width: plotW, height: plotH },
    tooltip: baseTooltip({
      trigger: 'item',
      formatter: (p) => {
        if (p.seriesId !== 'heads') return '';
        const [h, l] = p.data;
        const row = (key) => {
          const v = data[key][l][h];
          return `<div><span class="ec-k">${escapeHtml(t(`heads.metric.${key}`))}</span> <b>${v == null ? '—' : v.toFixed(3)}</b></div>`;
        };
        return `<div class="ec-tip"><div><b>${escapeHtml(t('heads.cell', { l, h, kv: data.kv_group[h] }))}</b></div>`
          + HEAD_METRICS.map(row).join('')
          + `<div class="ec-k">${escapeHtml(t('heads.clickHint'))}</div></div>`;
      },
    }),
    xAxis: {
      type: 'category',
      data: headLabels,
      position: 'top',
      axisTick: { show: false },
      axisLine: { show: false },
      axisLabel: {
        fontFamily: MONO,
        fontSize: 10,
        interval: 0,
        formatter: (v, idx) => (cellW >= 34 ? `${v}\nkv${data.kv_group[idx]}` : v),
      },
    },
    yAxis: layerAxis(L, plotH, t('heads.layer')),
    visualMap: {
      type: 'continuous',
      seriesIndex: 0,
      dimension: 2,
      min: 0,
      max: bounded ? 1 : Math.max(1e-6, vmax),
      calculable: false,
      orient: 'vertical',
      left: left + plotW + 24,
      top: top + 10,
      itemHeight: Math.min(280, plotH - 30),
      itemWidth: 12,
      precision: 2,
      text: [bounded ? '1' : `${vmax.toFixed(2)} nats`, '0'],
      inRange: { color: metric === 'entropy' || metric === 'entropy_norm' ? VIRIDIS : INFERNO },
      textStyle: { color: PALETTE.muted, fontFamily: FONT, fontSize: 11 },
    },
    series: [
      {
        id: 'heads',
        type: 'heatmap',
        data: cells,
        label: {
          show: cellW >= 40 && cellH >= 14,
          fontSize: 9,
          fontFamily: MONO,
          color: '#e8ecf2',
          textBorderColor: 'rgba(0,0,0,0.6)',
          textBorderWidth: 2,
          formatter: (p) => (p.data[2] == null ? '' : p.data[2].toFixed(2)),
        },
        itemStyle: { borderColor: PALETTE.panel, borderWidth: cellW > 12 && cellH > 6 ? 1 : 0 },
        emphasis: { itemStyle: { borderColor: '#ffffff', borderWidth: 1.5 } },
        markArea: { silent: true, label: { show: false }, data: bandMarks },
      },
      {
        id: 'kv-bounds',
        type: 'custom',
        silent: true,
        z: 6,
        data: bands.slice(1).map((b) => [b.heads[0]]),
        renderItem: (params, api) => {
          const x = api.coord([api.value(0), 0])[0] - api.size([1, 1])[0] / 2;
          const y0 = api.coord([0, 0])[1] - api.size([1, 1])[1] / 2;
          return { type: 'line', shape: { x1: x, y1: y0, x2: x, y2: y0 + plotH }, style: { stroke: PALETTE.text, lineWidth: 1.5, opacity: 0.55 } };
        },
      },
      {
        id: 'selected-head',
        type: 'scatter',
        silent: true,
        z: 7,
        data: selected,
        symbol: 'rect',
        symbolSize: [Math.max(6, cellW - 2), Math.max(4, cellH - 1)],
        itemStyle: { color: 'transparent', borderColor: PALETTE.highlight, borderWidth: 2 },
      },
    ],
  };
  const flat = cells.filter((c) => c[2] != null);
  const best = flat.reduce((a, c) => (c[2] > a[2] ? c : a), flat[0] || [0, 0, 0]);
  const caption = t('heads.caption', {
    metric: t(`heads.metric.${metric}`), l: best[1], h: best[0], v: (best[2] ?? 0).toFixed(3), kvh: data.num_kv_heads, hq: Hq,
  }) + sampledNote(t, data.query_rows_used, data.num_tokens);
  return { option, caption, meta: {
    mode: 'grid', metric, layers: L, heads: Hq, 'kv-heads': data.num_kv_heads, cells: cells.length, plot: `${left},${top},${plotW},${plotH}`,
    'query-rows': data.query_rows_used ?? data.num_tokens,
  } };
}

/** " · estimated from N of T query positions" when the server sampled query rows (long runs). Pure. */
export function sampledNote(t, used, total) {
  return used != null && used < total ? ` · ${t('heads.sampled', { used, total })}` : '';
}

/** Map a clicked grid cell to {layer, head}. Pure. */
export function gridCellToHead(cell) {
  return { layer: cell[1], head: cell[0] };
}

/** One query row in every layer: layer × key position. ctx: {t, width, height, labels, longLabels}. Pure. */
export function buildRowOption(data, ctx) {
  const { t } = ctx;
  const L = data.num_layers;
  const k = data.num_keys;
  const short = (ctx.labels || data.tokens.map((x) => visibleText(x, 12))).slice(0, k);
  const long = ctx.longLabels || data.tokens.map((x) => visibleText(x, 32));
  const cells = [];
  let vmax = 0;
  for (let l = 0; l < L; l += 1) {
    for (let j = 0; j < k; j += 1) {
      const v = data.matrix[l][j];
      if (v > vmax) vmax = v;
      cells.push([j, l, Math.sqrt(Math.max(0, v)), v]);
    }
  }
  const W = ctx.width || 700;
  const H = ctx.height || 600;
  const left = 64;
  const top = 24;
  const plotW = Math.max(120, W - left - 96);
  const plotH = Math.max(120, H - top - 100);
  const perKey = Array.from({ length: k }, (_, j) => data.matrix.reduce((s, row) => s + row[j], 0) / L);
  const topKey = perKey.reduce((b, v, j) => (v > perKey[b] ? j : b), 0);
  const headText = data.head === 'mean' ? t('head.mean') : data.head === 'max' ? t('head.max') : t('heads.headN', { h: data.head });
  const option = {
    animation: false,
    grid: { left, top, width: plotW, height: plotH },
    tooltip: baseTooltip({
      trigger: 'item',
      formatter: (p) => {
        if (p.seriesId !== 'row') return '';
        const [j, l, , w] = p.data;
        return `<div class="ec-tip"><div><span class="ec-k">${escapeHtml(t('attn.query'))}</span> #${data.position} <b class="ec-tok">${escapeHtml(long[data.position])}</b></div>`
          + `<div><span class="ec-k">${escapeHtml(t('attn.key'))}</span> #${j} <b class="ec-tok">${escapeHtml(long[j])}</b></div>`
          + `<div><span class="ec-k">${escapeHtml(t('heads.layer'))}</span> <b>${l}</b> · <span class="ec-k">${escapeHtml(t('attn.weight'))}</span> <b>${w.toFixed(4)}</b></div></div>`;
      },
    }),
    xAxis: {
      type: 'category',
      data: highlightCategory(short, data.position),
      name: t('heads.rowX'),
      nameLocation: 'middle',
      nameGap: 74,
      axisTick: { show: false },
      axisLine: { show: false },
      axisLabel: {
        fontFamily: MONO, fontSize: 10, rotate: 90, interval: labelPicker(k, Math.floor(plotW / 13), data.position),
        color: PALETTE.muted,
      },
    },
    yAxis: layerAxis(L, plotH, t('heads.layer')),
    visualMap: {
      type: 'continuous',
      seriesIndex: 0,
      dimension: 2,
      min: 0,
      max: Math.max(1e-6, Math.sqrt(vmax)),
      calculable: false,
      orient: 'vertical',
      left: left + plotW + 20,
      top: top + 10,
      itemHeight: Math.min(260, plotH - 30),
      itemWidth: 12,
      inRange: { color: ATTENTION_MAP },
      text: [vmax.toFixed(2), '0'],
      textStyle: { color: PALETTE.muted, fontFamily: FONT, fontSize: 11 },
    },
    series: [{
      id: 'row', type: 'heatmap', data: cells, progressive: 4000,
      emphasis: { itemStyle: { borderColor: '#ffffff', borderWidth: 1 } },
    }],
  };
  const caption = t('heads.rowCaption', {
    pos: data.position, tok: visibleText(data.tokens[data.position] ?? '', 20), head: headText,
    top: topKey, ttok: visibleText(data.tokens[topKey] ?? '', 16), share: (perKey[topKey] * 100).toFixed(0),
  });
  return { option, caption, meta: {
    mode: 'row', position: data.position, head: data.head, layers: L, keys: k, cells: cells.length, plot: `${left},${top},${plotW},${plotH}`,
  } };
}

/** Attention share by segment (stacked, per layer) and attention entropy by segment. ctx: {t, width, height}. Pure. */
export function buildSegmentsOption(data, ctx) {
  const { t } = ctx;
  const L = data.num_layers;
  const names = data.names;
  const layers = Array.from({ length: L }, (_, l) => String(l));
  const H = ctx.height || 600;
  const topH = Math.round((H - 130) * 0.58);
  const top2 = 40 + topH + 54;
  const bottomH = H - top2 - 46;
  const segName = (s) => t(`tip.segment.${s}`);
  const series = [];
  for (const s of names) {
    series.push({
      id: `share-${s}`,
      name: segName(s),
      type: 'line',
      stack: 'share',
      xAxisIndex: 0,
      yAxisIndex: 0,
      symbol: 'none',
      lineStyle: { width: 1, color: SEGMENT_COLOURS[s] },
      itemStyle: { color: SEGMENT_COLOURS[s] },
      areaStyle: { color: SEGMENT_COLOURS[s], opacity: 0.55 },
      data: data.attention_share[s].map((v) => (v == null ? 0 : v)),
    });
  }
  for (const s of names) {
    series.push({
      id: `entropy-${s}`,
      name: segName(s),
      type: 'line',
      xAxisIndex: 1,
      yAxisIndex: 1,
      symbolSize: 3,
      lineStyle: { width: 1.6, color: SEGMENT_COLOURS[s] },
      itemStyle: { color: SEGMENT_COLOURS[s] },
      data: data.attention_entropy[s],
    });
  }
  const option = {
    animation: false,
    legend: { top: 4, left: 'center', itemWidth: 14, itemHeight: 8, textStyle: { fontSize: 11, color: PALETTE.text } },
    title: [
      { text: t('segments.shareTitle', { n: data.num_generated_queries }), left: 56, top: 24, textStyle: { fontSize: 12, fontWeight: 500, color: PALETTE.text, fontFamily: FONT } },
      { text: t('segments.entropyTitle'), left: 56, top: top2 - 26, textStyle: { fontSize: 12, fontWeight: 500, color: PALETTE.text, fontFamily: FONT } },
    ],
    grid: [
      { left: 60, right: 30, top: 48, height: topH - 8 },
      { left: 60, right: 30, top: top2, height: bottomH },
    ],
    tooltip: baseTooltip({
      trigger: 'axis',
      valueFormatter: (v) => (v == null ? '—' : Number(v).toFixed(3)),
    }),
    xAxis: [
      { type: 'category', gridIndex: 0, data: layers, boundaryGap: false, axisLabel: { fontFamily: MONO, fontSize: 10 } },
      { type: 'category', gridIndex: 1, data: layers, boundaryGap: false, name: t('heads.layer'), nameLocation: 'middle', nameGap: 26, axisLabel: { fontFamily: MONO, fontSize: 10 } },
    ],
    yAxis: [
      { type: 'value', gridIndex: 0, min: 0, max: 1, interval: 0.25, axisLabel: { fontSize: 10, formatter: (v) => `${Math.round(v * 100)}%` } },
      { type: 'value', gridIndex: 1, min: 0, axisLabel: { fontSize: 10 } },
    ],
    series,
  };
  const ent = names.filter((s) => data.token_entropy[s] != null)
    .map((s) => `${segName(s)} ${data.token_entropy[s].toFixed(2)}`).join(' · ');
  const caption = (data.num_generated_queries
    ? t('segments.caption', { ent })
    : t('segments.noGenerated')) + sampledNote(t, data.query_rows_used, data.segments.length);
  return { option, caption, meta: { mode: 'segments', segments: names.join(','), layers: L } };
}
