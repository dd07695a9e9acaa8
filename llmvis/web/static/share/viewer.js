// Viewer of a shared llmvis run: inlined into one self-contained HTML file with ECharts.
// It reads the run from <script type="application/json" id="llmvis-data"> with JSON.parse and
// builds the page with DOM calls; token text is only ever set through textContent.
(function llmvisShareViewer() {
  'use strict';

  const STRINGS = {
    en: {
      tokens: 'Tokens, coloured by probability',
      hint: 'Click a token to see what else the model considered.',
      candidates: 'Alternatives at position {pos}',
      pickToken: 'Pick a generated or prompt token (not position 0).',
      confidence: 'Probability and entropy per token',
      prob: 'probability',
      entropy: 'entropy (nats)',
      attention: 'Attention (mean over heads)',
      layer: 'Layer {l}',
      pooled: 'pooled: each cell is the max over {b}×{b} tokens',
      query: 'query',
      key: 'key',
      params: 'temperature {temperature} · top-k {top_k} · top-p {top_p} · seed {seed}',
      reason: 'finish: {r}',
      made: 'Made with llmvis; works offline.',
      prompt: 'prompt',
      generated: 'generated',
      position: 'position {pos}',
      rank: 'rank',
    },
    zh: {
      tokens: '词元（按概率着色）',
      hint: '点击一个词元，查看模型考虑过的其他候选。',
      candidates: '位置 {pos} 的候选词元',
      pickToken: '请选择一个词元（位置 0 除外）。',
      confidence: '每个词元的概率与熵',
      prob: '概率',
      entropy: '熵（nats）',
      attention: '注意力（各头平均）',
      layer: '第 {l} 层',
      pooled: '已池化：每格为 {b}×{b} 个词元中的最大值',
      query: '查询',
      key: '键',
      params: '温度 {temperature} · top-k {top_k} · top-p {top_p} · 种子 {seed}',
      reason: '结束原因：{r}',
      made: '由 llmvis 生成，可离线查看。',
      prompt: '提示',
      generated: '生成',
      position: '位置 {pos}',
      rank: '排名',
    },
  };
  const lang = String(navigator.language || '').toLowerCase().startsWith('zh') ? 'zh' : 'en';
  const t = (key, vars) => String(STRINGS[lang][key] || STRINGS.en[key] || key)
    .replace(/\{(\w+)\}/g, (m, k) => (vars && k in vars ? String(vars[k]) : m));

  const MAGMA = ['#2b115e', '#51127c', '#7a1d81', '#a3307e', '#cc4272', '#ef5f5f', '#fc8961', '#feb77e', '#fde0a0'];
  const INFERNO = ['#000004', '#1b0c41', '#4a0c6b', '#781c6d', '#a52c60', '#cf4446', '#ed6925', '#fb9b06', '#f7d13d', '#fcffa4'];
  const TEXT = '#c9d1db';
  const MUTED = '#7d8896';
  const GRID = '#232a33';

  const data = JSON.parse(document.getElementById('llmvis-data').textContent);
  const doc = document;
  const el = (tag, cls, text) => {
    const node = doc.createElement(tag);
    if (cls) node.className = cls;
    if (text != null) node.textContent = text;
    return node;
  };

  /** Whitespace and control characters made visible (token text is untrusted and shown as text). */
  const visible = (s, max) => {
    const out = String(s == null ? '' : s).replace(/ /g, '·').replace(/\n/g, '↵').replace(/\t/g, '→')
      .replace(/[\u0000-\u001f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, '0')}`);
    return max && out.length > max ? `${out.slice(0, max - 1)}…` : (out || '∅');
  };
  const sample = (stops, x) => {
    const v = Math.min(1, Math.max(0, Number.isFinite(x) ? x : 0)) * (stops.length - 1);
    const i = Math.min(stops.length - 2, Math.floor(v));
    const f = v - i;
    const rgb = (h) => [1, 3, 5].map((k) => parseInt(h.slice(k, k + 2), 16));
    const a = rgb(stops[i]);
    const b = rgb(stops[i + 1]);
    return `rgb(${a.map((c, k) => Math.round(c + (b[k] - c) * f)).join(',')})`;
  };
  // Surprise on a log scale: p = 1 is the dark end, p <= 1e-4 the bright end.
  const surprise = (p) => (p == null ? 0 : Math.min(1, -Math.log10(Math.max(p, 1e-4)) / 4));
  const probColour = (p) => sample(MAGMA, surprise(p));
  const fmtP = (p) => (p == null ? '—' : p >= 0.01 ? `${(p * 100).toFixed(1)}%` : p.toExponential(1));

  const tokens = data.tokens;
  const labels = tokens.map((tok) => visible(tok.text, 10));
  let selected = tokens.findIndex((tok) => tok.source === 'generated');
  if (selected < 1) selected = tokens.length > 1 ? 1 : 0;

  // ---------- layout ----------
  const app = doc.getElementById('app');
  const head = el('header', 'head');
  head.append(el('h1', 'title', data.title));
  const meta = el('p', 'meta');
  const params = data.params || {};
  meta.textContent = [data.model && data.model.name, t('params', params), t('reason', { r: data.finish_reason })]
    .filter(Boolean).join(' · ');
  head.append(meta);
  app.append(head);

  const section = (title, id) => {
    const s = el('section', 'card');
    s.id = id;
    const h = el('h2', 'card-title', title);
    s.append(h);
    app.append(s);
    return s;
  };

  const tokSec = section(t('tokens'), 'tokens');
  tokSec.append(el('p', 'hint', t('hint')));
  const chips = el('div', 'chips');
  tokSec.append(chips);
  const chipEls = tokens.map((tok) => {
    const c = el('button', `chip ${tok.source}${tok.special ? ' special' : ''}`, visible(tok.text));
    c.type = 'button';
    c.dataset.position = String(tok.position);
    c.style.background = tok.position === 0 ? '#2a313b' : probColour(tok.prob);
    if (tok.position > 0 && surprise(tok.prob) > 0.62) c.style.color = '#14161a';
    c.title = `${t('position', { pos: tok.position })} · p ${fmtP(tok.prob)} · ${t('rank')} ${tok.rank == null ? '—' : tok.rank}`;
    c.addEventListener('click', () => select(tok.position));
    chips.append(c);
    return c;
  });

  const chartBox = (sec, cls) => {
    const box = el('div', `chart ${cls || ''}`);
    sec.append(box);
    return box;
  };
  const candSec = section('', 'candidates');
  const candTitle = candSec.querySelector('.card-title');
  const candChart = echarts.init(chartBox(candSec, 'short'), null, { renderer: 'canvas' });
  const confSec = section(t('confidence'), 'confidence');
  const confChart = echarts.init(chartBox(confSec), null, { renderer: 'canvas' });
  const attSec = section(t('attention'), 'attention');
  const layerSel = el('select', 'layer-select');
  layerSel.setAttribute('aria-label', 'layer');
  const layers = (data.attention && data.attention.layers) || [];
  layers.forEach((a, i) => {
    const o = el('option', null, t('layer', { l: a.layer }));
    o.value = String(i);
    layerSel.append(o);
  });
  layerSel.value = String(Math.floor(layers.length / 2));
  const attNote = el('span', 'note');
  const attBar = el('div', 'toolbar');
  attBar.append(layerSel, attNote);
  attSec.insertBefore(attBar, attSec.children[1] || null);
  const attChart = echarts.init(chartBox(attSec, 'square'), null, { renderer: 'canvas' });
  app.append(el('p', 'foot', t('made')));

  // ---------- charts ----------
  const axisStyle = {
    axisLine: { lineStyle: { color: '#3a4350' } },
    axisLabel: { color: MUTED },
    splitLine: { lineStyle: { color: GRID } },
  };

  function renderCandidates() {
    const cands = data.candidates[selected];
    candTitle.textContent = t('candidates', { pos: selected });
    if (!cands || !cands.length) {
      candChart.clear();
      candChart.setOption({ title: { text: t('pickToken'), left: 'center', top: 'middle', textStyle: { color: MUTED, fontSize: 13 } } });
      return;
    }
    const chosen = tokens[selected].text;
    candChart.setOption({
      animation: false,
      grid: { left: 120, right: 60, top: 10, bottom: 24 },
      xAxis: { type: 'value', max: 1, ...axisStyle },
      yAxis: { type: 'category', inverse: true, data: cands.map((c) => visible(c.text, 16)), ...axisStyle },
      tooltip: { trigger: 'axis', axisPointer: { type: 'shadow' } },
      series: [{
        type: 'bar',
        data: cands.map((c) => ({ value: c.prob, itemStyle: { color: c.text === chosen ? '#e0af68' : '#7aa2f7' } })),
        label: { show: true, position: 'right', color: TEXT, formatter: (p) => fmtP(p.value) },
      }],
    }, { notMerge: true });
  }

  function renderConfidence() {
    confChart.setOption({
      animation: false,
      legend: { textStyle: { color: TEXT }, top: 0 },
      grid: { left: 50, right: 50, top: 30, bottom: 60 },
      tooltip: { trigger: 'axis' },
      dataZoom: [{ type: 'inside' }, { type: 'slider', height: 16, bottom: 8 }],
      xAxis: { type: 'category', data: labels, ...axisStyle },
      yAxis: [
        { type: 'value', name: t('prob'), min: 0, max: 1, nameTextStyle: { color: MUTED }, ...axisStyle },
        { type: 'value', name: t('entropy'), nameTextStyle: { color: MUTED }, ...axisStyle, splitLine: { show: false } },
      ],
      series: [
        {
          name: t('prob'),
          type: 'bar',
          data: tokens.map((tok) => ({ value: tok.prob, itemStyle: { color: tok.position === selected ? '#f7768e' : probColour(tok.prob) } })),
        },
        {
          name: t('entropy'),
          type: 'line',
          yAxisIndex: 1,
          showSymbol: false,
          lineStyle: { color: '#9ece6a', width: 1.5 },
          itemStyle: { color: '#9ece6a' },
          data: tokens.map((tok) => tok.entropy),
        },
      ],
    }, { notMerge: true });
  }

  function renderAttention() {
    const a = layers[Number(layerSel.value)];
    if (!a) return;
    const scale = data.attention.scale;
    const cells = [];
    let max = 0;
    a.matrix.forEach((row, q) => row.forEach((v, k) => {
      if (k <= q || a.block > 1) {
        const w = v / scale;
        cells.push([k, q, w]);
        if (q > 0 && k > 0 && w > max) max = w;
      }
    }));
    const axisLabels = (n) => Array.from({ length: n }, (_, i) => (a.block > 1 ? String(i * a.block) : labels[i]));
    attNote.textContent = a.block > 1 ? t('pooled', { b: a.block }) : '';
    attChart.setOption({
      animation: false,
      grid: { left: 90, right: 70, top: 10, bottom: 90 },
      tooltip: { formatter: (p) => `${t('query')} ${p.value[1] * a.block} · ${t('key')} ${p.value[0] * a.block}: ${p.value[2].toFixed(4)}` },
      xAxis: { type: 'category', data: axisLabels(a.cols), name: t('key'), axisLabel: { color: MUTED, rotate: 60 }, splitArea: { show: false } },
      yAxis: { type: 'category', data: axisLabels(a.rows), name: t('query'), inverse: true, axisLabel: { color: MUTED } },
      visualMap: { min: 0, max: max || 1, calculable: true, precision: 3, right: 0, top: 'middle', inRange: { color: INFERNO }, textStyle: { color: MUTED } },
      series: [{ type: 'heatmap', data: cells, progressive: 0 }],
    }, { notMerge: true });
  }

  function select(pos) {
    selected = Math.max(0, Math.min(tokens.length - 1, pos));
    chipEls.forEach((c, i) => c.classList.toggle('selected', i === selected));
    renderCandidates();
    renderConfidence();
  }

  confChart.on('click', (p) => { if (Number.isInteger(p.dataIndex)) select(p.dataIndex); });
  layerSel.addEventListener('change', renderAttention);
  window.addEventListener('resize', () => [candChart, confChart, attChart].forEach((c) => c.resize()));
  select(selected);
  renderAttention();
  const focus = data.focus ? doc.getElementById(String(data.focus)) : null;  // run.show(view=...) in a notebook
  if (focus) focus.scrollIntoView();
  doc.body.dataset.ready = 'true';
}());
