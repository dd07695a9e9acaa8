// Interventions (issue 15), pure parts: the head selection of the Heads grid, the Effect view
// (per position Δ log-prob of the original token and KL(original || intervened), the most
// affected positions), the activation-patching heatmap (1 = clean, 0 = corrupted) and the
// steering comparison. No DOM here except the small renderers at the end, which build
// elements with textContent only (token text is never HTML).

import { VIRIDIS } from '../colors.js';
import { FONT, MONO, PALETTE, baseTooltip, escapeHtml, labelInterval, layerAxis } from '../charts.js';
import { fmtNum, visibleText } from '../tokens.js';
import { el } from '../util.js';

export const ABLATE_MODES = Object.freeze(['zero', 'mean']);
export const ABLATE_TARGETS = Object.freeze(['heads', 'mlp', 'attention']);
export const PATCH_SWEEPS = Object.freeze(['residual', 'heads']);
export const PATCH_METRICS = Object.freeze(['logit_diff', 'logprob']);
export const STEER_SOURCES = Object.freeze(['mean_diff', 'token', 'direction']);
/** KL values floored at 1e-10 inside the log: ln(1e10) ≈ 23.03 nats is the most they can mean. */
export const KL_FLOOR_NATS = 23;
/** At most this many alphas in one steering sweep (each is a generation). */
export const MAX_ALPHAS = 7;

// ---------------------------------------------------------------- head selection

/** The KV head of each query head (GQA) from the model info: floor(h / (Hq / Hkv)). Pure. */
export function kvGroupOf(model) {
  if (!model) return [];
  const g = Math.max(1, Math.round(model.num_heads / (model.num_kv_heads || model.num_heads)));
  return Array.from({ length: model.num_heads }, (_, h) => Math.floor(h / g));
}

/** Sort a selection of [layer, head] pairs and drop duplicates. Pure. */
export function normaliseHeads(sel) {
  const seen = new Set();
  const out = [];
  for (const [l, h] of sel) {
    const k = `${l}:${h}`;
    if (!seen.has(k)) { seen.add(k); out.push([l, h]); }
  }
  return out.sort((a, b) => a[0] - b[0] || a[1] - b[1]);
}

/**
 * Toggle head (layer, head) in the selection. With `group` (shift-click) every query head that
 * reads the same KV head (kvGroup[h] equal) is toggled together: all on, unless all were on
 * already. kvGroup: the KV head of each query head. Returns a new sorted array. Pure.
 */
export function toggleHead(sel, layer, head, { group = false, kvGroup = null } = {}) {
  const has = (h) => sel.some(([l, x]) => l === layer && x === h);
  const heads = group && Array.isArray(kvGroup)
    ? kvGroup.map((kv, h) => (kv === kvGroup[head] ? h : null)).filter((h) => h != null)
    : [head];
  const allOn = heads.every(has);
  const rest = sel.filter(([l, x]) => !(l === layer && heads.includes(x)));
  return normaliseHeads(allOn ? rest : [...rest, ...heads.map((h) => [layer, h])]);
}

/** "L2.h3, L2.h4, L5.h0" (at most `max` named, then "+N"). Pure. */
export function headsText(sel, max = 6) {
  const names = sel.slice(0, max).map(([l, h]) => `L${l}.h${h}`);
  return sel.length > max ? `${names.join(', ')} +${sel.length - max}` : names.join(', ');
}

/**
 * Add the ablation selection to a built heads grid: outlined cells (series id "ablate-selected")
 * and clickable layer labels (yAxis triggerEvent), so a click on "12" can pick that layer for the
 * MLP / attention ablation. Returns a new built object. Pure.
 */
export function decorateHeadsGrid(built, sel, { picking = false, t = null } = {}) {
  const option = { ...built.option };
  const series = option.series.filter((s) => s.id !== 'ablate-selected');
  const cells = series.find((s) => s.id === 'heads');
  const sizeOf = series.find((s) => s.id === 'selected-head')?.symbolSize ?? [20, 10];
  series.push({
    id: 'ablate-selected',
    type: 'scatter',
    silent: true,
    z: 8,
    data: sel.map(([l, h]) => [h, l]),
    symbol: 'rect',
    symbolSize: sizeOf,
    itemStyle: { color: 'rgba(158, 206, 106, 0.5)', borderColor: '#c3f59a', borderWidth: 2 },
  });
  option.series = series;
  option.yAxis = { ...option.yAxis, triggerEvent: true };
  if (cells && picking) {
    option.series = series.map((s) => (s.id === 'heads' ? { ...s, cursor: 'copy' } : s));
  }
  return {
    ...built,
    option,
    caption: picking && t ? `${built.caption} · ${t('ablate.pickingHint')}` : built.caption,
    meta: { ...(built.meta || {}), 'ablate-selected': sel.length, picking: picking ? 'true' : 'false' },
  };
}

