// The Explain tab (issue 14): why the model predicted one token (rather than another).
//  - logit: direct logit attribution, a layer × (heads + MLP) heatmap on a diverging scale
//    centred on 0, and the top components by |value| with their signs;
//  - inputs: a score per earlier token (gradient × input, integrated gradients, value-norm,
//    direct), the top tokens as bars (and, per layer, for the methods that have layers);
//  - flow: the information-flow graph, nodes at (position, layer), edges coloured by kind.
// Every builder is pure: it takes the server's answer (docs/EXPLAIN.md) and returns
// {option, caption, meta}. Token text only reaches HTML (tooltips) through escapeHtml.

import { sampleMap } from '../colors.js';
import { FONT, MONO, PALETTE, baseTooltip, escapeHtml, labelInterval, layerAxis } from '../charts.js';
import { chipTextOn } from '../conversation.js';
import { visibleText } from '../tokens.js';

export const EXPLAIN_MODES = Object.freeze(['logit', 'inputs', 'flow']);
export const INPUT_METHODS = Object.freeze(['grad_x_input', 'integrated_gradients', 'value_norm', 'direct']);
/** Methods the server can run as a named job (progress, Stop). */
export const JOB_METHODS = Object.freeze(['grad_x_input', 'integrated_gradients']);
/** Methods whose scores have no sign (they do not depend on the target or contrast). */
export const UNSIGNED_METHODS = Object.freeze(['value_norm']);
export const STEPS_DEFAULT = 16;
export const STEPS_MAX = 128;
export const TOP_K = 12;

/**
 * Diverging colour map for signed contributions on the dark panel: blue lowers the target's
 * logit, red-orange raises it, 0 is the panel's own dark grey (a part that does nothing fades).
 */
export const DIVERGING = Object.freeze(['#8fc1ff', '#4f86d9', '#2f4f80', '#252b34', '#8a3f33', '#dc5f45', '#ffa27a']);
export const POSITIVE = '#f27a5a';
export const NEGATIVE = '#5f9cf0';
export const EDGE_COLOURS = Object.freeze({ attention: '#7aa2f7', residual: '#8b96a5', mlp: '#e0af68' });
export const EDGE_KINDS = Object.freeze(['attention', 'residual', 'mlp']);

/** The largest |value| of a list (nested lists flattened, non-numbers skipped), at least `floor`. Pure. */
export function absMax(values, floor = 1e-9) {
  let m = 0;
  const visit = (v) => {
    if (Array.isArray(v)) v.forEach(visit);
    else if (typeof v === 'number' && Number.isFinite(v)) m = Math.max(m, Math.abs(v));
  };
  visit(values);
  return Math.max(floor, m);
}

/** The colour of `v` on the diverging map whose ends are ±max (clamped). Pure. */
export function divergingColour(v, max) {
  if (!Number.isFinite(v) || !(max > 0)) return DIVERGING[3];
  return sampleMap(DIVERGING, (Math.max(-1, Math.min(1, v / max)) + 1) / 2);
}

/** A number with its sign always written ("+1.234", "−0.500"; U+2212 for minus). Pure. */
export function fmtSigned(v, digits = 3) {
  if (v == null || !Number.isFinite(v)) return '—';
  const s = Math.abs(v).toFixed(digits);
  if (Number(s) === 0) return s;
  return `${v < 0 ? '−' : '+'}${s}`;
}

/** A short number: fixed decimals for ordinary sizes, an exponent for tiny ones. Pure. */
export function fmtSmall(v, digits = 3) {
  if (v == null || !Number.isFinite(v)) return '—';
  if (v !== 0 && Math.abs(v) < 10 ** -digits) return v.toExponential(1);
  return v.toFixed(digits);
}

// ---------------------------------------------------------------- target and contrast

/** The best candidate other than `targetId` (the "runner-up"), or null. candidates: probability order. Pure. */
export function runnerUp(candidates, targetId) {
  return (candidates || []).find((c) => c.id !== targetId) ?? null;
}

/** The query parameters every explain endpoint takes (null ones are left out by the client). Pure. */
export function explainParams(runId, position, target, contrast) {
  return { run_id: runId, position, target: target ?? null, contrast: contrast ?? null };
}

/** Why a position cannot be explained (an i18n key), or null when it can. Pure. */
export function explainProblem(run, position) {
  if (!run) return 'view.empty';
  if (position == null) return 'explain.noToken';
  if (position <= 0) return 'explain.position0';
  if (position >= run.tokens.length) return 'explain.noToken';
  return null;
}

