// 2D PCA of one layer's token states: prompt, template and generated tokens in different
// colours, a faint path in token order, and the selected token ringed.

import { FONT, MONO, PALETTE, baseTooltip, escapeHtml } from '../charts.js';
import { fmtPct, visibleText } from '../tokens.js';

const TEMPLATE_COLOUR = '#5c6673';

/** Split points by kind using the run's tokens. Pure. */
export function splitPoints(points, tokens) {
  const groups = { prompt: [], template: [], generated: [] };
  for (const p of points) {
    const tok = tokens[p.position];
    const kind = tok?.source === 'generated' ? 'generated' : tok?.segment === 'template' ? 'template' : 'prompt';
    groups[kind].push(p);
  }
  return groups;
}

function quantileSorted(v, q) {
  return v[Math.min(v.length - 1, Math.max(0, Math.round(q * (v.length - 1))))];
}

/**
 * A window that holds the bulk of the points. Hidden states often have one or two tokens
 * with huge norms (the first token, an attention sink) that dominate PCA and squash everyone
 * else into a line. Returns {x: [lo, hi], y: [lo, hi]} or null when nothing is far out. Pure.
 */
export function robustWindow(points) {
  if (points.length < 12) return null;
  const axis = (key) => {
    const v = points.map((p) => p[key]).sort((a, b) => a - b);
    const lo = quantileSorted(v, 0.05);
    const hi = quantileSorted(v, 0.95);
    const span = Math.max(hi - lo, 1e-9);
    const win = [lo - 0.35 * span, hi + 0.35 * span];
    const far = v[0] < lo - 2 * span || v[v.length - 1] > hi + 2 * span;
    return { win, far };
  };
  const x = axis('x');
  const y = axis('y');
  if (!x.far && !y.far) return null;
  return {
    x: x.far ? x.win : [Math.min(...points.map((p) => p.x)), Math.max(...points.map((p) => p.x))],
    y: y.far ? y.win : [Math.min(...points.map((p) => p.y)), Math.max(...points.map((p) => p.y))],
  };
}

/**
 * Where an off-scale point's label goes and the arrow that points to the real position: the
 * label sits on the side facing the plot, so it is never cut by the chart's edge. Pure.
 */
export function offScaleLabel(p, win) {
  const dx = p.rawX < win.x[0] ? -1 : p.rawX > win.x[1] ? 1 : 0;
  const dy = p.rawY < win.y[0] ? -1 : p.rawY > win.y[1] ? 1 : 0;
  const arrow = { '-1,-1': '↙', '-1,0': '←', '-1,1': '↖', '0,-1': '↓', '0,1': '↑', '1,-1': '↘', '1,0': '→', '1,1': '↗' }[`${dx},${dy}`] || '→';
  if (dx < 0) return { position: 'right', text: `${arrow} ${p.name}` };
  if (dx > 0) return { position: 'left', text: `${p.name} ${arrow}` };
  return { position: dy > 0 ? 'bottom' : 'top', text: `${arrow} ${p.name}` };
}

/** Clamp points into a window, flagging the ones that were moved. Pure. */
export function clampPoints(points, win) {
  if (!win) return points.map((p) => ({ ...p, off: false }));
  const c = (v, [lo, hi]) => Math.min(hi, Math.max(lo, v));
  return points.map((p) => {
    const x = c(p.x, win.x);
    const y = c(p.y, win.y);
    return { ...p, rawX: p.x, rawY: p.y, x, y, off: x !== p.x || y !== p.y };
  });
}

const LARGE = 1500;