/**
 * The ablation targets of a head selection: a layer's whole KV group as one `kv_group` target,
 * other heads one by one. kvGroup: the KV head of each query head. Pure.
 */
export function headTargets(sel, kvGroup) {
  const out = [];
  const layers = [...new Set(sel.map(([l]) => l))].sort((a, b) => a - b);
  for (const layer of layers) {
    const heads = sel.filter(([l]) => l === layer).map(([, h]) => h);
    const groups = [...new Set(kvGroup)];
    const whole = new Set();
    for (const g of groups) {
      const members = kvGroup.map((kv, h) => (kv === g ? h : null)).filter((h) => h != null);
      if (members.length > 1 && members.every((h) => heads.includes(h))) {
        out.push({ kind: 'kv_group', layer, group: g });
        for (const h of members) whole.add(h);
      }
    }
    for (const h of heads) if (!whole.has(h)) out.push({ kind: 'head', layer, head: h });
  }
  return out;
}

/**
 * The POST /api/intervene/ablate body for the page's choice. target: 'heads' (the selection)
 * | 'mlp' | 'attention' (of `layer`). Returns {body} or {error: i18n key}. Pure.
 */
export function ablateBody(runId, { target, heads = [], kvGroup = [], layer, mode, numLayers, free = false }) {
  if (!ABLATE_MODES.includes(mode)) return { error: 'ablate.badMode' };
  if (target === 'heads') {
    if (!heads.length) return { error: 'ablate.noHeads' };
    return { body: { run_id: runId, targets: headTargets(heads, kvGroup), mode, free } };
  }
  if (target !== 'mlp' && target !== 'attention') return { error: 'ablate.badTarget' };
  if (!Number.isInteger(layer) || layer < 0 || (numLayers != null && layer >= numLayers)) return { error: 'ablate.badLayer' };
  return { body: { run_id: runId, targets: [{ kind: target, layer }], mode, free } };
}

/** A short text of an intervention spec: "ablate (zero) L3.h2, L3.kv0, L5 MLP" / "steer L5 α=4". Pure. */
export function interventionText(spec, t) {
  if (!spec || typeof spec !== 'object') return '';
  if (spec.type === 'steer') {
    return t('tree.steerText', { layer: spec.layer, alpha: spec.alpha, source: t(`steer.source.${spec.vector?.source === 'raw' ? 'direction' : spec.vector?.source ?? 'token'}`) });
  }
  const parts = (spec.targets || []).map((x) => {
    if (x.kind === 'head') return `L${x.layer}.h${x.head}`;
    if (x.kind === 'kv_group') return `L${x.layer}.kv${x.group}`;
    if (x.kind === 'mlp') return t('ablate.mlpOf', { l: x.layer });
    return t('ablate.attnOf', { l: x.layer });
  });
  const names = parts.length > 4 ? `${parts.slice(0, 4).join(', ')} +${parts.length - 4}` : parts.join(', ');
  return t('tree.ablateText', { mode: t(`ablate.mode.${spec.mode === 'mean' ? 'mean' : 'zero'}`), what: names });
}

// ---------------------------------------------------------------- effect

/**
 * The effects answer (GET /api/intervene/effects) as the rows the Effect view draws:
 * {rows: [{position, delta, kl, floored, text}], alignment, divergence, tokens, changed, from}.
 * Pure.
 */
export function effectFromApi(answer, t) {
  const rows = (answer.positions || []).map((p) => ({
    position: p.position,
    delta: p.delta_logprob,
    kl: p.kl,
    floored: Boolean(p.kl_floored),
    text: p.text,
    same: p.same_token,
  }));
  const tokens = {};
  for (const r of rows) tokens[r.position] = r.text;
  return {
    rows,
    alignment: answer.align === 'edit' ? 'edit' : 'position',
    divergence: answer.divergence_position ?? null,
    tokens,
    changed: interventionText(answer.intervention, t),
    from: 0,
  };
}

/** "≥ 23 nats (floored)" for a floored KL, else the number (nats). Pure. */
export function klText(v, floored, t) {
  if (floored) return t('effect.floored', { n: KL_FLOOR_NATS });
  return v == null || !Number.isFinite(v) ? '—' : `${fmtNum(Math.max(0, v), 4)}`;
}