/** The file-name detail of a saved Explain chart: the sub-view, its method and the position. Pure. */
export function explainExportDetail(s) {
  const mode = EXPLAIN_MODES.includes(s.explainMode) ? s.explainMode : 'logit';
  const method = mode === 'inputs' ? `-${s.explainMethod}` : '';
  const vs = s.explainContrast != null ? `-vs${s.explainContrast}` : '';
  return `${mode}${method}-pos${s.selected}${vs}`;
}

/** A steps field's text as a whole number in [1, STEPS_MAX] (the default for nonsense). Pure. */
export function parseSteps(value) {
  const n = Math.round(Number(value));
  if (!Number.isFinite(n) || n < 1) return STEPS_DEFAULT;
  return Math.min(STEPS_MAX, n);
}

// ---------------------------------------------------------------- logit attribution

/**
 * Every part of a logit attribution answer as one flat list:
 * {kind: 'embed' | 'lmbias' | 'head' | 'bias' | 'mlp', layer, head, kv, value}. o_proj biases that
 * are 0 everywhere and an LM-head bias of 0 (models without one) are left out. Pure.
 */
export function logitParts(data) {
  const kvOf = kvOfHeads(data, data.heads[0]?.length ?? 0);
  const parts = [{ kind: 'embed', layer: null, head: null, kv: null, value: data.embedding }];
  if (data.lm_bias) parts.push({ kind: 'lmbias', layer: null, head: null, kv: null, value: data.lm_bias });
  const hasBias = (data.o_bias || []).some((v) => v !== 0);
  data.heads.forEach((row, l) => {
    row.forEach((value, h) => parts.push({ kind: 'head', layer: l, head: h, kv: kvOf[h], value }));
    if (hasBias) parts.push({ kind: 'bias', layer: l, head: null, kv: null, value: data.o_bias[l] });
    parts.push({ kind: 'mlp', layer: l, head: null, kv: null, value: data.mlp[l] });
  });
  return parts;
}

/**
 * The KV head of every query head: the answer's kv_group (one KV head per query head, as
 * /api/attention_insights has it), or kv_groups ([[query heads of KV 0], ...]). Pure.
 */
export function kvOfHeads(data, numHeads) {
  if (Array.isArray(data.kv_group) && data.kv_group.length === numHeads) return [...data.kv_group];
  const out = new Array(numHeads).fill(null);
  (data.kv_groups || []).forEach((group, kv) => { for (const h of group) out[h] = kv; });
  return out;
}

/** The k entries with the largest |value|, largest first (ties keep their order). Pure. */
export function topByMagnitude(items, k = TOP_K, value = (x) => x.value) {
  return items
    .map((x, i) => [x, i])
    .filter(([x]) => Number.isFinite(value(x)))
    .sort((a, b) => Math.abs(value(b[0])) - Math.abs(value(a[0])) || a[1] - b[1])
    .slice(0, k)
    .map(([x]) => x);
}

/** A part's short name ("L5 h3", "L5 MLP", "L5 bias", "embedding"). Pure. */
export function partLabel(part, t) {
  if (part.kind === 'embed') return t('explain.embed');
  if (part.kind === 'lmbias') return t('explain.lmBias');
  if (part.kind === 'head') return t('explain.headShort', { l: part.layer, h: part.head });
  if (part.kind === 'bias') return t('explain.biasShort', { l: part.layer });
  return t('explain.mlpShort', { l: part.layer });
}

/**
 * The heatmap's columns and cells: the query heads (ordered as kv_groups lists them, so heads
 * that share a KV head sit together), then the o_proj bias when there is one, then the MLP.
 * cells: [column, layer, value, query head or -1, signed √value (the colour)]. Pure.
 */
export function logitHeatmap(data) {
  const Hq = data.heads[0]?.length ?? 0;
  const kvOf = kvOfHeads(data, Hq);
  const order = Array.from({ length: Hq }, (_, h) => h)
    .sort((a, b) => (kvOf[a] ?? 0) - (kvOf[b] ?? 0) || a - b); // heads of one KV head side by side
  const columns = order.map((h) => ({ kind: 'head', head: h, kv: kvOf[h] }));
  if ((data.o_bias || []).some((v) => v !== 0)) columns.push({ kind: 'bias', head: null, kv: null });
  columns.push({ kind: 'mlp', head: null, kv: null });
  const cells = [];
  data.heads.forEach((row, l) => {
    columns.forEach((c, x) => {
      const v = c.kind === 'head' ? row[c.head] : c.kind === 'bias' ? data.o_bias[l] : data.mlp[l];
      cells.push([x, l, v, c.kind === 'head' ? c.head : -1, Math.sign(v) * Math.sqrt(Math.abs(v))]);
    });
  });
  return { columns, cells };
}

