// Sampler view: at one step, the raw distribution (softmax at T = 1) and the distribution the
// token was actually sampled from (after temperature, top-k and top-p) side by side, on the same
// rows. Candidates that top-k/top-p removed are greyed on the left and empty on the right; the
// chosen token is marked in both, with its rank in each.

import { FONT, MONO, PALETTE, baseTooltip, escapeHtml } from '../charts.js';
import { candidateLabel, fmtNum, fmtPct, fmtProb, visibleText } from '../tokens.js';
import { candidateRows, cutMasses } from './probs.js';

const CUT_COLOUR = '#3a4350';

/** "T 0.7 · top-k 50 · top-p 0.95" from a run's params (0 / 1 shown as off). Pure. */
export function paramsText(params, t) {
  if (!params) return '';
  const parts = [`T ${params.temperature ?? '—'}`];
  parts.push(params.top_k ? `top-k ${params.top_k}` : `top-k ${t('sampler.off')}`);
  parts.push(params.top_p != null && params.top_p < 1 ? `top-p ${params.top_p}` : `top-p ${t('sampler.off')}`);
  return parts.join(' · ');
}

/**
 * Where the chosen token fell. Returns {rawRank, rawProb, sampleProb, sampleRank, kept,
 * keptCount, keptAtLeast, forced}. Sampling ranks follow raw ranks (temperature keeps the order
 * and the filters keep a prefix of it), so the sampling rank is the raw rank among kept tokens.
 * Pure.
 */
export function samplerStats(data, { forced = false } = {}) {
  const tok = data.token;
  const sampled = tok.source === 'generated' && tok.sample_prob != null;
  const keptRows = data.candidates.filter((c) => (c.sample_prob ?? 0) > 0);
  const keptAtLeast = sampled && keptRows.length === data.candidates.length; // more beyond top N
  const kept = sampled && (tok.sample_prob ?? 0) > 0;
  return {
    rawRank: tok.rank,
    rawProb: tok.prob,
    sampleProb: sampled ? tok.sample_prob : null,
    sampleRank: kept ? tok.rank : null,
    kept,
    keptCount: sampled ? keptRows.length : null,
    keptAtLeast,
    forced,
    sampled,
  };
}

const axisMax = (v) => Math.min(1, Math.max(0.05, Math.ceil(v.max * 1.15 * 20) / 20));

/**
 * Build the ECharts option. data: /api/token_probs; params: the run's params;
 * ctx: {t, width, height, forced}. Pure.
 */