/**
 * Mean KL and mean |Δ log-prob| over the measured (not floored) rows after `from`, and the count of
 * floored rows, which are never averaged in. rows: [{position, delta, kl, floored}]. Pure.
 */
export function effectStats(rows, from = 0) {
  const after = rows.filter((r) => r.position >= from);
  const measured = after.filter((r) => !r.floored && Number.isFinite(r.kl));
  const deltas = after.filter((r) => Number.isFinite(r.delta));
  return {
    meanKl: measured.length ? measured.reduce((s, r) => s + Math.max(0, r.kl), 0) / measured.length : null,
    meanAbsDelta: deltas.length ? deltas.reduce((s, r) => s + Math.abs(r.delta), 0) / deltas.length : null,
    floored: after.filter((r) => r.floored).length,
    measured: measured.length,
  };
}

/**
 * The `n` most affected positions: floored KL first (they are the largest), then by KL, then by
 * |Δ log-prob|. Returns the rows. Pure.
 */
export function mostAffected(rows, n = 8) {
  const score = (r) => [r.floored ? 1 : 0, Number.isFinite(r.kl) ? r.kl : -1, Number.isFinite(r.delta) ? Math.abs(r.delta) : -1];
  return rows
    .filter((r) => r.floored || (Number.isFinite(r.kl) && r.kl > 0) || (Number.isFinite(r.delta) && r.delta !== 0))
    .slice()
    .sort((a, b) => {
      const x = score(a);
      const y = score(b);
      return y[0] - x[0] || y[1] - x[1] || y[2] - x[2] || a.position - b.position;
    })
    .slice(0, n);
}

/**
 * Two charts on one canvas: Δ log-prob of the original token per position (bars, top) and
 * KL(original || intervened) per position (line, bottom; floored values drawn at the floor as
 * open triangles and excluded from the mean). effect: {rows, alignment, divergence, tokens,
 * changed}. ctx: {t, width, height, selected}. Pure.
 */