/** The head a heatmap cell names ({layer, head}), or null for a bias / MLP cell. Pure. */
export function logitCellToHead(cell) {
  if (!Array.isArray(cell) || !(cell[3] >= 0)) return null;
  return { layer: cell[1], head: cell[3] };
}

/** The text of the target (and contrast) for captions: visible whitespace, cut to n. Pure. */
export function tokenName(tok, n = 24) {
  return tok ? `“${visibleText(tok.text, n)}”` : '';
}

/** The logit caption: target, contrast, logit, sum, gap, the fixed norm scale, the soft-cap. Pure. */
export function logitCaption(data, t) {
  const vars = {
    pos: data.position,
    q: data.query_position,
    target: tokenName(data.target),
    contrast: tokenName(data.contrast),
    logit: data.logit.toFixed(3),
    total: data.total.toFixed(3),
    gap: fmtSmall(data.gap, 4),
  };
  const parts = [t(data.contrast ? 'explain.logitCaptionDiff' : 'explain.logitCaption', vars), t('explain.normFixed', vars)];
  if (data.softcap != null) parts.push(t('explain.beforeSoftcap', { cap: data.softcap }));
  return parts.join(' · ');
}

/** Build the logit-attribution option. ctx: {t, width, height, topK}. Pure. */
export function buildLogitOption(data, ctx) {
  const { t } = ctx;
  const L = data.heads.length;
  const { columns, cells } = logitHeatmap(data);
  const parts = logitParts(data);
  const top = topByMagnitude(parts, ctx.topK ?? TOP_K);
  const vmax = absMax(cells.map((c) => c[2]));
  const barMax = absMax(top.map((p) => p.value));
  const W = ctx.width || 800;
  const H = ctx.height || 600;
  const left = 44;
  const topPad = 54;
  const labelW = 96; // the bar chart's category labels ("L29 MLP")
  const valueW = 62; // its value labels
  let heatW = Math.max(150, Math.min((W - left) * 0.5, columns.length * 44));
  if (W - (left + heatW + labelW) - valueW < 110) heatW = Math.max(120, W - left - labelW - valueW - 110);
  const plotH = Math.max(140, H - topPad - 78); // the colour legend sits under the heatmap
  const barLeft = left + heatW + labelW;
  const barW = Math.max(100, W - barLeft - valueW);
  const colLabel = (c) => (c.kind === 'head' ? `h${c.head}` : c.kind === 'bias' ? t('explain.bias') : t('explain.mlp'));
  const cellW = heatW / columns.length;
  const cellH = plotH / Math.max(1, L);
  const diffKey = data.contrast ? 'explain.diffX' : 'explain.logitX';
  const cellTip = ([x, l, v]) => {
    const c = columns[x];
    const name = c.kind === 'head' ? t('explain.headLong', { l, h: c.head, kv: c.kv }) : partLabel({ ...c, layer: l }, t);
    const hint = c.kind === 'head' ? `<div class="ec-k">${escapeHtml(t('explain.clickHead'))}</div>` : '';
    return `<div class="ec-tip"><div><b>${escapeHtml(name)}</b></div>`
      + `<div><span class="ec-k">${escapeHtml(t(diffKey))}</span> <b>${escapeHtml(fmtSigned(v, 4))}</b></div>${hint}</div>`;
  };
  const option = {
    animation: false,
    title: [
      { text: t('explain.heatTitle'), left, top: 4, textStyle: { fontSize: 12, fontFamily: FONT, color: PALETTE.text, fontWeight: 'normal' } },
      { text: t('explain.topComponents', { k: top.length }), left: barLeft, top: 4, textStyle: { fontSize: 12, fontFamily: FONT, color: PALETTE.text, fontWeight: 'normal' } },
    ],
    grid: [
      { left, top: topPad, width: heatW, height: plotH },
      { left: barLeft, top: topPad, width: barW, height: plotH },
    ],
    tooltip: baseTooltip({
      trigger: 'item',
      formatter: (p) => {
        if (p.seriesId === 'logit-heat') return cellTip(p.data);
        if (p.seriesId === 'logit-top') {
          const part = top[p.dataIndex];
          return `<div class="ec-tip"><div><b>${escapeHtml(partLabel(part, t))}</b></div>`
            + `<div><span class="ec-k">${escapeHtml(t(diffKey))}</span> <b>${escapeHtml(fmtSigned(part.value, 4))}</b></div></div>`;
        }
        return '';
      },
    }),
    xAxis: [
      {
        gridIndex: 0,
        type: 'category',
        data: columns.map(colLabel),
        position: 'top',
        axisTick: { show: false },
        axisLine: { show: false },
        axisLabel: {
          fontFamily: MONO, fontSize: 10, interval: 0,
          // the KV head under every head when there is room, else under the first of each group
          formatter: (v, idx) => {
            const c = columns[idx];
            if (c?.kind !== 'head') return v;
            const first = idx === 0 || columns[idx - 1].kv !== c.kv;
            return cellW >= 34 || first ? `${v}\nkv${c.kv}` : `${v}\n `;
          },
        },
      },
      {
        gridIndex: 1,
        type: 'value',
        min: -barMax * 1.15,
        max: barMax * 1.15,
        splitNumber: 4,
        name: t(diffKey),
        nameLocation: 'middle',
        nameGap: 24,
        axisLabel: { fontSize: 10, hideOverlap: true, showMinLabel: false, showMaxLabel: false, formatter: (v) => fmtSmall(v, 1) },
        splitLine: { lineStyle: { color: PALETTE.grid } },
      },
    ],
    yAxis: [
      layerAxis(L, plotH, t('explain.layer'), { gridIndex: 0, nameGap: 34 }),
      {
        gridIndex: 1,
        type: 'category',
        data: top.map((p) => partLabel(p, t)),
        inverse: true,
        axisTick: { show: false },
        axisLine: { lineStyle: { color: PALETTE.axis } },
        axisLabel: { fontFamily: MONO, fontSize: 11, color: PALETTE.text, width: 80, overflow: 'truncate' },
      },
    ],
    visualMap: {
      // signed square root (dimension 4): the small head parts stay visible next to a big MLP
      type: 'continuous',
      seriesIndex: 0,
      dimension: 4,
      min: -Math.sqrt(vmax),
      max: Math.sqrt(vmax),
      calculable: false,
      orient: 'horizontal',
      left: left + 58,
      top: topPad + plotH + 30,
      itemHeight: Math.max(60, Math.min(220, heatW - 130)),
      itemWidth: 10,
      text: [`+${vmax.toFixed(2)} ${t('explain.raises')}`, `−${vmax.toFixed(2)} ${t('explain.lowers')}`],
      inRange: { color: [...DIVERGING] },
      textStyle: { color: PALETTE.muted, fontFamily: FONT, fontSize: 11 },
    },
    series: [
      {
        id: 'logit-heat',
        type: 'heatmap',
        xAxisIndex: 0,
        yAxisIndex: 0,
        data: cells,
        label: {
          show: cellW >= 40 && cellH >= 14,
          fontSize: 9,
          fontFamily: MONO,
          color: '#e8ecf2',
          textBorderColor: 'rgba(0,0,0,0.6)',
          textBorderWidth: 2,
          formatter: (p) => fmtSmall(p.data[2], 2),
        },
        itemStyle: { borderColor: PALETTE.panel, borderWidth: cellW > 12 && cellH > 6 ? 1 : 0 },
        emphasis: { itemStyle: { borderColor: '#ffffff', borderWidth: 1.5 } },
      },
      {
        id: 'logit-top',
        type: 'bar',
        xAxisIndex: 1,
        yAxisIndex: 1,
        barMaxWidth: 16,
        data: top.map((p) => ({
          value: p.value,
          layer: p.layer ?? -1,
          head: p.kind === 'head' ? p.head : -1,
          itemStyle: { color: p.value >= 0 ? POSITIVE : NEGATIVE, borderRadius: p.value >= 0 ? [0, 3, 3, 0] : [3, 0, 0, 3] },
        })),
        label: {
          show: true,
          position: 'right',
          fontFamily: MONO,
          fontSize: 10,
          color: PALETTE.text,
          formatter: (p) => fmtSigned(p.value, 3),
        },
      },
    ],
  };
  return {
    option,
    caption: logitCaption(data, t),
    meta: {
      position: data.position,
      'target-id': data.target.id,
      'contrast-id': data.contrast ? data.contrast.id : '',
      logit: data.logit.toFixed(4),
      total: data.total.toFixed(4),
      gap: data.gap,
      columns: columns.length,
    },
    columns,
    top,
  };
}