/** Build the ECharts option. ctx: {t, run, selected, labels, longLabels}. Pure. */
export function buildProjectionOption(data, ctx) {
  const { t } = ctx;
  const n = data.points.length;
  const win = robustWindow(data.points);
  const points = clampPoints(data.points, win);
  const offScale = points.filter((p) => p.off);
  const onScale = points.filter((p) => !p.off);
  const groups = splitPoints(onScale, ctx.run.tokens);
  const ordered = [...points].sort((a, b) => a.position - b.position);
  const showLabels = n <= 220;
  const label = (p) => ctx.labels?.[p.position] ?? visibleText(p.text, 12);
  const datum = (p) => ({ value: [p.x, p.y, p.position], name: label(p) });
  const scatter = (id, name, pts, colour, size) => ({
    id,
    name,
    type: 'scatter',
    data: pts.map(datum),
    symbolSize: size,
    // thousands of points: ECharts' large mode draws them in one batched path
    large: n > LARGE,
    largeThreshold: LARGE,
    itemStyle: { color: colour, opacity: 0.9, borderColor: 'rgba(0,0,0,0.35)', borderWidth: n > LARGE ? 0 : 0.5 },
    emphasis: { scale: 1.6, label: { show: true } },
    label: {
      show: showLabels,
      position: 'right',
      distance: 4,
      formatter: (p) => p.name,
      color: PALETTE.muted,
      fontFamily: MONO,
      fontSize: 10,
    },
    labelLayout: { hideOverlap: true },
  });
  const series = [
    {
      id: 'path',
      name: t('projection.path'),
      type: 'line',
      data: ordered.filter((p) => ctx.run.tokens[p.position]?.source === 'generated').map((p) => [p.x, p.y]),
      showSymbol: false,
      silent: true,
      smooth: 0.25,
      lineStyle: { color: 'rgba(224,175,104,0.28)', width: 1 },
      z: 1,
    },
    scatter('template', t('tip.segment.template'), groups.template, TEMPLATE_COLOUR, 6),
    scatter('prompt', t('projection.prompt'), groups.prompt, PALETTE.prompt, 8),
    scatter('generated', t('projection.generated'), groups.generated, PALETTE.generated, 9),
  ];
  if (offScale.length) {
    series.push({
      id: 'off-scale',
      name: t('projection.offScale'),
      type: 'scatter',
      data: offScale.map((p) => {
        const where = offScaleLabel({ ...p, name: label(p) }, win);
        return { ...datum(p), label: { position: where.position, formatter: () => where.text } };
      }),
      symbol: 'diamond',
      symbolSize: 11,
      itemStyle: { color: 'transparent', borderColor: PALETTE.text, borderWidth: 1.5 },
      label: {
        show: true,
        distance: 6,
        color: PALETTE.text,
        fontFamily: MONO,
        fontSize: 10,
        backgroundColor: 'rgba(18,22,28,0.85)',
        padding: [1, 4],
        borderRadius: 3,
      },
      z: 15,
    });
  }
  const sel = ctx.selected == null ? null : points.find((p) => p.position === ctx.selected);
  if (sel) {
    series.push({
      id: 'selected',
      name: t('projection.selected'),
      type: 'scatter',
      data: [datum(sel)],
      symbolSize: 15,
      itemStyle: {
        color: 'rgba(247,118,142,0.35)',
        borderColor: PALETTE.highlight,
        borderWidth: 2,
        shadowBlur: 12,
        shadowColor: 'rgba(247,118,142,0.8)',
      },
      label: {
        show: true,
        position: 'top',
        distance: 8,
        formatter: (p) => p.name,
        color: PALETTE.highlight,
        fontFamily: MONO,
        fontSize: 12,
        fontWeight: 600,
        backgroundColor: 'rgba(18,22,28,0.85)',
        padding: [2, 5],
        borderRadius: 4,
      },
      z: 20,
    });
  }
  const [v1, v2] = data.explained_variance || [null, null];
  const option = {
    animationDuration: 300,
    legend: {
      top: 4,
      left: 'center',
      itemWidth: 10,
      itemHeight: 10,
      data: ['template', 'prompt', 'generated'].map((id) => series.find((s) => s.id === id).name),
      textStyle: { color: PALETTE.text, fontFamily: FONT, fontSize: 12 },
    },
    grid: { left: 56, right: 36, top: 40, bottom: 48 },
    tooltip: baseTooltip({
      trigger: 'item',
      formatter: (p) => {
        if (!Array.isArray(p.value) || p.value.length < 3) return '';
        const pos = p.value[2];
        const tok = ctx.run.tokens[pos];
        const pt = points.find((q) => q.position === pos);
        const x = pt?.rawX ?? p.value[0];
        const y = pt?.rawY ?? p.value[1];
        return `<div class="ec-tip"><div><span class="ec-k">#${pos}</span> <b class="ec-tok">${escapeHtml(ctx.longLabels?.[pos] ?? visibleText(tok?.text ?? '', 32))}</b></div>`
          + `<div><span class="ec-k">PC1</span> ${x.toFixed(3)} <span class="ec-k">PC2</span> ${y.toFixed(3)}</div>`
          + (pt?.off ? `<div class="ec-k">${escapeHtml(t('projection.offScaleTip'))}</div>` : '')
          + '</div>';
      },
    }),
    xAxis: {
      type: 'value',
      scale: true,
      ...(win ? { min: win.x[0], max: win.x[1] } : {}),
      name: v1 == null ? 'PC1' : `PC1 (${fmtPct(v1)})`,
      nameLocation: 'middle',
      nameGap: 28,
      splitLine: { lineStyle: { color: PALETTE.grid } },
      axisLabel: { fontSize: 10, showMinLabel: false, showMaxLabel: false, formatter: (v) => Number(v.toPrecision(3)).toString() },
    },
    yAxis: {
      type: 'value',
      scale: true,
      ...(win ? { min: win.y[0], max: win.y[1] } : {}),
      name: v2 == null ? 'PC2' : `PC2 (${fmtPct(v2)})`,
      nameLocation: 'middle',
      nameGap: 42,
      splitLine: { lineStyle: { color: PALETTE.grid } },
      axisLabel: { fontSize: 10, showMinLabel: false, showMaxLabel: false, formatter: (v) => Number(v.toPrecision(3)).toString() },
    },
    dataZoom: [
      { type: 'inside', xAxisIndex: 0, filterMode: 'none' },
      { type: 'inside', yAxisIndex: 0, filterMode: 'none' },
    ],
    series,
  };
  const layerName = data.layer === 0 ? t('projection.embeddings') : String(data.layer);
  const offNote = offScale.length
    ? ` · ${t('projection.offScaleNote', { k: offScale.length, list: offScale.slice(0, 3).map((p) => `#${p.position} ${label(p)}`).join(', ') })}`
    : '';
  return {
    option,
    caption: t('projection.caption', { layer: layerName, n }) + offNote,
    meta: { layer: data.layer, points: n, 'off-scale': offScale.length },
    variance: t('projection.variance', { v1: fmtPct(v1), v2: fmtPct(v2) }),
  };
}