export function buildEffectOption(effect, ctx) {
  const { t } = ctx;
  const rows = effect.rows;
  const H = ctx.height || 560;
  const top1 = 40;
  const gap = 56;
  const h1 = Math.max(80, Math.round((H - top1 - gap - 60) * 0.5));
  const top2 = top1 + h1 + gap;
  const h2 = Math.max(80, H - top2 - 52);
  const first = rows.length ? rows[0].position : 0;
  const last = rows.length ? rows[rows.length - 1].position : 1;
  const measuredMax = rows.reduce((m, r) => (!r.floored && Number.isFinite(r.kl) ? Math.max(m, r.kl) : m), 0);
  const flooredY = Math.max(measuredMax * 1.15, 1e-3);
  const tok = (p) => escapeHtml(visibleText(effect.tokens?.[p] ?? '', 24));
  const byPos = new Map(rows.map((r) => [r.position, r]));
  const div = effect.divergence;
  const marks = div != null ? [{
    xAxis: div,
    lineStyle: { color: PALETTE.highlight, type: 'dashed', width: 1.5 },
    label: { formatter: t('diff.divergesAt', { pos: div }), color: PALETTE.highlight, fontFamily: FONT, fontSize: 11 },
  }] : [];
  const sel = ctx.selected != null && byPos.has(ctx.selected) ? [{
    xAxis: ctx.selected, lineStyle: { color: PALETTE.text, type: 'solid', width: 1, opacity: 0.5 }, label: { show: false },
  }] : [];
  const xAxis = (gridIndex, name) => ({
    type: 'value', gridIndex, min: first - 0.5, max: Math.max(first + 0.5, last + 0.5), minInterval: 1,
    name, nameLocation: 'middle', nameGap: 26, splitLine: { show: false },
    axisLabel: { fontFamily: MONO, fontSize: 10, formatter: (v) => (Number.isInteger(v) ? String(v) : '') },
  });
  const option = {
    animation: false,
    title: [
      { text: t('effect.deltaTitle'), left: 60, top: 12, textStyle: { fontSize: 12, fontWeight: 500, color: PALETTE.text, fontFamily: FONT } },
      { text: t('effect.klTitle'), left: 60, top: top2 - 28, textStyle: { fontSize: 12, fontWeight: 500, color: PALETTE.text, fontFamily: FONT } },
    ],
    grid: [
      { left: 60, right: 28, top: top1, height: h1 },
      { left: 60, right: 28, top: top2, height: h2 },
    ],
    tooltip: baseTooltip({
      trigger: 'axis',
      axisPointer: { type: 'line', lineStyle: { color: PALETTE.faint } },
      formatter: (ps) => {
        const pos = Math.round(ps[0].axisValue);
        const r = byPos.get(pos);
        if (!r) return '';
        return `<div class="ec-tip"><div><span class="ec-k">#${pos}</span> <b class="ec-tok">${tok(pos)}</b></div>`
          + `<div><span class="ec-k">${escapeHtml(t('effect.delta'))}</span> <b>${fmtNum(r.delta, 4)}</b></div>`
          + `<div><span class="ec-k">${escapeHtml(t('effect.kl'))}</span> <b>${escapeHtml(klText(r.kl, r.floored, t))}</b></div></div>`;
      },
    }),
    xAxis: [xAxis(0, ''), xAxis(1, t('entropy.position'))],
    yAxis: [
      { type: 'value', gridIndex: 0, name: t('effect.deltaAxis'), nameLocation: 'middle', nameGap: 42, axisLabel: { fontSize: 10 }, splitLine: { lineStyle: { color: PALETTE.grid } } },
      { type: 'value', gridIndex: 1, min: 0, name: t('effect.klAxis'), nameLocation: 'middle', nameGap: 42, axisLabel: { fontSize: 10 }, splitLine: { lineStyle: { color: PALETTE.grid } } },
    ],
    series: [
      {
        id: 'delta',
        name: t('effect.delta'),
        type: 'bar',
        xAxisIndex: 0,
        yAxisIndex: 0,
        barMaxWidth: 14,
        data: rows.map((r) => ({
          value: [r.position, Number.isFinite(r.delta) ? r.delta : null],
          itemStyle: { color: (r.delta ?? 0) < 0 ? PALETTE.highlight : PALETTE.green },
        })),
        markLine: { silent: true, symbol: 'none', data: [...marks, ...sel] },
      },
      {
        id: 'kl',
        name: t('effect.kl'),
        type: 'line',
        xAxisIndex: 1,
        yAxisIndex: 1,
        showSymbol: rows.length <= 200,
        symbolSize: 4,
        connectNulls: false,
        lineStyle: { width: 1.8, color: PALETTE.accent2 },
        itemStyle: { color: PALETTE.accent2 },
        data: rows.map((r) => [r.position, r.floored || !Number.isFinite(r.kl) ? null : Math.max(0, r.kl)]),
        markLine: { silent: true, symbol: 'none', data: [...marks.map((m) => ({ ...m, label: { show: false } })), ...sel] },
      },
      {
        id: 'kl-floored',
        name: t('effect.flooredLegend', { n: KL_FLOOR_NATS }),
        type: 'scatter',
        xAxisIndex: 1,
        yAxisIndex: 1,
        symbol: 'triangle',
        symbolSize: 9,
        itemStyle: { color: 'transparent', borderColor: PALETTE.highlight, borderWidth: 1.5 },
        label: { show: true, position: 'top', formatter: `≥${KL_FLOOR_NATS}`, color: PALETTE.highlight, fontSize: 9, fontFamily: MONO },
        data: rows.filter((r) => r.floored).map((r) => [r.position, flooredY]),
      },
    ],
    legend: {
      top: top2 - 30, right: 28, itemWidth: 14, itemHeight: 8, data: [t('effect.kl'), t('effect.flooredLegend', { n: KL_FLOOR_NATS })],
      textStyle: { color: PALETTE.text, fontFamily: FONT, fontSize: 11 },
    },
  };
  const stats = effectStats(rows, effect.from ?? 0);
  const caption = t('effect.caption', {
    what: effect.changed || '',
    align: t(`effect.align.${effect.alignment === 'edit' ? 'edit' : 'position'}`),
    kl: fmtNum(stats.meanKl, 3),
    n: stats.measured,
    delta: fmtNum(stats.meanAbsDelta, 3),
  }) + (stats.floored ? ` · ${t('effect.flooredCount', { count: stats.floored, n: KL_FLOOR_NATS })}` : '');
  return {
    option,
    caption,
    meta: {
      alignment: effect.alignment === 'edit' ? 'edit' : 'position',
      points: rows.length,
      floored: stats.floored,
      divergence: div ?? '',
      grids: `60,${top1},${h1};60,${top2},${h2}`,
    },
  };
}

/** The position a click on the effect chart selects (either series), else null. Pure. */
export function effectClickPosition(p) {
  if (p?.seriesId === 'delta') return Math.round(p.value?.[0] ?? p.data?.value?.[0]);
  if (p?.seriesId === 'kl' || p?.seriesId === 'kl-floored') return Math.round(p.data?.[0]);
  return null;
}