export function buildSamplerOption(data, params, ctx) {
  const { t } = ctx;
  const rows = candidateRows(data);
  const stats = samplerStats(data, { forced: ctx.forced });
  const labels = rows.map((r) => `${r.outside ? `#${r.rank} ` : ''}${candidateLabel(r, 14)}`);
  const many = rows.length > 24;
  const W = Math.max(420, ctx.width || 700);
  const labelW = 112;
  const gap = 64;
  const right = 58;
  const gridW = Math.max(120, Math.floor((W - labelW - 12 - gap - right) / 2));
  const left0 = labelW + 12;
  const left1 = left0 + gridW + gap;
  const top = 76;
  const bottom = 40;
  const isCut = (r) => stats.sampled && !((r.sample_prob ?? 0) > 0);

  const rawSeries = {
    id: 'raw',
    name: t('sampler.raw'),
    type: 'bar',
    xAxisIndex: 0,
    yAxisIndex: 0,
    barMaxWidth: 16,
    barCategoryGap: many ? '18%' : '28%',
    data: rows.map((r) => ({
      value: r.prob,
      tokenId: r.id,
      itemStyle: {
        color: r.chosen ? PALETTE.highlight : (isCut(r) ? CUT_COLOUR : PALETTE.accent),
        borderRadius: [0, 3, 3, 0],
      },
    })),
    label: {
      show: !many,
      position: 'right',
      fontFamily: MONO,
      fontSize: 10.5,
      color: PALETTE.muted,
      formatter: (p) => fmtProb(p.value),
    },
  };
  const series = [rawSeries];
  if (stats.sampled) {
    series.push({
      id: 'sample',
      name: t('sampler.sampling'),
      type: 'bar',
      xAxisIndex: 1,
      yAxisIndex: 1,
      barMaxWidth: 16,
      barCategoryGap: many ? '18%' : '28%',
      data: rows.map((r) => ({
        value: r.sample_prob ?? 0,
        tokenId: r.id,
        itemStyle: { color: r.chosen ? PALETTE.highlight : PALETTE.accent2, borderRadius: [0, 3, 3, 0] },
      })),
      label: {
        show: !many,
        position: 'right',
        fontFamily: MONO,
        fontSize: 10.5,
        color: PALETTE.muted,
        formatter: (p) => (isCut(rows[p.dataIndex]) ? t('sampler.cutShort') : fmtProb(p.value)),
      },
    });
  }

  const yAxis = (gridIndex, showLabels) => ({
    type: 'category',
    gridIndex,
    data: labels,
    inverse: true,
    axisTick: { show: false },
    axisLine: { lineStyle: { color: PALETTE.axis } },
    axisLabel: {
      show: showLabels,
      interval: 0,
      fontFamily: MONO,
      fontSize: many ? 9.5 : 11.5,
      width: labelW - 8,
      overflow: 'truncate',
      color: (_, idx) => (rows[idx]?.chosen ? PALETTE.highlight : (isCut(rows[idx]) ? PALETTE.faint : PALETTE.text)),
    },
  });
  const xAxis = (gridIndex, name) => ({
    type: 'value',
    gridIndex,
    min: 0,
    max: axisMax,
    name,
    nameLocation: 'middle',
    nameGap: 24,
    splitNumber: 3,
    axisLabel: { formatter: (v) => fmtPct(v, 0), fontSize: 10.5 },
    splitLine: { lineStyle: { color: PALETTE.grid } },
  });
  const titleStyle = { color: PALETTE.text, fontFamily: FONT, fontSize: 12.5, fontWeight: 600 };
  const subStyle = { color: PALETTE.muted, fontFamily: MONO, fontSize: 10.5 };
  const rawSub = t('sampler.rawSub', {
    rank: stats.rawRank ?? '—',
    p: fmtProb(stats.rawProb),
    h: fmtNum(data.entropy, 2),
  });
  let sampSub;
  if (!stats.sampled) sampSub = t('sampler.notSampled');
  else if (stats.forced) sampSub = t('sampler.forcedSub', { params: paramsText(params, t) });
  else {
    sampSub = t('sampler.samplingSub', {
      params: paramsText(params, t),
      p: fmtProb(stats.sampleProb),
      rank: stats.sampleRank ?? '—',
      kept: `${stats.keptAtLeast ? '≥' : ''}${stats.keptCount}`,
    });
  }
  const option = {
    animationDuration: 250,
    title: [
      { text: t('sampler.raw'), subtext: rawSub, left: left0 + gridW / 2, textAlign: 'center', top: 2, textStyle: titleStyle, subtextStyle: subStyle, itemGap: 4 },
      { text: t('sampler.sampling'), subtext: sampSub, left: left1 + gridW / 2, textAlign: 'center', top: 2, textStyle: titleStyle, subtextStyle: subStyle, itemGap: 4 },
    ],
    grid: [
      { left: left0, width: gridW, top, bottom },
      { left: left1, width: gridW, top, bottom },
    ],
    xAxis: [xAxis(0, t('sampler.xRaw')), { ...xAxis(1, t('sampler.xSampling')), show: stats.sampled }],
    yAxis: [yAxis(0, true), { ...yAxis(1, false), show: stats.sampled }],
    tooltip: baseTooltip({
      trigger: 'item',
      formatter: (p) => {
        const r = rows[p.dataIndex];
        if (!r) return '';
        const cut = isCut(r);
        const lines = [
          `<div class="ec-tip"><div><b class="ec-tok">${escapeHtml(candidateLabel(r, 40))}</b> <span class="ec-k">id ${r.id} · ${escapeHtml(t('tip.rank'))} ${r.rank}</span>${r.chosen ? ` <span class="ec-chosen">${escapeHtml(t('probs.chosen'))}</span>` : ''}</div>`,
          `<div><span class="ec-k">${escapeHtml(t('sampler.raw'))}</span> <b>${fmtProb(r.prob)}</b></div>`,
        ];
        if (stats.sampled) {
          lines.push(`<div><span class="ec-k">${escapeHtml(t('sampler.sampling'))}</span> <b>${cut ? escapeHtml(t('sampler.cutLong')) : fmtProb(r.sample_prob)}</b></div>`);
        }
        if (!r.chosen) lines.push(`<div class="ec-hint">${escapeHtml(t('fork.hint'))}</div>`);
        return `${lines.join('')}</div>`;
      },
    }),
    series,
  };
  if (!stats.sampled) {
    option.graphic = [{
      type: 'text',
      left: left1 + 8,
      top: top + 24,
      style: {
        text: t('sampler.notSampledLong'),
        fill: PALETTE.muted,
        font: `12px ${FONT}`,
        width: gridW - 16,
        overflow: 'break',
      },
    }];
  }
  const tok = data.token;
  const caption = t(stats.sampled ? 'sampler.caption' : 'sampler.captionForced', {
    pos: data.position,
    tok: ctx.longLabels?.[data.position] ?? visibleText(tok.text, 24),
    cut: data.cut_mass == null ? '—' : fmtPct(data.cut_mass, 1),
    h: fmtNum(data.entropy, 2),
    hs: fmtNum(tok.sample_entropy, 2),
  });
  return {
    option,
    caption,
    stats,
    meta: {
      position: data.position,
      'chosen-id': tok.id,
      'chosen-rank': tok.rank ?? '',
      'sample-rank': stats.sampleRank ?? '',
      'cut-mass': data.cut_mass ?? '',
      kept: stats.keptCount ?? '',
      bars: rows.length,
      distributions: stats.sampled ? 2 : 1,
    },
  };
}

/** The toolbar note: the mass the filters cut, or why there is none. Pure. */
export function samplerNote(data, t, params = null) {
  const cut = cutMasses(data);
  if (!cut) return t('sampler.noCut');
  if (cut.greedy || params?.temperature === 0) return t('sampler.cutGreedy', { mass: fmtPct(cut.tempered, 2) });
  return t('sampler.cutTempered', { mass: fmtPct(cut.tempered, 2), temp: params?.temperature ?? 'T' });
}