// ---------------------------------------------------------------- input attribution

/** The top tokens ({position, score}) by |score| (by score for unsigned methods). Pure. */
export function topTokens(scores, k = TOP_K) {
  return topByMagnitude(scores.map((score, position) => ({ position, score })), k, (x) => x.score);
}

/**
 * A chip's colours for every scored position: {bg, fg}, on the diverging scale with ends ±max
 * (unsigned scores use its positive half). Pure.
 */
export function chipShades(scores) {
  const max = absMax(scores);
  return scores.map((v) => {
    const bg = divergingColour(v, max);
    return { bg, fg: chipTextOn(bg) };
  });
}

/** The chips' legend: a CSS gradient and its end labels (signed: −max … +max; unsigned: 0 … max). Pure. */
export function inputsLegend(scores, method, t) {
  const max = absMax(scores);
  if (UNSIGNED_METHODS.includes(method)) {
    return {
      gradient: `linear-gradient(to right, ${DIVERGING.slice(3).join(', ')})`,
      lo: '0',
      hi: `${fmtSmall(max, 3)} ${t('explain.mostFlow')}`,
    };
  }
  return {
    gradient: `linear-gradient(to right, ${DIVERGING.join(', ')})`,
    lo: `−${fmtSmall(max, 3)} ${t('explain.lowers')}`,
    hi: `+${fmtSmall(max, 3)} ${t('explain.raises')}`,
  };
}