// ---------------------------------------------------------------- patching

/**
 * Normalise patching values so that 1 = the clean run's metric and 0 = the corrupted run's:
 * (v - corrupted) / (clean - corrupted). Null where clean == corrupted (nothing to restore). Pure.
 */
export function normalisePatch(values, clean, corrupted) {
  const span = clean - corrupted;
  if (!Number.isFinite(span) || Math.abs(span) < 1e-12) return values.map((row) => row.map(() => null));
  return values.map((row) => row.map((v) => (v == null || !Number.isFinite(v) ? null : (v - corrupted) / span)));
}

/** The patching heatmap's colour scale: viridis, 0 = corrupted (purple) … 1 = clean (yellow). */
export const PATCH_MAP = VIRIDIS;
/** Steering lines, from the most negative alpha (blue) to the most positive (red). */
export const ALPHA_MAP = Object.freeze(['#7aa2f7', '#7dcfff', '#9ece6a', '#c9d1db', '#e0af68', '#ff9e64', '#f7768e']);

/**
 * The patching heatmap. result: {sweep: 'residual'|'heads', values: [[...] per layer],
 * clean, corrupted, columns: labels of the x axis, metricText}. ctx: {t, width, height}. Pure.
 */
export function buildPatchOption(result, ctx) {
  const { t } = ctx;
  const norm = result.normalized ?? normalisePatch(result.values, result.clean, result.corrupted);
  const L = norm.length;
  const C = L ? norm[0].length : 0;
  const cells = [];
  let lo = 0;
  let hi = 1;
  for (let l = 0; l < L; l += 1) {
    for (let c = 0; c < C; c += 1) {
      const v = norm[l][c];
      if (v != null) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
      cells.push([c, l, v, result.values[l][c]]);
    }
  }
  const W = ctx.width || 700;
  const H = ctx.height || 560;
  const left = 64;
  const top = 30;
  const plotW = Math.max(160, Math.min(W - left - 130, C * 70));
  const plotH = Math.max(160, H - top - 96);
  const heads = result.sweep === 'heads';
  const cols = result.columns || Array.from({ length: C }, (_, c) => String(c));
  const cellW = plotW / Math.max(1, C);
  const cellH = plotH / Math.max(1, L);
  const option = {
    animation: false,
    grid: { left, top, width: plotW, height: plotH },
    tooltip: baseTooltip({
      trigger: 'item',
      formatter: (p) => {
        if (p.seriesId !== 'patch') return '';
        const [c, l, v, raw] = p.data;
        const where = heads ? t('patch.cellHead', { l, h: c }) : t('patch.cellResid', { l, pos: c });
        return `<div class="ec-tip"><div><b>${escapeHtml(where)}</b>${heads ? '' : ` <b class="ec-tok">${escapeHtml(cols[c])}</b>`}</div>`
          + `<div><span class="ec-k">${escapeHtml(t('patch.restored'))}</span> <b>${v == null ? '—' : v.toFixed(3)}</b></div>`
          + `<div><span class="ec-k">${escapeHtml(result.metricText || t('patch.metric'))}</span> <b>${fmtNum(raw, 4)}</b></div></div>`;
      },
    }),
    xAxis: {
      type: 'category',
      data: cols,
      name: heads ? t('patch.headAxis') : t('patch.posAxis'),
      nameLocation: 'middle',
      nameGap: heads ? 26 : 70,
      axisTick: { show: false },
      axisLine: { show: false },
      axisLabel: { fontFamily: MONO, fontSize: 10, rotate: heads ? 0 : 60, interval: labelInterval(C, Math.floor(plotW / 14)) },
    },
    yAxis: layerAxis(L, plotH, t('heads.layer')),
    visualMap: {
      type: 'continuous',
      seriesIndex: 0,
      dimension: 2,
      min: Math.min(0, Math.floor(lo * 10) / 10),
      max: Math.max(1, Math.ceil(hi * 10) / 10),
      calculable: false,
      orient: 'vertical',
      left: left + plotW + 22,
      top: top + 10,
      itemHeight: Math.min(280, plotH - 40),
      itemWidth: 12,
      precision: 2,
      text: [t('patch.clean1'), t('patch.corrupted0')],
      inRange: { color: PATCH_MAP },
      outOfRange: { color: '#555' },
      textStyle: { color: PALETTE.muted, fontFamily: FONT, fontSize: 11 },
    },
    series: [{
      id: 'patch',
      type: 'heatmap',
      data: cells,
      label: {
        show: cellW >= 34 && cellH >= 13,
        fontSize: 9,
        fontFamily: MONO,
        color: '#e8ecf2',
        textBorderColor: 'rgba(0,0,0,0.6)',
        textBorderWidth: 2,
        formatter: (p) => (p.data[2] == null ? '' : p.data[2].toFixed(2)),
      },
      itemStyle: { borderColor: PALETTE.panel, borderWidth: cellW > 10 && cellH > 6 ? 1 : 0 },
      emphasis: { itemStyle: { borderColor: '#ffffff', borderWidth: 1.5 } },
    }],
  };
  const flat = cells.filter((c) => c[2] != null);
  const best = flat.reduce((a, c) => (c[2] > a[2] ? c : a), flat[0] || [0, 0, null]);
  const where = heads ? t('patch.cellHead', { l: best[1], h: best[0] }) : t('patch.cellResid', { l: best[1], pos: best[0] });
  const caption = t('patch.caption', {
    sweep: t(`patch.sweep.${heads ? 'heads' : 'residual'}`),
    metric: result.metricText || '',
    clean: fmtNum(result.clean, 3),
    corrupted: fmtNum(result.corrupted, 3),
    best: where,
    v: best[2] == null ? '—' : best[2].toFixed(2),
    scale: t('patch.scaleName'),
  }) + (flat.length ? '' : ` · ${t('patch.noSpan')}`);
  return {
    option,
    caption,
    meta: {
      sweep: heads ? 'heads' : 'residual', layers: L, columns: C, cells: cells.length,
      scale: 'viridis', plot: `${left},${top},${plotW},${plotH}`,
    },
  };
}

