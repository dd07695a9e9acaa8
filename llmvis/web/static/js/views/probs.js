// Top-N candidates at one position: model probability and sampling probability side by side,
// the chosen token highlighted (appended as an extra row when it is outside the top N).

import { FONT, MONO, PALETTE, baseTooltip, escapeHtml, labelInterval } from '../charts.js';
import { candidateLabel, fmtPct, fmtProb, visibleText } from '../tokens.js';

/** Rows to draw: the candidates, plus the chosen token if it is not among them. Pure. */
export function candidateRows(data) {
  const rows = data.candidates.map((c, i) => ({ ...c, rank: i + 1, chosen: c.id === data.token.id }));
  if (!rows.some((r) => r.chosen)) {
    rows.push({
      id: data.token.id,
      text: data.token.text,
      bytes: data.token.bytes,
      partial: data.token.partial,
      prob: data.token.prob,
      sample_prob: data.token.sample_prob,
      rank: data.token.rank,
      chosen: true,
      outside: true,
    });
  }
  return rows;
}

/** Build the ECharts option. ctx: {t, height, longLabels}. Pure. */
export function buildProbsOption(data, ctx) {
  const { t } = ctx;
  const rows = candidateRows(data);
  const isPrompt = data.token.source === 'prompt';
  const labels = rows.map((r) => `${r.outside ? `#${r.rank} ` : ''}${candidateLabel(r, 16)}`);
  const many = rows.length > 24;
  const plotH = Math.max(100, (ctx.height || 600) - 90);
  const barItem = (value, r, colour) => ({
    value,
    tokenId: r.id, // clicking a bar forks the run with this token forced (interactive.js)
    itemStyle: {
      color: r.chosen ? PALETTE.highlight : colour,
      borderRadius: [0, 3, 3, 0],
      opacity: r.chosen ? 1 : 0.92,
    },
  });
  const series = [{
    id: 'raw',
    name: t('probs.raw'),
    type: 'bar',
    barMaxWidth: 14,
    barGap: '15%',
    barCategoryGap: many ? '20%' : '30%',
    data: rows.map((r) => barItem(r.prob, r, PALETTE.accent)),
    label: {
      show: !many,
      position: 'right',
      color: PALETTE.text,
      fontSize: 11,
      fontFamily: MONO,
      formatter: (p) => `${fmtProb(p.value)}${rows[p.dataIndex].chosen ? `  ◀ ${t('probs.chosen')}` : ''}`,
    },
  }];
  if (!isPrompt) {
    series.push({
      id: 'sample',
      name: t('probs.sample'),
      type: 'bar',
      barMaxWidth: 14,
      data: rows.map((r) => ({
        value: r.sample_prob ?? 0,
        tokenId: r.id,
        itemStyle: {
          color: PALETTE.accent2,
          opacity: r.chosen ? 1 : 0.75,
          borderRadius: [0, 3, 3, 0],
          borderColor: r.chosen ? PALETTE.highlight : 'transparent',
          borderWidth: r.chosen ? 1 : 0,
        },
      })),
      label: {
        show: !many,
        position: 'right',
        color: PALETTE.muted,
        fontSize: 10,
        fontFamily: MONO,
        formatter: (p) => (p.value > 0 ? fmtProb(p.value) : ''),
      },
    });
  }
  const option = {
    animationDuration: 250,
    legend: {
      top: 4,
      left: 'center',
      itemWidth: 12,
      itemHeight: 8,
      textStyle: { color: PALETTE.text, fontFamily: FONT, fontSize: 12 },
    },
    grid: { left: 140, right: 96, top: 34, bottom: 40 },
    tooltip: baseTooltip({
      trigger: 'axis',
      axisPointer: { type: 'shadow', shadowStyle: { color: 'rgba(122,162,247,0.08)' } },
      formatter: (ps) => {
        const r = rows[ps[0].dataIndex];
        const lines = [`<div class="ec-tip"><div><b class="ec-tok">${escapeHtml(candidateLabel(r, 40))}</b> <span class="ec-k">id ${r.id} · rank ${r.rank}</span>${r.chosen ? ` <span class="ec-chosen">${escapeHtml(t('probs.chosen'))}</span>` : ''}</div>`];
        lines.push(`<div><span class="ec-k">${escapeHtml(t('probs.raw'))}</span> <b>${fmtProb(r.prob)}</b></div>`);
        if (!isPrompt) lines.push(`<div><span class="ec-k">${escapeHtml(t('probs.sample'))}</span> <b>${fmtProb(r.sample_prob ?? 0)}</b></div>`);
        if (!r.chosen) lines.push(`<div class="ec-hint">${escapeHtml(t('fork.hint'))}</div>`);
        return `${lines.join('')}</div>`;
      },
    }),
    xAxis: {
      type: 'value',
      min: 0,
      max: (v) => Math.min(1, Math.max(0.05, Math.ceil(v.max * 1.12 * 20) / 20)),
      name: t('probs.xName'),
      nameLocation: 'middle',
      nameGap: 26,
      axisLabel: { formatter: (v) => fmtPct(v, 0), fontSize: 11 },
      splitLine: { lineStyle: { color: PALETTE.grid } },
    },
    yAxis: {
      type: 'category',
      data: labels,
      inverse: true,
      axisTick: { show: false },
      axisLine: { lineStyle: { color: PALETTE.axis } },
      axisLabel: {
        interval: labelInterval(rows.length, Math.floor(plotH / 12)),
        fontFamily: MONO,
        fontSize: many ? 10 : 12,
        width: 126,
        overflow: 'truncate',
        color: (_, idx) => (rows[idx]?.chosen ? PALETTE.highlight : PALETTE.text),
      },
    },
    series,
  };
  const tok = data.token;
  const caption = t('probs.caption', {
    pos: data.position,
    tok: ctx.longLabels?.[data.position] ?? visibleText(tok.text, 24),
    prob: fmtProb(tok.prob),
    rank: tok.rank ?? '—',
    ent: data.entropy == null ? '—' : data.entropy.toFixed(3),
  });
  return {
    option,
    caption,
    meta: {
      position: data.position,
      'top-id': data.candidates[0]?.id ?? '',
      'chosen-id': tok.id,
      'chosen-rank': tok.rank ?? '',
      bars: rows.length,
    },
  };
}

/**
 * The two cut masses of a step, each tied to its distribution: `tempered`, the server's
 * cut_mass (of softmax(logits / T), what was sampled from; for greedy, of the raw
 * distribution, see DECISIONS "Greedy sampling statistics"), and `raw`, the mass of the raw
 * bars (T = 1) outside the kept set, 1 − Σ p over kept candidates. `raw` is exact when the kept
 * set ends inside the candidates listed (`rawExact`), else an upper bound. `greedy`: only the top
 * token was kept and cut_mass is 1 − p_raw(top), so both numbers are the same one. Pure.
 */
export function cutMasses(data) {
  if (data.token?.source !== 'generated' || data.cut_mass == null) return null;
  const cands = data.candidates || [];
  const kept = cands.filter((c) => (c.sample_prob ?? 0) > 0);
  const rawExact = cands.some((c) => c.sample_prob === 0 || c.sample_prob == null);
  const raw = kept.length ? Math.max(0, 1 - kept.reduce((a, c) => a + (c.prob ?? 0), 0)) : null;
  const greedy = kept.length === 1 && rawExact && cands[0] && kept[0] === cands[0]
    && Math.abs(data.cut_mass - (1 - (cands[0].prob ?? 0))) < 1e-4;
  return { tempered: data.cut_mass, raw, rawExact, greedy };
}

/** Text for the cut-mass note beside the raw bars: which distribution each number is of. Pure. */
export function cutMassText(data, t) {
  const cut = cutMasses(data);
  if (!cut) return t('probs.cutMassNone');
  if (cut.greedy) return t('probs.cutGreedy', { mass: fmtPct(cut.tempered, 2) });
  const parts = [t('probs.cutTempered', { mass: fmtPct(cut.tempered, 2) })];
  if (cut.raw != null) parts.push(t('probs.cutRaw', { mass: `${cut.rawExact ? '' : '≤ '}${fmtPct(cut.raw, 2)}` }));
  return parts.join(' · ');
}
