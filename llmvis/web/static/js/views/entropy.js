// Entropy over positions (left axis, nats) and confidence, the chosen token's probability
// (right axis). The generated region is shaded and the selected position marked.

import { FONT, MONO, PALETTE, baseTooltip, escapeHtml } from '../charts.js';
import { fmtNum, fmtProb, visibleText } from '../tokens.js';

/** Mean of the non-null values. Pure. */
export function mean(values) {
  const v = values.filter((x) => x != null && Number.isFinite(x));
  return v.length ? v.reduce((a, b) => a + b, 0) / v.length : null;
}

/** Build the ECharts option from a run. ctx: {t, selected, longLabels}. Pure. */
export function buildEntropyOption(run, ctx) {
  const { t } = ctx;
  const toks = run.tokens;
  const n = toks.length;
  const boundary = run.num_prompt_tokens ?? toks.findIndex((x) => x.source === 'generated');
  const xs = toks.map((x) => x.position);
  const entropy = toks.map((x) => [x.position, x.entropy ?? null]);
  const sampleEntropy = toks.map((x) => [x.position, x.source === 'generated' ? (x.sample_entropy ?? null) : null]);
  const conf = toks.map((x) => [x.position, x.prob ?? null]);
  const showSymbols = n <= 160;
  const generated = toks.filter((x) => x.source === 'generated');

  const markAreas = [];
  const markLines = [];
  if (boundary > 0 && boundary < n) {
    markAreas.push([
      {
        xAxis: boundary - 0.5,
        itemStyle: { color: 'rgba(224, 175, 104, 0.07)' },
        label: {
          show: true,
          formatter: t('entropy.boundary'),
          position: 'insideTopLeft',
          color: PALETTE.accent2,
          fontFamily: FONT,
          fontSize: 11,
          distance: 6,
        },
      },
      { xAxis: n - 0.5 },
    ]);
    markLines.push({
      xAxis: boundary - 0.5,
      lineStyle: { color: PALETTE.accent2, type: 'dashed', width: 1, opacity: 0.7 },
      label: { show: false },
    });
  }
  if (ctx.selected != null) {
    markLines.push({
      xAxis: ctx.selected,
      lineStyle: { color: PALETTE.highlight, type: 'solid', width: 1.5 },
      label: { formatter: `#${ctx.selected}`, color: PALETTE.highlight, position: 'end', fontFamily: MONO, fontSize: 11 },
    });
  }

  const zoom = n > 120;
  const zoomStart = Math.max(-0.5, Math.min(boundary > 0 ? boundary - 100 : 0, n - 120));
  const option = {
    animationDuration: 300,
    legend: {
      top: 4,
      left: 'center',
      itemWidth: 16,
      itemHeight: 8,
      textStyle: { color: PALETTE.text, fontFamily: FONT, fontSize: 12 },
    },
    grid: { left: 56, right: 60, top: 44, bottom: zoom ? 78 : 48 },
    tooltip: baseTooltip({
      trigger: 'axis',
      axisPointer: { type: 'line', lineStyle: { color: PALETTE.faint } },
      formatter: (ps) => {
        const i = Math.round(ps[0].axisValue);
        const tok = toks[i];
        if (!tok) return '';
        return `<div class="ec-tip"><div><span class="ec-k">#${i}</span> <b class="ec-tok">${escapeHtml(ctx.longLabels?.[i] ?? visibleText(tok.text, 32))}</b> <span class="ec-k">${escapeHtml(t(`tip.source.${tok.source}`))}</span></div>`
          + `<div><span class="ec-k">${escapeHtml(t('entropy.entropy'))}</span> <b>${fmtNum(tok.entropy)}</b></div>`
          + (tok.source === 'generated' ? `<div><span class="ec-k">${escapeHtml(t('entropy.sampleEntropy'))}</span> <b>${fmtNum(tok.sample_entropy)}</b></div>` : '')
          + `<div><span class="ec-k">${escapeHtml(t('entropy.confidence'))}</span> <b>${fmtProb(tok.prob)}</b></div>`
          + `<div><span class="ec-k">${escapeHtml(t('tip.rank'))}</span> <b>${tok.rank ?? '—'}</b></div></div>`;
      },
    }),
    xAxis: {
      type: 'value',
      min: -0.5,
      max: Math.max(0.5, n - 0.5),
      name: t('entropy.position'),
      nameLocation: 'middle',
      nameGap: 28,
      minInterval: 1,
      splitLine: { show: false },
      axisLabel: { fontFamily: MONO, fontSize: 11, formatter: (v) => (Number.isInteger(v) ? String(v) : '') },
    },
    yAxis: [
      {
        type: 'value',
        name: t('entropy.entropy'),
        nameLocation: 'middle',
        nameGap: 38,
        min: 0,
        splitLine: { lineStyle: { color: PALETTE.grid } },
        axisLabel: { fontSize: 11 },
      },
      {
        type: 'value',
        name: t('entropy.confidence'),
        nameLocation: 'middle',
        nameGap: 42,
        min: 0,
        max: 1,
        splitLine: { show: false },
        axisLabel: { fontSize: 11, formatter: (v) => v.toFixed(1) },
      },
    ],
    // Long runs open zoomed on the generated part plus some context; the slider shows it all.
    dataZoom: zoom ? [
      { type: 'inside', xAxisIndex: 0, filterMode: 'none', startValue: zoomStart, endValue: n - 0.5 },
      {
        type: 'slider', xAxisIndex: 0, filterMode: 'none', height: 18, bottom: 10,
        startValue: zoomStart, endValue: n - 0.5, labelFormatter: (v) => String(Math.round(v)),
      },
    ] : [],
    series: [
      {
        id: 'entropy',
        name: t('entropy.entropy'),
        type: 'line',
        data: entropy,
        yAxisIndex: 0,
        showSymbol: showSymbols,
        symbolSize: 5,
        connectNulls: false,
        z: 3,
        lineStyle: { width: 2, color: PALETTE.accent },
        itemStyle: { color: PALETTE.accent },
        areaStyle: { color: 'rgba(122, 162, 247, 0.08)' },
        markArea: { silent: true, data: markAreas },
        markLine: { silent: true, symbol: 'none', data: markLines },
      },
      {
        id: 'sample-entropy',
        name: t('entropy.sampleEntropy'),
        type: 'line',
        data: sampleEntropy,
        yAxisIndex: 0,
        showSymbol: false,
        connectNulls: false,
        z: 2,
        lineStyle: { width: 1.4, type: 'dashed', color: '#bb9af7' },
        itemStyle: { color: '#bb9af7' },
      },
      {
        id: 'confidence',
        name: t('entropy.confidence'),
        type: 'bar',
        data: conf,
        yAxisIndex: 1,
        barWidth: '42%',
        z: 1,
        large: n > 600,
        itemStyle: { color: 'rgba(224, 175, 104, 0.55)', borderRadius: [2, 2, 0, 0] },
        emphasis: { itemStyle: { color: PALETTE.accent2 } },
      },
    ],
  };
  // A scored text generated nothing: its caption averages the scored (teacher-forced) tokens.
  const scored = run.kind === 'score' || !generated.length;
  const measured = scored ? toks.filter((x) => x.position > 0 && x.entropy != null) : generated;
  const caption = t(scored ? 'entropy.captionScored' : 'entropy.caption', {
    ent: fmtNum(mean(measured.map((x) => x.entropy)), 3),
    conf: fmtProb(mean(measured.map((x) => x.prob))),
  });
  return { option, caption, meta: { points: xs.length, boundary } };
}