/** The inputs caption: method, target (and contrast), and IG's completeness. Pure. */
export function inputsCaption(data, t) {
  const vars = {
    pos: data.position,
    q: data.query_position,
    method: t(`explain.method.${data.method}`),
    target: tokenName(data.target),
    contrast: tokenName(data.contrast),
    n: data.scores.length,
  };
  const unsigned = UNSIGNED_METHODS.includes(data.method);
  const key = unsigned ? 'explain.inputsCaptionUnsigned' : data.contrast ? 'explain.inputsCaptionDiff' : 'explain.inputsCaption';
  const parts = [t(key, vars)];
  const c = data.completeness;
  if (c) {
    parts.push(t('explain.completeness', {
      sum: c.sum.toFixed(4), expected: c.expected.toFixed(4), gap: fmtSmall(c.gap, 4), steps: data.steps ?? '',
    }));
    if (c.baseline) parts.push(t('explain.baseline', { tok: tokenName(c.baseline) }));
  }
  return parts.join(' · ');
}

/** Build the input-attribution option. ctx: {t, width, height, labels, longLabels, topK}. Pure. */
export function buildInputsOption(data, ctx) {
  const { t } = ctx;
  const scores = data.scores;
  const unsigned = UNSIGNED_METHODS.includes(data.method);
  const top = topTokens(scores, ctx.topK ?? TOP_K);
  const short = (j) => ctx.labels?.[j] ?? visibleText(data.tokens[j], 12);
  const long = (j) => ctx.longLabels?.[j] ?? visibleText(data.tokens[j], 32);
  const W = ctx.width || 800;
  const H = ctx.height || 600;
  const layers = Array.isArray(data.layers) && data.layers.length ? data.layers : null;
  const left = 150;
  const topPad = 34;
  const barW = layers ? Math.max(140, W * 0.38) : Math.max(160, W - left - 90);
  const plotH = Math.max(140, H - topPad - 46);
  const barMax = absMax(top.map((x) => x.score));
  const scoreKey = unsigned ? 'explain.scoreUnsigned' : data.contrast ? 'explain.scoreDiff' : 'explain.score';
  const titles = [{ text: t('explain.topTokens', { k: top.length }), left, top: 4, textStyle: { fontSize: 12, fontFamily: FONT, color: PALETTE.text, fontWeight: 'normal' } }];
  const grid = [{ left, top: topPad, width: barW, height: plotH }];
  const xAxis = [{
    gridIndex: 0,
    type: 'value',
    min: unsigned ? 0 : -barMax * 1.2,
    max: barMax * 1.2,
    splitNumber: 4,
    name: t(scoreKey),
    nameLocation: 'middle',
    nameGap: 24,
    axisLabel: { fontSize: 10, hideOverlap: true, showMinLabel: false, showMaxLabel: false, formatter: (v) => fmtSmall(v, 2) },
    splitLine: { lineStyle: { color: PALETTE.grid } },
  }];
  const yAxis = [{
    gridIndex: 0,
    type: 'category',
    data: top.map((x) => `#${x.position} ${short(x.position)}`),
    inverse: true,
    axisTick: { show: false },
    axisLine: { lineStyle: { color: PALETTE.axis } },
    axisLabel: { fontFamily: MONO, fontSize: 11, color: PALETTE.text, width: left - 16, overflow: 'truncate' },
  }];
  const series = [{
    id: 'inputs-top',
    type: 'bar',
    barMaxWidth: 16,
    data: top.map((x) => ({
      value: x.score,
      position: x.position,
      itemStyle: { color: x.score >= 0 ? POSITIVE : NEGATIVE },
    })),
    label: {
      show: true,
      position: 'right',
      fontFamily: MONO,
      fontSize: 10,
      color: PALETTE.text,
      formatter: (p) => (unsigned ? fmtSmall(p.value, 3) : fmtSigned(p.value, 3)),
    },
  }];
  let visualMap;
  if (layers) {
    // Per layer, for the top tokens (in position order): where in depth each one mattered.
    const cols = [...top].sort((a, b) => a.position - b.position).map((x) => x.position);
    const heatLeft = left + barW + 110;
    const heatW = Math.max(120, W - heatLeft - 90);
    const cells = [];
    layers.forEach((row, l) => cols.forEach((j, x) => cells.push([x, l, row[j]])));
    const hmax = absMax(cells.map((c) => c[2]));
    titles.push({ text: t('explain.perLayer'), left: heatLeft, top: 4, textStyle: { fontSize: 12, fontFamily: FONT, color: PALETTE.text, fontWeight: 'normal' } });
    grid.push({ left: heatLeft, top: topPad, width: heatW, height: plotH - 40 });
    xAxis.push({
      gridIndex: 1,
      type: 'category',
      data: cols.map((j) => `#${j} ${short(j)}`),
      axisTick: { show: false },
      axisLine: { show: false },
      axisLabel: { fontFamily: MONO, fontSize: 9, rotate: 60, interval: 0, width: 70, overflow: 'truncate' },
    });
    yAxis.push({
      gridIndex: 1,
      type: 'category',
      data: layers.map((_, l) => String(l)),
      inverse: true,
      name: t('explain.layer'),
      nameLocation: 'middle',
      nameGap: 30,
      axisTick: { show: false },
      axisLine: { show: false },
      axisLabel: { fontFamily: MONO, fontSize: 10, interval: labelInterval(layers.length, Math.floor((plotH - 40) / 13)) },
    });
    series.push({
      id: 'inputs-layers',
      type: 'heatmap',
      xAxisIndex: 1,
      yAxisIndex: 1,
      data: cells,
      itemStyle: { borderColor: PALETTE.panel, borderWidth: 1 },
    });
    visualMap = {
      type: 'continuous',
      seriesIndex: 1,
      dimension: 2,
      min: unsigned ? 0 : -hmax,
      max: hmax,
      calculable: false,
      orient: 'vertical',
      left: heatLeft + heatW + 14,
      top: topPad + 10,
      itemHeight: Math.min(220, plotH - 80),
      itemWidth: 10,
      precision: 3,
      inRange: { color: unsigned ? DIVERGING.slice(3) : [...DIVERGING] },
      textStyle: { color: PALETTE.muted, fontFamily: FONT, fontSize: 10 },
    };
  }
  const option = {
    animation: false,
    title: titles,
    grid,
    tooltip: baseTooltip({
      trigger: 'item',
      formatter: (p) => {
        let j;
        let v;
        let layer = null;
        if (p.seriesId === 'inputs-top') { j = top[p.dataIndex].position; v = top[p.dataIndex].score; }
        else if (p.seriesId === 'inputs-layers') {
          const cols = [...top].sort((a, b) => a.position - b.position).map((x) => x.position);
          [j, layer, v] = [cols[p.data[0]], p.data[1], p.data[2]];
        } else return '';
        const where = layer == null ? '' : `<div><span class="ec-k">${escapeHtml(t('explain.layer'))}</span> <b>${layer}</b></div>`;
        return `<div class="ec-tip"><div>#${j} <b class="ec-tok">${escapeHtml(long(j))}</b></div>${where}`
          + `<div><span class="ec-k">${escapeHtml(t(scoreKey))}</span> <b>${escapeHtml(unsigned ? fmtSmall(v, 4) : fmtSigned(v, 4))}</b></div></div>`;
      },
    }),
    xAxis,
    yAxis,
    series,
  };
  if (visualMap) option.visualMap = visualMap;
  return {
    option,
    caption: inputsCaption(data, t),
    meta: {
      position: data.position,
      method: data.method,
      'target-id': data.target?.id ?? '',
      'contrast-id': data.contrast ? data.contrast.id : '',
      'top-position': top[0]?.position ?? '',
      'score-sum': scores.reduce((a, b) => a + b, 0).toFixed(4),
      gap: data.completeness ? data.completeness.gap : '',
    },
    top,
  };
}

