// Run diff: two runs aligned position by position (two rows of chips, the divergence marked)
// and the KL divergence between their next-token distributions at every aligned position
// (raw and sampling), the common prefix shaded.

import { FONT, MONO, PALETTE, baseTooltip, escapeHtml } from '../charts.js';
import { fmtNum, visibleText } from '../tokens.js';
import { paramsText } from './sampler.js';
import { el } from '../util.js';

const firstGenerated = (tokens) => {
  const i = tokens.findIndex((x) => x.source === 'generated');
  return i < 0 ? tokens.length : i;
};

/**
 * The columns worth showing: from a few tokens before the earlier of the divergence and the
 * first generated token, to the end of the longer run. Returns {start, end}. Pure.
 */
export function diffRange(diff, context = 4) {
  const n = Math.max(diff.tokens_a.length, diff.tokens_b.length);
  const div = diff.divergence_position ?? diff.common_prefix;
  const from = Math.min(div, firstGenerated(diff.tokens_a), firstGenerated(diff.tokens_b));
  return { start: Math.max(0, Math.min(n - 1, from - context)), end: n };
}

/** Mean of kl values over rows after the common prefix (or null). Pure. */
export function meanKlAfter(diff, key) {
  const rows = diff.kl.filter((r) => !r.in_common_prefix && !r[`${key}_floored`] && Number.isFinite(r[key])); // a floored KL is a bound (issue 15)
  return rows.length ? rows.reduce((s, r) => s + Math.max(0, r[key]), 0) / rows.length : null;
}

/**
 * Fill `root` with the summary line and the aligned rows of chips. `labels` names the runs
 * ({a, b}); all token text goes in with textContent.
 */
export function renderDiffTokens(root, diff, { t, labels = {}, doc = root.ownerDocument } = {}) {
  root.replaceChildren();
  const { start, end } = diffRange(diff);
  const div = diff.divergence_position;

  const head = el(doc, 'div', 'diff-summary');
  if (div == null) {
    head.append(el(doc, 'span', 'diff-same-note', t('diff.identical')));
  } else {
    const badge = el(doc, 'span', 'diff-div-badge', t('diff.divergesAt', { pos: div }));
    head.append(badge);
  }
  head.append(el(doc, 'span', 'diff-prefix', t('diff.commonPrefix', { n: diff.common_prefix })));
  const legend = el(doc, 'span', 'diff-runs');
  legend.append(
    el(doc, 'span', 'diff-tag a', 'A'), el(doc, 'span', 'diff-run-label', `${labels.a ?? ''} ${paramsText(diff.params_a, t)}`.trim()),
    el(doc, 'span', 'diff-tag b', 'B'), el(doc, 'span', 'diff-run-label', `${labels.b ?? ''} ${paramsText(diff.params_b, t)}`.trim()),
  );
  head.append(legend);

  const grid = el(doc, 'div', 'diff-grid');
  grid.setAttribute('data-testid', 'diff-rows');
  const rowHead = el(doc, 'div', 'diff-col diff-rowhead');
  rowHead.append(el(doc, 'span', 'diff-pos', '#'), el(doc, 'span', 'diff-tag a', 'A'), el(doc, 'span', 'diff-tag b', 'B'));
  grid.append(rowHead);
  if (start > 0) {
    const skip = el(doc, 'div', 'diff-col diff-skip');
    skip.append(el(doc, 'span', 'diff-pos', ''), el(doc, 'span', 'diff-skip-text', t('diff.skipped', { n: start })), el(doc, 'span', 'diff-pos', ''));
    grid.append(skip);
  }
  const cell = (tok, cls) => {
    if (!tok) return el(doc, 'span', 'diff-chip empty', '');
    const c = el(doc, 'span', `diff-chip ${cls} ${tok.source}`, visibleText(tok.text, 16) || '∅');
    c.title = `#${tok.position} · id ${tok.id}`;
    return c;
  };
  // With edit alignment (issue 15) one column per aligned pair [i, j]; a gap side is empty.
  const pairs = diff.align === 'edit' && Array.isArray(diff.pairs)
    ? diff.pairs.filter(([i, j]) => (i ?? j) >= start) : null;
  const count = pairs ? pairs.length : end - start;
  let marked = false; // the divergence is marked once
  for (let k = 0; k < count; k += 1) {
    const [ia, ib] = pairs ? pairs[k] : [start + k, start + k];
    const i = ia ?? ib;
    const a = ia == null ? null : diff.tokens_a[ia];
    const b = ib == null ? null : diff.tokens_b[ib];
    const same = pairs ? Boolean(a && b && a.id === b.id) : (i < diff.same.length ? diff.same[i] : false);
    const isDiv = !marked && div != null && i === div;
    if (isDiv) marked = true;
    const col = el(doc, 'div', `diff-col${same ? ' same' : ' differ'}${isDiv ? ' divergence' : ''}`);
    col.dataset.position = String(i);
    let pos;
    if (isDiv) {
      pos = el(doc, 'span', 'diff-pos diff-div-mark', `▾${i}`);
      pos.setAttribute('data-testid', 'divergence');
      pos.title = t('diff.divergesAt', { pos: i });
    } else {
      pos = el(doc, 'span', 'diff-pos', String(i));
    }
    col.append(pos, cell(a, 'a'), cell(b, 'b'));
    grid.append(col);
  }
  root.append(head, grid);
  const mark = grid.querySelector('.divergence');
  return { start, end, divergenceColumn: mark };
}