/** The patch answer (POST /api/intervene/patch) as what buildPatchOption draws. Pure. */
export function patchFromApi(answer, t) {
  const heads = answer.sweep === 'heads';
  const m = answer.metric || {};
  const tx = m.texts || {};
  const q = (s) => JSON.stringify(String(s ?? ''));
  const metricText = m.type === 'logit_diff'
    ? t('patch.metricText.logit_diff', { a: q(tx.token_a ?? m.token_a), b: q(tx.token_b ?? m.token_b), pos: m.position })
    : t('patch.metricText.logprob', { a: q(tx.token ?? m.token), pos: m.position });
  return {
    sweep: heads ? 'heads' : 'residual',
    values: answer.values,
    normalized: answer.normalized,
    clean: answer.clean_metric,
    corrupted: answer.corrupted_metric,
    columns: heads
      ? Array.from({ length: answer.num_heads }, (_, h) => `h${h}`)
      : (answer.tokens_clean || []).map((x, i) => `${i} ${visibleText(x, 10)}`),
    metricText,
    headPosition: answer.head_position ?? null,
    note: answer.note || '',
    seconds: answer.compute_s,
  };
}

/**
 * The POST /api/intervene/patch body. f: {clean, corrupted (texts), metric ('logit_diff' |
 * 'logprob'), tokenA, tokenB, position (int, negative from the end), sweep, headPosition ('all' |
 * int), jobId}. Pure.
 */
export function patchBody(f) {
  const metric = f.metric === 'logprob'
    ? { type: 'logprob', token: f.tokenA, position: f.position }
    : { type: 'logit_diff', token_a: f.tokenA, token_b: f.tokenB, position: f.position };
  const body = {
    clean: { text: f.clean },
    corrupted: { text: f.corrupted },
    use_chat_template: false,
    metric,
    sweep: f.sweep === 'heads' ? 'heads' : 'residual',
  };
  if (body.sweep === 'heads') body.head_position = f.headPosition ?? 'all';
  if (f.jobId) body.job_id = f.jobId;
  return body;
}

/** Which problem keeps a patching sweep from starting, as an i18n key with vars, or null. Pure. */
export function patchProblem({ clean, corrupted, cleanCount, corruptedCount, metric, tokenA, tokenB, position, sweep, headPosition }) {
  if (!clean.trim() || !corrupted.trim()) return { key: 'patch.needPrompts' };
  if (cleanCount == null || corruptedCount == null) return { key: 'patch.counting' };
  if (cleanCount !== corruptedCount) return { key: 'patch.countMismatch', vars: { a: cleanCount, b: corruptedCount } };
  if (!tokenA) return { key: 'patch.needAnswer' };
  if (metric === 'logit_diff' && !tokenB) return { key: 'patch.needContrast' };
  const n = cleanCount;
  if (!Number.isInteger(position) || position < -n || position >= n) return { key: 'patch.badPosition', vars: { n } };
  if (sweep === 'heads' && headPosition !== 'all' && (!Number.isInteger(headPosition) || headPosition < 0 || headPosition >= n)) {
    return { key: 'patch.badHeadPosition', vars: { n } };
  }
  return null;
}