// ---------------------------------------------------------------- information flow

const nodeKey = (layer, position) => `${layer}:${position}`;

/**
 * The edges to draw: weight ≥ threshold, a known kind, and both ends among the nodes. Pure.
 * edges: the answer's [{source: [l, j], target: [l+1, i], kind, weight, ...}].
 */
export function filterFlowEdges(edges, threshold, nodes) {
  const keys = new Set(nodes.map((n) => nodeKey(n.layer, n.position)));
  return edges.filter((e) => EDGE_KINDS.includes(e.kind) && Number.isFinite(e.weight) && e.weight >= threshold
    && keys.has(nodeKey(e.source[0], e.source[1])) && keys.has(nodeKey(e.target[0], e.target[1])));
}

/** The positions that have a node, in order, and each one's column. Pure. */
export function flowColumns(nodes) {
  const positions = [...new Set(nodes.map((n) => n.position))].sort((a, b) => a - b);
  return { positions, column: new Map(positions.map((p, x) => [p, x])) };
}

/** An edge's width from its weight (0..1): 0.6 px to 7 px. Pure. */
export const edgeWidth = (w) => 0.6 + 6.4 * Math.max(0, Math.min(1, w));

/** The info line for a clicked edge (kind, ends, weight, and the head for attention). Pure. */
export function flowEdgeInfo(edge, t, longLabel = (j) => `#${j}`) {
  const vars = {
    kind: t(`explain.kind.${edge.kind}`),
    from: `L${edge.source[0]} #${edge.source[1]} ${longLabel(edge.source[1])}`,
    to: `L${edge.target[0]} #${edge.target[1]} ${longLabel(edge.target[1])}`,
    weight: edge.weight.toFixed(3),
  };
  if (edge.kind === 'attention' && edge.head != null) {
    return t('explain.edgeInfoHead', {
      ...vars, layer: edge.target[0] - 1, head: edge.head, share: fmtSmall(edge.head_weight ?? 0, 3),
    });
  }
  return t('explain.edgeInfo', vars);
}