/** Build the KL chart option. ctx: {t}. Pure. */
export function buildDiffOption(diff, ctx) {
  const { t } = ctx;
  const rows = diff.kl;
  const clamp = (v) => (Number.isFinite(v) ? Math.max(0, v) : null);
  // A floored KL (issue 15) is not drawn as a measurement: a gap in the line, a "≥ 23" marker.
  const raw = rows.map((r) => [r.position, r.kl_raw_floored ? null : clamp(r.kl_raw)]);
  const samp = rows.map((r) => [r.position, r.kl_sampling_floored ? null : clamp(r.kl_sampling)]);
  const measuredMax = rows.reduce((m, r) => Math.max(m, r.kl_raw_floored ? 0 : clamp(r.kl_raw) ?? 0, r.kl_sampling_floored ? 0 : clamp(r.kl_sampling) ?? 0), 0);
  const flooredMarks = (key, colour) => rows.filter((r) => r[`${key}_floored`]).map((r) => ({
    coord: [r.position, Math.max(measuredMax * 1.1, 1e-3)], value: '≥23',
    itemStyle: { color: 'transparent', borderColor: colour, borderWidth: 1.5 },
  }));
  const floorText = (key, r) => (r[`${key}_floored`] ? t('diff.floored', { n: 23 }) : fmtNum(clamp(r[key]), 4));
  const n = Math.max(diff.tokens_a.length, diff.tokens_b.length);
  const last = rows.length ? rows[rows.length - 1].position : 1;
  const { start } = diffRange(diff);
  const div = diff.divergence_position;
  const prefix = diff.common_prefix;
  const markAreas = [];
  if (prefix > 0 && prefix >= start) {
    markAreas.push([
      {
        xAxis: Math.max(0.5, Math.min(start, prefix) - 0.5),
        itemStyle: { color: 'rgba(122, 162, 247, 0.09)' },
        label: {
          show: true, formatter: t('diff.prefixShade'), position: 'insideTopLeft', color: PALETTE.muted,
          fontFamily: FONT, fontSize: 11, distance: 6,
        },
      },
      { xAxis: Math.min(prefix, last) + 0.5 },
    ]);
  }
  const markLines = [];
  if (div != null) {
    markLines.push({
      xAxis: div,
      lineStyle: { color: PALETTE.highlight, type: 'dashed', width: 1.5 },
      label: { formatter: t('diff.divergesAt', { pos: div }), color: PALETTE.highlight, position: 'end', fontFamily: FONT, fontSize: 11 },
    });
  }
  // Open on the interesting part (a few tokens before the divergence or the first generated
  // token); the slider shows the prompt too.
  const zoom = start > 6 || last - start > 160;
  const tokText = (tok) => (tok ? escapeHtml(visibleText(tok.text, 24)) : '—');
  const option = {
    animationDuration: 300,
    legend: {
      top: 4, left: 'center', itemWidth: 16, itemHeight: 8,
      textStyle: { color: PALETTE.text, fontFamily: FONT, fontSize: 12 },
    },
    grid: { left: 56, right: 28, top: 44, bottom: zoom ? 78 : 46 },
    tooltip: baseTooltip({
      trigger: 'axis',
      axisPointer: { type: 'line', lineStyle: { color: PALETTE.faint } },
      formatter: (ps) => {
        const pos = Math.round(ps[0].axisValue);
        const row = rows.find((r) => r.position === pos);
        if (!row) return '';
        const a = diff.tokens_a[pos];
        const b = diff.tokens_b[row.position_b ?? pos];
        return `<div class="ec-tip"><div><span class="ec-k">#${pos}</span> ${row.in_common_prefix ? `<span class="ec-k">${escapeHtml(t('diff.sameContext'))}</span>` : ''}</div>`
          + `<div><span class="ec-k">A</span> <b class="ec-tok">${tokText(a)}</b> <span class="ec-k">B</span> <b class="ec-tok">${tokText(b)}</b></div>`
          + `<div><span class="ec-k">${escapeHtml(t('diff.klSampling'))}</span> <b>${escapeHtml(floorText('kl_sampling', row))}</b></div>`
          + `<div><span class="ec-k">${escapeHtml(t('diff.klRaw'))}</span> <b>${escapeHtml(floorText('kl_raw', row))}</b></div></div>`;
      },
    }),
    xAxis: {
      type: 'value',
      min: 0.5,
      max: Math.max(1.5, last + 0.5),
      name: t('entropy.position'),
      nameLocation: 'middle',
      nameGap: 28,
      minInterval: 1,
      splitLine: { show: false },
      axisLabel: { fontFamily: MONO, fontSize: 11, formatter: (v) => (Number.isInteger(v) ? String(v) : '') },
    },
    yAxis: {
      type: 'value',
      name: t('diff.klAxis'),
      nameLocation: 'middle',
      nameGap: 40,
      min: 0,
      splitLine: { lineStyle: { color: PALETTE.grid } },
      axisLabel: { fontSize: 11 },
    },
    dataZoom: zoom ? [
      { type: 'inside', xAxisIndex: 0, filterMode: 'none', startValue: start, endValue: last + 0.5 },
      { type: 'slider', xAxisIndex: 0, filterMode: 'none', height: 18, bottom: 10, startValue: start, endValue: last + 0.5 },
    ] : [],
    series: [
      {
        id: 'kl-sampling',
        name: t('diff.klSampling'),
        type: 'line',
        data: samp,
        showSymbol: rows.length <= 200,
        symbolSize: 5,
        z: 3,
        lineStyle: { width: 2, color: PALETTE.accent2 },
        itemStyle: { color: PALETTE.accent2 },
        markArea: { silent: true, data: markAreas },
        markLine: { silent: true, symbol: 'none', data: markLines },
        markPoint: { symbol: 'triangle', symbolSize: 9, label: { show: true, position: 'top', color: PALETTE.accent2, fontSize: 9, fontFamily: MONO }, data: flooredMarks('kl_sampling', PALETTE.accent2) },
      },
      {
        id: 'kl-raw',
        name: t('diff.klRaw'),
        type: 'line',
        data: raw,
        showSymbol: rows.length <= 200,
        symbolSize: 4,
        z: 2,
        lineStyle: { width: 1.6, color: PALETTE.accent },
        itemStyle: { color: PALETTE.accent },
        markPoint: { symbol: 'triangle', symbolSize: 9, label: { show: true, position: 'top', color: PALETTE.accent, fontSize: 9, fontFamily: MONO }, data: flooredMarks('kl_raw', PALETTE.accent) },
      },
    ],
  };
  const caption = t('diff.caption', {
    samp: fmtNum(meanKlAfter(diff, 'kl_sampling'), 3),
    raw: fmtNum(meanKlAfter(diff, 'kl_raw'), 3),
    n,
  }) + alignNote(diff, t);
  return {
    option,
    caption,
    meta: {
      'run-a': diff.run_a ?? '',
      'run-b': diff.run_b ?? '',
      divergence: div ?? '',
      'common-prefix': prefix,
      points: rows.length,
      ...(diff.align ? { alignment: diff.align, floored: rows.filter((r) => r.kl_raw_floored || r.kl_sampling_floored).length } : {}),
    },
  };
}

/** " · aligned by position · 3 floored (≥ 23 nats each, not in the means)" when the server says (issue 15). Pure. */
export function alignNote(diff, t) {
  if (!diff.align) return '';
  const floored = diff.kl.filter((r) => !r.in_common_prefix && (r.kl_raw_floored || r.kl_sampling_floored)).length;
  return ` · ${t('diff.alignedBy', { align: t(`diff.align.${diff.align === 'edit' ? 'edit' : 'position'}`) })}`
    + (floored ? ` · ${t('diff.flooredCount', { count: floored, n: 23 })}` : '');
}