// ---------------------------------------------------------------- steering

/**
 * Parse the alpha sweep text ("-8, -4, 0, 4, 8"; also spaces, ";", the Unicode minus). Returns
 * {alphas} (distinct, in the order given, at most MAX_ALPHAS) or {error: i18n key}. Pure.
 */
export function parseAlphas(text) {
  const parts = String(text ?? '').replace(/\u2212/g, '-').split(/[\s,;]+/).filter(Boolean);
  if (!parts.length) return { error: 'steer.needAlpha' };
  const out = [];
  for (const p of parts) {
    if (!/^[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?$/i.test(p)) return { error: 'steer.badAlpha' };
    const v = Number(p);
    if (!Number.isFinite(v) || Math.abs(v) > 1e4) return { error: 'steer.badAlpha' };
    if (!out.includes(v)) out.push(v);
  }
  if (out.length > MAX_ALPHAS) return { error: 'steer.tooManyAlphas' };
  return { alphas: out };
}

/** One prompt per non-empty line (trimmed). Pure. */
export function promptLines(text) {
  return String(text ?? '').split('\n').map((s) => s.trim()).filter(Boolean);
}

/**
 * The POST /api/intervene/steer body. f: {layer, source ('mean_diff' | 'token' | 'direction'),
 * positive, negative (prompt lists), token (text), direction (numbers), alphas, fromPosition
 * (int or null: the server's default, the first generated position), normalize}. Returns {body}
 * or {error: i18n key}. Pure.
 */
export function steerBody(runId, f) {
  let vector;
  if (f.source === 'mean_diff') {
    if (!f.positive.length || !f.negative.length) return { error: 'steer.needPrompts' };
    vector = { source: 'mean_diff', positive: f.positive, negative: f.negative };
  } else if (f.source === 'token') {
    if (!f.token) return { error: 'steer.needToken' };
    vector = { source: 'token', token: f.token };
  } else if (f.source === 'direction') {
    if (!Array.isArray(f.direction) || !f.direction.length) return { error: 'steer.needDirection' };
    vector = { source: 'raw', values: f.direction };
  } else {
    return { error: 'steer.badSource' };
  }
  if (!Array.isArray(f.alphas) || !f.alphas.length) return { error: 'steer.needAlpha' };
  const body = { run_id: runId, layer: f.layer, alphas: f.alphas, vector, free: true, normalize: Boolean(f.normalize) };
  if (f.fromPosition != null) body.from_position = f.fromPosition;
  return { body };
}

/**
 * KL(parent || steered) per position for every steered run, one line each, coloured by alpha
 * (most negative blue … most positive red); floored values are drawn as triangles above the
 * measured ones, never as numbers. items: [{alpha, effect}] with effect from effectFromApi.
 * ctx: {t}. Pure.
 */
export function buildSteerOption(items, ctx) {
  const { t } = ctx;
  const alphas = items.map((x) => x.alpha);
  const amax = Math.max(1e-9, ...alphas.map((a) => Math.abs(a)));
  const colourOf = (a) => ALPHA_MAP[Math.round(((a / amax + 1) / 2) * (ALPHA_MAP.length - 1))];
  let first = Infinity;
  let last = 0;
  let ymax = 0;
  for (const { effect } of items) {
    for (const r of effect.rows) {
      first = Math.min(first, r.position);
      last = Math.max(last, r.position);
      if (!r.floored && Number.isFinite(r.kl)) ymax = Math.max(ymax, r.kl);
    }
  }
  if (!Number.isFinite(first)) first = 0;
  const flooredY = Math.max(ymax * 1.15, 1e-3);
  const series = [];
  for (const { alpha, effect } of items) {
    const c = colourOf(alpha);
    series.push({
      id: `steer-${alpha}`,
      name: `α = ${alpha}`,
      type: 'line',
      showSymbol: effect.rows.length <= 120,
      symbolSize: 4,
      lineStyle: { width: 1.8, color: c },
      itemStyle: { color: c },
      data: effect.rows.map((r) => [r.position, r.floored || !Number.isFinite(r.kl) ? null : Math.max(0, r.kl)]),
    });
    const floored = effect.rows.filter((r) => r.floored);
    if (floored.length) {
      series.push({
        id: `steer-floored-${alpha}`,
        name: `α = ${alpha}`,
        type: 'scatter',
        symbol: 'triangle',
        symbolSize: 8,
        itemStyle: { color: 'transparent', borderColor: c, borderWidth: 1.5 },
        data: floored.map((r) => [r.position, flooredY]),
        tooltip: { formatter: () => escapeHtml(t('effect.floored', { n: KL_FLOOR_NATS })) },
      });
    }
  }
  const option = {
    animation: false,
    legend: {
      top: 4, left: 'center', itemWidth: 14, itemHeight: 8, data: alphas.map((a) => `α = ${a}`),
      textStyle: { color: PALETTE.text, fontFamily: FONT, fontSize: 11 },
    },
    grid: { left: 56, right: 28, top: 40, bottom: 46 },
    tooltip: baseTooltip({ trigger: 'axis', valueFormatter: (v) => (v == null ? '—' : Number(v).toFixed(4)) }),
    xAxis: {
      type: 'value', min: first - 0.5, max: last + 0.5, minInterval: 1, name: t('entropy.position'), nameLocation: 'middle', nameGap: 28,
      splitLine: { show: false }, axisLabel: { fontFamily: MONO, fontSize: 10, formatter: (v) => (Number.isInteger(v) ? String(v) : '') },
    },
    yAxis: { type: 'value', min: 0, name: t('steer.klAxis'), nameLocation: 'middle', nameGap: 40, axisLabel: { fontSize: 10 } },
    series,
  };
  const align = [...new Set(items.map((x) => x.effect.alignment))].map((a) => t(`effect.alignShort.${a}`)).join(', ');
  const caption = t('steer.caption', { n: items.length, alphas: alphas.join(', '), align });
  return { option, caption, meta: { runs: items.length, alphas: alphas.join(','), alignment: align } };
}

// ---------------------------------------------------------------- small renderers (DOM, text only)

/** The most-affected list: one button per position (data-position), text via textContent. */
export function renderAffected(root, rows, { t, tokens = [], doc = root.ownerDocument }) {
  const list = el(doc, 'ol', 'effect-top');
  list.setAttribute('data-testid', 'effect-top');
  for (const r of rows) {
    const li = el(doc, 'li', 'effect-top-row');
    const btn = el(doc, 'button', 'effect-top-btn');
    btn.type = 'button';
    btn.dataset.position = String(r.position);
    btn.setAttribute('data-testid', 'effect-pos');
    const text = r.text ?? tokens[r.position] ?? '';
    btn.append(
      el(doc, 'span', 'effect-top-pos', `#${r.position}`),
      el(doc, 'span', 'effect-top-tok', visibleText(text, 16) || '∅'),
      el(doc, 'span', `effect-top-kl${r.floored ? ' floored' : ''}`, `KL ${klText(r.kl, r.floored, t)}`),
      el(doc, 'span', 'effect-top-delta', `Δ ${fmtNum(r.delta, 3)}`),
    );
    li.append(btn);
    list.append(li);
  }
  const head = el(doc, 'div', 'effect-top-title', t('effect.topTitle', { n: rows.length }));
  root.replaceChildren(head, rows.length ? list : el(doc, 'span', 'effect-top-none', t('effect.none')));
}

/** The steered runs side by side: one column per run with its alpha and generated text. */
export function renderSteerColumns(root, items, { t, doc = root.ownerDocument }) {
  const wrap = el(doc, 'div', 'steer-cols');
  wrap.setAttribute('data-testid', 'steer-runs');
  for (const it of items) {
    const col = el(doc, 'div', 'steer-col');
    col.dataset.alpha = String(it.alpha);
    col.dataset.runId = it.runId;
    col.setAttribute('data-testid', 'steer-run');
    const head = el(doc, 'div', 'steer-col-head');
    head.append(
      el(doc, 'span', 'steer-alpha', `α = ${it.alpha}`),
      el(doc, 'span', 'steer-div', it.divergence == null ? t('steer.same') : t('diff.divergesAt', { pos: it.divergence })),
    );
    const open = el(doc, 'button', 'btn btn-ghost btn-small steer-open', t('steer.open'));
    open.type = 'button';
    open.dataset.runId = it.runId;
    open.setAttribute('data-testid', 'steer-open');
    head.append(open);
    col.append(head, el(doc, 'div', 'steer-text', visibleText(it.text, 400)));
    wrap.append(col);
  }
  root.replaceChildren(wrap);
}