/** The flow caption. Pure. */
export function flowCaption(data, edges, t) {
  return t('explain.flowCaption', {
    pos: data.position,
    q: data.query_position ?? (data.position - 1),
    target: tokenName(data.target),
    nodes: data.nodes.length,
    edges: edges.length,
    threshold: data.threshold,
  });
}

/** Build the information-flow graph. ctx: {t, width, height, labels, longLabels}. Pure. */
export function buildFlowOption(data, ctx) {
  const { t } = ctx;
  const nodes = data.nodes;
  const edges = filterFlowEdges(data.edges, data.threshold ?? 0, nodes);
  const { positions, column } = flowColumns(nodes);
  const L = nodes.reduce((m, n) => Math.max(m, n.layer), 0);
  const short = (j) => ctx.labels?.[j] ?? visibleText(data.tokens?.[j] ?? '', 12);
  const long = (j) => ctx.longLabels?.[j] ?? visibleText(data.tokens?.[j] ?? '', 32);
  const q = data.query_position ?? (data.position - 1);
  const W = ctx.width || 800;
  const H = ctx.height || 600;
  const plotW = Math.max(160, W - 70 - 30);
  const plotH = Math.max(140, H - 40 - 90);
  const index = new Map(nodes.map((n, i) => [nodeKey(n.layer, n.position), i]));
  const dot = Math.max(3, Math.min(8, Math.min(plotW / Math.max(1, positions.length), plotH / (L + 2)) * 0.45));
  const graphNodes = nodes.map((n) => {
    const top = n.layer === L && n.position === q;
    return {
      name: nodeKey(n.layer, n.position),
      value: [column.get(n.position), n.layer],
      layer: n.layer,
      position: n.position,
      symbolSize: top ? 12 : dot,
      itemStyle: { color: top ? PALETTE.highlight : '#c9d1db', borderColor: PALETTE.panel, borderWidth: 1 },
    };
  });
  const links = edges.map((e) => ({
    source: index.get(nodeKey(e.source[0], e.source[1])),
    target: index.get(nodeKey(e.target[0], e.target[1])),
    kind: e.kind,
    weight: e.weight,
    head: e.head ?? null,
    head_weight: e.head_weight ?? null,
    from: e.source,
    to: e.target,
    lineStyle: {
      color: EDGE_COLOURS[e.kind],
      width: edgeWidth(e.weight),
      opacity: 0.35 + 0.6 * Math.min(1, e.weight),
      curveness: e.kind === 'mlp' ? 0.3 : 0,
    },
  }));
  const edgeOf = (p) => ({ kind: p.data.kind, weight: p.data.weight, head: p.data.head, head_weight: p.data.head_weight, source: p.data.from, target: p.data.to });
  const option = {
    animation: false,
    legend: {
      top: 4,
      left: 'center',
      selectedMode: false,
      data: EDGE_KINDS.map((k) => ({ name: t(`explain.kind.${k}`), itemStyle: { color: EDGE_COLOURS[k] } })),
      textStyle: { color: PALETTE.text, fontFamily: FONT, fontSize: 12 },
    },
    grid: { left: 70, right: 30, top: 40, height: plotH },
    tooltip: baseTooltip({
      trigger: 'item',
      formatter: (p) => {
        if (p.seriesId !== 'flow') return '';
        if (p.dataType === 'edge') {
          return `<div class="ec-tip"><div>${escapeHtml(flowEdgeInfo(edgeOf(p), t, long))}</div>`
            + `<div class="ec-k">${escapeHtml(t('explain.edgeHint'))}</div></div>`;
        }
        const n = p.data;
        return `<div class="ec-tip"><div>#${n.position} <b class="ec-tok">${escapeHtml(long(n.position))}</b></div>`
          + `<div><span class="ec-k">${escapeHtml(t('explain.layer'))}</span> <b>${n.layer === 0 ? escapeHtml(t('layer.embeddings')) : n.layer}</b></div></div>`;
      },
    }),
    xAxis: {
      type: 'value',
      min: -1, // one empty step each side; ticks fall on the columns
      max: Math.max(1, positions.length),
      interval: 1,
      name: t('explain.flowX'),
      nameLocation: 'middle',
      nameGap: 70,
      splitLine: { show: false },
      axisTick: { show: false },
      axisLabel: {
        fontFamily: MONO,
        fontSize: 10,
        rotate: 60,
        showMinLabel: false,
        showMaxLabel: false,
        formatter: (v) => (Number.isInteger(v) && positions[v] != null && (positions.length <= Math.floor(plotW / 12) || v % Math.ceil(positions.length / Math.floor(plotW / 12)) === 0)
          ? `#${positions[v]} ${short(positions[v])}` : ''),
      },
    },
    yAxis: {
      type: 'value',
      min: -1,
      max: L + 1,
      interval: 1,
      name: t('explain.layer'),
      nameLocation: 'middle',
      nameGap: 44,
      splitLine: { lineStyle: { color: PALETTE.grid } },
      axisLabel: {
        fontFamily: MONO,
        fontSize: 10,
        showMinLabel: false,
        showMaxLabel: false,
        formatter: (v) => (!Number.isInteger(v) || v % Math.max(1, Math.ceil((L + 1) / Math.floor(plotH / 14))) !== 0
          ? '' : v === 0 ? t('explain.embedShort') : String(v)),
      },
    },
    series: [
      {
        id: 'flow',
        type: 'graph',
        coordinateSystem: 'cartesian2d',
        layout: 'none',
        data: graphNodes,
        links,
        edgeSymbol: ['none', 'arrow'],
        edgeSymbolSize: 5,
        emphasis: { focus: 'adjacency', lineStyle: { width: 6 } },
        lineStyle: { opacity: 0.8 },
      },
      // Empty series that give the legend its three edge colours.
      ...EDGE_KINDS.map((k) => ({ id: `flow-kind-${k}`, name: t(`explain.kind.${k}`), type: 'line', data: [], itemStyle: { color: EDGE_COLOURS[k] }, lineStyle: { color: EDGE_COLOURS[k] } })),
    ],
  };
  return {
    option,
    caption: flowCaption(data, edges, t),
    meta: {
      position: data.position,
      nodes: nodes.length,
      edges: edges.length,
      threshold: data.threshold,
    },
    edges,
  };
}

/** The edge a flow-graph click names ({kind, weight, head, head_weight, source, target}), or null. Pure. */
export function flowClickEdge(p) {
  if (p?.seriesId !== 'flow' || p.dataType !== 'edge' || !p.data) return null;
  return {
    kind: p.data.kind, weight: p.data.weight, head: p.data.head, head_weight: p.data.head_weight, source: p.data.from, target: p.data.to,
  };
}
